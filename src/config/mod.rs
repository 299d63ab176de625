//! Configuration: one struct read from the environment with envy, validated at start.
//!
//! The names the plan uses (`DATABASE_URL`, `JWT_SECRET`, `WS_PORT`) work as-is; the
//! token settings mirror PostgREST's (`jwt-secret`, `jwt-secret-is-base64`, `jwt-aud`,
//! `jwt-role-claim-key`, `db-anon-role`).
//!
//! - [`Config`] (here): the settings and their environment names;
//! - `defaults`: the value of each setting left unset;
//! - `env`: reading `NAME=value` pairs, from the process or from a test;
//! - `validate`: what makes the daemon refuse to start, as a [`ConfigError`];
//! - `limits`: the caps and timeouts derived from the settings;
//! - `resolve`: settings that resolve to richer values (keys, URLs, origins, proxies).

mod defaults;
mod env;
mod error;
mod limits;
mod resolve;
mod validate;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use error::ConfigError;
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Connection the daemon serves with; PostgREST's `authenticator` role.
    #[serde(default = "defaults::database_url")]
    pub database_url: String,
    /// Connection `pgchat migrate` uses (needs to create roles); defaults to DATABASE_URL.
    #[serde(default)]
    pub admin_database_url: Option<String>,
    #[serde(default)]
    pub jwt_secret: Option<String>,
    #[serde(default)]
    pub jwt_secret_is_base64: bool,
    #[serde(default)]
    pub jwt_aud: Option<String>,
    #[serde(default = "defaults::role_claim_key")]
    pub jwt_role_claim_key: String,
    /// Role for tokens without a role claim. Unset: such tokens are refused.
    #[serde(default)]
    pub db_anon_role: Option<String>,
    #[serde(default = "defaults::ws_host")]
    pub ws_host: IpAddr,
    #[serde(default = "defaults::ws_port")]
    pub ws_port: u16,
    /// Comma-separated list of allowed `Origin`s for the WebSocket upgrade; unset or `*`: any.
    #[serde(default)]
    pub allowed_origins: Option<String>,
    #[serde(default = "defaults::message_max_chars")]
    pub message_max_chars: usize,
    #[serde(default = "defaults::db_pool_size")]
    pub db_pool_size: usize,
    /// As-user database calls one user may run at once; unset: a quarter of the pool
    /// (at least 1); 0: no limit. See [`Config::user_concurrency`].
    #[serde(default)]
    pub db_user_concurrency: Option<usize>,
    /// Statement timeout for every user action, in milliseconds.
    #[serde(default = "defaults::db_timeout_ms")]
    pub db_timeout_ms: u64,
    #[serde(default = "defaults::auth_timeout_secs")]
    pub auth_timeout_secs: u64,
    #[serde(default = "defaults::ping_interval_secs")]
    pub ping_interval_secs: u64,
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Frames a connection may have queued before it is closed as too slow.
    #[serde(default = "defaults::outbound_queue")]
    pub outbound_queue: usize,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Connections that have not authenticated yet, at most; unset: a quarter of
    /// `max_connections`. See `admission`.
    #[serde(default)]
    pub max_unauthenticated: Option<usize>,
    /// Open connections per client address; 0: no cap.
    #[serde(default)]
    pub max_connections_per_ip: usize,
    /// Comma-separated addresses/CIDRs of proxies whose `X-Forwarded-For` is believed.
    #[serde(default)]
    pub trusted_proxies: Option<String>,
    /// Time a client has to send its request headers.
    #[serde(default = "defaults::header_timeout_secs")]
    pub header_timeout_secs: u64,
    /// Time from accept to a completed WebSocket upgrade.
    #[serde(default = "defaults::upgrade_timeout_secs")]
    pub upgrade_timeout_secs: u64,
    /// Largest WebSocket message accepted from a client, in bytes.
    #[serde(default = "defaults::max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Sustained chat writes (messages, rooms, reads) per user per second, and burst.
    #[serde(default = "defaults::rate_per_sec")]
    pub rate_limit_per_sec: u32,
    #[serde(default = "defaults::rate_burst")]
    pub rate_limit_burst: u32,
    #[serde(default = "defaults::notify_channel")]
    pub notify_channel: String,
    #[serde(default = "defaults::log_format")]
    pub log_format: String,
    /// How long a typing indicator shows without a refresh, in milliseconds; at most the
    /// 5 s a typing row lives in the database. Shorter is for tests.
    #[serde(default = "defaults::typing_ttl_ms")]
    pub typing_ttl_ms: u64,
    /// Directory served over HTTP (the demo frontend). Unset: no static files.
    #[serde(default)]
    pub static_dir: Option<PathBuf>,
}
