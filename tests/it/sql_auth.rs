//! In-database auth: api.signup, api.login, api.current_user_id and the token login
//! signs, all called as PostgREST would (authenticator, role switched, named arguments).

use crate::common;

use common::sqlstate;

use common::postgrest::{Claims, Postgrest};
use pgchat::auth::{unix_now, Verifier};
use pgchat::config::Config;
use serde_json::Value;

fn db_message(e: &tokio_postgres::Error) -> &str {
    e.as_db_error().expect("a database error").message()
}

async fn login(
    pg: &Postgrest,
    email: &str,
    password: &str,
) -> Result<Value, tokio_postgres::Error> {
    pg.rpc(
        &Claims::anon(),
        "login",
        &[("email", &email), ("password", &password)],
    )
    .await
}

fn verifier(secret: &str) -> Verifier {
    Verifier::new(&Config::from_pairs([("JWT_SECRET", secret)]).unwrap()).unwrap()
}

#[tokio::test]
async fn signup_returns_id_name_and_a_token_and_login_finds_the_user() {
    let db = common::TestDb::new().await;
    let pg = db.postgrest().await;
    let out = pg
        .rpc(
            &Claims::anon(),
            "signup",
            &[
                ("email", &"Alice@Example.com"),
                ("password", &"correct horse"),
                ("name", &"Alice"),
            ],
        )
        .await
        .unwrap();
    let id = out["id"].as_i64().expect("id");
    assert_eq!(out["name"], "Alice");
    assert!(out["token"].as_str().unwrap().split('.').count() == 3);

    // Email is case-insensitive; the returned id is the same user.
    let logged = login(&pg, "alice@example.COM", "correct horse")
        .await
        .unwrap();
    assert_eq!(logged["id"].as_i64(), Some(id));
    assert_eq!(logged["name"], "Alice");

    // The password is stored hashed (bcrypt), never in clear.
    let admin = db.admin().await;
    let hash: String = admin
        .query_one(
            "select password_hash from private.users where id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$2a$"), "not bcrypt: {hash}");
    assert!(!hash.contains("correct horse"));
}

#[tokio::test]
async fn wrong_password_and_unknown_email_give_28p01_with_the_same_message() {
    let db = common::TestDb::new().await;
    db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let wrong = login(&pg, "bob@example.com", "password124")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&wrong), "28P01");
    let unknown = login(&pg, "nobody@example.com", "password123")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&unknown), "28P01");
    // No user enumeration: both refusals read the same.
    assert_eq!(db_message(&wrong), db_message(&unknown));
    // The connection is still usable after the refusal (the helper rolled back).
    assert!(login(&pg, "bob@example.com", "password123").await.is_ok());
}

