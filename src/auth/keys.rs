//! The keys tokens are verified with, from `JWT_SECRET`, and the signature check.
//!
//! Like PostgREST, `JWT_SECRET` is a plain secret (one HS256 key), a JSON Web Key, or a
//! JWK Set (`{"keys": [...]}`). A token names its algorithm and may name a key (`kid`);
//! the candidate keys are those that accept that algorithm and, when the token has a
//! `kid`, carry that `kid`. The token is valid when one candidate verifies it. So a
//! token with a `kid` is never tried against a key without one, not even a plain
//! secret, and an HS256 token can never be checked against an RSA key's bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use super::jwk::{self, JwkError, Parsed, VerifyKey};
use super::AuthError;

/// Why `JWT_SECRET` holds no usable key set. One line each, after "JWT_SECRET: ".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeySetError {
    #[error("starts with `{{` but is not valid JSON ({0})")]
    BadJson(String),
    #[error("a JSON object that is neither a JWK (no `kty`) nor a JWK Set (no `keys`)")]
    NotAKey,
    #[error("`keys` of the JWK Set is not an array")]
    KeysNotAnArray,
    #[error("key {index}{kid}: {error}")]
    BadKey {
        index: usize,
        kid: String,
        error: JwkError,
    },
    #[error("the key set has no key that verifies signatures")]
    NoUsableKey,
}

/// A key PostgREST's tokens may have been signed with, with the rules for choosing it.
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

/// The key SQL signs tokens with (HS256): the plain secret, or an `oct` JWK.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacKey {
    /// Empty for a plain secret or a JWK without `kid`.
    pub kid: String,
    pub secret: Vec<u8>,
}

impl KeySet {
    /// A plain secret: one HS256 key without `kid`, as PostgREST makes of it.
    pub fn plain(secret: &[u8]) -> KeySet {
        KeySet {
            keys: vec![VerifyKey {
                kid: None,
                algs: vec![Algorithm::HS256],
                key: jsonwebtoken::DecodingKey::from_secret(secret),
                hmac: Some(secret.to_vec()),
            }],
        }
    }

    /// Whether `secret` is meant as a JWK or JWK Set rather than a plain secret.
    pub fn is_json(secret: &[u8]) -> bool {
        secret.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    }

    /// Reads a JWK or a JWK Set.
    pub fn from_json(secret: &[u8]) -> Result<KeySet, KeySetError> {
        let value: Value =
            serde_json::from_slice(secret).map_err(|e| KeySetError::BadJson(e.to_string()))?;
        let members: Vec<&Value> = match value.get("keys") {
            Some(Value::Array(keys)) => keys.iter().collect(),
            Some(_) => return Err(KeySetError::KeysNotAnArray),
            None if value.get("kty").is_some() => vec![&value],
            None => return Err(KeySetError::NotAKey),
        };
        let mut keys = Vec::new();
        for (index, member) in members.into_iter().enumerate() {
            match jwk::parse(member) {
                Ok(Parsed::Key(key)) => keys.push(key),
                Ok(Parsed::Ignored) => {}
                Err(error) => {
                    let kid = member
                        .get("kid")
                        .and_then(Value::as_str)
                        .map(|k| format!(" (kid `{k}`)"))
                        .unwrap_or_default();
                    return Err(KeySetError::BadKey { index, kid, error });
                }
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// The first key SQL can sign HS256 tokens with, if any.
    pub fn hmac_signing_key(&self) -> Option<HmacKey> {
        self.keys.iter().find_map(|k| {
            let secret = k.hmac.as_ref()?;
            k.algs.contains(&Algorithm::HS256).then(|| HmacKey {
                kid: k.kid.clone().unwrap_or_default(),
                secret: secret.clone(),
            })
        })
    }

    /// Checks the token's form and signature; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Value, AuthError> {
        let mut parts = token.split('.');
        let (Some(head), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("a token has three parts"));
        };
        let header: Header = decode_part(head, "header")?;
        let alg = jwk::signature_alg(&header.alg)
            .ok_or_else(|| AuthError::Invalid(format!("algorithm `{}` is refused", header.alg)))?;
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| k.algs.contains(&alg))
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::Invalid(match &header.kid {
                Some(kid) => format!("no key with kid `{kid}` accepts {}", header.alg),
                None => format!("no key accepts {}", header.alg),
            }));
        }
        let message = &token[..head.len() + 1 + body.len()];
        // Only keys of the token's algorithm family get here: jsonwebtoken would panic on
        // an HMAC check with an RSA key.
        let verified = candidates.iter().any(|k| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &k.key, alg)
                .unwrap_or(false)
        });
        if !verified {
            return Err(invalid("signature does not verify"));
        }
        let claims: Value = decode_part(body, "claims")?;
        if !claims.is_object() {
            return Err(invalid("claims are not an object"));
        }
        Ok(claims)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Invalid(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| AuthError::Invalid(format!("{what}: {e}")))
}

fn invalid(why: &str) -> AuthError {
    AuthError::Invalid(why.into())
}

#[cfg(test)]
mod tests;
