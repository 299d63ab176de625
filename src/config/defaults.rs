//! The value of each setting left unset (serde's `default = "defaults::…"`).

use std::net::{IpAddr, Ipv4Addr};

pub(super) fn database_url() -> String {
    "postgres://authenticator@127.0.0.1:5432/pgchat".into()
}
pub(super) fn role_claim_key() -> String {
    ".role".into()
}
pub(super) fn ws_host() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
pub(super) fn ws_port() -> u16 {
    3001
}
pub(super) fn message_max_chars() -> usize {
    5000
}
pub(super) fn db_pool_size() -> usize {
    16
}
pub(super) fn db_timeout_ms() -> u64 {
    5000
}
pub(super) fn auth_timeout_secs() -> u64 {
    10
}
pub(super) fn ping_interval_secs() -> u64 {
    25
}
pub(super) fn idle_timeout_secs() -> u64 {
    75
}
pub(super) fn outbound_queue() -> usize {
    1024
}
pub(super) fn max_connections() -> usize {
    18_000
}
pub(super) fn header_timeout_secs() -> u64 {
    10
}
pub(super) fn upgrade_timeout_secs() -> u64 {
    10
}
pub(super) fn max_frame_bytes() -> usize {
    64 * 1024
}
pub(super) fn rate_per_sec() -> u32 {
    20
}
pub(super) fn rate_burst() -> u32 {
    40
}
pub(super) fn notify_channel() -> String {
    "pgchat".into()
}
pub(super) fn log_format() -> String {
    "text".into()
}
pub(super) fn typing_ttl_ms() -> u64 {
    5000
}
