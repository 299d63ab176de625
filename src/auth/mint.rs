//! Minting tokens with the configured secret: `pgchat token`, tests and the benchmark.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
#[error("could not sign token: {0}")]
pub struct MintError(#[from] jsonwebtoken::errors::Error);

/// Signs `claims` with HS256, adding `iat` and, when `ttl_secs` is given, `exp`.
pub fn mint_token(
    secret: &[u8],
    mut claims: Map<String, Value>,
    ttl_secs: Option<i64>,
) -> Result<String, MintError> {
    let now = super::unix_now();
    claims.entry("iat").or_insert(now.into());
    if let Some(ttl) = ttl_secs {
        claims.insert("exp".into(), (now + ttl).into());
    }
    Ok(encode(
        &Header::default(),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret),
    )?)
}
