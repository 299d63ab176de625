//! Test harness: a real PostgreSQL (`DATABASE_URL` when set, testcontainers otherwise),
//! one fresh database per test created from a migrated template, and a helper that runs
//! SQL exactly in PostgREST's transaction context.
#![allow(dead_code)]

pub mod bench;
pub mod captured;
pub mod catalog;
pub mod child;
pub mod doorbell;
pub mod postgrest;
pub mod private_cluster;
pub mod raw_ws;
pub mod server;
pub mod stranger;
pub mod ws_extra;

use std::sync::OnceLock;

use tokio_postgres::NoTls;

/// The SQLSTATE of a database error.
pub fn sqlstate(e: &tokio_postgres::Error) -> &str {
    e.code().expect("a database error").code()
}

pub const JWT_SECRET: &str = "pgchat-test-secret-0123456789-abcdefghij";

/// The admin (superuser) URL of the server tests run against.
pub fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_container(),
    })
    .clone()
}

/// Starts PostgreSQL in a container for machines with Docker. The container lives as
/// long as the test process (it is leaked on purpose and reaped by testcontainers).
fn start_container() -> String {
    use testcontainers::runners::SyncRunner;
    use testcontainers::ImageExt;
    use testcontainers_modules::postgres::Postgres;
    let container = Postgres::default()
        .with_tag("15-alpine")
        .start()
        .expect("DATABASE_URL is not set and no container runtime could start PostgreSQL");
    let port = container.get_host_port_ipv4(5432).expect("container port");
    Box::leak(Box::new(container));
    format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
}

pub fn with_db(url: &str, db: &str) -> String {
    let mut config: tokio_postgres::Config = url.parse().expect("valid DATABASE_URL");
    config.dbname(db);
    config_to_url(&config)
}

pub fn with_user_db(url: &str, user: &str, db: &str) -> String {
    let mut config: tokio_postgres::Config = url.parse().expect("valid DATABASE_URL");
    config.dbname(db);
    config.user(user);
    config.password("");
    config_to_url(&config)
}

fn config_to_url(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("postgres");
    let password = c
        .get_password()
        .filter(|p| !p.is_empty())
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let db = c.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{db}")
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// What the template is migrated with: `JWT_SECRET`, the default channel.
pub fn settings() -> pgchat::migrate::DatabaseSettings {
    pgchat::migrate::DatabaseSettings {
        jwt_key: JWT_SECRET.as_bytes().to_vec(),
        jwt_kid: String::new(),
        notify_channel: "pgchat".into(),
    }
}

/// Prefix of every database the tests create (`PGCHAT_TEST_DB_PREFIX`, default
/// `pgchat`): two checkouts sharing one PostgreSQL set different prefixes, so neither
/// drops the other's templates as stale.
pub fn db_prefix() -> String {
    std::env::var("PGCHAT_TEST_DB_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "pgchat".to_string())
}

/// Name of the template for the current SQL files and settings; a change to any file
/// or setting makes a new one (the settings live in the template's tables).
fn template_name() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let settings = settings();
    let written = [
        ("jwt_key", settings.jwt_key.as_slice()),
        ("notify_channel", settings.notify_channel.as_bytes()),
    ];
    let files = pgchat::migrate::sql_files();
    let files = files
        .iter()
        .map(|(name, sql)| (name.as_str(), sql.as_bytes()));
    for (name, content) in files.chain(written) {
        for &b in name.as_bytes().iter().chain(content) {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{}_tpl_{hash:016x}", db_prefix())
}

/// Creates the migrated template once per SQL version, across test processes
/// (nextest runs each test in its own process), serialised by an advisory lock.
async fn ensure_template() -> String {
    let name = template_name();
    let admin = connect(&with_db(&admin_url(), "postgres")).await;
    admin
        .execute("select pg_advisory_lock(7067636861)", &[])
        .await
        .unwrap();
    let exists = admin
        .query_opt("select 1 from pg_database where datname = $1", &[&name])
        .await
        .unwrap()
        .is_some();
    if !exists {
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!(
                "drop database if exists \"{building}\" with (force)"
            ))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("create database \"{building}\""))
            .await
            .unwrap();
        pgchat::migrate::migrate(&with_db(&admin_url(), &building), &settings())
            .await
            .expect("migrating the template");
        admin
            .batch_execute(&format!(
                "alter database \"{building}\" rename to \"{name}\""
            ))
            .await
            .unwrap();
        // Templates of older SQL versions are no longer needed.
        let stale = admin
            .query(
                "select datname from pg_database
                  where starts_with(datname, $1) and datname <> $2",
                &[&format!("{}_tpl_", db_prefix()), &name],
            )
            .await
            .unwrap();
        for row in stale {
            let old: String = row.get(0);
            let _ = admin
                .batch_execute(&format!("drop database if exists \"{old}\" with (force)"))
                .await;
        }
    }
    admin
        .execute("select pg_advisory_unlock(7067636861)", &[])
        .await
        .unwrap();
    name
}

/// One test's own database, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    /// Superuser URL: for setup only, never for user-facing SQL under test.
    pub admin_url: String,
    /// `authenticator` URL: what PostgREST and pgchat connect as.
    pub authenticator_url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let template = ensure_template().await;
        let name = format!("{}_test_{}_{}", db_prefix(), std::process::id(), next_id());
        let admin = connect(&with_db(&admin_url(), "postgres")).await;
        admin
            .batch_execute(&format!(
                "create database \"{name}\" template \"{template}\""
            ))
            .await
            .unwrap();
        // Nothing to migrate again: what migrate writes besides the schema lives in
        // tables (migration 0002), which the copy carries. (Database settings
        // would not be copied from a template.)
        TestDb {
            authenticator_url: with_user_db(&admin_url(), "authenticator", &name),
            admin_url: with_db(&admin_url(), &name),
            name,
        }
    }

    pub async fn admin(&self) -> tokio_postgres::Client {
        connect(&self.admin_url).await
    }

    pub async fn authenticator(&self) -> tokio_postgres::Client {
        connect(&self.authenticator_url).await
    }

    /// A PostgREST-equivalent request context, connected as `authenticator`.
    pub async fn postgrest(&self) -> postgrest::Postgrest {
        postgrest::Postgrest::new(self.authenticator().await)
    }

    /// Signs up a user through `api.signup` as `anon`; returns (id, token).
    pub async fn signup(&self, email: &str, name: &str) -> (i64, String) {
        let pg = self.postgrest().await;
        let out = pg
            .rpc(
                &postgrest::Claims::anon(),
                "signup",
                &[
                    ("email", &email),
                    ("password", &"password123"),
                    ("name", &name),
                ],
            )
            .await
            .expect("signup");
        (
            out["id"].as_i64().unwrap(),
            out["token"].as_str().unwrap().to_string(),
        )
    }
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (N.fetch_add(1, Ordering::Relaxed) << 32) | t
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = with_db(&admin_url(), "postgres");
        // Drop runs outside async context: use a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("drop database if exists \"{name}\" with (force)"))
                        .await;
                }
            });
        })
        .join();
    }
}
