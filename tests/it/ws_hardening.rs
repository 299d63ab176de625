//! Connections that never finish cannot take the slots of those that do: floods of
//! silent and slowloris connections, the header and upgrade deadlines, the
//! unauthenticated pool, the per-address cap and trusted proxies (issue 11, point 4).
//! Attackers come from 127.0.0.2, legitimate clients from 127.0.0.1 (both loopback).
use crate::common;
use crate::common::raw_ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::server::{token_for, Client, TestServer};
use common::TestDb;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderName;
use tokio_tungstenite::MaybeTlsStream;
use tokio_util::sync::CancellationToken;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A WebSocket client connecting from `source`, with extra upgrade headers.
async fn ws_from(
    server: &TestServer,
    source: IpAddr,
    headers: &[(&str, &str)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let stream = raw_ws::tcp(source, server.addr, false).await;
    let mut request = server.url().into_client_request().unwrap();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(Client { ws })
}

async fn authenticate(c: &mut Client, user: i64) {
    let reply = c
        .request(json!({"type": "auth", "token": token_for(user, Some(3600))}))
        .await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
}

async fn assert_alive(c: &mut Client) {
    assert_eq!(c.request(json!({"type": "ping"})).await["type"], "pong");
}

async fn metric(server: &TestServer, name: &str, label: Option<&str>) -> f64 {
    let (_, text) = server.get("/metrics").await;
    raw_ws::metric(&text, name, label)
}

/// Waits until the server ends `stream` (EOF or reset); panics after `bound`.
async fn closed_within(stream: &mut tokio::net::tcp::OwnedReadHalf, bound: Duration, what: &str) {
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "{what}: still open after {bound:?}");
}

