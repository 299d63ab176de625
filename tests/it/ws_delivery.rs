//! SPEC §2.3 delivery guarantees over real sockets, a real database and real daemons.
use crate::common;

use std::time::Duration;

use common::postgrest::Claims;
use common::server::{Client, TestServer};
use common::TestDb;
use serde_json::{json, Value};

/// Alice and Bob, members of one room; returns (alice, bob, room).
async fn room_with_two(db: &TestDb) -> (i64, i64, i64) {
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"Room"), ("description", &"")],
        )
        .await
        .unwrap();
    let room = room["id"].as_i64().unwrap();
    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    (alice, bob, room)
}

async fn join(c: &mut Client, room: i64, since: Option<i64>) -> Value {
    let mut frame = json!({"type": "join", "roomId": room});
    if let Some(s) = since {
        frame["since"] = json!(s);
    }
    let reply = c.request(frame).await;
    assert_eq!(reply["type"], "joined", "{reply}");
    reply
}

/// Collects `message` frames for `room` until `count` arrived; returns their seqs.
async fn collect_seqs(c: &mut Client, room: i64, count: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let Some(frame) = c.try_recv(Duration::from_secs(15)).await else {
            panic!("only {} of {count} messages arrived: {seqs:?}", seqs.len());
        };
        if frame["type"] == "message" && frame["roomId"] == room {
            seqs.push(frame["message"]["seq"].as_i64().unwrap());
        }
    }
    seqs
}

async fn post_as(db: &TestDb, user: i64, room: i64, text: &str) -> Value {
    db.postgrest()
        .await
        .rpc(
            &Claims::user(user),
            "send_message",
            &[("room_id", &room), ("message", &text)],
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_row_written_through_postgrest_reaches_sockets() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room, None).await;

    post_as(&db, alice, room, "via PostgREST").await;
    // A plain INSERT through PostgREST's table endpoint, too.
    db.postgrest()
        .await
        .query(
            &Claims::user(alice),
            "insert into api.chat_messages (room_id, message) values ($1, $2)",
            &[&room, &"via POST /chat_messages"],
        )
        .await
        .unwrap();
    let first = b.recv_type("message").await;
    assert_eq!(first["message"]["message"], "via PostgREST");
    assert_eq!(first["message"]["user_name"], "Alice");
    let second = b.recv_type("message").await;
    assert_eq!(second["message"]["message"], "via POST /chat_messages");
    assert_eq!(second["message"]["seq"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_15_kb_message_arrives_whole() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room, None).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let big: String = "漢字かなカナ".chars().cycle().take(5000).collect();
    assert!(big.len() > 14_000, "{} bytes", big.len());
    let ack = a
        .request(json!({"type": "message", "roomId": room, "message": big}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = b.recv_type("message").await;
    assert_eq!(m["message"]["message"].as_str().unwrap(), big);
    assert_eq!(m["message"]["user_name"], "Alice");
    server.stop().await;
}

#[tokio::test]
async fn losing_the_listen_connection_mid_stream_loses_nothing() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room, None).await;

    let writer = {
        let pg = db.postgrest().await;
        tokio::spawn(async move {
            for i in 1..=200 {
                pg.rpc(
                    &Claims::user(alice),
                    "send_message",
                    &[("room_id", &room), ("message", &format!("m{i}"))],
                )
                .await
                .unwrap();
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    let admin = db.admin().await;
    // Kill the LISTEN backend twice while messages stream.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        wait_for_listener(&admin).await;
        let killed = admin
            .query(
                "select pg_terminate_backend(pid) from pg_stat_activity
                  where application_name = 'pgchat-listener' and datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "exactly one LISTEN backend for one daemon");
    }
    writer.await.unwrap();
    let seqs = collect_seqs(&mut b, room, 200).await;
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "each once, in order");
    assert!(b
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|f| f["type"] != "message"));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metric(&metrics, "pgchat_listener_reconnects_total") >= 2.0,
        "both losses counted: {metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn clients_resume_by_since_across_a_daemon_restart() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let addr = server.addr;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room, None).await;
    for i in 1..=5 {
        post_as(&db, alice, room, &format!("before {i}")).await;
    }
    let seen = collect_seqs(&mut b, room, 5).await;
    let last_seen = *seen.last().unwrap();

    server.stop().await;
    assert!(b
        .close_code(Duration::from_secs(5))
        .await
        .is_some_and(|c| c == 1001));
    for i in 1..=7 {
        post_as(&db, alice, room, &format!("while down {i}")).await;
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = TestServer::start_on(&db, &[], listener).await;
    let mut b = Client::authed(&server.url(), bob).await;
    b.send(json!({"type": "join", "roomId": room, "since": last_seen, "ref": "j"}))
        .await;
    for i in 1..=3 {
        post_as(&db, alice, room, &format!("after {i}")).await;
    }
    let seqs = collect_seqs(&mut b, room, 10).await;
    assert_eq!(
        seqs,
        (6..=15).collect::<Vec<_>>(),
        "replay then live, no gap, no duplicate"
    );
    assert!(b
        .try_recv(Duration::from_millis(300))
        .await
        .is_none_or(|f| f["type"] != "message"));
    server.stop().await;
}

#[tokio::test]
async fn resending_a_client_id_never_duplicates() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room, None).await;
    let frame =
        json!({"type": "message", "roomId": room, "message": "once", "clientId": "retry-1"});
    let first = a.request(frame.clone()).await;
    let second = a.request(frame).await;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["seq"], second["seq"]);
    b.recv_type("message").await;
    assert!(b
        .try_recv(Duration::from_millis(400))
        .await
        .is_none_or(|f| f["type"] != "message"));
    server.stop().await;
}

