//! `pgchat health [--ready]`, the pod's probe command, run as the real binary against a
//! real server: it passes when the daemon is live (and ready), and fails, in time, when
//! the database is out of reach or nothing listens.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Runs `pgchat health ARGS` with only the settings a pod gives it; returns whether it
/// passed and what it printed on stderr.
async fn health(port: u16, args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgchat"))
        .arg("health")
        .args(args)
        .env_clear()
        .env("JWT_SECRET", common::JWT_SECRET)
        // As in podman.yaml: the daemon listens everywhere; the probe asks loopback.
        .env("WS_HOST", "0.0.0.0")
        .env("WS_PORT", port.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the probe ends within 10 s")
        .expect("run pgchat health");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn passes_when_the_daemon_is_live_and_ready() {
    let db = common::TestDb::new().await;
    let server = common::server::TestServer::start(&db, &[]).await;
    let port = server.addr.port();
    assert_eq!(health(port, &[]).await, (true, String::new()));
    assert_eq!(health(port, &["--ready"]).await, (true, String::new()));
    server.stop().await;
}

/// A daemon whose database cannot be reached: alive, never ready.
async fn server_without_database() -> (SocketAddr, CancellationToken) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = pgchat::config::Config::from_pairs([
        (
            "DATABASE_URL",
            format!("postgres://authenticator@127.0.0.1:{closed}/pgchat"),
        ),
        ("JWT_SECRET", common::JWT_SECRET.to_string()),
        ("DB_POOL_SIZE", "2".to_string()),
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let shutdown = cancel.clone().cancelled_owned();
    tokio::spawn(async move {
        let _ = pgchat::server::run(listener, config, shutdown).await;
    });
    // Live as soon as it answers /healthz.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, cancel)
}

#[tokio::test]
async fn live_but_not_ready_without_the_database() {
    let (addr, cancel) = server_without_database().await;
    assert_eq!(health(addr.port(), &[]).await, (true, String::new()));
    let started = Instant::now();
    let (passed, stderr) = health(addr.port(), &["--ready"]).await;
    assert!(!passed, "ready without a database");
    assert!(
        stderr.contains("/readyz answered `HTTP/1.1 503"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    cancel.cancel();
}

#[tokio::test]
async fn fails_when_nothing_listens() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for args in [&[][..], &["--ready"][..]] {
        let (passed, stderr) = health(closed, args).await;
        assert!(!passed);
        assert!(stderr.starts_with("pgchat: http://127.0.0.1:"), "{stderr}");
    }
}