/// Writes `request` one byte every `every`, from the start, until the write fails.
fn trickle(mut w: tokio::net::tcp::OwnedWriteHalf, request: String, every: Duration) {
    tokio::spawn(async move {
        for b in request.bytes().cycle() {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// One attacker: holds a connection from `source` that never finishes the upgrade
/// (silent, or trickling its request one byte a second), and opens another whenever the
/// server ends it, until `stop`. `connected` gets a permit once its first one is open
/// (and, for slowloris, has sent its first byte).
async fn attacker(
    addr: SocketAddr,
    slowloris: bool,
    stop: CancellationToken,
    connected: Arc<tokio::sync::Semaphore>,
) {
    let request = raw_ws::upgrade_request(Some("13"), "").into_bytes();
    let mut first = true;
    while !stop.is_cancelled() {
        let Ok(stream) = raw_ws::try_tcp(ATTACKER, addr, false).await else {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let (mut r, mut w) = stream.into_split();
        let mut sent = 0;
        if slowloris && w.write_all(&request[..1]).await.is_ok() {
            sent = 1;
        }
        if std::mem::take(&mut first) {
            connected.add_permits(1);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut buf = [0u8; 256];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = r.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                _ = tick.tick(), if slowloris => {
                    let byte = request[sent % request.len()];
                    if w.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The test: with `MAX_CONNECTIONS=60`, 60 silent and 60 slowloris connections
/// from 127.0.0.2 (re-opened as soon as the server drops them) leave a client from
/// 127.0.0.1 able to upgrade and authenticate within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slowloris_floods_do_not_lock_out_a_client() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("MAX_CONNECTIONS", "60")]).await;

    let stop = CancellationToken::new();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let mut attack = tokio::task::JoinSet::new();
    for i in 0..120 {
        attack.spawn(attacker(
            server.addr,
            i % 2 == 1,
            stop.clone(),
            connected.clone(),
        ));
    }
    // All 120 are connected before the client: the server's accept queue holds them first.
    let _all = connected.acquire_many(120).await.unwrap();

    for round in 0..3 {
        let started = tokio::time::Instant::now();
        let mut c = tokio::time::timeout(Duration::from_secs(2), async {
            let mut c = ws_from(&server, CLIENT, &[]).await.expect("upgrade");
            authenticate(&mut c, alice).await;
            c
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: not authenticated within 2 s"));
        eprintln!("round {round}: authenticated in {:?}", started.elapsed());
        assert_alive(&mut c).await;
    }

    let refused = "pgchat_connections_refused_total";
    assert!(metric(&server, refused, Some("unauthenticated_cap")).await > 0.0);
    assert!(metric(&server, refused, Some("evicted")).await >= 1.0);
    stop.cancel();
    attack.shutdown().await;
}

/// An upgraded connection that does not authenticate gives its place to a newcomer
/// from another address when the pool is full: it is closed with 1013.
#[tokio::test]
async fn an_unauthenticated_session_gives_way_with_1013() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    // A quarter of 8: two connections may be unauthenticated at once.
    let server = TestServer::start(&db, &[("MAX_CONNECTIONS", "8")]).await;
    let mut oldest = ws_from(&server, ATTACKER, &[]).await.unwrap();
    let mut newer = ws_from(&server, ATTACKER, &[]).await.unwrap();
    // Full: a third from the same address is turned away…
    assert!(ws_from(&server, ATTACKER, &[]).await.is_err());
    // …one from another address takes the oldest's place.
    let mut c = ws_from(&server, CLIENT, &[]).await.unwrap();
    authenticate(&mut c, alice).await;
    assert_eq!(oldest.close_code(Duration::from_secs(5)).await, Some(1013));
    assert_alive(&mut newer).await;
    assert_alive(&mut c).await;
}

/// Silent, and trickling a request, a connection is closed at the header timeout.
#[tokio::test]
async fn unfinished_headers_are_cut_at_the_header_timeout() {
    let db = TestDb::new().await;
    let server = TestServer::start(
        &db,
        &[("HEADER_TIMEOUT_SECS", "1"), ("UPGRADE_TIMEOUT_SECS", "30")],
    )
    .await;
    let (mut silent, _silent_w) = raw_ws::tcp(CLIENT, server.addr, false).await.into_split();
    let (mut slow, slow_w) = raw_ws::tcp(CLIENT, server.addr, false).await.into_split();
    trickle(
        slow_w,
        raw_ws::upgrade_request(Some("13"), ""),
        Duration::from_millis(200),
    );
    closed_within(&mut silent, Duration::from_secs(4), "silent").await;
    closed_within(&mut slow, Duration::from_secs(4), "slowloris").await;
    assert!(metric(&server, "pgchat_preupgrade_timeouts_total", None).await >= 2.0);
}

/// Headers that keep coming (each within the header timeout's reach) are still cut
/// at the upgrade deadline; a connection that upgraded in time lives on past it.
#[tokio::test]
async fn a_request_trickled_past_the_upgrade_deadline_is_cut() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(
        &db,
        &[("HEADER_TIMEOUT_SECS", "30"), ("UPGRADE_TIMEOUT_SECS", "1")],
    )
    .await;
    let mut upgraded = ws_from(&server, CLIENT, &[]).await.unwrap();
    authenticate(&mut upgraded, alice).await;
    let (mut slow, slow_w) = raw_ws::tcp(CLIENT, server.addr, false).await.into_split();
    trickle(
        slow_w,
        raw_ws::upgrade_request(Some("13"), ""),
        Duration::from_millis(200),
    );
    closed_within(&mut slow, Duration::from_secs(4), "slowloris").await;
    assert!(metric(&server, "pgchat_preupgrade_timeouts_total", None).await >= 1.0);
    // More than the deadline after its own upgrade, the WebSocket is still served.
    assert_alive(&mut upgraded).await;
}

/// `MAX_CONNECTIONS_PER_IP` counts every connection of an address, authenticated or
/// not; other addresses are unaffected, and a closed connection frees its place.
#[tokio::test]
async fn the_per_ip_cap_refuses_one_address_only() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("MAX_CONNECTIONS_PER_IP", "2")]).await;
    let mut first = ws_from(&server, ATTACKER, &[]).await.unwrap();
    authenticate(&mut first, alice).await;
    let _second = ws_from(&server, ATTACKER, &[]).await.unwrap();
    assert!(ws_from(&server, ATTACKER, &[]).await.is_err());
    let mut other = ws_from(&server, CLIENT, &[]).await.unwrap();
    authenticate(&mut other, alice).await;
    assert!(
        metric(
            &server,
            "pgchat_connections_refused_total",
            Some("per_ip_cap")
        )
        .await
            >= 1.0
    );

    drop(first);
    // The server notices the close on its own schedule: retry until the place is free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut again = loop {
        if let Ok(c) = ws_from(&server, ATTACKER, &[]).await {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "place never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    authenticate(&mut again, alice).await;
}

/// Behind a trusted proxy the cap applies to the right-most untrusted address of
/// `X-Forwarded-For`; a spoofed left part changes nothing, and from an untrusted peer
/// the header is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_capped() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(
        &db,
        &[
            ("MAX_CONNECTIONS_PER_IP", "1"),
            ("TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    let mut a = ws_from(&server, CLIENT, &xff("203.0.113.5")).await.unwrap();
    authenticate(&mut a, alice).await;
    // Same client behind the proxy: HTTP 503 before the upgrade.
    match ws_from(&server, CLIENT, &xff("203.0.113.5")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        Err(e) => panic!("expected 503, got {e}"),
        Ok(_) => panic!("a second connection of 203.0.113.5 was let in"),
    }
    // What the client wrote itself (the left part) is not believed.
    let mut b = ws_from(&server, CLIENT, &xff("203.0.113.5, 198.51.100.9"))
        .await
        .unwrap();
    authenticate(&mut b, alice).await;
    // Three connections from the proxy's own address: it is not capped itself. An
    // untrusted peer is its own client, whatever its header says.
    let mut c = ws_from(&server, CLIENT, &xff("198.51.100.10"))
        .await
        .unwrap();
    authenticate(&mut c, alice).await;
    let mut d = ws_from(&server, ATTACKER, &xff("203.0.113.77"))
        .await
        .unwrap();
    authenticate(&mut d, alice).await;
    assert!(ws_from(&server, ATTACKER, &xff("203.0.113.78"))
        .await
        .is_err());
    assert_alive(&mut a).await;
}