#[tokio::test]
async fn leaving_through_postgrest_stops_delivery_at_once() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut a, room, None).await;
    join(&mut b, room, None).await;

    db.postgrest()
        .await
        .rpc(&Claims::user(bob), "leave_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    let notice = b.recv_type("room_left").await;
    assert_eq!(notice["roomId"], room);
    let gone = a.recv_type("user_left").await;
    assert_eq!(gone["user"]["id"], bob);
    a.request(json!({"type": "message", "roomId": room, "message": "secret"}))
        .await;
    a.recv_type("message").await;
    assert!(
        b.try_recv(Duration::from_millis(500)).await.is_none(),
        "bob hears nothing after leaving"
    );
    let refused = b.request(json!({"type": "join", "roomId": room})).await;
    assert_eq!(refused["code"], "forbidden");
    server.stop().await;
}

#[tokio::test]
async fn two_daemons_behave_as_one() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    // Indicators end 300 ms after their last write, not after the row's 5 s.
    let short_typing = [("TYPING_TTL_MS", "300")];
    let one = TestServer::start(&db, &short_typing).await;
    let two = TestServer::start(&db, &short_typing).await;
    let mut a = Client::authed(&one.url(), alice).await;
    let mut b = Client::authed(&two.url(), bob).await;
    join(&mut a, room, None).await;
    let jb = join(&mut b, room, None).await;
    // Presence crosses daemons.
    common::server::assert_sees_online(&mut b, &jb, alice).await;
    assert_eq!(a.recv_type("user_joined").await["user"]["id"], bob);

    a.request(json!({"type": "message", "roomId": room, "message": "across"}))
        .await;
    assert_eq!(b.recv_type("message").await["message"]["message"], "across");

    b.send(json!({"type": "typing", "roomId": room, "isTyping": true}))
        .await;
    let t = a.recv_type("typing").await;
    assert_eq!(
        (t["user"]["id"].as_i64(), t["isTyping"].as_bool()),
        (Some(bob), Some(true))
    );
    // Typing ends by itself on the other daemon too.
    let t = a.recv_type("typing").await;
    assert_eq!(t["isTyping"], false);

    // A daemon that stops announces its users gone to the others.
    drop(b);
    two.stop().await;
    assert_eq!(a.recv_type("user_left").await["user"]["id"], bob);
    one.stop().await;
}

#[tokio::test]
async fn presence_is_per_user_across_tabs() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    join(&mut a, room, None).await;
    let mut tab1 = Client::authed(&server.url(), bob).await;
    let mut tab2 = Client::authed(&server.url(), bob).await;
    join(&mut tab1, room, None).await;
    assert_eq!(a.recv_type("user_joined").await["user"]["id"], bob);
    join(&mut tab2, room, None).await;
    drop(tab1);
    // Bob still has a tab open: no user_left yet, and no second user_joined.
    assert!(a.try_recv(Duration::from_millis(500)).await.is_none());
    drop(tab2);
    assert_eq!(a.recv_type("user_left").await["user"]["id"], bob);
    server.stop().await;
}

