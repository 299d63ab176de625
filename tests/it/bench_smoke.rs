//! A small run of each `pgchat-bench` scenario against a real server with its own
//! database. Correctness counts only: nothing lost, duplicated or reordered. Never
//! timings — figures come from benchmark runs (docs/benchmarks.md), not from tests.
use crate::common;

use common::server::TestServer;
use common::{TestDb, JWT_SECRET};
use serde_json::Value;

/// Runs pgchat-bench with `args` against `server` and returns its JSON report.
async fn bench(db: &TestDb, server: &TestServer, args: &[&str]) -> Value {
    let binary = crate::common::bench::bench_binary();
    let out = tokio::process::Command::new(binary)
        .args(["--url", &server.url(), "--admin-url", &db.admin_url])
        .args(["--jwt-secret", JWT_SECRET, "--json", "--source-addrs", "3"])
        .args(["--drain", "10"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("pgchat-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgchat-bench {args:?} failed: {stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing: {report}"))
}

fn assert_all_connected(report: &Value, connections: u64) {
    assert_eq!(n(report, "connected"), connections, "{report}");
    assert_eq!(n(report, "connect_failures"), 0, "{report}");
    assert_eq!(n(report, "closed_by_server"), 0, "{report}");
}

fn assert_every_delivery(report: &Value) {
    assert!(n(report, "sent") > 0, "{report}");
    assert_eq!(n(report, "rejected"), 0, "{report}");
    assert!(n(report, "expected") > 0, "{report}");
    assert_eq!(n(report, "delivered"), n(report, "expected"), "{report}");
    assert_eq!(n(report, "lost"), 0, "{report}");
    assert_eq!(n(report, "duplicates"), 0, "{report}");
    assert_eq!(n(report, "out_of_order"), 0, "{report}");
    assert_eq!(n(report, "foreign"), 0, "{report}");
    assert!(report["latency_ms"]["p99"].is_number(), "{report}");
}

async fn start() -> (TestDb, TestServer) {
    let db = TestDb::new().await;
    // The per-user rate limit is the daemon's, not what these runs look at.
    let server = TestServer::start(&db, &[("RATE_LIMIT_PER_SEC", "0")]).await;
    (db, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_opens_authenticates_and_joins_every_socket() {
    let (db, server) = start().await;
    let pid = std::process::id().to_string();
    let args = ["connect", "-n", "40", "--room-size", "10", "--hold", "0.2"];
    let report = bench(&db, &server, &[&args[..], &["--server-pid", &pid]].concat()).await;
    assert_eq!(report["scenario"], "connect");
    assert_all_connected(&report, 40);
    assert!(report["connects_per_s"].is_number(), "{report}");
    assert!(report["server_rss_bytes_after"].is_number(), "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_once_in_order() {
    let (db, server) = start().await;
    let report = bench(
        &db,
        &server,
        &[
            "fanout",
            "--rooms",
            "3",
            "--members",
            "10",
            "--rate",
            "40",
            "--duration",
            "2",
            "--typing-rate",
            "5",
        ],
    )
    .await;
    assert_eq!(report["scenario"], "fanout");
    assert_all_connected(&report, 30);
    assert_every_delivery(&report);
    // 80 messages to rooms of 10, the sender included.
    assert_eq!(n(&report, "expected"), n(&report, "sent") * 10, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bigroom_delivers_every_message_to_every_member() {
    let (db, server) = start().await;
    let args = [
        "bigroom",
        "--members",
        "40",
        "--rate",
        "10",
        "--duration",
        "2",
    ];
    let report = bench(&db, &server, &args).await;
    assert_eq!(report["scenario"], "bigroom");
    assert_all_connected(&report, 40);
    assert_every_delivery(&report);
    assert_eq!(n(&report, "expected"), n(&report, "sent") * 40, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_acks_every_message_and_measures_the_limit() {
    let (db, server) = start().await;
    let args = ["persist", "-k", "4", "--duration", "1", "--db-url"];
    let report = bench(
        &db,
        &server,
        &[&args[..], &[&db.authenticator_url]].concat(),
    )
    .await;
    assert_eq!(report["scenario"], "persist");
    assert_all_connected(&report, 4);
    assert_every_delivery(&report);
    assert_eq!(n(&report, "acked"), n(&report, "sent"), "{report}");
    assert!(report["limit_msgs_per_s"].is_number(), "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_more_connections_than_open_files_allow() {
    let out = tokio::process::Command::new(crate::common::bench::bench_binary())
        .args(["--jwt-secret", JWT_SECRET, "connect", "-n", "25000"])
        .output()
        .await
        .expect("pgchat-bench runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing"), "{stderr}");
}
