//! The pod's migration step against a real PostgreSQL: it waits for a server that comes
//! up later, gives up at once on a refusal that waiting cannot fix, and still accepts the
//! deprecated `--reload-postgrest` (migrate itself tells PostgREST to reload its schema
//! cache when the schema changed: `migrate.rs` tests that).

use crate::common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pgchat::migrate_job::{migrate_when_up, JobError};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::{AsyncMessage, NoTls};

/// Host and port of the test server, which must be reachable over TCP.
fn server_address() -> (String, u16) {
    let config: tokio_postgres::Config = common::admin_url().parse().unwrap();
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        other => panic!("these tests proxy TCP; DATABASE_URL has host {other:?}"),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

/// A port that starts forwarding to PostgreSQL only after `delay`, as a pod's
/// PostgreSQL does while it initialises. Returns the port.
async fn postgres_coming_up_after(delay: Duration) -> u16 {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (host, pg_port) = server_address();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let mut server = TcpStream::connect((host.as_str(), pg_port)).await.unwrap();
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    port
}

fn url_through(port: u16, db: &common::TestDb) -> String {
    let mut config: tokio_postgres::Config = db.admin_url.parse().unwrap();
    config.host("127.0.0.1");
    config.port(port);
    let user = config.get_user().unwrap().to_string();
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    format!("postgres://{user}{password}@127.0.0.1:{port}/{}", db.name)
}

#[tokio::test]
async fn waits_for_postgres_that_comes_up_later_then_migrates() {
    let db = common::TestDb::new().await;
    let port = postgres_coming_up_after(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let report = migrate_when_up(
        &url_through(port, &db),
        &common::settings(),
        Duration::from_secs(20),
    )
    .await
    .expect("migrates once PostgreSQL is up");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // The test database is a migrated template's copy: nothing left to apply.
    assert!(report.applied.is_empty(), "{:?}", report.applied);
    let applied: i64 = db
        .admin()
        .await
        .query_one("select count(*) from pgchat.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied as usize, pgchat::migrate::MIGRATIONS.len());
}

#[tokio::test]
async fn a_refusal_waiting_cannot_fix_fails_at_once() {
    let db = common::TestDb::new().await;
    let mut config: tokio_postgres::Config = db.admin_url.parse().unwrap();
    config.user(format!("{}_no_such_role", common::db_prefix()));
    let (host, port) = server_address();
    let url = format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap(),
        db.name
    );
    let started = Instant::now();
    let err = migrate_when_up(&url, &common::settings(), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(
        matches!(err, JobError::Migrate(_)),
        "not a timeout but the refusal itself: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// `--reload-postgrest` (what older pod files pass) is accepted, says it is deprecated,
/// and sends nothing of its own: on an up-to-date database nothing reaches PostgREST's
/// channel before a sentinel sent after the job ended.
#[tokio::test]
async fn reload_postgrest_is_accepted_as_a_deprecated_no_op() {
    let db = common::TestDb::new().await;
    let (listener, mut connection) = tokio_postgres::connect(&db.admin_url, NoTls).await.unwrap();
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN pgrst").await.unwrap();

    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgchat"))
        .args(["migrate", "--reload-postgrest"])
        .env_clear()
        .env("ADMIN_DATABASE_URL", &db.admin_url)
        .env("DATABASE_URL", &db.authenticator_url)
        .env("JWT_SECRET", common::JWT_SECRET)
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("migrate ends within 60 s")
        .expect("run pgchat migrate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("--reload-postgrest is deprecated"),
        "{stdout}"
    );
    assert!(
        stdout.contains("migrated: 0 migration(s) applied"),
        "{stdout}"
    );

    listener
        .batch_execute("NOTIFY pgrst, 'sentinel'")
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
        .await
        .expect("the sentinel within 5 s")
        .unwrap();
    assert_eq!(got, ("pgrst".to_string(), "sentinel".to_string()));
}
