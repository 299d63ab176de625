//! Why the daemon refuses to start.

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
