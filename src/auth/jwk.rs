//! One JSON Web Key (RFC 7517), read the way PostgREST's JWT library reads it.
//!
//! PostgREST keeps a key it cannot use for signatures (an unknown `kty` or `alg`, or
//! `"use": "enc"`) in its set and never matches a token to it: so do we, which lets a
//! Keycloak or Auth0 key set with encryption keys load. A key of a supported type that
//! is malformed refuses start-up, and so does a key PostgREST would use but pgchat
//! cannot (EC P-521, Ed448, RSA under 2048 bits): accepting a token PostgREST refuses,
//! or the reverse, must never happen silently.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Why a JWK cannot be used. Rendered after "JWT_SECRET: key N: ".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkError {
    #[error("is not a JSON object")]
    NotAnObject,
    #[error("no `kty`")]
    MissingKty,
    #[error("no `{0}`")]
    Missing(&'static str),
    #[error("`{0}` is not a string")]
    NotAString(&'static str),
    #[error("`{0}` is not base64url without padding")]
    BadBase64(&'static str),
    #[error("`{0}` must not be set for kty {1}")]
    Unexpected(&'static str, &'static str),
    #[error("`use` must be `sig` or `enc`, not `{0}`")]
    BadUse(String),
    #[error("alg {alg} does not fit this key ({fits})")]
    AlgMismatch { alg: String, fits: String },
    #[error("unknown curve `{0}`")]
    UnknownCurve(String),
    #[error("`{0}` has the wrong length for its curve")]
    BadLength(&'static str),
    #[error("uses {0}, which PostgREST accepts but pgchat does not support")]
    Unsupported(String),
    #[error("`k` is empty")]
    EmptySecret,
}

/// A key tokens may be verified with.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The algorithms a token signed with this key may name: the JWK's `alg` alone when
    /// it has one, else every algorithm of its type (one per curve for EC).
    pub algs: Vec<Algorithm>,
    pub key: DecodingKey,
    /// The raw key of an `oct` JWK (or of a plain secret), which SQL may sign with.
    pub hmac: Option<Vec<u8>>,
}

/// What one member of a key set turns into.
pub enum Parsed {
    Key(VerifyKey),
    /// A key for something other than signatures, or of a type PostgREST ignores.
    Ignored,
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// `alg` values PostgREST's library knows that never verify a signature: keys naming
/// them are for encryption. A JWK naming an `alg` it does not know at all is ignored too.
const NOT_FOR_SIGNATURES: &[&str] = &[
    "none",
    "RSA1_5",
    "RSA-OAEP",
    "RSA-OAEP-256",
    "A128KW",
    "A192KW",
    "A256KW",
];

/// Signature algorithms PostgREST's library knows and pgchat does not verify.
const UNSUPPORTED_SIGNATURES: &[&str] = &["ES512"];

/// The token algorithms pgchat verifies, by their JOSE names. `none` and the RSA-PSS
/// algorithms are not among them: PostgREST refuses those tokens too.
pub fn signature_alg(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// One JWK: a member of a JWK Set, or `JWT_SECRET` itself.
pub fn parse(value: &Value) -> Result<Parsed, JwkError> {
    let jwk = value.as_object().ok_or(JwkError::NotAnObject)?;
    let kty = match jwk.get("kty") {
        None | Some(Value::Null) => return Err(JwkError::MissingKty),
        Some(Value::String(s)) if matches!(s.as_str(), "oct" | "RSA" | "EC" | "OKP") => s.clone(),
        Some(_) => return Ok(Parsed::Ignored),
    };
    let alg = match jwk.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if NOT_FOR_SIGNATURES.contains(&a.as_str()) => {
            return Ok(Parsed::Ignored)
        }
        Some(Value::String(a))
            if signature_alg(a).is_some() || UNSUPPORTED_SIGNATURES.contains(&a.as_str()) =>
        {
            Some(a.as_str())
        }
        Some(_) => return Ok(Parsed::Ignored),
    };
    let kid = text(jwk, "kid")?.map(str::to_owned);
    match text(jwk, "use")? {
        None | Some("sig") => {}
        Some("enc") => return Ok(Parsed::Ignored),
        Some(other) => return Err(JwkError::BadUse(other.into())),
    }
    let (fits, key, hmac) = match kty.as_str() {
        "oct" => oct(jwk)?,
        "RSA" => rsa(jwk)?,
        "EC" => ec(jwk)?,
        _ => okp(jwk)?,
    };
    let algs = match alg {
        None => fits,
        Some(name) => match signature_alg(name) {
            Some(a) if fits.contains(&a) => vec![a],
            _ => {
                return Err(JwkError::AlgMismatch {
                    alg: name.into(),
                    fits: names(&fits),
                })
            }
        },
    };
    Ok(Parsed::Key(VerifyKey {
        kid,
        algs,
        key,
        hmac,
    }))
}

type KeyParts = (Vec<Algorithm>, DecodingKey, Option<Vec<u8>>);

fn oct(jwk: &Map<String, Value>) -> Result<KeyParts, JwkError> {
    forbid(
        jwk,
        &["n", "e", "d", "p", "q", "dp", "dq", "qi", "crv", "x", "y"],
        "oct",
    )?;
    let k = bytes(jwk, "k")?;
    if k.is_empty() {
        return Err(JwkError::EmptySecret);
    }
    Ok((HMAC.to_vec(), DecodingKey::from_secret(&k), Some(k)))
}

fn rsa(jwk: &Map<String, Value>) -> Result<KeyParts, JwkError> {
    forbid(jwk, &["k", "crv", "x", "y"], "RSA")?;
    let n = bytes(jwk, "n")?;
    let e = bytes(jwk, "e")?;
    // ring verifies RSA signatures of 2048 to 8192 bits only.
    let bits = n
        .iter()
        .position(|&b| b != 0)
        .map_or(0, |i| (n.len() - i) * 8 - n[i].leading_zeros() as usize);
    if bits < 2048 {
        return Err(JwkError::Unsupported(format!("an RSA key of {bits} bits")));
    }
    if e.iter().all(|&b| b == 0) {
        return Err(JwkError::Missing("e"));
    }
    Ok((
        RSA.to_vec(),
        DecodingKey::from_rsa_raw_components(&n, &e),
        None,
    ))
}

fn ec(jwk: &Map<String, Value>) -> Result<KeyParts, JwkError> {
    forbid(jwk, &["k", "n", "e", "p", "q", "dp", "dq", "qi"], "EC")?;
    let (alg, size) = match text(jwk, "crv")?.ok_or(JwkError::Missing("crv"))? {
        "P-256" => (Algorithm::ES256, 32),
        "P-384" => (Algorithm::ES384, 48),
        "P-521" => return Err(JwkError::Unsupported("curve P-521 (ES512)".into())),
        other => return Err(JwkError::UnknownCurve(other.into())),
    };
    let x = bytes(jwk, "x")?;
    let y = bytes(jwk, "y")?;
    for (name, part) in [("x", &x), ("y", &y)] {
        if part.len() != size {
            return Err(JwkError::BadLength(name));
        }
    }
    // The uncompressed point, as ring takes it.
    let mut point = Vec::with_capacity(1 + 2 * size);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok((vec![alg], DecodingKey::from_ec_der(&point), None))
}

fn okp(jwk: &Map<String, Value>) -> Result<KeyParts, JwkError> {
    forbid(
        jwk,
        &["k", "n", "e", "p", "q", "dp", "dq", "qi", "y"],
        "OKP",
    )?;
    match text(jwk, "crv")?.ok_or(JwkError::Missing("crv"))? {
        "Ed25519" => {}
        "Ed448" => return Err(JwkError::Unsupported("curve Ed448".into())),
        other => return Err(JwkError::UnknownCurve(other.into())),
    }
    let x = bytes(jwk, "x")?;
    if x.len() != 32 {
        return Err(JwkError::BadLength("x"));
    }
    Ok((vec![Algorithm::EdDSA], DecodingKey::from_ed_der(&x), None))
}

/// A string member, if present.
pub(super) fn text<'a>(
    jwk: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, JwkError> {
    match jwk.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwkError::NotAString(name)),
    }
}

/// A required base64url member, decoded.
pub(super) fn bytes(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    let value = text(jwk, name)?.ok_or(JwkError::Missing(name))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| JwkError::BadBase64(name))
}

fn forbid(
    jwk: &Map<String, Value>,
    names: &[&'static str],
    kty: &'static str,
) -> Result<(), JwkError> {
    match names.iter().find(|n| jwk.contains_key(**n)) {
        Some(name) => Err(JwkError::Unexpected(name, kty)),
        None => Ok(()),
    }
}

fn names(algs: &[Algorithm]) -> String {
    algs.iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
