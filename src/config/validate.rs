//! What makes the daemon refuse to start: every setting is checked once, at start, so a
//! mistake is one clear line then rather than a failure at the first connection.

use super::{Config, ConfigError};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
}
