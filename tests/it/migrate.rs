//! The migration runner: forward-only migrations applied once each and recorded with a
//! checksum, re-runnable definitions, a second run that changes nothing, concurrent runs
//! serialised, one transaction per migration unless a migration says otherwise, and
//! PostgREST told to reload its schema cache. (The upgrade from v0.1.0 is
//! tests/migrate_upgrade.rs.)

use crate::common;

use std::time::Duration;

use common::catalog::fingerprint;
use pgchat::migrate::{
    apply_migrations, migrate, DatabaseSettings, MigrateError, Migration, DEFINITIONS, MIGRATIONS,
};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

fn settings(secret: &str) -> DatabaseSettings {
    DatabaseSettings {
        jwt_key: secret.as_bytes().to_vec(),
        jwt_kid: String::new(),
        notify_channel: "pgchat".into(),
    }
}

/// A database of our own, dropped at the end (TestDb's Drop does that by name).
fn fresh_database(tag: &str) -> common::TestDb {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!(
        "{}_{tag}_{}_{nanos}",
        common::db_prefix(),
        std::process::id()
    );
    common::TestDb {
        admin_url: common::with_db(&common::admin_url(), &name),
        authenticator_url: String::new(),
        name,
    }
}

async fn create_empty(db: &common::TestDb) {
    let server = common::connect(&common::with_db(&common::admin_url(), "postgres")).await;
    server
        .batch_execute(&format!("create database \"{}\"", db.name))
        .await
        .unwrap();
}

