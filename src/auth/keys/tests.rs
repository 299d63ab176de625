//! Choosing the key: `kid`, rotation, algorithm confusion, the algorithms each kind of
//! key accepts, and the key sets that refuse start-up.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;
use crate::auth::tests::{public, sign_raw, EC_P256, EC_P256_PEM, RSA_1, RSA_1_PEM, RSA_2};
use crate::auth::Signer;

const ED25519: &str = include_str!("../../../tests/fixtures/keys/ed25519.jwk");
const EC_P384: &str = include_str!("../../../tests/fixtures/keys/ec-p384.jwk");
const RSA_1024: &str = include_str!("../../../tests/fixtures/keys/rsa-1024.jwk");

fn set(keys: &[Value]) -> KeySet {
    KeySet::from_json(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
}

fn claims() -> serde_json::Map<String, Value> {
    json!({"sub": "1", "role": "authenticated"})
        .as_object()
        .unwrap()
        .clone()
}

/// A token signed by the private JWK, with its `kid` replaced (or removed).
fn token_by(private_jwk: &str, kid: Option<&str>) -> String {
    let mut jwk: Value = serde_json::from_str(private_jwk).unwrap();
    match kid {
        Some(kid) => jwk["kid"] = kid.into(),
        None => drop(jwk.as_object_mut().unwrap().remove("kid")),
    }
    Signer::from_jwk(jwk.to_string().as_bytes())
        .unwrap()
        .sign(claims(), None)
        .unwrap()
}

fn refused(keys: &KeySet, token: &str) -> String {
    match keys.verify(token) {
        Err(AuthError::Invalid(why)) => why,
        other => panic!("{token}: {other:?}"),
    }
}

#[test]
fn a_kid_picks_its_key_and_an_unknown_kid_is_refused() {
    let keys = set(&[public(RSA_1), public(RSA_2)]);
    assert!(keys.verify(&token_by(RSA_2, Some("rsa-2"))).is_ok());
    // Without a kid, every key that accepts the algorithm is tried.
    assert!(keys.verify(&token_by(RSA_2, None)).is_ok());
    // rsa-2's signature, but the header names rsa-1: only rsa-1 is tried.
    refused(&keys, &token_by(RSA_2, Some("rsa-1")));
    let why = refused(&keys, &token_by(RSA_2, Some("rsa-9")));
    assert!(why.contains("rsa-9"), "{why}");
}

#[test]
fn rotation_keeps_old_tokens_while_their_key_is_in_the_set() {
    let old = token_by(RSA_1, Some("rsa-1"));
    let old_without_kid = token_by(RSA_1, None);
    let both = set(&[public(RSA_2), public(RSA_1)]);
    assert!(both.verify(&old).is_ok());
    assert!(both.verify(&old_without_kid).is_ok());
    let rotated = set(&[public(RSA_2)]);
    assert!(rotated.verify(&token_by(RSA_2, Some("rsa-2"))).is_ok());
    refused(&rotated, &old);
    refused(&rotated, &old_without_kid);
}

#[test]
fn a_token_with_a_kid_never_matches_a_key_without_one() {
    // PostgREST makes a plain secret a key without kid: a token naming a kid fails.
    let secret = b"0123456789abcdef0123456789abcdef";
    let plain = KeySet::plain(secret);
    let key = EncodingKey::from_secret(secret);
    let payload = r#"{"sub":"1"}"#;
    assert!(plain
        .verify(&sign_raw(Algorithm::HS256, None, &key, payload))
        .is_ok());
    refused(
        &plain,
        &sign_raw(Algorithm::HS256, Some("k1"), &key, payload),
    );
    // An oct JWK with a kid takes tokens with that kid, or none.
    let k = URL_SAFE_NO_PAD.encode(secret);
    let oct = set(&[json!({"kty": "oct", "kid": "k1", "k": k})]);
    assert!(oct
        .verify(&sign_raw(Algorithm::HS256, Some("k1"), &key, payload))
        .is_ok());
    assert!(oct
        .verify(&sign_raw(Algorithm::HS256, None, &key, payload))
        .is_ok());
    refused(&oct, &sign_raw(Algorithm::HS256, Some("k2"), &key, payload));
}

#[test]
fn algorithm_confusion_is_refused() {
    let rsa_public = public(RSA_1);
    let keys = set(std::slice::from_ref(&rsa_public));
    let n = URL_SAFE_NO_PAD
        .decode(rsa_public["n"].as_str().unwrap())
        .unwrap();
    let set_text = json!({ "keys": [rsa_public.clone()] }).to_string();
    // HS256 tokens whose HMAC key is the RSA public key, in every form an attacker
    // could guess: the JWK text, the set's text, the modulus bytes.
    for hmac_key in [
        rsa_public.to_string().into_bytes(),
        set_text.into_bytes(),
        n,
    ] {
        let key = EncodingKey::from_secret(&hmac_key);
        for kid in [None, Some("rsa-1")] {
            let why = refused(
                &keys,
                &sign_raw(Algorithm::HS256, kid, &key, r#"{"sub":"1"}"#),
            );
            assert!(why.contains("HS256"), "{why}");
        }
    }
    // An ES256 token offered to an RSA key, and an RS256 token to an EC key.
    refused(&keys, &token_by(EC_P256, Some("rsa-1")));
    refused(&keys, &token_by(EC_P256, None));
    let ec = set(&[public(EC_P256)]);
    refused(&ec, &token_by(RSA_1, None));
    refused(&ec, &token_by(RSA_1, Some("ec-1")));
}

#[test]
fn each_kind_of_key_accepts_its_algorithms() {
    let rsa_key = EncodingKey::from_rsa_pem(RSA_1_PEM.as_bytes()).unwrap();
    let rs = |alg| sign_raw(alg, None, &rsa_key, r#"{"sub":"1"}"#);
    // RSA without `alg`: RS256, RS384, RS512; with `alg`, that one alone.
    let any_rs = set(&[public(RSA_1)]);
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        assert!(any_rs.verify(&rs(alg)).is_ok(), "{alg:?}");
    }
    let mut only_384 = public(RSA_1);
    only_384["alg"] = "RS384".into();
    let only_384 = set(&[only_384]);
    assert!(only_384.verify(&rs(Algorithm::RS384)).is_ok());
    refused(&only_384, &rs(Algorithm::RS256));
    // RSA-PSS is refused, as PostgREST refuses it.
    refused(&any_rs, &rs(Algorithm::PS256));

    // oct without `alg`: HS256, HS384, HS512; a plain secret: HS256 only.
    let secret = b"an-oct-key-of-32-bytes-or-more!!";
    let hs_key = EncodingKey::from_secret(secret);
    let hs = |alg| sign_raw(alg, None, &hs_key, r#"{"sub":"1"}"#);
    let oct = set(&[json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(secret)})]);
    let oct_256 =
        set(&[json!({"kty": "oct", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)})]);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert!(oct.verify(&hs(alg)).is_ok(), "{alg:?}");
        assert_eq!(oct_256.verify(&hs(alg)).is_ok(), alg == Algorithm::HS256);
        assert_eq!(
            KeySet::plain(secret).verify(&hs(alg)).is_ok(),
            alg == Algorithm::HS256
        );
    }

    // EC: the curve's algorithm. A P-256 key never takes an ES384 token.
    let p256 = set(&[public(EC_P256)]);
    let ec_key = EncodingKey::from_ec_pem(EC_P256_PEM.as_bytes()).unwrap();
    assert!(p256
        .verify(&sign_raw(Algorithm::ES256, None, &ec_key, "{}"))
        .is_ok());
    let es256 = token_by(EC_P256, None);
    let (head, rest) = es256.split_once('.').unwrap();
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
    header["alg"] = "ES384".into();
    let relabelled = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()));
    refused(&p256, &relabelled);
    assert!(set(&[public(EC_P384)])
        .verify(&token_by(EC_P384, None))
        .is_ok());
    // OKP Ed25519: EdDSA.
    assert!(set(&[public(ED25519)])
        .verify(&token_by(ED25519, None))
        .is_ok());
    // A private JWK in the set verifies with its public part, as PostgREST's does.
    let private: Value = serde_json::from_str(RSA_1).unwrap();
    assert!(set(&[private]).verify(&token_by(RSA_1, None)).is_ok());
}

