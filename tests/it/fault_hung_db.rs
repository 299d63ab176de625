//! Issue 11 point 8: a hung database connection is noticed. The daemon talks to a private
//! cluster over a veth pair whose cable the test cuts: packets vanish, nothing is closed.
use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::postgrest::Claims;
use common::private_cluster::PrivateCluster;
use common::server::{http_get, Client, TestServer};
use serde_json::{json, Value};

/// One `/readyz` answer: when it was asked (since the cut), its status, how long it took.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    status: u16,
    took: Duration,
}

async fn post(cluster: &PrivateCluster, user: i64, room: i64, text: &str) -> i64 {
    let out = cluster
        .postgrest()
        .await
        .rpc(
            &Claims::user(user),
            "send_message",
            &[("room_id", &room), ("message", &text)],
        )
        .await
        .expect("writing over the unix socket works while the link is cut");
    out["seq"].as_i64().unwrap()
}

/// `message` frames of `room` until the one with text `last`; returns (seq, text) of each.
async fn messages_until(c: &mut Client, room: i64, last: &str) -> Vec<(i64, String)> {
    let mut seen = Vec::new();
    loop {
        let Some(f) = c.try_recv(Duration::from_secs(30)).await else {
            panic!("`{last}` never arrived; got {seen:?}");
        };
        if f["type"] == "message" && f["roomId"] == room {
            let text = f["message"]["message"].as_str().unwrap().to_string();
            seen.push((f["message"]["seq"].as_i64().unwrap(), text.clone()));
            if text == last {
                return seen;
            }
        }
    }
}

