//! `pgchat-bench scale` small (issue 15): three `pgchat serve` processes on one
//! database, a few hundred sockets in rooms spanning all three, held by two worker
//! processes; one daemon is SIGKILLed mid-traffic. Counts only — nothing lost,
//! duplicated or reordered, every socket of the dead daemon resumed on the others — plus
//! the presence-sweep bound. Never timings: figures come from `scripts/scale-run`
//! (docs/benchmarks.md).
use crate::common;

use common::child::ChildServer;
use common::{TestDb, JWT_SECRET};
use serde_json::Value;

/// A dead daemon is swept once it has been silent for 3 heartbeats (30 s) at the next
/// heartbeat of a survivor (every 10 s): at most 40 s after it died.
const SWEEP_BOUND_S: f64 = 40.0;
/// The bench sees the sweep by polling every 250 ms, and the survivor's heartbeat
/// statement itself takes time on a busy machine: what the measurement may add.
const MEASURING_SLACK_S: f64 = 2.0;

fn n(report: &Value, path: &[&str]) -> u64 {
    let mut v = report;
    for key in path {
        v = &v[key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} missing: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_lose_one_and_lose_nothing() {
    let db = TestDb::new().await;
    // Small pools: the shared server's max_connections is shared by every test.
    let settings = [("DB_POOL_SIZE", "3"), ("RATE_LIMIT_PER_SEC", "0")];
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(ChildServer::start(&db, &settings).await);
    }
    let urls: Vec<String> = daemons.iter().map(ChildServer::url).collect();
    let pids: Vec<String> = daemons.iter().map(|d| d.pid().to_string()).collect();
    let out = tokio::process::Command::new(crate::common::bench::bench_binary())
        .args(["--url", &urls.join(","), "--server-pid", &pids.join(",")])
        .args(["--admin-url", &db.admin_url, "--jwt-secret", JWT_SECRET])
        .args(["--json", "--source-addrs", "3", "--drain", "20"])
        .args(["scale", "-n", "300", "--room-size", "50", "--workers", "2"])
        .args(["--rate", "20", "--duration", "6", "--typing-period", "20"])
        .args(["--api-rate", "4", "--kill-at", "2", "--kill", "2"])
        .args([
            "--sweep-bound",
            &SWEEP_BOUND_S.to_string(),
            "--sweep-wait",
            "60",
        ])
        .kill_on_drop(true)
        .output()
        .await
        .expect("pgchat-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Exit 3 is a run that went through with a timing check failed: not this test's.
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "pgchat-bench scale failed ({:?}): {stderr}",
        out.status
    );
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    assert_eq!(n(&report, &["connected"]), 300, "{report}");
    assert_eq!(n(&report, &["connect_failures"]), 0, "{report}");
    for d in report["daemons"].as_array().expect("daemons") {
        assert_eq!(d["sockets"], 100, "sockets spread evenly: {report}");
    }
    assert!(n(&report, &["sent"]) > 0, "{report}");
    assert_eq!(n(&report, &["rejected"]), 0, "{report}");
    assert!(n(&report, &["expected"]) > 0, "{report}");
    assert_eq!(n(&report, &["lost"]), 0, "{report}");
    assert_eq!(n(&report, &["duplicates"]), 0, "{report}");
    assert_eq!(n(&report, &["out_of_order"]), 0, "{report}");
    assert_eq!(n(&report, &["foreign"]), 0, "{report}");
    assert_eq!(n(&report, &["closed_by_server"]), 0, "{report}");
    assert!(n(&report, &["typing_received"]) > 0, "{report}");
    assert!(report["rooms_ms"]["p95"].is_number(), "{report}");
    assert!(report["history_ms"]["p95"].is_number(), "{report}");

    // The dead daemon's 100 sockets all resumed on the two others, and its presence
    // rows were swept within the documented bound.
    assert_eq!(n(&report, &["kill", "sockets"]), 100, "{report}");
    assert_eq!(n(&report, &["kill", "gave_up"]), 0, "{report}");
    assert!(n(&report, &["kill", "reconnects"]) >= 100, "{report}");
    // Every resume is timed from connected to rejoined, and every resumed socket's
    // deliveries after it are counted apart (it receives live messages).
    assert!(report["kill"]["rejoin_ms"]["p50"].is_number(), "{report}");
    assert!(
        report["kill"]["resumed_live_ms"]["p50"].is_number(),
        "{report}"
    );
    assert!(report["kill"]["resent"].is_u64(), "{report}");
    assert_eq!(n(&report, &["kill", "presence_rows"]), 100, "{report}");
    let swept = report["kill"]["presence_swept_after_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("presence not swept within 60 s: {report}"));
    assert!(
        swept <= SWEEP_BOUND_S + MEASURING_SLACK_S,
        "swept after {swept} s: {report}"
    );
    drop(daemons);
}
