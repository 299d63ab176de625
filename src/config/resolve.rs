//! Settings that resolve to richer values: the keys tokens are verified and signed with,
//! the admin URL, the allowed origins and the trusted proxies.

use super::{Config, ConfigError};

impl Config {
    pub fn trusted_proxies(&self) -> Result<crate::admission::TrustedProxies, ConfigError> {
        let list = self.trusted_proxies.as_deref().unwrap_or("");
        Ok(crate::admission::TrustedProxies::parse(list)?)
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
}
