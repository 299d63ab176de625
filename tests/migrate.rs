//! `pgchat migrate` run twice changes nothing, and every SQL file is idempotent on its
//! own (applied raw, twice in a row). Changes are detected with a catalog fingerprint:
//! definitions, privileges, policies, triggers and settings of everything pgchat owns.
//! A database at the previous release (tests/fixtures/previous_release) upgrades.

mod common;

#[allow(dead_code)]
#[path = "fixtures/previous_release/migrate.rs"]
mod previous_release;

use pgchat::migrate::{migrate, DatabaseSettings, SQL_FILES};

const FINGERPRINT: &str = r#"
select string_agg(line, E'\n' order by line) from (
  select format('proc %s.%s(%s) %s acl=%s', n.nspname, p.proname,
                pg_get_function_identity_arguments(p.oid), md5(pg_get_functiondef(p.oid)),
                coalesce(p.proacl::text, 'default')) as line
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname in ('api', 'private', 'pgchat')
  union all
  select format('class %s.%s %s rls=%s force=%s opts=%s acl=%s persistence=%s',
                n.nspname, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity,
                c.reloptions, coalesce(c.relacl::text, 'default'), c.relpersistence)
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname in ('api', 'private', 'pgchat')
  union all
  select format('column %s.%s %s notnull=%s default=%s identity=%s acl=%s',
                a.attrelid::regclass, a.attname, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attacl)
    from pg_attribute a
    join pg_class c on c.oid = a.attrelid
    join pg_namespace n on n.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
   where n.nspname in ('api', 'private', 'pgchat') and a.attnum > 0 and not a.attisdropped
  union all
  select format('constraint %s %s %s', co.conrelid::regclass, co.conname,
                pg_get_constraintdef(co.oid))
    from pg_constraint co join pg_namespace n on n.oid = co.connamespace
   where n.nspname in ('api', 'private', 'pgchat')
  union all
  select format('index %s', indexdef) from pg_indexes
   where schemaname in ('api', 'private', 'pgchat')
  union all
  select format('view %s.%s %s', schemaname, viewname, md5(definition)) from pg_views
   where schemaname in ('api', 'private', 'pgchat')
  union all
  select format('policy %s %s cmd=%s permissive=%s roles=%s using=%s check=%s',
                po.polrelid::regclass, po.polname, po.polcmd, po.polpermissive,
                po.polroles::regrole[], pg_get_expr(po.polqual, po.polrelid),
                pg_get_expr(po.polwithcheck, po.polrelid))
    from pg_policy po
  union all
  select format('trigger %s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    from pg_trigger t where not t.tgisinternal
  union all
  select format('schema %s acl=%s', nspname, coalesce(nspacl::text, 'default'))
    from pg_namespace where nspname in ('api', 'private', 'pgchat', 'public')
  union all
  select format('default acl %s %s %s %s', defaclrole::regrole, defaclnamespace::regnamespace,
                defaclobjtype, defaclacl)
    from pg_default_acl
  union all
  select format('extension %s %s', extname, extversion) from pg_extension
  union all
  select format('setting %s', cfg)
    from pg_db_role_setting s, unnest(s.setconfig) cfg
   where s.setdatabase = (select oid from pg_database where datname = current_database())
  union all
  select format('jwt key kid=%s alg=%s secret=%s active=%s', kid, alg, md5(secret), active)
    from private.jwt_keys
  union all
  select format('settings notify_channel=%s', notify_channel) from private.settings
  union all
  select format('role %s login=%s inherit=%s member_of=%s', r.rolname, r.rolcanlogin,
                r.rolinherit,
                (select array_agg(m.roleid::regrole order by m.roleid::regrole::text)
                   from pg_auth_members m where m.member = r.oid))
    from pg_roles r where r.rolname in ('anon', 'authenticated', 'authenticator')
) lines
"#;

fn settings(secret: &str) -> DatabaseSettings {
    DatabaseSettings {
        jwt_key: secret.as_bytes().to_vec(),
        jwt_kid: String::new(),
        notify_channel: "pgchat".into(),
    }
}

/// A database of our own, dropped at the end (TestDb's Drop does that by name).
fn fresh_database(prefix: &str) -> common::TestDb {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("{prefix}_{}_{nanos}", std::process::id());
    common::TestDb {
        admin_url: common::with_db(&common::admin_url(), &name),
        authenticator_url: String::new(),
        name,
    }
}

async fn fingerprint(db: &common::TestDb) -> String {
    let admin = db.admin().await;
    admin.query_one(FINGERPRINT, &[]).await.unwrap().get(0)
}

async fn migrations_table(db: &common::TestDb) -> Vec<(String, String, String)> {
    let admin = db.admin().await;
    admin
        .query(
            "select name, checksum, applied_at::text from pgchat.migrations order by name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn running_migrate_twice_is_a_no_op() {
    let db = fresh_database("pgchat_migrate");
    // The first run creates the database and applies every file, in order.
    let first = migrate(&db.admin_url, &settings(common::JWT_SECRET))
        .await
        .unwrap();
    let all: Vec<&str> = SQL_FILES.iter().map(|(name, _)| *name).collect();
    assert_eq!(first.applied, all);
    assert!(first.settings_changed);
    let catalog = fingerprint(&db).await;
    for needle in [
        "class api.chat_messages r rls=t ",
        "policy api.chat_messages chat_messages_insert",
        "trigger CREATE TRIGGER chat_messages_notify",
        "jwt key kid= alg=HS256 ",
        "settings notify_channel=pgchat",
        "role authenticator login=t inherit=f",
    ] {
        assert!(catalog.contains(needle), "fingerprint lacks {needle}");
    }
    // Nothing is left in database settings, which every role can read.
    assert!(!catalog.contains("setting "), "{catalog}");
    let recorded = migrations_table(&db).await;
    assert_eq!(recorded.len(), SQL_FILES.len());

    let second = migrate(&db.admin_url, &settings(common::JWT_SECRET))
        .await
        .unwrap();
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert!(!second.settings_changed);
    assert_eq!(fingerprint(&db).await, catalog);
    assert_eq!(migrations_table(&db).await, recorded);

    // A new secret is a settings change only.
    let rotated = migrate(
        &db.admin_url,
        &settings("another-secret-0123456789-abcdefghijklmn"),
    )
    .await
    .unwrap();
    assert!(rotated.applied.is_empty());
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
    let admin = db.admin().await;
    let channel: String = admin
        .query_one("select pgchat.channel()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(channel, "chat_events");
}

#[tokio::test]
async fn every_sql_file_applies_twice_in_a_row() {
    let db = fresh_database("pgchat_rawsql");
    let server = common::connect(&common::with_db(&common::admin_url(), "postgres")).await;
    server
        .batch_execute(&format!("create database \"{}\"", db.name))
        .await
        .unwrap();
    let admin = db.admin().await;
    let mut prints = Vec::new();
    for pass in 1..=2 {
        for (name, sql) in SQL_FILES {
            admin
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("pass {pass}: {name}: {e:?}"));
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

/// Issue 11 points 0 and 3 on upgrade (SPEC §6.1: tested from a database at the
/// previous release). That release kept the signing key and the channel in database
/// settings, where every role reads them and every session shadows them. After today's
/// migrate they are gone from there, and the users, passwords, tokens and messages
/// the database held all still work.
#[tokio::test]
async fn a_database_at_the_previous_release_upgrades_and_loses_its_settings() {
    let mut db = fresh_database(&format!("{}_upgrade", common::db_prefix()));
    previous_release::migrate(
        &db.admin_url,
        &previous_release::DatabaseSettings {
            jwt_secret: common::JWT_SECRET,
            notify_channel: "pgchat",
        },
    )
    .await
    .unwrap();
    db.authenticator_url = common::with_user_db(&common::admin_url(), "authenticator", &db.name);
    let (alice, old_token) = db.signup("alice@example.com", "Alice").await;
    let room = {
        let pg = db.postgrest().await;
        let room = pg.create_room(alice, "General").await;
        pg.send(alice, room, "written before the upgrade").await;
        room
    };
    let stranger = common::stranger::Stranger::new(&db).await;
    let leaked: Option<String> = stranger
        .connect()
        .await
        .query_one("select current_setting('app.jwt_secret', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        leaked.as_deref(),
        Some(common::JWT_SECRET),
        "the fixture is not the release that leaked the key"
    );

    let report = migrate(&db.admin_url, &common::settings()).await.unwrap();
    for file in ["005_settings.sql", "010_auth.sql", "050_notify.sql"] {
        assert!(report.applied.contains(&file), "{:?}", report.applied);
    }
    assert!(report.settings_changed);

    // Settings are read when a session starts: new sessions see what is left.
    let s = stranger.connect().await;
    let setting: Option<String> = s
        .query_one("select current_setting('app.jwt_secret', true)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, None);
    let stored: Vec<String> = s
        .query(
            "select cfg from pg_db_role_setting d, unnest(d.setconfig) cfg
              where d.setdatabase = (select oid from pg_database
                                      where datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored.is_empty(), "database settings left: {stored:?}");
    let channel: String = db
        .admin()
        .await
        .query_one("select pgchat.channel()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(channel, "pgchat");

    // The old password logs in; the new token and the one from before both verify.
    let pg = db.postgrest().await;
    let out = pg
        .rpc(
            &common::postgrest::Claims::anon(),
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
    for token in [out["token"].as_str().unwrap(), old_token.as_str()] {
        let identity = verifier.verify(token, now).unwrap();
        assert_eq!(identity.user_id, Some(alice));
    }
    let history = pg
        .rpc(
            &common::postgrest::Claims::user(alice),
            "send_message",
            &[("room_id", &room), ("message", &"written after")],
        )
        .await
        .unwrap();
    assert_eq!(history["seq"], 2, "the room's messages were kept");

    let again = migrate(&db.admin_url, &common::settings()).await.unwrap();
    assert!(again.applied.is_empty(), "{:?}", again.applied);
    assert!(!again.settings_changed);
}