#[test]
fn keys_not_for_signatures_are_ignored() {
    let mut enc = public(RSA_2);
    enc["use"] = "enc".into();
    let mut oaep = public(RSA_2);
    oaep["alg"] = "RSA-OAEP".into();
    let mut pss = public(RSA_2);
    pss["alg"] = "PS256".into();
    let unknown = json!({"kty": "XYZ", "kid": "x"});
    let keys = set(&[
        enc.clone(),
        oaep.clone(),
        pss.clone(),
        unknown.clone(),
        public(RSA_1),
    ]);
    assert!(keys.verify(&token_by(RSA_1, None)).is_ok());
    // rsa-2's own tokens: its only entries are not signature keys.
    refused(&keys, &token_by(RSA_2, None));
    let only = json!({ "keys": [enc, oaep, pss, unknown] }).to_string();
    assert_eq!(
        KeySet::from_json(only.as_bytes()).err(),
        Some(KeySetError::NoUsableKey)
    );
}

#[test]
fn bad_key_sets_refuse_with_a_reason() {
    let err = |text: String| {
        KeySet::from_json(text.as_bytes())
            .err()
            .map(|e| e.to_string())
    };
    let with = |member: &str, value: Value| {
        let mut jwk = public(RSA_1);
        jwk[member] = value;
        err(json!({ "keys": [jwk] }).to_string()).unwrap()
    };
    let p521 = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
    let ed448 = json!({"kty": "OKP", "crv": "Ed448", "x": "AA"});
    let cases = [
        (err(r#"{"kty": "RSA""#.into()).unwrap(), "not valid JSON"),
        (err(r#"{"foo": 1}"#.into()).unwrap(), "neither a JWK"),
        (err(r#"{"keys": {}}"#.into()).unwrap(), "not an array"),
        (err(r#"{"keys": []}"#.into()).unwrap(), "no key"),
        (
            err(r#"{"kty": "RSA", "e": "AQAB"}"#.into()).unwrap(),
            "no `n`",
        ),
        (with("n", "not base64!".into()), "base64url"),
        (with("n", 5.into()), "not a string"),
        (with("alg", "ES256".into()), "does not fit"),
        (with("use", "signing".into()), "`use`"),
        (with("crv", "P-256".into()), "must not be set"),
        (err(public(RSA_1024).to_string()).unwrap(), "1024 bits"),
        (err(p521.to_string()).unwrap(), "P-521"),
        (err(ed448.to_string()).unwrap(), "Ed448"),
        (
            err(json!({"kty": "oct", "k": ""}).to_string()).unwrap(),
            "empty",
        ),
        (
            err(json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}).to_string())
                .unwrap(),
            "length",
        ),
        (
            err(json!({"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA"}).to_string()).unwrap(),
            "P-999",
        ),
        (
            err(json!({"keys": [public(RSA_2), {"e": "AQAB"}]}).to_string()).unwrap(),
            "key 1: no `kty`",
        ),
    ];
    for (message, expected) in cases {
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        assert_eq!(message.lines().count(), 1, "{message:?}");
    }
    assert!(with("n", 5.into()).starts_with("key 0 (kid `rsa-1`): "));
}

#[test]
fn sql_signs_with_the_first_oct_key_that_allows_hs256() {
    let plain = KeySet::plain(b"0123456789abcdef0123456789abcdef");
    let key = plain.hmac_signing_key().unwrap();
    assert_eq!(
        (key.kid.as_str(), key.secret.as_slice()),
        ("", &b"0123456789abcdef0123456789abcdef"[..])
    );
    let k = |s: &str| URL_SAFE_NO_PAD.encode(s);
    let keys = set(&[
        public(RSA_1),
        json!({"kty": "oct", "kid": "hs512", "alg": "HS512", "k": k("first-secret")}),
        json!({"kty": "oct", "kid": "hs-1", "k": k("second-secret")}),
        json!({"kty": "oct", "kid": "hs-2", "k": k("third-secret")}),
    ]);
    let key = keys.hmac_signing_key().unwrap();
    assert_eq!(
        (key.kid.as_str(), key.secret.as_slice()),
        ("hs-1", &b"second-secret"[..])
    );
    assert!(set(&[public(RSA_1), public(EC_P256)])
        .hmac_signing_key()
        .is_none());
}

#[test]
fn minted_tokens_name_their_kid_and_verify() {
    for (jwk, alg) in [
        (RSA_1, "RS256"),
        (EC_P256, "ES256"),
        (EC_P384, "ES384"),
        (ED25519, "EdDSA"),
    ] {
        let signer = Signer::from_jwk(jwk.as_bytes()).unwrap();
        assert_eq!(signer.alg(), alg);
        let token = signer.sign(claims(), Some(60)).unwrap();
        let head = token.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
        let kid: Value = serde_json::from_str::<Value>(jwk).unwrap()["kid"].clone();
        assert_eq!((header["alg"].as_str(), &header["kid"]), (Some(alg), &kid));
        let claims = set(&[public(jwk)]).verify(&token).unwrap();
        assert_eq!(claims["sub"], "1");
        assert_eq!(
            claims["exp"].as_i64(),
            claims["iat"].as_i64().map(|t| t + 60)
        );
    }
    // A public JWK cannot sign.
    let err = Signer::from_jwk(public(RSA_1).to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("public key"), "{err}");
}
