//! JWT verification with PostgREST's rules (POSTGREST.md §1), and minting for tests.
//!
//! A verified token becomes an [`Identity`]: the role to `SET LOCAL ROLE` to and the
//! claims JSON to hand SQL as `request.jwt.claims`, exactly as PostgREST would.

mod claim_path;
mod jwk;
mod keys;
mod mint;
mod secret;

pub use claim_path::{ClaimPath, ClaimPathError};
pub use jwk::JwkError;
pub use keys::{HmacKey, KeySet, KeySetError};
pub use mint::{mint_token, MintError, Signer};
pub use secret::key_set;

use serde_json::Value;

use crate::config::{Config, ConfigError};

/// PostgREST allows 30 seconds of clock skew on every time claim.
const LEEWAY_SECS: i64 = 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("anonymous access is disabled")]
    AnonDisabled,
}

impl AuthError {
    /// The protocol error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Expired => "token_expired",
            AuthError::Invalid(_) | AuthError::AnonDisabled => "invalid_token",
        }
    }
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub role: String,
    /// The token's claims with top-level `role` set to the resolved role.
    pub claims_json: String,
    /// `sub` as a user id, when it is one.
    pub user_id: Option<i64>,
    pub name: Option<String>,
    /// Seconds since the epoch; `None` when the token never expires.
    pub exp: Option<i64>,
}

pub struct Verifier {
    keys: KeySet,
    audience: Option<String>,
    role_path: ClaimPath,
    anon_role: Option<String>,
}

impl Verifier {
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let keys = config.jwt_keys()?;
        let role_path = ClaimPath::parse(&config.jwt_role_claim_key)
            .map_err(|_| ConfigError::BadRoleClaimKey(config.jwt_role_claim_key.clone()))?;
        Ok(Self {
            keys,
            audience: config.jwt_aud.clone(),
            role_path,
            anon_role: config.db_anon_role.clone(),
        })
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        // Signature and algorithm (keys.rs); then the time claims and the audience with
        // PostgREST's leeway and its lenient handling of a missing or empty `aud`.
        let mut claims = self.keys.verify(token.trim())?;
        // Saturating: a time claim near i64's ends (or 1e300, clamped there) must not
        // wrap around into the past or the future.
        let exp = time_claim(&claims, "exp")?;
        if let Some(exp) = exp {
            if now > exp.saturating_add(LEEWAY_SECS) {
                return Err(AuthError::Expired);
            }
        }
        if let Some(nbf) = time_claim(&claims, "nbf")? {
            if now < nbf.saturating_sub(LEEWAY_SECS) {
                return Err(AuthError::Invalid("token not yet valid (nbf)".into()));
            }
        }
        if let Some(iat) = time_claim(&claims, "iat")? {
            if now < iat.saturating_sub(LEEWAY_SECS) {
                return Err(AuthError::Invalid(
                    "token issued in the future (iat)".into(),
                ));
            }
        }
        self.check_audience(&claims)?;

        let role = match self.role_path.role(&claims) {
            Some(role) => role,
            None => self.anon_role.clone().ok_or(AuthError::AnonDisabled)?,
        };
        claims["role"] = Value::String(role.clone());
        let user_id = match claims.get("sub") {
            Some(Value::String(s)) => s.parse().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        let name = claims
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Identity {
            role,
            claims_json: claims.to_string(),
            user_id,
            name,
            exp,
        })
    }

    fn check_audience(&self, claims: &Value) -> Result<(), AuthError> {
        let Some(expected) = &self.audience else {
            return Ok(());
        };
        let ok = match claims.get("aud") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty() || s == expected,
            Some(Value::Array(items)) => {
                items.is_empty() || items.iter().any(|a| a.as_str() == Some(expected))
            }
            Some(_) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(AuthError::Invalid("audience does not match".into()))
        }
    }
}

/// A time claim as whole seconds; a present but non-numeric value makes the token
/// invalid. PostgREST takes any JSON number: a fraction is rounded down, and a value
/// beyond i64 (a u64, 1e300) is clamped to i64's range (`as` saturates), so that
/// comparisons with it keep their sense.
fn time_claim(claims: &Value, name: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f.floor() as i64))
            .map(Some)
            .ok_or_else(|| AuthError::Invalid(format!("`{name}` is not a number"))),
        Some(_) => Err(AuthError::Invalid(format!("`{name}` is not a number"))),
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
