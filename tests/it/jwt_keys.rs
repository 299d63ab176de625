//! `JWT_SECRET` as a JWK Set, a JWK or `@file` (issue 16), end to end: the nine token
//! cases of PostgREST parity over real WebSockets with an RS256 key set and with an
//! ES256 key, rotation, algorithm confusion, SQL signing with the set's `oct` key, and
//! the binary refusing bad keys at start-up with one line. The key files are test-only
//! (tests/fixtures/keys). The rules themselves are unit-tested in src/auth.
use crate::common;
use crate::common::ws_extra;

use std::time::Duration;

use common::postgrest::Claims;
use common::server::TestServer;
use common::TestDb;
use pgchat::auth::Signer;
use serde_json::{json, Value};
use ws_extra::*;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn key_file(name: &str) -> String {
    std::fs::read_to_string(format!("{KEYS}/{name}")).unwrap()
}

/// A fixture's private JWK without its private members, optionally with an `alg`.
fn public(name: &str, alg: Option<&str>) -> Value {
    let mut jwk: Value = serde_json::from_str(&key_file(name)).unwrap();
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        jwk.as_object_mut().unwrap().remove(member);
    }
    if let Some(alg) = alg {
        jwk["alg"] = alg.into();
    }
    jwk
}

/// Signs `claims` with a fixture's private JWK; `kid` replaces its own (or drops it).
fn sign(name: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut jwk: Value = serde_json::from_str(&key_file(name)).unwrap();
    match kid {
        Some(kid) => jwk["kid"] = kid.into(),
        None => drop(jwk.as_object_mut().unwrap().remove("kid")),
    }
    let signer = Signer::from_jwk(jwk.to_string().as_bytes()).unwrap();
    signer
        .sign(claims.as_object().unwrap().clone(), None)
        .unwrap()
}

/// pgchat serving `db` with this `JWT_SECRET` and extra settings.
async fn serve(db: &TestDb, secret: &str, extra: &[(&str, &str)]) -> TestServer {
    let mut pairs = vec![
        ("DATABASE_URL", db.authenticator_url.as_str()),
        ("JWT_SECRET", secret),
        ("DB_POOL_SIZE", "2"),
    ];
    pairs.extend_from_slice(extra);
    let config = pgchat::config::Config::from_pairs(pairs).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let shutdown = cancel.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        pgchat::server::run(listener, config, shutdown)
            .await
            .expect("server runs");
    });
    let server = TestServer {
        addr,
        cancel,
        task: Some(task),
    };
    server.wait_ready().await;
    server
}

async fn accepted(url: &str, token: &str, user: i64) -> (common::server::Client, Value) {
    let (c, reply) = try_token(url, token).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user"]["id"], user, "{reply}");
    (c, reply)
}

/// Refused with `code`; the socket stays open and unauthenticated.
async fn refused(url: &str, token: &str, code: &str) {
    let (mut c, reply) = try_token(url, token).await;
    assert_error(&reply, code);
    assert_error(
        &c.request(json!({"type": "rooms"})).await,
        "unauthenticated",
    );
}

/// One configuration under test: its `JWT_SECRET`, how good tokens are signed, and
/// tokens signed by a key it does not hold.
struct Kit {
    secret: String,
    good: fn(&Value) -> String,
    wrong: fn(&Value) -> Vec<String>,
}

fn rs256_set() -> Kit {
    // An encryption key beside it, as Keycloak publishes: ignored.
    let mut enc = public("rsa-2.jwk", Some("RSA-OAEP"));
    enc["use"] = "enc".into();
    enc["kid"] = "rsa-enc".into();
    Kit {
        secret: json!({"keys": [enc, public("rsa-1.jwk", Some("RS256"))]}).to_string(),
        good: |c| sign("rsa-1.jwk", Some("rsa-1"), c),
        wrong: |c| {
            vec![
                sign("rsa-2.jwk", Some("rsa-1"), c),
                sign("rsa-2.jwk", None, c),
                sign("rsa-2.jwk", Some("rsa-enc"), c),
            ]
        },
    }
}

fn es256_key() -> Kit {
    Kit {
        secret: public("ec-p256.jwk", None).to_string(),
        good: |c| sign("ec-p256.jwk", None, c),
        wrong: |c| {
            // A fresh P-256 key, signing with jsonwebtoken rather than pgchat.
            use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
            let rng = ring::rand::SystemRandom::new();
            let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key = jsonwebtoken::EncodingKey::from_ec_der(der.as_ref());
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            vec![
                jsonwebtoken::encode(&header, c, &key).unwrap(),
                sign("ec-p384.jwk", None, c),
            ]
        },
    }
}

