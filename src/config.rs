//! Configuration: one struct read from the environment with envy, validated at start.
//!
//! The names the plan uses (`DATABASE_URL`, `JWT_SECRET`, `WS_PORT`) work as-is; the
//! token settings mirror PostgREST's (`jwt-secret`, `jwt-secret-is-base64`, `jwt-aud`,
//! `jwt-role-claim-key`, `db-anon-role`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Why the daemon refuses to start. Each variant renders as one clear line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("JWT_SECRET is not set; pgchat needs the same secret PostgREST uses")]
    MissingSecret,
    #[error("JWT_SECRET must be at least 32 characters (PostgREST refuses shorter secrets too)")]
    ShortSecret,
    #[error("JWT_SECRET_IS_BASE64 is set but JWT_SECRET is not valid base64")]
    BadBase64Secret,
    #[error("JWT_SECRET names the file `{0}`, which cannot be read: {1}")]
    UnreadableSecret(String, String),
    #[error("JWT_SECRET: {0}")]
    BadKeySet(#[from] crate::auth::KeySetError),
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadDatabaseUrl(String),
    #[error("ADMIN_DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadAdminDatabaseUrl(String),
    #[error("JWT_ROLE_CLAIM_KEY is not a valid claim path: {0}")]
    BadRoleClaimKey(String),
    #[error("LOG_FORMAT must be `text` or `json`, not `{0}`")]
    BadLogFormat(String),
    #[error("NOTIFY_CHANNEL must be 1..63 characters of [a-z0-9_] and not `pgrst`")]
    BadChannel,
    #[error("TRUSTED_PROXIES: {0}")]
    BadTrustedProxies(#[from] crate::admission::BadProxy),
    #[error("{0} must be at least 1")]
    ZeroLimit(&'static str),
    #[error("TYPING_TTL_MS must be 1 to 5000: a typing row lives 5 s in the database")]
    BadTypingTtl,
    #[error("invalid configuration: {0}")]
    Env(String),
}

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

mod defaults {
    use std::net::{IpAddr, Ipv4Addr};

    pub fn database_url() -> String {
        "postgres://authenticator@127.0.0.1:5432/pgchat".into()
    }
    pub fn role_claim_key() -> String {
        ".role".into()
    }
    pub fn ws_host() -> IpAddr {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
    pub fn ws_port() -> u16 {
        3001
    }
    pub fn message_max_chars() -> usize {
        5000
    }
    pub fn db_pool_size() -> usize {
        16
    }
    pub fn db_timeout_ms() -> u64 {
        5000
    }
    pub fn auth_timeout_secs() -> u64 {
        10
    }
    pub fn ping_interval_secs() -> u64 {
        25
    }
    pub fn idle_timeout_secs() -> u64 {
        75
    }
    pub fn outbound_queue() -> usize {
        1024
    }
    pub fn max_connections() -> usize {
        18_000
    }
    pub fn header_timeout_secs() -> u64 {
        10
    }
    pub fn upgrade_timeout_secs() -> u64 {
        10
    }
    pub fn max_frame_bytes() -> usize {
        64 * 1024
    }
    pub fn rate_per_sec() -> u32 {
        20
    }
    pub fn rate_burst() -> u32 {
        40
    }
    pub fn notify_channel() -> String {
        "pgchat".into()
    }
    pub fn log_format() -> String {
        "text".into()
    }
    pub fn typing_ttl_ms() -> u64 {
        5000
    }
}

impl Config {
    /// Reads the process environment and validates it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_pairs(std::env::vars())
    }

    /// Reads `NAME=value` pairs (as the environment would give them) and validates them.
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let pairs = pairs.into_iter().map(|(k, v)| (k.into(), v.into()));
        let config: Config = envy::from_iter(pairs).map_err(|e| ConfigError::Env(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.jwt_keys()?;
        self.database_url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| ConfigError::BadDatabaseUrl(e.to_string()))?;
        if let Some(url) = &self.admin_database_url {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::BadAdminDatabaseUrl(e.to_string()))?;
        }
        crate::auth::ClaimPath::parse(&self.jwt_role_claim_key)
            .map_err(|_| ConfigError::BadRoleClaimKey(self.jwt_role_claim_key.clone()))?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::BadLogFormat(self.log_format.clone()));
        }
        let channel_ok = !self.notify_channel.is_empty()
            && self.notify_channel.len() <= 63
            && self.notify_channel != "pgrst"
            && self
                .notify_channel
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !channel_ok {
            return Err(ConfigError::BadChannel);
        }
        self.trusted_proxies()?;
        if !(1..=5000).contains(&self.typing_ttl_ms) {
            return Err(ConfigError::BadTypingTtl);
        }
        for (name, value) in [
            ("HEADER_TIMEOUT_SECS", self.header_timeout_secs),
            ("UPGRADE_TIMEOUT_SECS", self.upgrade_timeout_secs),
            (
                "MAX_UNAUTHENTICATED",
                self.max_unauthenticated.unwrap_or(1) as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(())
    }

    pub fn trusted_proxies(&self) -> Result<crate::admission::TrustedProxies, ConfigError> {
        let list = self.trusted_proxies.as_deref().unwrap_or("");
        Ok(crate::admission::TrustedProxies::parse(list)?)
    }

    /// `MAX_UNAUTHENTICATED`, or a quarter of `MAX_CONNECTIONS`; never more than that.
    pub fn max_unauthenticated(&self) -> usize {
        self.max_unauthenticated
            .unwrap_or(self.max_connections / 4)
            .clamp(1, self.max_connections.max(1))
    }

    /// The keys tokens are verified with (`auth::secret`: a plain secret, a JWK, a JWK
    /// Set, or `@path` of a file holding one).
    pub fn jwt_keys(&self) -> Result<crate::auth::KeySet, ConfigError> {
        crate::auth::key_set(self.jwt_secret.as_deref(), self.jwt_secret_is_base64)
    }

    /// The key SQL signs tokens with (`api.login`, `api.signup`) and `pgchat token`
    /// uses by default: the plain secret, or the first `oct` key that allows HS256.
    pub fn hmac_signing_key(&self) -> Result<Option<crate::auth::HmacKey>, ConfigError> {
        Ok(self.jwt_keys()?.hmac_signing_key())
    }

    pub fn admin_url(&self) -> &str {
        self.admin_database_url
            .as_deref()
            .unwrap_or(&self.database_url)
    }

    pub fn allowed_origins(&self) -> Option<Vec<String>> {
        let raw = self.allowed_origins.as_deref()?.trim();
        if raw.is_empty() || raw == "*" {
            return None;
        }
        Some(raw.split(',').map(|s| s.trim().to_string()).collect())
    }

    /// `DB_USER_CONCURRENCY`, or its default: a quarter of the pool, at least 1, so
    /// that one user's slow calls leave most connections to everyone else.
    pub fn user_concurrency(&self) -> usize {
        self.db_user_concurrency
            .unwrap_or((self.db_pool_size / 4).max(1))
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(self.auth_timeout_secs)
    }
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
    pub fn upgrade_timeout(&self) -> Duration {
        Duration::from_secs(self.upgrade_timeout_secs)
    }
    pub fn typing_ttl(&self) -> Duration {
        Duration::from_millis(self.typing_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn plan_names_work_and_defaults_apply() {
        let c = Config::from_pairs([
            ("DATABASE_URL", "postgres://u@localhost/db"),
            ("JWT_SECRET", SECRET),
            ("WS_PORT", "4000"),
        ])
        .unwrap();
        assert_eq!(c.ws_port, 4000);
        assert_eq!(c.message_max_chars, 5000);
        assert_eq!(c.jwt_role_claim_key, ".role");
        assert_eq!(c.notify_channel, "pgchat");
        assert_eq!(
            c.user_concurrency(),
            4,
            "a quarter of the 16-connection pool"
        );
    }

    #[test]
    fn user_concurrency_defaults_to_a_quarter_of_the_pool_and_0_turns_it_off() {
        let with = |pairs: Vec<(&str, &str)>| {
            let mut all = vec![("JWT_SECRET", SECRET)];
            all.extend(pairs);
            Config::from_pairs(all).unwrap().user_concurrency()
        };
        assert_eq!(with(vec![("DB_POOL_SIZE", "3")]), 1, "never below 1");
        assert_eq!(with(vec![("DB_POOL_SIZE", "40")]), 10);
        assert_eq!(with(vec![("DB_USER_CONCURRENCY", "0")]), 0);
        assert_eq!(with(vec![("DB_USER_CONCURRENCY", "3")]), 3);
    }

    #[test]
    fn refuses_missing_short_and_bad_values() {
        let err = |pairs: Vec<(&str, &str)>| Config::from_pairs(pairs).unwrap_err().to_string();
        assert!(err(vec![]).contains("JWT_SECRET is not set"));
        assert!(err(vec![("JWT_SECRET", "short")]).contains("at least 32"));
        assert!(
            err(vec![("JWT_SECRET", SECRET), ("DATABASE_URL", "nope://x y")])
                .contains("DATABASE_URL")
        );
        assert!(err(vec![("JWT_SECRET", SECRET), ("LOG_FORMAT", "xml")]).contains("LOG_FORMAT"));
        assert!(
            err(vec![("JWT_SECRET", SECRET), ("NOTIFY_CHANNEL", "pgrst")])
                .contains("NOTIFY_CHANNEL")
        );
        assert!(err(vec![
            ("JWT_SECRET", SECRET),
            ("TRUSTED_PROXIES", "10.0.0.0/40")
        ])
        .contains("TRUSTED_PROXIES"));
        assert!(
            err(vec![("JWT_SECRET", SECRET), ("UPGRADE_TIMEOUT_SECS", "0")])
                .contains("UPGRADE_TIMEOUT_SECS")
        );
    }

    #[test]
    fn unauthenticated_cap_defaults_to_a_quarter() {
        let with = |pairs: Vec<(&str, &str)>| {
            let mut all = vec![("JWT_SECRET", SECRET)];
            all.extend(pairs);
            Config::from_pairs(all).unwrap()
        };
        let c = with(vec![]);
        assert_eq!(c.max_unauthenticated(), 4500);
        assert_eq!((c.header_timeout_secs, c.upgrade_timeout_secs), (10, 10));
        assert_eq!(c.max_connections_per_ip, 0);
        assert_eq!(
            with(vec![("MAX_CONNECTIONS", "60")]).max_unauthenticated(),
            15
        );
        assert_eq!(
            with(vec![("MAX_CONNECTIONS", "3")]).max_unauthenticated(),
            1
        );
        let c = with(vec![
            ("MAX_CONNECTIONS", "60"),
            ("MAX_UNAUTHENTICATED", "100"),
        ]);
        assert_eq!(c.max_unauthenticated(), 60);
    }

    #[test]
    fn base64_secret_accepts_url_safe_alphabet() {
        // 33 bytes of 0xfb encode with '+'/'/' in the standard alphabet, '-'/'_' in URL-safe.
        use base64::Engine;
        let raw = vec![0xfbu8; 33];
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        let c = Config::from_pairs([
            ("JWT_SECRET", url_safe.as_str()),
            ("JWT_SECRET_IS_BASE64", "true"),
        ])
        .unwrap();
        let key = c.hmac_signing_key().unwrap().unwrap();
        assert_eq!((key.kid.as_str(), key.secret), ("", raw));
    }
}