async fn bookkeeping(db: &common::TestDb) -> Vec<String> {
    db.admin()
        .await
        .query(
            "select format('%s %s %s %s', version, name, checksum, applied_at)
               from pgchat.schema_migrations
             union all
             select format('%s %s %s', name, checksum, applied_at) from pgchat.schema_definitions
             order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Notifications on PostgREST's channel `pgrst`, heard by a connection of their own.
async fn listen_pgrst(
    db: &common::TestDb,
) -> (tokio_postgres::Client, mpsc::UnboundedReceiver<String>) {
    let (client, mut conn) = tokio_postgres::connect(&db.admin_url, NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client.batch_execute("listen pgrst").await.unwrap();
    (client, rx)
}

async fn next_payload(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a notification within 20 s")
        .expect("listener alive")
}

#[tokio::test]
async fn running_migrate_twice_is_a_no_op_and_pgrst_reloads_once() {
    let db = fresh_database("migrate");
    create_empty(&db).await;
    let (listener, mut pgrst) = listen_pgrst(&db).await;

    let first = migrate(&db.admin_url, &settings(common::JWT_SECRET))
        .await
        .unwrap();
    let all: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(first.applied, all);
    assert!(first.definitions_applied);
    assert!(first.settings_changed);
    assert_eq!(next_payload(&mut pgrst).await, "reload schema");
    let catalog = fingerprint(&db).await;
    for needle in [
        "class api.chat_messages r rls=t ",
        "policy api.chat_messages chat_messages_insert",
        "trigger CREATE TRIGGER chat_messages_notify",
        "trigger CREATE TRIGGER chat_messages_soft_delete",
        "jwt key kid= alg=HS256 ",
        "settings notify_channel=pgchat",
        "role authenticator login=t inherit=f",
    ] {
        assert!(catalog.contains(needle), "fingerprint lacks {needle}");
    }
    // Nothing is left in database settings, which every role can read.
    assert!(!catalog.contains("setting "), "{catalog}");
    let recorded = bookkeeping(&db).await;
    assert_eq!(recorded.len(), MIGRATIONS.len() + DEFINITIONS.len());

    let second = migrate(&db.admin_url, &settings(common::JWT_SECRET))
        .await
        .unwrap();
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert!(!second.definitions_applied);
    assert!(!second.settings_changed);
    assert_eq!(fingerprint(&db).await, catalog);
    assert_eq!(bookkeeping(&db).await, recorded);
    // The no-op run told PostgREST nothing: the sentinel is the next notification.
    listener
        .batch_execute("notify pgrst, 'sentinel'")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut pgrst).await, "sentinel");

    // A new secret is a settings change only.
    let rotated = migrate(
        &db.admin_url,
        &settings("another-secret-0123456789-abcdefghijklmn"),
    )
    .await
    .unwrap();
    assert!(rotated.applied.is_empty() && !rotated.definitions_applied);
    assert!(rotated.settings_changed);
    assert_ne!(fingerprint(&db).await, catalog);

    // So is a new channel, and the triggers' channel function follows it.
    let moved = migrate(
        &db.admin_url,
        &DatabaseSettings {
            notify_channel: "chat_events".into(),
            ..settings("another-secret-0123456789-abcdefghijklmn")
        },
    )
    .await
    .unwrap();
    assert!(moved.applied.is_empty());
    assert!(moved.settings_changed);
    let channel: String = db
        .admin()
        .await
        .query_one("select pgchat.channel()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(channel, "chat_events");

    // A definition that changed (here: its record) is applied again, all of them at once.
    db.admin()
        .await
        .batch_execute(
            "update pgchat.schema_definitions set checksum = 'old' where name = '030_chat_rpc.sql'",
        )
        .await
        .unwrap();
    let redefined = migrate(&db.admin_url, &settings(common::JWT_SECRET))
        .await
        .unwrap();
    assert!(redefined.applied.is_empty() && redefined.definitions_applied);
    assert_eq!(next_payload(&mut pgrst).await, "reload schema");
}

/// Definitions are re-runnable: applied raw twice in a row (after the migrations), the
/// second pass changes nothing in the catalog.
#[tokio::test]
async fn every_definition_applies_twice_in_a_row() {
    let db = fresh_database("rawsql");
    create_empty(&db).await;
    let admin = db.admin().await;
    for m in MIGRATIONS {
        admin
            .batch_execute(m.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", m.name));
    }
    let mut prints = Vec::new();
    for pass in 1..=2 {
        for d in DEFINITIONS {
            admin
                .batch_execute(d.sql)
                .await
                .unwrap_or_else(|e| panic!("pass {pass}: {}: {e:?}", d.name));
        }
        prints.push(fingerprint(&db).await);
    }
    assert!(prints[0].contains("proc api.send_message("));
    if prints[0] != prints[1] {
        let first: Vec<&str> = prints[0].lines().collect();
        let changed: Vec<&str> = prints[1].lines().filter(|l| !first.contains(l)).collect();
        panic!("the second pass changed the catalog: {changed:#?}");
    }
}

/// An applied migration whose file changed stops migrate with one clear line, and so
/// does a database migrated by a newer release; neither changes anything.
#[tokio::test]
async fn an_edited_migration_or_a_newer_database_is_refused() {
    let db = fresh_database("refuse");
    migrate(&db.admin_url, &common::settings()).await.unwrap();
    let admin = db.admin().await;
    admin
        .batch_execute("update pgchat.schema_migrations set checksum = 'edited' where version = 2")
        .await
        .unwrap();
    let before = fingerprint(&db).await;
    let err = migrate(&db.admin_url, &common::settings())
        .await
        .unwrap_err();
    assert!(matches!(err, MigrateError::Changed { .. }), "{err:?}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains(MIGRATIONS[1].name) && line.contains("never edited"),
        "{line}"
    );
    assert_eq!(fingerprint(&db).await, before);

    admin
        .batch_execute("delete from pgchat.schema_migrations where version = 2")
        .await
        .unwrap();
    // Re-record version 2 as it really is, then pretend a newer release ran migration 99.
    let real = &MIGRATIONS[1];
    admin
        .execute(
            "insert into pgchat.schema_migrations (version, name, checksum, transactional)
             values (2, $1, encode(sha256(convert_to($2, 'UTF8')), 'hex'), true),
                    (99, '0099_future.sql', 'x', true)",
            &[&real.name, &real.sql],
        )
        .await
        .unwrap();
    let err = migrate(&db.admin_url, &common::settings())
        .await
        .unwrap_err();
    assert!(
        matches!(err, MigrateError::DatabaseAhead { database: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("newer"), "{err}");
    admin
        .batch_execute("delete from pgchat.schema_migrations where version = 99")
        .await
        .unwrap();
    let fine = migrate(&db.admin_url, &common::settings()).await.unwrap();
    assert!(fine.applied.is_empty() && !fine.definitions_applied);
}

/// Several daemons started with `--migrate` at once: each migration applies once.
#[tokio::test]
async fn concurrent_migrate_runs_are_serialised() {
    let db = fresh_database("concurrent");
    create_empty(&db).await;
    let settings = common::settings();
    let runs =
        futures_util::future::join_all((0..4).map(|_| migrate(&db.admin_url, &settings))).await;
    let mut applied: Vec<&str> = Vec::new();
    let mut defined = 0;
    for run in runs {
        let report = run.unwrap();
        applied.extend(&report.applied);
        defined += report.definitions_applied as usize;
    }
    applied.sort();
    let all: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
    assert_eq!(applied, all, "each migration exactly once");
    assert_eq!(defined, 1, "the definitions once");
}

/// One transaction per migration: a failing one leaves nothing of itself, and the ones
/// before it stay applied. A migration declared non-transactional runs statement by
/// statement, so `CREATE INDEX CONCURRENTLY` works.
#[tokio::test]
async fn migrations_are_atomic_unless_declared_otherwise() {
    let db = fresh_database("atomic");
    migrate(&db.admin_url, &common::settings()).await.unwrap();
    let n = MIGRATIONS.len() as i32;
    let extra =
        |version: i32, name: &'static str, transactional: bool, sql: &'static str| Migration {
            version,
            name,
            transactional,
            sql,
        };
    let mut failing = MIGRATIONS.to_vec();
    failing.push(extra(
        n + 1,
        "9001_half_done.sql",
        true,
        "create table api.half_done (id int); insert into api.no_such_table values (1);",
    ));
    let failing: &'static [Migration] = Box::leak(failing.into_boxed_slice());
    let admin = db.admin().await;
    let err = apply_migrations(&admin, failing).await.unwrap_err();
    assert!(
        matches!(
            err,
            MigrateError::Apply {
                file: "9001_half_done.sql",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no_such_table"), "{err}");
    let left: i64 = admin
        .query_one(
            "select (select count(*) from pg_class where relname = 'half_done')
                  + (select count(*) from pgchat.schema_migrations where version > $1)",
            &[&n],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    let mut concurrent = MIGRATIONS.to_vec();
    concurrent.push(extra(
        n + 1,
        "9001_index_concurrently.sql",
        false,
        "-- pgchat:no-transaction\n\
         drop index concurrently if exists api.idx_test_messages_user;\n\
         create index concurrently idx_test_messages_user on api.chat_messages (user_id);\n",
    ));
    let concurrent: &'static [Migration] = Box::leak(concurrent.into_boxed_slice());
    let applied = apply_migrations(&admin, concurrent).await.unwrap();
    assert_eq!(applied, ["9001_index_concurrently.sql"]);
    let row = admin
        .query_one(
            "select i.indisvalid, s.transactional
               from pg_index i, pgchat.schema_migrations s
              where i.indexrelid = 'api.idx_test_messages_user'::regclass and s.version = $1",
            &[&(n + 1)],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the index is valid");
    assert!(!row.get::<_, bool>(1), "recorded as non-transactional");
    assert!(apply_migrations(&admin, concurrent)
        .await
        .unwrap()
        .is_empty());
}

/// PostgREST cannot choose between overloads called with named arguments (PGRST203):
/// every function in `api` has one signature.
#[tokio::test]
async fn one_function_per_name_in_api() {
    let db = common::TestDb::new().await;
    let rows = db
        .admin()
        .await
        .query(
            "select p.proname, count(*)::int from pg_proc p
              where p.pronamespace = 'api'::regnamespace
              group by p.proname order by p.proname",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(names.iter().any(|(n, _)| n == "edit_message"), "{names:?}");
    let overloaded: Vec<&(String, i32)> = names.iter().filter(|(_, c)| *c > 1).collect();
    assert!(overloaded.is_empty(), "overloaded in api: {overloaded:?}");
}