fn claims(user: i64, extra: Value) -> Value {
    let mut c = json!({"sub": user.to_string(), "role": "authenticated"});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

/// POSTGREST.md §5, cases 1-4 and 6-9, with this key configuration.
async fn nine_cases(kit: Kit) {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let good = |extra: Value| (kit.good)(&claims(alice, extra));
    let settings = [("DB_ANON_ROLE", "anon"), ("JWT_AUD", "chat")];
    let server = serve(&db, &kit.secret, &settings).await;
    let url = server.url();

    // 1. exp with 30 s of leeway.
    refused(&url, &good(json!({"exp": now() - 35})), "token_expired").await;
    let (mut c, _) = accepted(&url, &good(json!({"exp": now() - 25})), alice).await;
    assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");
    // 2. nbf and iat.
    for claim in ["nbf", "iat"] {
        refused(&url, &good(json!({claim: now() + 35})), "invalid_token").await;
        accepted(&url, &good(json!({claim: now() + 25})), alice).await;
    }
    // 3. The audience.
    refused(&url, &good(json!({"aud": "other"})), "invalid_token").await;
    for aud in [
        json!(["other", "chat"]),
        json!(null),
        json!([]),
        json!("chat"),
    ] {
        accepted(&url, &good(json!({ "aud": aud })), alice).await;
    }
    accepted(&url, &good(json!({})), alice).await;
    // 4. A key not in the configuration, `none`, two parts, HMAC tokens.
    let payload = claims(alice, json!({}));
    let valid = good(json!({}));
    let (message, _) = valid.rsplit_once('.').unwrap();
    let none = craft(&json!({"alg": "none", "typ": "JWT"}), &payload, "");
    let mut bad = (kit.wrong)(&payload);
    bad.extend([none, message.to_string()]);
    for alg in [
        jsonwebtoken::Algorithm::HS256,
        jsonwebtoken::Algorithm::HS512,
    ] {
        bad.push(sign_with(kit.secret.as_bytes(), alg, &payload));
    }
    for token in bad {
        refused(&url, &token, "invalid_token").await;
    }
    // 6. No role claim: the anon role, in the reply and in SQL's claims.
    let no_role = (kit.good)(&json!({"sub": alice.to_string(), "extra": [1]}));
    let (mut c, reply) = accepted(&url, &no_role, alice).await;
    assert_eq!(reply["user"]["role"], "anon", "{reply}");
    assert_error(&c.request(json!({"type": "rooms"})).await, "forbidden");
    // 7. A missing role, or one not granted to authenticator: forbidden, still open.
    for role in ["nosuchrole", "postgres"] {
        let (mut c, reply) = try_token(&url, &good(json!({ "role": role }))).await;
        assert_error(&reply, "forbidden");
        assert_alive(&mut c).await;
        let reply = auth(&mut c, &good(json!({}))).await;
        assert_eq!(reply["type"], "authenticated", "{reply}");
    }
    // 9. Inside SQL: the user and the claims PostgREST would set for the same token,
    //    and a message stored as the token's `sub`.
    sql_context_matches_postgrest(&db, &kit.secret, &[&no_role, &valid], alice).await;
    let (mut c, _) = accepted(&url, &valid, alice).await;
    let room = c
        .request(json!({"type": "create_room", "name": "keys"}))
        .await;
    let ack = c
        .request(json!({"type": "message", "roomId": room["room"]["id"], "message": "hi"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let author: i64 = db
        .admin()
        .await
        .query_one(
            "select user_id from api.chat_messages where id = $1",
            &[&ack["id"].as_i64().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(author, alice);
    server.stop().await;

    // 8. A Keycloak-style nested role claim; without an anon role, no role is refused.
    let keycloak = serve(
        &db,
        &kit.secret,
        &[("JWT_ROLE_CLAIM_KEY", ".realm_access.roles[0]")],
    );
    let keycloak = keycloak.await;
    let nested = good(json!({"role": "anon", "realm_access": {"roles": ["authenticated"]}}));
    let (mut c, reply) = accepted(&keycloak.url(), &nested, alice).await;
    assert_eq!(reply["user"]["role"], "authenticated", "{reply}");
    assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");
    let (mut c, reply) = try_token(&keycloak.url(), &good(json!({}))).await;
    assert_error(&reply, "invalid_token");
    assert_alive(&mut c).await;
    keycloak.stop().await;
}

async fn sql_context_matches_postgrest(db: &TestDb, secret: &str, tokens: &[&str], user: i64) {
    db.admin()
        .await
        .batch_execute(
            "create function api.whoami() returns json language sql stable as $$ \
               select json_build_object('user', current_user, \
                 'sub', current_setting('request.jwt.claims', true)::json->>'sub', \
                 'claims', current_setting('request.jwt.claims', true)::json) $$; \
             grant execute on function api.whoami() to anon, authenticated;",
        )
        .await
        .unwrap();
    let config = pgchat::config::Config::from_pairs([
        ("JWT_SECRET", secret),
        ("DB_ANON_ROLE", "anon"),
        ("JWT_AUD", "chat"),
    ])
    .unwrap();
    let verifier = pgchat::auth::Verifier::new(&config).unwrap();
    let pool = pgchat::db::Db::new(&db.authenticator_url, 1, Duration::from_secs(5)).unwrap();
    let pg = db.postgrest().await;
    for token in tokens {
        let identity = verifier.verify(token, now()).unwrap();
        let ours = pool
            .as_user(&identity, "/rpc/whoami", "select api.whoami()", &[])
            .await
            .unwrap()
            .expect("whoami returns a value");
        let ours: Value = serde_json::from_str(&ours.0).unwrap();
        // PostgREST's context, from the token alone: its role claim or anon.
        let mut json = payload_of(token);
        let role = json["role"].as_str().unwrap_or("anon").to_string();
        json["role"] = role.clone().into();
        let theirs = pg.rpc(&Claims { role, json }, "whoami", &[]).await.unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(ours["sub"], user.to_string());
    }
}

#[tokio::test]
async fn nine_cases_with_an_rs256_key_set() {
    nine_cases(rs256_set()).await;
}

#[tokio::test]
async fn nine_cases_with_an_es256_key() {
    nine_cases(es256_key()).await;
}

/// A token of the old key verifies while the old key is in the set, not after.
#[tokio::test]
async fn rotation_over_the_socket() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let c = claims(alice, json!({}));
    let (old, new) = (
        sign("rsa-1.jwk", Some("rsa-1"), &c),
        sign("rsa-2.jwk", Some("rsa-2"), &c),
    );
    let both = json!({"keys": [public("rsa-2.jwk", None), public("rsa-1.jwk", None)]});
    let server = serve(&db, &both.to_string(), &[]).await;
    accepted(&server.url(), &old, alice).await;
    accepted(&server.url(), &new, alice).await;
    server.stop().await;
    let rotated = json!({"keys": [public("rsa-2.jwk", None)]});
    let server = serve(&db, &rotated.to_string(), &[]).await;
    refused(&server.url(), &old, "invalid_token").await;
    accepted(&server.url(), &new, alice).await;
}

/// With a JWK Set, migrate stores its `oct` key: api.signup signs HS256 naming that
/// `kid`, and the daemon accepts the token. Without one, signup refuses clearly.
#[tokio::test]
async fn sql_signs_with_the_sets_oct_key_and_names_its_kid() {
    use base64::Engine;
    let db = TestDb::new().await;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("a-signing-key-for-sql-only");
    let with_oct =
        json!({"keys": [public("rsa-1.jwk", None), {"kty": "oct", "kid": "hs-1", "k": k}]});
    let migrate = |secret: String| {
        let db_url = db.admin_url.clone();
        async move {
            let config = pgchat::config::Config::from_pairs([("JWT_SECRET", secret)]).unwrap();
            let settings = pgchat::migrate::DatabaseSettings::from_config(&config).unwrap();
            pgchat::migrate::migrate(&db_url, &settings).await.unwrap()
        }
    };
    assert!(migrate(with_oct.to_string()).await.settings_changed);
    let (alice, token) = db.signup("alice@example.com", "Alice").await;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT", "kid": "hs-1"}));
    let server = serve(&db, &with_oct.to_string(), &[]).await;
    accepted(&server.url(), &token, alice).await;
    server.stop().await;

    let without = json!({"keys": [public("rsa-1.jwk", None)]});
    assert!(migrate(without.to_string()).await.settings_changed);
    let pg = db.postgrest().await;
    let err = pg
        .rpc(
            &Claims::anon(),
            "login",
            &[
                ("email", &"alice@example.com"),
                ("password", &"password123"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&err), "55000", "{err}");
    let message = err.as_db_error().unwrap().message();
    assert!(message.contains("no key to sign tokens with"), "{message}");
}

/// Runs the binary with only these variables; returns (success, stdout, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgchat"));
    cmd.args(args)
        .env_clear()
        .env("DATABASE_URL", "postgres://authenticator@127.0.0.1:1/none")
        .env("WS_HOST", "127.0.0.1")
        .env("WS_PORT", "0")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .expect("pgchat exits promptly")
        .expect("pgchat runs");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// A scratch file, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, content: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("pgchat-jwk-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        TempFile(path)
    }
    fn at(&self) -> String {
        format!("@{}", self.0.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test]
async fn bad_keys_refuse_start_up_with_one_line() {
    let p521 = TempFile::new(
        "p521.jwk",
        r#"{"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}"#,
    );
    let missing = format!("@{KEYS}/no-such-file.jwk");
    let set = r#"{"keys": [{"kty": "RSA", "e": "AQAB"}]}"#;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("JWT_SECRET", r#"{"kty": "RSA""#)], "not valid JSON"),
        (&[("JWT_SECRET", &missing)], "cannot be read"),
        (&[("JWT_SECRET", &p521.at())], "P-521"),
        (&[("JWT_SECRET", set)], "key 0: no `n`"),
        (
            &[
                ("JWT_SECRET", &key_file("ec-p256.jwk")),
                ("JWT_ROLE_CLAIM_KEY", ".r[?(@ ~= \"x\")]"),
            ],
            "JWT_ROLE_CLAIM_KEY",
        ),
    ];
    for (env, expected) in cases {
        let (ok, stdout, stderr) = run(&["serve"], env).await;
        assert!(!ok, "started with {env:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
        assert!(stderr.contains(expected), "{stderr:?} lacks {expected:?}");
        assert!(stdout.is_empty(), "{stdout:?}");
    }
}

/// `pgchat token --key @private.jwk` signs with that key and names its kid; without
/// `--key`, a key set with no `oct` key refuses.
#[tokio::test]
async fn token_subcommand_signs_with_a_private_jwk() {
    let set = json!({"keys": [public("rsa-1.jwk", None), public("ed25519.jwk", None)]});
    let file = TempFile::new("set.jwks", &format!("{set}\n"));
    for (key, kid) in [("rsa-1.jwk", "rsa-1"), ("ed25519.jwk", "ed-1")] {
        let key = format!("@{KEYS}/{key}");
        let args = ["token", "--sub", "7", "--key", &key];
        let (ok, stdout, stderr) = run(&args, &[("JWT_SECRET", &file.at())]).await;
        assert!(ok, "{stderr}");
        let config = pgchat::config::Config::from_pairs([("JWT_SECRET", file.at())]).unwrap();
        let verifier = pgchat::auth::Verifier::new(&config).unwrap();
        let id = verifier.verify(stdout.trim(), now()).unwrap();
        assert_eq!((id.user_id, id.role.as_str()), (Some(7), "authenticated"));
        let head = jsonwebtoken::decode_header(stdout.trim()).unwrap();
        assert_eq!(head.kid.as_deref(), Some(kid));
    }
    let (ok, stdout, stderr) = run(&["token", "--sub", "7"], &[("JWT_SECRET", &file.at())]).await;
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("--key"), "{stderr:?}");
}

/// `@file` reads the value from a file, less one trailing newline, as PostgREST does.
#[test]
fn a_file_with_a_trailing_newline_gives_the_literal_value() {
    let keys = |secret: &str| {
        let config = pgchat::config::Config::from_pairs([("JWT_SECRET", secret)]).unwrap();
        config
            .hmac_signing_key()
            .unwrap()
            .map(|k| (k.kid, k.secret))
    };
    let literal = "a-plain-secret-of-more-than-32-chars";
    let file = TempFile::new("plain", &format!("{literal}\n"));
    assert_eq!(keys(&file.at()), keys(literal));
    // Only one newline goes, as with PostgREST: the second is part of the secret.
    let file = TempFile::new("plain2", &format!("{literal}\n\n"));
    assert_eq!(
        keys(&file.at()).unwrap().1,
        format!("{literal}\n").into_bytes()
    );
    // A JWK Set in a file verifies what the literal set verifies.
    let set = json!({"keys": [public("ec-p256.jwk", None)]}).to_string();
    let file = TempFile::new("set", &format!("{set}\n"));
    let token = sign("ec-p256.jwk", None, &claims(1, json!({})));
    for secret in [set, file.at()] {
        let config = pgchat::config::Config::from_pairs([("JWT_SECRET", secret)]).unwrap();
        let verifier = pgchat::auth::Verifier::new(&config).unwrap();
        assert_eq!(verifier.verify(&token, now()).unwrap().user_id, Some(1));
    }
}
