//! HTTP on the WebSocket port: health, readiness, metrics, static files, origin checks.
use crate::common;

use std::time::Duration;

use common::server::{http_get, Client, TestServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    let mut c = Client::authed(&server.url(), alice).await;
    c.request(json!({"type": "create_room", "name": "m"})).await;
    // The room's NOTIFY reaches the listener after the reply: wait for it to be counted.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = server.get("/metrics").await;
        // Present at zero from start: wait for the count itself.
        let counted = body
            .lines()
            .any(|l| l.starts_with("pgchat_notifications_total ") && !l.ends_with(" 0"));
        if counted || tokio::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200);
    for name in [
        "pgchat_connections",
        "pgchat_db_latency_seconds_bucket",
        "pgchat_notifications_total",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }
    assert_eq!(server.get("/nope").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn readiness_is_false_while_the_database_is_unreachable() {
    let db = common::TestDb::new().await;
    // A port nothing listens on: the pool and LISTEN can never connect.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!(
        "postgres://authenticator@127.0.0.1:{}/x",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = pgchat::config::Config::from_pairs([
        ("DATABASE_URL", dead_url.as_str()),
        ("JWT_SECRET", common::JWT_SECRET),
    ])
    .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let shutdown = cancel.clone().cancelled_owned();
    let task = tokio::spawn(async move { pgchat::server::run(listener, config, shutdown).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(http_get(addr, "/healthz").await.0, 200, "alive");
    assert_eq!(http_get(addr, "/readyz").await.0, 503, "not ready");
    drop(db);
    cancel.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn serves_the_frontend_and_refuses_paths_outside_it() {
    let db = common::TestDb::new().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/frontend");
    let server = TestServer::start(&db, &[("STATIC_DIR", dir)]).await;
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
    assert_eq!(server.get("/../Cargo.toml").await.0, 404);
    assert_eq!(server.get("/%2e%2e/Cargo.toml").await.0, 404);
    server.stop().await;
}

#[tokio::test]
async fn only_allowed_origins_may_open_a_socket() {
    let db = common::TestDb::new().await;
    let server = TestServer::start(&db, &[("ALLOWED_ORIGINS", "http://good.example")]).await;
    let with_origin = |origin: &'static str| {
        let mut req = server.url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    let refused = tokio_tungstenite::connect_async(with_origin("http://evil.example")).await;
    assert!(refused.is_err(), "a foreign origin is refused");
    let ok = tokio_tungstenite::connect_async(with_origin("http://good.example")).await;
    assert!(ok.is_ok());
    // Clients that send no Origin (not browsers) are allowed.
    Client::connect(&server.url()).await;
    server.stop().await;
}

/// A connection storm is queued by the kernel, not dropped: with the common backlog of
/// 128, handshakes beyond it are lost and the client retries only after a 1 s SYN
/// retransmit. Here 600 handshakes complete while nothing accepts yet.
#[tokio::test]
async fn the_listener_queues_a_connection_storm() {
    let listener = pgchat::server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = (0..600).map(|_| {
        tokio::time::timeout(
            Duration::from_millis(900),
            tokio::net::TcpStream::connect(addr),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let completed = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(
        completed, 600,
        "every handshake completed without a retransmit"
    );
    drop(listener);
}

/// Every series is listed from the start, at zero: a dashboard or an alert on a rate
/// sees 0, not "no data". The server runs as its own process, so nothing another test
/// did in this process can have counted.
#[tokio::test]
async fn a_fresh_server_lists_every_series_at_zero() {
    let db = common::TestDb::new().await;
    let server = common::child::ChildServer::start(&db, &[]).await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    let value = |series: &str| -> f64 {
        let line = body
            .lines()
            .find(|l| l.split_whitespace().next() == Some(series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{body}"));
        line.split_whitespace().last().unwrap().parse().unwrap()
    };
    let mut zero: Vec<String> = [
        "pgchat_connections",
        "pgchat_rooms",
        "pgchat_messages_in_total",
        "pgchat_messages_out_total",
        "pgchat_deliveries_total",
        "pgchat_slow_consumer_closes_total",
        "pgchat_ephemeral_dropped_total",
        "pgchat_notifications_total",
        "pgchat_notifications_ignored_total",
        "pgchat_resyncs_total",
        "pgchat_listener_probe_failures_total",
        "pgchat_listener_reconnects_total",
        "pgchat_preupgrade_timeouts_total",
        "pgchat_db_latency_seconds_count",
        "pgchat_db_user_wait_seconds_count",
    ]
    .map(String::from)
    .to_vec();
    for reason in ["max_connections", "unauthenticated_cap", "per_ip_cap"] {
        zero.push(format!(
            "pgchat_connections_refused_total{{reason=\"{reason}\"}}"
        ));
    }
    for code in [
        1000, 1001, 1002, 1007, 1009, 1011, 4000, 4001, 4002, 4003, 4004,
    ] {
        zero.push(format!("pgchat_closes_total{{code=\"{code}\"}}"));
    }
    for code in ["invalid_token", "token_expired", "forbidden"] {
        zero.push(format!("pgchat_auth_failures_total{{code=\"{code}\"}}"));
    }
    for code in [
        "unauthenticated",
        "invalid_token",
        "token_expired",
        "forbidden",
        "not_found",
        "invalid_message",
        "message_too_long",
        "rate_limited",
        "conflict",
        "internal",
    ] {
        zero.push(format!("pgchat_errors_total{{code=\"{code}\"}}"));
    }
    for series in &zero {
        assert_eq!(value(series), 0.0, "{series}");
    }
    // The daemon's own start-up (presence heartbeat, role settings) already took pool
    // connections: that wait is listed, and counted.
    assert!(value("pgchat_db_pool_wait_seconds_count") >= 1.0);
    for histogram in [
        "pgchat_db_latency_seconds",
        "pgchat_db_pool_wait_seconds",
        "pgchat_db_user_wait_seconds",
    ] {
        assert!(
            body.contains(&format!("{histogram}_bucket{{le=\"0.001\"}}")),
            "{histogram} has buckets:\n{body}"
        );
    }

    // Refusals are counted by code: a frame before `auth` is `unauthenticated`.
    let mut c = common::server::Client::connect(&server.url()).await;
    let refused = c.request(json!({"type": "rooms"})).await;
    assert_eq!(refused["code"], "unauthenticated");
    let (_, body) = server.get("/metrics").await;
    assert!(
        body.lines()
            .any(|l| l == "pgchat_errors_total{code=\"unauthenticated\"} 1"),
        "{body}"
    );
}
