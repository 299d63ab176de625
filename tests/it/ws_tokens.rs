//! Tokens over the socket, exactly as PostgREST accepts them (POSTGREST.md §1 and the nine
//! tests of §5), against the real server, a real database and real WebSocket clients;
//! plus the four ways a token can arrive and the refresh of a session.
use crate::common;
use crate::common::ws_extra;

use std::time::Duration;

use common::postgrest::Claims;
use common::server::{token_for, Client, TestServer};
use common::{TestDb, JWT_SECRET};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use ws_extra::*;

async fn authed_ok(url: &str, token: &str, user: i64) -> (Client, Value) {
    let (c, reply) = try_token(url, token).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user"]["id"], user, "{reply}");
    (c, reply)
}

async fn refused(url: &str, token: &str, code: &str) {
    let (mut c, reply) = try_token(url, token).await;
    assert_error(&reply, code);
    // A refused token leaves the socket open but unauthenticated.
    let r = c.request(json!({"type": "rooms"})).await;
    assert_error(&r, "unauthenticated");
}

/// §5.1: `exp` has 30 s of leeway.
#[tokio::test]
async fn exp_is_checked_with_thirty_seconds_of_leeway() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let url = server.url();

    refused(
        &url,
        &token_with(alice, json!({"exp": now() - 35})),
        "token_expired",
    )
    .await;
    let (mut c, _) = authed_ok(&url, &token_with(alice, json!({"exp": now() - 25})), alice).await;
    let rooms = c.request(json!({"type": "rooms"})).await;
    assert_eq!(rooms["type"], "rooms", "{rooms}");
    // No exp at all: never expires.
    authed_ok(&url, &token_with(alice, json!({})), alice).await;
    // A non-numeric exp is an invalid token, not an expired one.
    refused(
        &url,
        &token_with(alice, json!({"exp": "soon"})),
        "invalid_token",
    )
    .await;
}

/// An `exp` at or beyond i64's end (1e300, 2^63 - 1) is far in the future, as PostgREST
/// takes it: accepted, and the session lives on (no wrap-around into the past).
#[tokio::test]
async fn exp_beyond_i64_is_far_future_not_expired() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    // `json!` keeps 1e300 a float and 2^63 - 1 an integer: both forms are tried.
    for exp in [
        json!(1e300),
        json!(9_223_372_036_854_775_807_i64),
        json!(i64::MAX - 29),
    ] {
        let (mut c, _) = authed_ok(
            &server.url(),
            &token_with(alice, json!({"exp": exp})),
            alice,
        )
        .await;
        assert_alive(&mut c).await;
    }
    let (_, metrics) = server.get("/metrics").await;
    // Every series is present from start: none of these counted as expired.
    assert!(
        metrics.contains("pgchat_auth_failures_total{code=\"token_expired\"} 0\n"),
        "{metrics}"
    );
}

/// §5.2: `nbf` and `iat` in the future are refused beyond 30 s, accepted within.
#[tokio::test]
async fn nbf_and_iat_in_the_future_have_thirty_seconds_of_leeway() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let url = server.url();

    refused(
        &url,
        &token_with(alice, json!({"nbf": now() + 35})),
        "invalid_token",
    )
    .await;
    refused(
        &url,
        &token_with(alice, json!({"iat": now() + 35})),
        "invalid_token",
    )
    .await;
    authed_ok(&url, &token_with(alice, json!({"nbf": now() + 25})), alice).await;
    authed_ok(&url, &token_with(alice, json!({"iat": now() + 25})), alice).await;
    authed_ok(
        &url,
        &token_with(alice, json!({"nbf": now() + 25, "iat": now() + 25})),
        alice,
    )
    .await;
}

