//! The caps and timeouts derived from the settings: defaults that depend on another
//! setting (a quarter of the pool, a quarter of the connections), and durations.

use std::time::Duration;

use super::Config;

impl Config {
    /// `MAX_UNAUTHENTICATED`, or a quarter of `MAX_CONNECTIONS`; never more than that.
    pub fn max_unauthenticated(&self) -> usize {
        self.max_unauthenticated
            .unwrap_or(self.max_connections / 4)
            .clamp(1, self.max_connections.max(1))
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
