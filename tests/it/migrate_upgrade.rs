//! The upgrade from release v0.1.0 (SPEC §6.1: tested from a database at the previous
//! release). tests/fixtures/v0.1.0 holds that release's migrate and SQL verbatim; a
//! database built by it, with rooms, members, messages and read markers, upgrades with
//! today's `migrate` and then: every v0.1.0 row is unchanged, old passwords log in and
//! old tokens verify, messages have rev = seq and rooms last_rev = last_seq, the schema
//! dumps exactly as a fresh migrate's, and a second migrate is a no-op.

use crate::common;

#[allow(dead_code)]
#[path = "../fixtures/v0.1.0/migrate.rs"]
mod v0_1_0;

use common::catalog::{fingerprint, schema_dump};
use common::postgrest::Claims;
use pgchat::migrate::migrate;

/// v0.1.0's rows, column by column as that release defined them.
const V0_1_0_ROWS: &str = "
select 'user ' || format('%s %s %s %s %s', id, email, name, password_hash, created_at)
  from private.users
union all
select 'room ' || format('%s %s %s %s %s %s', id, name, description, created_by, created_at, last_seq)
  from api.chat_rooms
union all
select 'member ' || format('%s %s %s %s %s', id, room_id, user_id, joined_at, last_read_seq)
  from api.room_members
union all
select 'message ' || format('%s %s %s %s %s %s %s', id, room_id, seq, user_id, message, client_id, created_at)
  from api.chat_messages
order by 1";