/// §5.3: with an audience configured, a string must equal it and an array contain it;
/// missing, null and empty are accepted. Unconfigured, any `aud` passes.
#[tokio::test]
async fn audience_is_checked_like_postgrest() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("JWT_AUD", "x")]).await;
    let url = server.url();

    refused(
        &url,
        &token_with(alice, json!({"aud": "y"})),
        "invalid_token",
    )
    .await;
    refused(
        &url,
        &token_with(alice, json!({"aud": ["y"]})),
        "invalid_token",
    )
    .await;
    authed_ok(&url, &token_with(alice, json!({"aud": "x"})), alice).await;
    authed_ok(&url, &token_with(alice, json!({"aud": ["y", "x"]})), alice).await;
    authed_ok(&url, &token_with(alice, json!({})), alice).await;
    authed_ok(&url, &token_with(alice, json!({"aud": null})), alice).await;
    authed_ok(&url, &token_with(alice, json!({"aud": []})), alice).await;
    server.stop().await;

    let open = TestServer::start(&db, &[]).await;
    authed_ok(&open.url(), &token_with(alice, json!({"aud": "y"})), alice).await;
}

/// §5.4: wrong secret, `alg: none`, a two-part token and HS384/HS512 are refused; the
/// socket stays usable and a good token then works on it.
#[tokio::test]
async fn bad_signatures_and_algorithms_are_invalid_tokens() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let url = server.url();
    let claims = json!({"sub": alice.to_string(), "role": "authenticated", "exp": now() + 3600});

    let good = sign_with(JWT_SECRET.as_bytes(), Algorithm::HS256, &claims);
    let wrong_secret = sign_with(
        b"another-secret-that-is-long-enough-0123456789",
        Algorithm::HS256,
        &claims,
    );
    let alg_none = craft(&json!({"alg": "none", "typ": "JWT"}), &claims, "");
    let two_part = good.rsplit_once('.').unwrap().0.to_string();
    let hs384 = sign_with(JWT_SECRET.as_bytes(), Algorithm::HS384, &claims);
    let hs512 = sign_with(JWT_SECRET.as_bytes(), Algorithm::HS512, &claims);
    // The good token's signature on a payload naming someone else.
    let forged = {
        let sig = good.rsplit('.').next().unwrap();
        let other = json!({"sub": "999", "role": "authenticated", "exp": now() + 3600});
        craft(&json!({"alg": "HS256", "typ": "JWT"}), &other, sig)
    };

    let mut c = Client::connect(&url).await;
    for (what, token) in [
        ("wrong secret", &wrong_secret),
        ("alg none", &alg_none),
        ("two parts", &two_part),
        ("HS384", &hs384),
        ("HS512", &hs512),
        ("forged payload", &forged),
        ("garbage", &"not a token".to_string()),
    ] {
        let reply = auth(&mut c, token).await;
        assert_eq!(reply["code"], "invalid_token", "{what}: {reply}");
        assert_error(&reply, "invalid_token");
        assert_alive(&mut c).await;
        let r = c.request(json!({"type": "rooms"})).await;
        assert_error(&r, "unauthenticated");
    }
    let reply = auth(&mut c, &good).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user"]["id"], alice);
}

/// §5.5: a secret under 32 characters: the daemon does not start, with one clear line.
#[tokio::test]
async fn short_secret_refuses_to_start_with_one_line() {
    let run = |secret: &str, args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgchat"));
        cmd.args(args)
            .env_clear()
            .env("JWT_SECRET", secret)
            .env("DATABASE_URL", "postgres://authenticator@127.0.0.1:1/none")
            .env("WS_HOST", "127.0.0.1")
            .env("WS_PORT", "0")
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(10), cmd.output())
                .await
                .expect("pgchat exits promptly instead of serving")
                .expect("pgchat runs")
        }
    };
    for secret in ["short", "0123456789012345678901234567890"] {
        let out = run(secret, &["serve"]).await;
        assert!(
            !out.status.success(),
            "started with a {}-char secret",
            secret.len()
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr:?}");
        assert!(stderr.contains("JWT_SECRET"), "stderr: {stderr:?}");
        assert!(stderr.contains("32"), "stderr: {stderr:?}");
        assert!(out.stdout.is_empty());
    }
    // 32 characters is enough: the config is accepted (`token` needs no database).
    let out = run("01234567890123456789012345678901", &["token", "--sub", "1"]).await;
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(payload_of(token.trim())["sub"], "1");
}