#[tokio::test]
async fn duplicate_signup_is_a_clean_23505() {
    let db = common::TestDb::new().await;
    db.signup("carol@example.com", "Carol").await;
    let pg = db.postgrest().await;
    let err = pg
        .rpc(
            &Claims::anon(),
            "signup",
            &[
                ("email", &"CAROL@example.com"),
                ("password", &"password123"),
                ("name", &"Carol 2"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23505");
    assert_eq!(db_message(&err), "email already registered");
    // No constraint or table name leaks to the client.
    assert_eq!(err.as_db_error().unwrap().constraint(), None);
    let admin = db.admin().await;
    let n: i64 = admin
        .query_one("select count(*) from private.users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn short_password_is_refused() {
    let db = common::TestDb::new().await;
    let pg = db.postgrest().await;
    let err = pg
        .rpc(
            &Claims::anon(),
            "signup",
            &[
                ("email", &"dan@example.com"),
                ("password", &"short"),
                ("name", &"Dan"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023");
}

#[tokio::test]
async fn login_token_verifies_with_the_secret_and_carries_sub_role_name_exp() {
    let db = common::TestDb::new().await;
    let (id, _) = db.signup("erin@example.com", "山田 エリン").await;
    let pg = db.postgrest().await;
    let out = login(&pg, "erin@example.com", "password123").await.unwrap();
    let token = out["token"].as_str().unwrap();

    let now = unix_now();
    let identity = verifier(common::JWT_SECRET).verify(token, now).unwrap();
    assert_eq!(identity.role, "authenticated");
    assert_eq!(identity.user_id, Some(id));
    assert_eq!(identity.name.as_deref(), Some("山田 エリン"));
    let exp = identity.exp.expect("exp claim");
    assert!(
        exp > now + 3600 && exp <= now + 25 * 3600,
        "exp {exp} now {now}"
    );
    let claims: Value = serde_json::from_str(&identity.claims_json).unwrap();
    // `sub` is the user id as text, as PostgREST apps expect.
    assert_eq!(claims["sub"], Value::String(id.to_string()));
    assert_eq!(claims["role"], "authenticated");

    // Another secret does not verify it.
    assert!(verifier("another-secret-0123456789-abcdefghijklmn")
        .verify(token, now)
        .is_err());

    // The verified claims, handed to SQL as PostgREST would, identify the same user.
    let who = pg
        .rpc(
            &Claims {
                role: identity.role.clone(),
                json: claims,
            },
            "current_user_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(who.as_i64(), Some(id));
}

#[tokio::test]
async fn current_user_id_reads_sub_and_is_null_for_anon() {
    let db = common::TestDb::new().await;
    let pg = db.postgrest().await;
    let who = pg
        .rpc(&Claims::user(42), "current_user_id", &[])
        .await
        .unwrap();
    assert_eq!(who.as_i64(), Some(42));
    let anon = pg
        .rpc(&Claims::anon(), "current_user_id", &[])
        .await
        .unwrap();
    assert_eq!(anon, Value::Null);
}

#[tokio::test]
async fn users_table_and_signing_functions_are_closed_to_clients() {
    let db = common::TestDb::new().await;
    let (id, _) = db.signup("frank@example.com", "Frank").await;
    let pg = db.postgrest().await;
    for claims in [Claims::anon(), Claims::user(id)] {
        let err = pg
            .query(&claims, "select email from private.users", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{claims:?}");
        let err = pg
            .query(
                &claims,
                "select private.jwt_sign('{\"sub\":\"1\"}'::json, 'x')",
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{claims:?}");
    }
}

#[tokio::test]
async fn anon_gets_no_chat_data() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"General")],
        )
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let anon = Claims::anon();
    for sql in [
        "select * from api.chat_rooms",
        "select * from api.room_members",
        "select * from api.chat_messages",
        "select * from api.my_chat_rooms",
    ] {
        let err = pg.query(&anon, sql, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}");
    }
    let err = pg
        .rpc(
            &anon,
            "send_message",
            &[("room_id", &room), ("message", &"hi")],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

/// Issue 11 point 0: the signing key is where no client role reaches it. A login role
/// with no grants at all, and PostgREST's `anon` and `authenticated`, ask for it every
/// way a session can: the setting, SHOW, the catalogs of settings, the key table.
#[tokio::test]
async fn no_client_role_can_read_the_signing_key() {
    let db = common::TestDb::new().await;
    let stranger = common::stranger::Stranger::new(&db).await;
    let s = stranger.connect().await;
    let secret = common::JWT_SECRET;

    let setting: Option<String> = s
        .query_one("select current_setting('app.jwt_secret', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, None, "current_setting hands out the key");
    match s.simple_query("show app.jwt_secret").await {
        Err(e) => assert_eq!(sqlstate(&e), "42704", "{e}"),
        Ok(rows) => panic!("SHOW answered: {rows:?}"),
    }
    // Every stored setting that applies to a session in this database: database-wide,
    // cluster-wide or per role (other databases on a shared server are not ours).
    let stored: Vec<String> = s
        .query(
            "select cfg from pg_db_role_setting d, unnest(d.setconfig) cfg
              where d.setdatabase in (0, (select oid from pg_database
                                           where datname = current_database()))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        stored.iter().all(|cfg| !cfg.contains(secret)),
        "pg_db_role_setting: {stored:?}"
    );
    let in_pg_settings: i64 = s
        .query_one(
            "select count(*) from pg_settings where strpos(setting, $1) > 0",
            &[&secret],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_pg_settings, 0, "pg_settings shows the key");
    let err = s
        .query("select * from private.jwt_keys", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");

    // PostgREST's roles, in a request context, fare no better.
    let (id, _) = db.signup("grace@example.com", "Grace").await;
    let pg = db.postgrest().await;
    for claims in [Claims::anon(), Claims::user(id)] {
        let rows = pg
            .query(
                &claims,
                "select current_setting('app.jwt_secret', true)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].get::<_, Option<String>>(0), None, "{claims:?}");
        let err = pg
            .query(&claims, "select secret from private.jwt_keys", &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{claims:?}");
    }
}

/// With `JWT_SECRET_IS_BASE64`, PostgREST and the daemon verify with the decoded bytes,
/// so SQL must sign with them too, whatever bytes they are.
#[tokio::test]
async fn a_base64_secret_signs_tokens_the_daemon_verifies() {
    use base64::Engine;
    let db = common::TestDb::new().await;
    let raw: Vec<u8> = (0u8..48).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    assert!(
        String::from_utf8(raw.clone()).is_err(),
        "the key is not text"
    );
    let secret = base64::engine::general_purpose::STANDARD.encode(&raw);
    let config = Config::from_pairs([
        ("JWT_SECRET", secret.as_str()),
        ("JWT_SECRET_IS_BASE64", "true"),
    ])
    .unwrap();
    let settings = pgchat::migrate::DatabaseSettings::from_config(&config).unwrap();
    let report = pgchat::migrate::migrate(&db.admin_url, &settings)
        .await
        .unwrap();
    assert!(report.settings_changed);

    let (id, token) = db.signup("heidi@example.com", "Heidi").await;
    let identity = Verifier::new(&config)
        .unwrap()
        .verify(&token, unix_now())
        .unwrap();
    assert_eq!(identity.user_id, Some(id));
    // The text of the secret is not the key.
    assert!(verifier(&secret).verify(&token, unix_now()).is_err());
}