/// Messages posted while one client never reads: ~15 KB each, 30 MB in all, which an
/// unbounded queue would hold for the stalled socket (its kernel buffers take ~3 MB).
const FLOOD_MESSAGES: usize = 2000;
const FLOOD_BATCH: usize = 10;
/// How much the server's resident memory may grow meanwhile: a bounded queue holds at
/// most `OUTBOUND_QUEUE` frames (1 MB here), the rest is the allocator's slack.
/// Measured: 1.1 MiB with the bounded queue; 27 MiB with a queue of a million frames.
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    let db = TestDb::new().await;
    let (alice, bob, room) = room_with_two(&db).await;
    // The server runs as its own process, so its memory is measured alone.
    let server = common::child::ChildServer::start(
        &db,
        &[("OUTBOUND_QUEUE", "64"), ("RATE_LIMIT_PER_SEC", "0")],
    )
    .await;
    let mut stalled = stalled_client(server.addr, bob).await;
    join(&mut stalled, room, None).await;
    // A socket of Alice's reads everything, concurrently, as a live client would.
    let mut reader = Client::authed(&server.url(), alice).await;
    join(&mut reader, room, None).await;
    let reading =
        tokio::spawn(async move { collect_seqs(&mut reader, room, FLOOD_MESSAGES).await });
    let rss_before = server.rss_kib();
    let pg = db.postgrest().await;
    let mut peak = rss_before;
    for batch in 0..FLOOD_MESSAGES / FLOOD_BATCH {
        pg.query(
            &Claims::user(alice),
            "insert into api.chat_messages (room_id, message)
             select $1, i || ' ' || repeat('遅', 4990) from generate_series(1, $2::int) i",
            &[&room, &(FLOOD_BATCH as i32)],
        )
        .await
        .unwrap();
        if batch % 10 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    assert_eq!(
        reading.await.unwrap(),
        (1..=FLOOD_MESSAGES as i64).collect::<Vec<_>>(),
        "the reader kept receiving everything"
    );
    peak = peak.max(server.rss_kib());
    let grown = peak.saturating_sub(rss_before);
    assert!(
        grown < RSS_GROWTH_BOUND_KIB,
        "server memory grew by {grown} KiB for one stalled client"
    );
    let (_, metrics) = server.get("/metrics").await;
    let closes = metric(&metrics, "pgchat_slow_consumer_closes_total");
    assert!(closes >= 1.0, "slow consumer closed: {metrics}");
    // The server closed the stalled socket: reading what its kernel buffers hold ends
    // in a Close frame, EOF or a reset, never in silence.
    let mut frames = 0;
    loop {
        match stalled.ws.next_frame().await {
            Next::Frame => frames += 1,
            Next::Closed => break,
            Next::Silent => panic!("the stalled connection is still open after {frames} frames"),
        }
    }
}

/// Waits until the daemon's LISTEN backend is connected (it reconnects with backoff).
async fn wait_for_listener(admin: &tokio_postgres::Client) {
    for _ in 0..100 {
        let n = admin
            .query(
                "select 1 from pg_stat_activity
                  where application_name = 'pgchat-listener' and datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .len();
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the LISTEN connection did not come back");
}

/// Authenticates with a tiny receive buffer, then never reads again.
async fn stalled_client(addr: std::net::SocketAddr, user: i64) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/ws");
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut c = Client { ws };
    c.send(json!({"type": "auth", "token": common::server::token_for(user, Some(3600))}))
        .await;
    c.recv_type("authenticated").await;
    c
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// What reading a socket the server may have closed found.
enum Next {
    Frame,
    /// A Close frame, EOF or a reset: the server ended the connection.
    Closed,
    /// Nothing within 10 s: the connection is still open.
    Silent,
}

trait NextFrame {
    async fn next_frame(&mut self) -> Next;
}

impl<S> NextFrame for tokio_tungstenite::WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    async fn next_frame(&mut self) -> Next {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        match tokio::time::timeout(Duration::from_secs(10), self.next()).await {
            Err(_) => Next::Silent,
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => Next::Closed,
            Ok(Some(Ok(_))) => Next::Frame,
        }
    }
}