/// §5.6: no role claim → the anon role (when configured), visible in the reply and in SQL
/// (anon may not read `my_chat_rooms`, which authenticated may; the claims SQL sees are
/// checked in `sql_context_matches_postgrest`); without an anon role → refused.
#[tokio::test]
async fn missing_role_claim_means_anon_or_refusal() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let no_role = sign_with(
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
        &json!({"sub": alice.to_string(), "exp": now() + 3600}),
    );

    let server = TestServer::start(&db, &[("DB_ANON_ROLE", "anon")]).await;
    let (mut c, reply) = authed_ok(&server.url(), &no_role, alice).await;
    assert_eq!(reply["user"]["role"], "anon", "{reply}");
    // SQL runs as anon: api.my_chat_rooms is granted to authenticated only.
    let r = c.request(json!({"type": "rooms"})).await;
    assert_error(&r, "forbidden");
    // …nor call the chat RPCs, even with a `sub` in its claims.
    let r = c
        .request(json!({"type": "create_room", "name": "anon room"}))
        .await;
    assert_error(&r, "forbidden");
    // The same user with the authenticated role may read it.
    let (mut a, reply) = authed_ok(&server.url(), &token_for(alice, Some(3600)), alice).await;
    assert_eq!(reply["user"]["role"], "authenticated");
    let r = a.request(json!({"type": "rooms"})).await;
    assert_eq!(r["type"], "rooms", "{r}");
    server.stop().await;

    let strict = TestServer::start(&db, &[]).await;
    let (mut c, reply) = try_token(&strict.url(), &no_role).await;
    assert_error(&reply, "invalid_token");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("anonymous access is disabled"),
        "{reply}"
    );
    assert_alive(&mut c).await;
}

/// Drops a cluster-wide role when the test ends, even on failure.
struct RoleGuard {
    admin_url: String,
    name: String,
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("drop role if exists \"{name}\""))
                        .await;
                }
            });
        })
        .join();
    }
}

/// §5.7: a role claim naming a missing role, or one not granted to `authenticator`, is
/// `forbidden`; the connection lives on and can still authenticate properly.
#[tokio::test]
async fn unknown_or_ungranted_role_is_forbidden_and_connection_lives() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let role = format!("pgchat_not_granted_{}", std::process::id());
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "drop role if exists \"{role}\"; create role \"{role}\" nologin"
        ))
        .await
        .unwrap();
    let _guard = RoleGuard {
        admin_url: db.admin_url.clone(),
        name: role.clone(),
    };
    let server = TestServer::start(&db, &[]).await;
    let url = server.url();

    for name in ["nosuchrole", role.as_str()] {
        let mut c = Client::connect(&url).await;
        let reply = auth(&mut c, &token_with(alice, json!({"role": name}))).await;
        assert_error(&reply, "forbidden");
        assert_alive(&mut c).await;
        let r = c.request(json!({"type": "rooms"})).await;
        assert_error(&r, "unauthenticated");
        let reply = auth(&mut c, &token_for(alice, Some(3600))).await;
        assert_eq!(reply["type"], "authenticated", "{reply}");
        let r = c.request(json!({"type": "rooms"})).await;
        assert_eq!(r["type"], "rooms", "{r}");
    }
}

/// §5.8: JWT_ROLE_CLAIM_KEY=.realm_access.roles[0] resolves like PostgREST, and the
/// top-level `role` is then ignored.
#[tokio::test]
async fn nested_role_claim_key_resolves() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("JWT_ROLE_CLAIM_KEY", ".realm_access.roles[0]")]).await;
    let url = server.url();

    let nested = token_with(
        alice,
        json!({"role": "anon", "realm_access": {"roles": ["authenticated", "anon"]}}),
    );
    let (mut c, reply) = authed_ok(&url, &nested, alice).await;
    assert_eq!(reply["user"]["role"], "authenticated", "{reply}");
    // SQL runs as authenticated (anon, the top-level role, may not read my_chat_rooms).
    let r = c.request(json!({"type": "rooms"})).await;
    assert_eq!(r["type"], "rooms", "{r}");

    // Only the nested path counts: a top-level role alone is "no role" (no anon → refused).
    refused(&url, &token_with(alice, json!({})), "invalid_token").await;
    // The nested path naming a missing role is a refusal by the database.
    let (_, reply) = try_token(
        &url,
        &token_with(alice, json!({"realm_access": {"roles": ["nosuchrole"]}})),
    )
    .await;
    assert_error(&reply, "forbidden");
}