fn reconnects(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("pgchat_listener_reconnects_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits for a reply carrying `r`, for up to `wait`.
async fn reply_to(c: &mut Client, r: &str, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(v) if v["ref"] == r => return Some(v),
            Some(_) => continue,
            None => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cable_cut_is_noticed_readyz_answers_and_nothing_is_lost() {
    let cluster = PrivateCluster::new().await;
    let (alice, room, server, mut b) = room_and_daemon(&cluster).await;
    let mut a = Client::authed(&server.url(), alice).await;
    post(&cluster, alice, room, "before").await;
    let before = messages_until(&mut b, room, "before").await;
    let last_before = before.last().unwrap().0;
    let (_, metrics) = server.get("/metrics").await;
    let reconnects_before = reconnects(&metrics);

    // /readyz is asked four times a second from the cut until it is ready again.
    let cut_at = Instant::now();
    cluster.cut();
    let done = Arc::new(AtomicBool::new(false));
    let addr = server.addr;
    let poller = tokio::spawn({
        let done = done.clone();
        async move {
            let mut samples = Vec::new();
            while !done.load(Ordering::Acquire) {
                let at = cut_at.elapsed();
                let (status, _) = http_get(addr, "/readyz").await;
                samples.push(Sample {
                    at,
                    status,
                    took: cut_at.elapsed() - at,
                });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        }
    });

    // A user action through the daemon's pool: its pooled connection is dead mid-query.
    a.send(json!({"type": "message", "roomId": room, "message": "through the cut", "ref": "cut"}))
        .await;
    let mut during = Vec::new();
    for i in 1..=3 {
        let text = format!("during {i}");
        post(&cluster, alice, room, &text).await;
        during.push(text);
    }

    // The listener notices: it drops the hung connection and starts reconnecting.
    let noticed = loop {
        let (_, metrics) = server.get("/metrics").await;
        if reconnects(&metrics) > reconnects_before {
            break cut_at.elapsed();
        }
        assert!(
            cut_at.elapsed() < Duration::from_secs(25),
            "the listener did not notice the cut within 25 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for i in 4..=6 {
        let text = format!("during {i}");
        post(&cluster, alice, room, &text).await;
        during.push(text);
    }
    // The pooled connection's request fails within the TCP user timeout; it does not hang.
    let reply = reply_to(&mut a, "cut", Duration::from_secs(30) - cut_at.elapsed())
        .await
        .expect("a request over a dead pooled connection is answered within 30 s");
    assert_eq!(reply["type"], "error", "{reply}");
    let failed_at = cut_at.elapsed();

    let restoring_at = cut_at.elapsed();
    cluster.restore();
    let restored_at = cut_at.elapsed();
    let sentinel = "after the cut";
    post(&cluster, alice, room, sentinel).await;
    let got = messages_until(&mut b, room, sentinel).await;

    // Ready again; then stop asking.
    let ready_again = loop {
        let (status, _) = server.get("/readyz").await;
        if status == 200 {
            break cut_at.elapsed();
        }
        assert!(
            cut_at.elapsed() < restored_at + Duration::from_secs(20),
            "/readyz not 200 again within 20 s of the restore"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    done.store(true, Ordering::Release);
    let samples = poller.await.unwrap();

    // Every message of the room after `before`, as the table has them, exactly once, in order.
    let rows = cluster
        .admin()
        .await
        .query(
            "select seq, message from api.chat_messages
              where room_id = $1 and seq > $2 order by seq",
            &[&room, &last_before],
        )
        .await
        .unwrap();
    let stored: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got, stored,
        "received during and after the cut vs the table"
    );
    for text in &during {
        assert!(
            got.iter().any(|(_, t)| t == text),
            "{text} missing: {got:?}"
        );
    }

    let slow: Vec<_> = samples
        .iter()
        .filter(|s| s.status == 0 || s.took > Duration::from_secs(1))
        .collect();
    assert!(slow.is_empty(), "/readyz must answer within 1 s: {slow:?}");
    let first_503 = samples
        .iter()
        .find(|s| s.status == 503)
        .expect("/readyz said 503 during the cut");
    assert!(
        first_503.at < Duration::from_secs(25),
        "503 only {:?} after the cut",
        first_503.at
    );
    // A sample still waiting on its probe when the link came back may rightly say 200,
    // so only samples answered before the restore began must be 503.
    assert!(
        samples
            .iter()
            .filter(|s| s.at > first_503.at && s.at + s.took < restoring_at)
            .all(|s| s.status == 503),
        "/readyz stays 503 while the link is cut: {samples:?}"
    );
    eprintln!(
        "listener noticed {noticed:?}, request failed {failed_at:?}, restored {restored_at:?}, \
         ready again {ready_again:?} after the cut; first 503 {:?}",
        first_503.at
    );
    server.stop().await;
}

/// Alice and Bob in one room of `cluster`, a daemon over the veth, Bob subscribed.
async fn room_and_daemon(cluster: &PrivateCluster) -> (i64, i64, TestServer, Client) {
    let alice = cluster.signup("alice@example.com", "Alice").await;
    let bob = cluster.signup("bob@example.com", "Bob").await;
    let pg = cluster.postgrest().await;
    let room = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"Room"), ("description", &"")],
        )
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    let server = TestServer::start_url(&cluster.daemon_url(), &[]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    let joined = b.request(json!({"type": "join", "roomId": room})).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (alice, room, server, b)
}

/// A backend of the private cluster stopped with SIGSTOP, continued when dropped (so a
/// failing test does not leave a stopped process behind).
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        signal(pid, "-STOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

fn signal(pid: i32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// The LISTEN backend freezes while its TCP connection stays healthy (the kernel still
/// ACKs, so keepalives see nothing): only the probe's deadline can notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_listen_backend_is_noticed_by_the_probe() {
    let cluster = PrivateCluster::new().await;
    let (alice, room, server, mut b) = room_and_daemon(&cluster).await;
    let admin = cluster.admin().await;
    let pid: i32 = admin
        .query_one(
            "select pid from pg_stat_activity where application_name = 'pgchat-listener'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (_, metrics) = server.get("/metrics").await;
    let reconnects_before = reconnects(&metrics);

    let frozen = Frozen::new(pid);
    let frozen_at = Instant::now();
    for i in 1..=3 {
        post(&cluster, alice, room, &format!("frozen {i}")).await;
    }
    loop {
        let (_, metrics) = server.get("/metrics").await;
        if reconnects(&metrics) > reconnects_before {
            break;
        }
        assert!(
            frozen_at.elapsed() < Duration::from_secs(20),
            "a frozen LISTEN backend went unnoticed for 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new LISTEN backend (the frozen one still exists) and the daemon ready again.
    server.wait_ready().await;
    let sentinel = "after the freeze";
    post(&cluster, alice, room, sentinel).await;
    let got = messages_until(&mut b, room, sentinel).await;
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        ["frozen 1", "frozen 2", "frozen 3", sentinel],
        "each once, in order"
    );
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    drop(frozen);
    server.stop().await;
}

/// Idle pooled connections whose peer vanished are closed by TCP keepalives, so a user
/// action long into an outage fails fast on a fresh connection attempt instead of
/// waiting on a dead connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pool_connections_to_a_vanished_peer_are_closed_by_keepalives() {
    let cluster = PrivateCluster::new().await;
    let (_alice, room, server, mut b) = room_and_daemon(&cluster).await;
    // Every pooled connection is made and idle: several requests at once, then quiet.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = Client::authed(&server.url(), cluster_user(&cluster).await).await;
        c.send(json!({"type": "rooms", "ref": "warm"})).await;
        clients.push(c);
    }
    for c in &mut clients {
        assert!(reply_to(c, "warm", Duration::from_secs(10)).await.is_some());
    }

    cluster.cut();
    // The outage itself: nothing to observe until keepalives (10 s idle, 3 probes 3 s
    // apart, TCP user timeout 20 s) have had their time.
    tokio::time::sleep(Duration::from_secs(25)).await;
    b.send(json!({"type": "message", "roomId": room, "message": "late", "ref": "late"}))
        .await;
    let reply = reply_to(&mut b, "late", Duration::from_secs(10))
        .await
        .expect("a request 25 s into the outage answered within 10 s, not stuck on a dead pooled connection");
    assert_eq!(reply["type"], "error", "{reply}");
    cluster.restore();
    server.stop().await;
}

/// A fresh user of `cluster` (signs up over the unix socket).
async fn cluster_user(cluster: &PrivateCluster) -> i64 {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    cluster
        .signup(&format!("user{n}@example.com"), &format!("User {n}"))
        .await
}
