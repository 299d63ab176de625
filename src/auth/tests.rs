//! The token rules of PostgREST (time claims, audience, role, anon), each checked with a
//! plain HS256 secret, an RS256 JWK Set and an ES256 JWK; and the corner cases of
//! numeric time claims.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_800_000_000;

pub(super) const RSA_1: &str = include_str!("../../tests/fixtures/keys/rsa-1.jwk");
pub(super) const RSA_1_PEM: &str = include_str!("../../tests/fixtures/keys/rsa-1.pem");
pub(super) const RSA_2: &str = include_str!("../../tests/fixtures/keys/rsa-2.jwk");
pub(super) const EC_P256: &str = include_str!("../../tests/fixtures/keys/ec-p256.jwk");
pub(super) const EC_P256_PEM: &str = include_str!("../../tests/fixtures/keys/ec-p256.pem");

/// A private JWK without its private members.
pub(super) fn public(private_jwk: &str) -> Value {
    let mut jwk: Value = serde_json::from_str(private_jwk).unwrap();
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        jwk.as_object_mut().unwrap().remove(member);
    }
    jwk
}

/// Signs a payload written as JSON text (numbers keep their exact spelling) with
/// jsonwebtoken, independently of this module's own minting.
pub(super) fn sign_raw(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    payload: &str,
) -> String {
    let mut header = json!({"alg": format!("{alg:?}"), "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
    format!("{message}.{signature}")
}

/// One way of configuring keys: the `JWT_SECRET` value and how its tokens are signed.
struct Kit {
    name: &'static str,
    secret: String,
    alg: Algorithm,
    kid: Option<&'static str>,
    key: EncodingKey,
}

fn kits() -> Vec<Kit> {
    let rs256_set = json!({"keys": [public(RSA_2), public(RSA_1)]});
    vec![
        Kit {
            name: "HS256 secret",
            secret: SECRET.into(),
            alg: Algorithm::HS256,
            kid: None,
            key: EncodingKey::from_secret(SECRET.as_bytes()),
        },
        Kit {
            name: "RS256 set",
            secret: rs256_set.to_string(),
            alg: Algorithm::RS256,
            kid: Some("rsa-1"),
            key: EncodingKey::from_rsa_pem(RSA_1_PEM.as_bytes()).unwrap(),
        },
        Kit {
            name: "ES256 key",
            secret: public(EC_P256).to_string(),
            alg: Algorithm::ES256,
            kid: None,
            key: EncodingKey::from_ec_pem(EC_P256_PEM.as_bytes()).unwrap(),
        },
    ]
}

impl Kit {
    fn verifier(&self, extra: &[(&str, &str)]) -> Verifier {
        let mut pairs = vec![("JWT_SECRET", self.secret.as_str())];
        pairs.extend_from_slice(extra);
        Verifier::new(&Config::from_pairs(pairs).unwrap()).unwrap()
    }

    fn token(&self, payload: &str) -> String {
        sign_raw(self.alg, self.kid, &self.key, payload)
    }

    fn verify(&self, claims: Value) -> Result<Identity, AuthError> {
        self.verify_with(&[], claims)
    }

    fn verify_with(&self, extra: &[(&str, &str)], claims: Value) -> Result<Identity, AuthError> {
        self.verifier(extra)
            .verify(&self.token(&claims.to_string()), NOW)
    }
}

fn user(extra: Value) -> Value {
    let mut claims = json!({"sub": "1", "role": "authenticated"});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

#[test]
fn exp_has_thirty_seconds_of_leeway() {
    for kit in kits() {
        let r = kit.verify(user(json!({"exp": NOW - 35})));
        assert_eq!(r, Err(AuthError::Expired), "{}", kit.name);
        let id = kit.verify(user(json!({"exp": NOW - 25}))).unwrap();
        assert_eq!((id.role.as_str(), id.user_id), ("authenticated", Some(1)));
        assert_eq!(id.exp, Some(NOW - 25), "{}", kit.name);
        assert!(kit.verify(user(json!({}))).is_ok(), "{}: no exp", kit.name);
        let r = kit.verify(user(json!({"exp": "soon"})));
        assert!(
            matches!(r, Err(AuthError::Invalid(_))),
            "{}: {r:?}",
            kit.name
        );
    }
}

#[test]
fn nbf_and_iat_have_thirty_seconds_of_leeway() {
    for kit in kits() {
        for claim in ["nbf", "iat"] {
            let r = kit.verify(user(json!({claim: NOW + 35})));
            assert!(
                matches!(r, Err(AuthError::Invalid(_))),
                "{} {claim}: {r:?}",
                kit.name
            );
            assert!(
                kit.verify(user(json!({claim: NOW + 25}))).is_ok(),
                "{}",
                kit.name
            );
        }
    }
}

#[test]
fn audience_is_checked_like_postgrest() {
    for kit in kits() {
        let with_aud = |aud: Value| kit.verify_with(&[("JWT_AUD", "x")], user(json!({"aud": aud})));
        let r = with_aud(json!("y"));
        assert!(
            matches!(r, Err(AuthError::Invalid(_))),
            "{}: {r:?}",
            kit.name
        );
        for ok in [
            json!("x"),
            json!(["y", "x"]),
            json!(null),
            json!([]),
            json!(""),
        ] {
            assert!(with_aud(ok.clone()).is_ok(), "{}: aud {ok}", kit.name);
        }
        assert!(kit
            .verify_with(&[("JWT_AUD", "x")], user(json!({})))
            .is_ok());
        // No audience configured: any passes.
        assert!(kit.verify(user(json!({"aud": "anything"}))).is_ok());
    }
}

#[test]
fn bad_signatures_none_and_two_parts_are_refused() {
    for kit in kits() {
        let v = kit.verifier(&[]);
        let good = kit.token(&user(json!({})).to_string());
        assert!(v.verify(&good, NOW).is_ok(), "{}", kit.name);
        let (message, _) = good.rsplit_once('.').unwrap();
        let (head, body) = message.split_once('.').unwrap();
        let none_head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let forged = user(json!({"role": "postgres"})).to_string();
        let other = EncodingKey::from_secret(b"another-secret-0123456789abcdefgh");
        for bad in [
            format!("{none_head}.{body}."),
            format!("{none_head}.{body}"),
            message.to_string(),
            format!(
                "{head}.{}.{}",
                URL_SAFE_NO_PAD.encode(&forged),
                good.rsplit('.').next().unwrap()
            ),
            format!("{good}x"),
            format!("{good}.x"),
            sign_raw(Algorithm::HS256, None, &other, &user(json!({})).to_string()),
        ] {
            let r = v.verify(&bad, NOW);
            assert!(
                matches!(r, Err(AuthError::Invalid(_))),
                "{}: {bad}: {r:?}",
                kit.name
            );
        }
    }
    // A plain secret means HS256 alone: HS384 and HS512 with the right secret are refused.
    let v = kits().remove(0).verifier(&[]);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let token = sign_raw(alg, None, &key, &user(json!({})).to_string());
        assert!(
            matches!(v.verify(&token, NOW), Err(AuthError::Invalid(_))),
            "{alg:?}"
        );
    }
}

#[test]
fn no_role_claim_means_the_anon_role_or_a_refusal() {
    for kit in kits() {
        let claims = json!({"sub": "1", "extra": {"a": [1, 2]}});
        let id = kit
            .verify_with(&[("DB_ANON_ROLE", "anon")], claims.clone())
            .unwrap();
        assert_eq!(id.role, "anon", "{}", kit.name);
        let seen: Value = serde_json::from_str(&id.claims_json).unwrap();
        assert_eq!(
            seen,
            json!({"sub": "1", "extra": {"a": [1, 2]}, "role": "anon"})
        );
        assert_eq!(
            kit.verify(claims),
            Err(AuthError::AnonDisabled),
            "{}",
            kit.name
        );
    }
}

#[test]
fn role_claim_key_resolves_nested_paths_and_filters() {
    for kit in kits() {
        let claims = json!({"sub": "1", "role": "anon",
            "realm_access": {"roles": ["offline_access", "app_writer", "authenticated"]}});
        let role = |key: &str| kit.verify_with(&[("JWT_ROLE_CLAIM_KEY", key)], claims.clone());
        let id = role(".realm_access.roles[2]").unwrap();
        assert_eq!(id.role, "authenticated", "{}", kit.name);
        let seen: Value = serde_json::from_str(&id.claims_json).unwrap();
        assert_eq!(seen["role"], "authenticated");
        assert_eq!(seen["realm_access"], claims["realm_access"]);
        assert_eq!(
            role(r#".realm_access.roles[?(@ ^== "app_")]"#)
                .unwrap()
                .role,
            "app_writer"
        );
        // The path finds nothing: the top-level role does not count.
        assert_eq!(role(".realm_access.roles[7]"), Err(AuthError::AnonDisabled));
    }
}

#[test]
fn claims_reach_sql_as_given_with_the_resolved_role() {
    for kit in kits() {
        let claims = user(json!({"name": "Ada", "email": "ada@example.com", "exp": NOW + 60}));
        let id = kit.verify(claims.clone()).unwrap();
        let seen: Value = serde_json::from_str(&id.claims_json).unwrap();
        assert_eq!(seen, claims, "{}", kit.name);
        assert_eq!((id.name.as_deref(), id.user_id), (Some("Ada"), Some(1)));
    }
}

fn verify_hs256(time_claims: &str) -> Result<Identity, AuthError> {
    let kit = kits().remove(0);
    let payload = format!(r#"{{"sub":"1","role":"authenticated",{time_claims}}}"#);
    kit.verifier(&[]).verify(&kit.token(&payload), NOW)
}

#[test]
fn far_future_exp_never_wraps_into_the_past() {
    for exp in [
        "9223372036854775807",
        "9223372036854775778", // 2^63 - 30
        "18446744073709551615",
        "1e300",
        "1.7976931348623157e308",
    ] {
        let id = verify_hs256(&format!(r#""exp":{exp}"#)).unwrap_or_else(|e| panic!("{exp}: {e}"));
        assert!(id.exp >= Some(i64::MAX - 29), "{exp}: {:?}", id.exp);
    }
}

#[test]
fn fractional_and_extreme_time_claims_keep_their_sense() {
    // Fractions: rounded down, then the usual 30 s of leeway.
    assert!(verify_hs256(&format!(r#""exp":{}.5"#, NOW - 30)).is_ok());
    assert_eq!(
        verify_hs256(&format!(r#""exp":{}.5"#, NOW - 31)),
        Err(AuthError::Expired)
    );
    assert_eq!(verify_hs256(r#""exp":-1e300"#), Err(AuthError::Expired));
    assert_eq!(
        verify_hs256(r#""exp":-9223372036854775808"#),
        Err(AuthError::Expired)
    );
    // nbf/iat far in the past are fine; far in the future are refused.
    assert!(verify_hs256(r#""nbf":-1e300,"iat":-9223372036854775808"#).is_ok());
    for claim in ["nbf", "iat"] {
        for value in ["1e300", "9223372036854775807", "18446744073709551615"] {
            let r = verify_hs256(&format!(r#""{claim}":{value}"#));
            assert!(
                matches!(r, Err(AuthError::Invalid(_))),
                "{claim}={value}: {r:?}"
            );
        }
    }
    assert!(verify_hs256(&format!(r#""nbf":{}.9"#, NOW + 30)).is_ok());
}