/// `api.whoami()`: what SQL sees as the user and their claims.
async fn create_whoami(db: &TestDb) {
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
}

/// PostgREST's context for a token, derived from the token itself (not from pgchat's
/// verifier): role from `role_of(payload)`, claims = payload with `role` overwritten.
fn postgrest_claims(token: &str, role: &str) -> Claims {
    let mut json = payload_of(token);
    json["role"] = json!(role);
    Claims {
        role: role.into(),
        json,
    }
}

/// Extra server settings for one case.
type Settings<'a> = &'a [(&'a str, &'a str)];

/// §5.9: inside SQL, `current_user` and the claims (`sub` included) are what PostgREST
/// gives for the same token — through pgchat's verifier and db layer, and through the
/// socket (a posted message belongs to `sub`).
#[tokio::test]
async fn sql_context_matches_postgrest() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    create_whoami(&db).await;
    let pg = db.postgrest().await;
    let pool = pgchat::db::Db::new(&db.authenticator_url, 1, Duration::from_secs(5)).unwrap();

    let plain = token_with(alice, json!({"name": "Alice", "exp": now() + 3600}));
    let no_role = sign_with(
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
        &json!({"sub": alice.to_string(), "extra": {"a": [1, 2]}}),
    );
    let nested = token_with(
        alice,
        json!({"role": "anon", "realm_access": {"roles": ["authenticated"]}}),
    );
    let cases: [(Settings, &String, &str); 3] = [
        (&[], &plain, "authenticated"),
        (&[("DB_ANON_ROLE", "anon")], &no_role, "anon"),
        (
            &[("JWT_ROLE_CLAIM_KEY", ".realm_access.roles[0]")],
            &nested,
            "authenticated",
        ),
    ];
    for (settings, token, role) in cases {
        let mut pairs = vec![
            ("DATABASE_URL", db.authenticator_url.as_str()),
            ("JWT_SECRET", JWT_SECRET),
        ];
        pairs.extend_from_slice(settings);
        let config = pgchat::config::Config::from_pairs(pairs.iter().copied()).unwrap();
        let verifier = pgchat::auth::Verifier::new(&config).unwrap();
        let identity = verifier.verify(token, now()).unwrap();
        let ours = pool
            .as_user(&identity, "/rpc/whoami", "select api.whoami()", &[])
            .await
            .unwrap()
            .expect("whoami returns a value");
        let ours: Value = serde_json::from_str(&ours.0).unwrap();
        let theirs = pg
            .rpc(&postgrest_claims(token, role), "whoami", &[])
            .await
            .unwrap();
        assert_eq!(ours, theirs, "settings {settings:?}");
        assert_eq!(ours["user"], role);
        assert_eq!(ours["sub"], alice.to_string());
        assert_eq!(ours["claims"]["role"], role);
    }

    // Through the socket: the stored message's author is the token's `sub`.
    let server = TestServer::start(&db, &[]).await;
    let (mut c, _) = authed_ok(&server.url(), &plain, alice).await;
    let room = c
        .request(json!({"type": "create_room", "name": "whoami"}))
        .await;
    let room_id = room["room"]["id"].as_i64().unwrap();
    let ack = c
        .request(json!({"type": "message", "roomId": room_id, "message": "mine"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let row = db
        .admin()
        .await
        .query_one(
            "select user_id from api.chat_messages where id = $1",
            &[&ack["id"].as_i64().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0).to_string(), payload_of(&plain)["sub"]);
}

/// The four ways a token arrives: first `auth` frame, `Authorization: Bearer` on the
/// upgrade, `?token=` in the URL, and a later `auth` frame refreshing it.
#[tokio::test]
async fn token_arrives_by_frame_header_or_query() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let url = server.url();
    let token = token_for(alice, Some(3600));

    // First auth frame.
    let (mut c, _) = authed_ok(&url, &token, alice).await;
    assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");

    // Authorization: Bearer on the upgrade: authenticated without any frame.
    let mut c = connect_bearer(&url, &token).await;
    let reply = c.recv_type("authenticated").await;
    assert_eq!(reply["user"]["id"], alice);
    assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");

    // ?token= in the URL (on `/` as well as `/ws`).
    for path in ["/ws", "/"] {
        let mut c = Client::connect(&format!("ws://{}{path}?token={token}", server.addr)).await;
        let reply = c.recv_type("authenticated").await;
        assert_eq!(reply["user"]["id"], alice);
        assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");
    }

    // A bad token on the upgrade is refused with an error frame; the socket stays open
    // unauthenticated, and an auth frame can still succeed.
    let expired = token_with(alice, json!({"exp": now() - 100}));
    let mut c = connect_bearer(&url, &expired).await;
    assert_error(&c.recv_type("error").await, "token_expired");
    assert_error(
        &c.request(json!({"type": "rooms"})).await,
        "unauthenticated",
    );
    let mut c2 = Client::connect(&format!("{url}?token=garbage")).await;
    assert_error(&c2.recv_type("error").await, "invalid_token");
    let reply = auth(&mut c, &token).await;
    assert_eq!(reply["type"], "authenticated");
}

/// A later `auth` frame with a fresh token for the same user extends the session past
/// the old token's deadline.
#[tokio::test]
async fn refresh_extends_the_session() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    // Inside the leeway: accepted, lapses about 3 s from now.
    let short = token_with(alice, json!({"exp": now() - 27}));
    let (mut c, _) = authed_ok(&server.url(), &short, alice).await;
    let reply = auth(&mut c, &token_for(alice, Some(3600))).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user"]["id"], alice);
    // Past the old deadline nothing arrives (no token_expired, no close)…
    let (frames, end) = drain(&mut c, Duration::from_secs(5)).await;
    assert_eq!(end, End::Open, "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
    // …and the session still serves.
    assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");
}

/// A token that lapses without refresh: `token_expired`, then close 4001.
#[tokio::test]
async fn unrefreshed_token_lapses_with_4001() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let short = token_with(alice, json!({"exp": now() - 28}));
    let (mut c, _) = authed_ok(&server.url(), &short, alice).await;
    let err = c.recv_type("error").await;
    assert_error(&err, "token_expired");
    assert_eq!(c.close_code(Duration::from_secs(5)).await, Some(4001));
}

/// A refresh must be for the same user and role; a refused refresh keeps the session.
#[tokio::test]
async fn refresh_for_another_user_is_refused() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let server = TestServer::start(&db, &[("DB_ANON_ROLE", "anon")]).await;
    let (mut c, _) = authed_ok(&server.url(), &token_for(alice, Some(3600)), alice).await;

    let reply = auth(&mut c, &token_for(bob, Some(3600))).await;
    assert_error(&reply, "invalid_token");
    let other_role = sign_with(
        JWT_SECRET.as_bytes(),
        Algorithm::HS256,
        &json!({"sub": alice.to_string()}),
    );
    assert_error(&auth(&mut c, &other_role).await, "invalid_token");

    // Still Alice: a message she posts is hers.
    let room = c.request(json!({"type": "create_room", "name": "r"})).await;
    let room_id = room["room"]["id"].as_i64().unwrap();
    c.request(json!({"type": "join", "roomId": room_id})).await;
    c.send(json!({"type": "message", "roomId": room_id, "message": "who am i"}))
        .await;
    let m = c.recv_type("message").await;
    assert_eq!(m["message"]["user_id"], alice, "{m}");
}