fn database(tag: &str) -> common::TestDb {
    let name = format!(
        "{}_{tag}_{}_{}",
        common::db_prefix(),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    common::TestDb {
        admin_url: common::with_db(&common::admin_url(), &name),
        authenticator_url: common::with_user_db(&common::admin_url(), "authenticator", &name),
        name,
    }
}

async fn rows(db: &common::TestDb, sql: &str) -> Vec<String> {
    db.admin()
        .await
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A database as v0.1.0 left it, with what its users did: two rooms, members, messages
/// (one sent with a client id, one deleted by an operator, leaving a hole in seq) and
/// read markers. Returns alice's id and token.
async fn v0_1_0_database_with_data(db: &common::TestDb) -> (i64, i64, String) {
    v0_1_0::migrate(
        &db.admin_url,
        &v0_1_0::DatabaseSettings {
            jwt_secret: common::JWT_SECRET,
            notify_channel: "pgchat",
        },
    )
    .await
    .unwrap();
    let (alice, alice_token) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let general = pg.create_room(alice, "General").await;
    let quiet = pg.create_room(bob, "Quiet").await;
    pg.rpc(
        &Claims::user(bob),
        "join_chat_room",
        &[("room_id", &general)],
    )
    .await
    .unwrap();
    pg.send(alice, general, "written before the upgrade").await;
    pg.rpc(
        &Claims::user(bob),
        "send_message",
        &[
            ("room_id", &general),
            ("message", &"with a client id"),
            ("client_id", &"c-1"),
        ],
    )
    .await
    .unwrap();
    pg.send(bob, general, "deleted by an operator").await;
    pg.send(alice, general, "the last one").await;
    pg.send(bob, quiet, "alone here").await;
    pg.rpc(
        &Claims::user(bob),
        "mark_read",
        &[("room_id", &general), ("seq", &2i64)],
    )
    .await
    .unwrap();
    db.admin()
        .await
        .batch_execute("delete from api.chat_messages where message = 'deleted by an operator'")
        .await
        .unwrap();
    (alice, general, alice_token)
}

#[tokio::test]
async fn a_v0_1_0_database_upgrades_losing_nothing() {
    let db = database("upgrade");
    let (alice, general, old_token) = v0_1_0_database_with_data(&db).await;
    let before = rows(&db, V0_1_0_ROWS).await;
    assert_eq!(
        before.iter().filter(|r| r.starts_with("message ")).count(),
        4
    );

    let report = migrate(&db.admin_url, &common::settings()).await.unwrap();
    let all: Vec<&str> = pgchat::migrate::MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(report.applied, all);
    assert!(report.definitions_applied && report.settings_changed);

    // Every v0.1.0 row as it was.
    assert_eq!(rows(&db, V0_1_0_ROWS).await, before);
    // The change stream so far was the messages.
    let off: Vec<String> = rows(
        &db,
        "select format('message %s rev %s', id, rev) from api.chat_messages where rev <> seq
         union all
         select format('room %s last_rev %s', id, last_rev) from api.chat_rooms
          where last_rev <> last_seq",
    )
    .await;
    assert!(off.is_empty(), "{off:?}");
    // The counters start from the history: general has seqs 1, 2 and 4 (3 was deleted).
    let general_row = rows(
        &db,
        "select format('%s %s %s', message_count, last_message_at is not null, last_seq)
           from api.chat_rooms where name = 'General'",
    )
    .await;
    assert_eq!(general_row, ["3 t 4"]);

    // Nothing is left in database settings; the old password logs in and both the new
    // token and the one issued by v0.1.0 verify.
    let settings = rows(
        &db,
        "select cfg from pg_db_role_setting d, unnest(d.setconfig) cfg
          where d.setdatabase = (select oid from pg_database where datname = current_database())",
    )
    .await;
    assert!(settings.is_empty(), "{settings:?}");
    let pg = db.postgrest().await;
    let login = pg
        .rpc(
            &Claims::anon(),
            "login",
            &[
                ("email", &"alice@example.com"),
                ("password", &"password123"),
            ],
        )
        .await
        .unwrap();
    let config = pgchat::config::Config::from_pairs([("JWT_SECRET", common::JWT_SECRET)]).unwrap();
    let verifier = pgchat::auth::Verifier::new(&config).unwrap();
    let now = pgchat::auth::unix_now();
    for token in [login["token"].as_str().unwrap(), old_token.as_str()] {
        assert_eq!(verifier.verify(token, now).unwrap().user_id, Some(alice));
    }

    // The rooms go on: the next message takes the next seq and rev; an old message edits.
    let sent = pg.send(alice, general, "written after").await;
    assert_eq!(
        (sent["seq"].as_i64(), sent["rev"].as_i64()),
        (Some(5), Some(5))
    );
    let first_id = rows(
        &db,
        "select id::text from api.chat_messages where seq = 1 and message like 'written before%'",
    )
    .await;
    let edited = pg
        .rpc(
            &Claims::user(alice),
            "edit_message",
            &[
                ("message_id", &first_id[0].parse::<i64>().unwrap()),
                ("message", &"edited after"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(edited["rev"], 6);
    assert!(edited["edited_at"].is_string());

    // A second migrate is a no-op.
    let print = fingerprint(&db).await;
    let again = migrate(&db.admin_url, &common::settings()).await.unwrap();
    assert!(again.applied.is_empty() && !again.definitions_applied && !again.settings_changed);
    assert_eq!(fingerprint(&db).await, print);
}

/// The upgraded schema is the fresh one, object for object.
#[tokio::test]
async fn an_upgraded_schema_dumps_as_a_fresh_one() {
    let upgraded = database("dump_up");
    v0_1_0_database_with_data(&upgraded).await;
    migrate(&upgraded.admin_url, &common::settings())
        .await
        .unwrap();
    let fresh = database("dump_fresh");
    migrate(&fresh.admin_url, &common::settings())
        .await
        .unwrap();
    let (a, b) = (schema_dump(&upgraded), schema_dump(&fresh));
    assert!(a.contains("CREATE TABLE api.chat_messages"), "{a}");
    if a != b {
        let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        let only_up: Vec<&&str> = la.iter().filter(|l| !lb.contains(l)).collect();
        let only_fresh: Vec<&&str> = lb.iter().filter(|l| !la.contains(l)).collect();
        panic!("schemas differ\nonly upgraded: {only_up:#?}\nonly fresh: {only_fresh:#?}");
    }
}

/// v0.1.0's migrate run by mistake against a database today's migrate made (an old
/// daemon started with `serve --migrate`) stops at its first file, changing nothing.
#[tokio::test]
async fn v0_1_0_migrate_refuses_a_newer_database() {
    let db = database("legacy");
    migrate(&db.admin_url, &common::settings()).await.unwrap();
    let before = fingerprint(&db).await;
    let err = v0_1_0::migrate(
        &db.admin_url,
        &v0_1_0::DatabaseSettings {
            jwt_secret: common::JWT_SECRET,
            notify_channel: "pgchat",
        },
    )
    .await
    .expect_err("v0.1.0's migrate refuses");
    let text = format!("{err:?}");
    assert!(text.contains("migrated by a newer pgchat"), "{text}");
    assert_eq!(fingerprint(&db).await, before);
}
