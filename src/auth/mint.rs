//! Minting tokens: `pgchat token`, tests and the benchmark. With the HMAC key of
//! `JWT_SECRET`, or with a private JWK (`pgchat token --key @private.jwk`), signed with
//! ring, which jsonwebtoken itself uses.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use serde_json::{json, Map, Value};

use super::jwk::{bytes, text, JwkError};
use super::HmacKey;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("could not sign token: {0}")]
    Sign(String),
    #[error("the private key is not valid JSON: {0}")]
    Json(String),
    #[error("the private key: {0}")]
    Key(#[from] JwkError),
    #[error("the private key has no `d`: it is a public key")]
    PublicOnly,
    #[error("the private key was refused: {0}")]
    Rejected(String),
}

/// Signs `claims` with HS256, adding `iat` and, when `ttl_secs` is given, `exp`.
pub fn mint_token(
    secret: &[u8],
    claims: Map<String, Value>,
    ttl_secs: Option<i64>,
) -> Result<String, MintError> {
    Signer::hmac(&HmacKey {
        kid: String::new(),
        secret: secret.to_vec(),
    })
    .sign(claims, ttl_secs)
}

/// A key and algorithm to sign tokens with; the header names its `kid`, if any.
pub struct Signer {
    alg: &'static str,
    kid: Option<String>,
    key: Key,
}

enum Key {
    Hmac(ring::hmac::Key),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    /// HS256 with the key SQL signs with.
    pub fn hmac(key: &HmacKey) -> Signer {
        Signer {
            alg: "HS256",
            kid: Some(key.kid.clone()).filter(|k| !k.is_empty()),
            key: Key::Hmac(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key.secret)),
        }
    }

    /// A private JWK: RSA (RS256 unless its `alg` says RS384/RS512), EC P-256 (ES256)
    /// or P-384 (ES384), OKP Ed25519 (EdDSA), or `oct` (HS256/384/512).
    pub fn from_jwk(json: &[u8]) -> Result<Signer, MintError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| MintError::Json(e.to_string()))?;
        let jwk = value.as_object().ok_or(JwkError::NotAnObject)?;
        let alg = text(jwk, "alg")?;
        let kid = text(jwk, "kid")?.map(str::to_owned);
        let mismatch = |fits: &str| JwkError::AlgMismatch {
            alg: alg.unwrap_or_default().into(),
            fits: fits.into(),
        };
        let rejected = |e: ring::error::KeyRejected| MintError::Rejected(e.to_string());
        let kty = text(jwk, "kty")?.ok_or(JwkError::MissingKty)?;
        if kty != "oct" && !jwk.contains_key("d") {
            return Err(MintError::PublicOnly);
        }
        let (alg, key) = match kty {
            "oct" => {
                let (alg, digest) = match alg.unwrap_or("HS256") {
                    "HS256" => ("HS256", ring::hmac::HMAC_SHA256),
                    "HS384" => ("HS384", ring::hmac::HMAC_SHA384),
                    "HS512" => ("HS512", ring::hmac::HMAC_SHA512),
                    _ => return Err(mismatch("HS256, HS384, HS512").into()),
                };
                (
                    alg,
                    Key::Hmac(ring::hmac::Key::new(digest, &bytes(jwk, "k")?)),
                )
            }
            "RSA" => {
                let (alg, encoding): (_, &'static dyn signature::RsaEncoding) =
                    match alg.unwrap_or("RS256") {
                        "RS256" => ("RS256", &signature::RSA_PKCS1_SHA256),
                        "RS384" => ("RS384", &signature::RSA_PKCS1_SHA384),
                        "RS512" => ("RS512", &signature::RSA_PKCS1_SHA512),
                        _ => return Err(mismatch("RS256, RS384, RS512").into()),
                    };
                let part = |name| bytes(jwk, name);
                let components = ring::rsa::KeyPairComponents {
                    public_key: ring::rsa::PublicKeyComponents {
                        n: part("n")?,
                        e: part("e")?,
                    },
                    d: part("d")?,
                    p: part("p")?,
                    q: part("q")?,
                    dP: part("dp")?,
                    dQ: part("dq")?,
                    qInv: part("qi")?,
                };
                let pair = RsaKeyPair::from_components(&components).map_err(rejected)?;
                (alg, Key::Rsa(pair, encoding))
            }
            "EC" => {
                let (name, ring_alg) = match text(jwk, "crv")?.ok_or(JwkError::Missing("crv"))? {
                    "P-256" => ("ES256", &signature::ECDSA_P256_SHA256_FIXED_SIGNING),
                    "P-384" => ("ES384", &signature::ECDSA_P384_SHA384_FIXED_SIGNING),
                    other => return Err(JwkError::UnknownCurve(other.into()).into()),
                };
                if alg.is_some_and(|a| a != name) {
                    return Err(mismatch(name).into());
                }
                let mut point = vec![0x04];
                point.extend(bytes(jwk, "x")?);
                point.extend(bytes(jwk, "y")?);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    ring_alg,
                    &bytes(jwk, "d")?,
                    &point,
                    &SystemRandom::new(),
                )
                .map_err(rejected)?;
                (name, Key::Ecdsa(pair))
            }
            "OKP" => {
                match text(jwk, "crv")?.ok_or(JwkError::Missing("crv"))? {
                    "Ed25519" => {}
                    other => return Err(JwkError::UnknownCurve(other.into()).into()),
                }
                if alg.is_some_and(|a| a != "EdDSA") {
                    return Err(mismatch("EdDSA").into());
                }
                let pair =
                    Ed25519KeyPair::from_seed_and_public_key(&bytes(jwk, "d")?, &bytes(jwk, "x")?)
                        .map_err(rejected)?;
                ("EdDSA", Key::Ed25519(pair))
            }
            other => return Err(MintError::Rejected(format!("unknown kty `{other}`"))),
        };
        Ok(Signer { alg, kid, key })
    }

    /// The algorithm the header names.
    pub fn alg(&self) -> &'static str {
        self.alg
    }

    /// Signs `claims`, adding `iat` and, when `ttl_secs` is given, `exp`.
    pub fn sign(
        &self,
        mut claims: Map<String, Value>,
        ttl_secs: Option<i64>,
    ) -> Result<String, MintError> {
        let now = super::unix_now();
        claims.entry("iat").or_insert(now.into());
        if let Some(ttl) = ttl_secs {
            claims.insert("exp".into(), (now + ttl).into());
        }
        let mut header = json!({"typ": "JWT", "alg": self.alg});
        if let Some(kid) = &self.kid {
            header["kid"] = kid.as_str().into();
        }
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = self.signature(message.as_bytes())?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn signature(&self, message: &[u8]) -> Result<Vec<u8>, MintError> {
        let failed = |e: ring::error::Unspecified| MintError::Sign(e.to_string());
        Ok(match &self.key {
            Key::Hmac(key) => ring::hmac::sign(key, message).as_ref().to_vec(),
            Key::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), message, &mut out)
                    .map_err(failed)?;
                out
            }
            Key::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Key::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        })
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
