//! The frame layer over real sockets: pongs and other frames
//! written by pgchat's own writer never interleave; large frames (64-bit length form,
//! many partial writes) arrive whole; the server pings on its interval. Close frames
//! are validated, the upgrade wants version 13, and a session ended in the middle of a
//! frame finishes that frame before its Close (issue 11, point 10). A ping never counts
//! against the message size limit (issue 12).
use crate::common;
use crate::common::raw_ws;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::postgrest::Claims;
use common::server::{token_for, Client, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn client_pings_are_answered_between_whole_frames() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;

    // A ping, then a request straight after: the pong and the reply both come back,
    // each as a well-formed frame.
    for n in 0..20u8 {
        let payload = vec![b'p', n];
        a.ws.send(Message::Ping(payload.clone().into()))
            .await
            .unwrap();
        a.send(json!({"type": "ping", "ref": n})).await;
        let mut got_pong = false;
        let mut got_reply = false;
        while !(got_pong && got_reply) {
            let frame = tokio::time::timeout(Duration::from_secs(10), a.ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("well-formed");
            match frame {
                Message::Pong(p) => {
                    assert_eq!(p.as_ref(), payload.as_slice());
                    got_pong = true;
                }
                Message::Text(t) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(v["type"], "pong", "{v}");
                    assert_eq!(v["ref"], n);
                    got_reply = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn the_server_pings_on_its_interval() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("PING_INTERVAL_SECS", "1")]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pings < 2 {
        let frame = tokio::time::timeout_at(deadline, a.ws.next())
            .await
            .expect("two pings within 5 s")
            .expect("open")
            .expect("well-formed");
        if let Message::Ping(p) = frame {
            assert!(p.is_empty());
            pings += 1;
        }
    }
    // tungstenite answered with pongs; the connection is still good for requests.
    let pong = a.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn a_history_page_of_large_messages_arrives_whole() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "Big").await;
    // 40 messages of 5,000 three-byte characters: a ~600 KB `history` frame, far more
    // than one socket write takes.
    let texts: Vec<String> = (0..40)
        .map(|i| format!("{i:02}{}", "あ".repeat(4998)))
        .collect();
    for t in &texts {
        pg.send(alice, room, t).await;
    }
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let page = a
        .request(json!({"type": "history", "roomId": room, "limit": 40}))
        .await;
    let messages = page["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 40);
    let mut got: Vec<&str> = messages
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    got.sort();
    let mut want: Vec<&str> = texts.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(got, want);
    // Frames after it are intact too.
    let pong = a.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");
}

#[tokio::test]
async fn protocol_violations_close_with_1002_and_bad_text_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;

    let mut a = Client::authed(&server.url(), alice).await;
    let reserved = Frame::message(b"x".to_vec(), OpCode::Data(Data::Reserved(3)), true);
    a.ws.send(Message::Frame(reserved)).await.unwrap();
    assert_eq!(a.close_code(Duration::from_secs(5)).await, Some(1002));

    let mut b = Client::authed(&server.url(), alice).await;
    let not_utf8 = Frame::message(vec![b'{', 0xFF, 0xFE], OpCode::Data(Data::Text), true);
    b.ws.send(Message::Frame(not_utf8)).await.unwrap();
    assert_eq!(b.close_code(Duration::from_secs(5)).await, Some(1007));

    // A message sent in fragments is reassembled and answered like any other.
    let mut c = Client::authed(&server.url(), alice).await;
    let text = br#"{"type":"ping","ref":"frag"}"#;
    let (head, tail) = text.split_at(10);
    let first = Frame::message(head.to_vec(), OpCode::Data(Data::Text), false);
    let rest = Frame::message(tail.to_vec(), OpCode::Data(Data::Continue), true);
    c.ws.send(Message::Frame(first)).await.unwrap();
    c.ws.send(Message::Frame(rest)).await.unwrap();
    let pong = c.recv().await;
    assert_eq!(
        (pong["type"].as_str(), pong["ref"].as_str()),
        (Some("pong"), Some("frag"))
    );
}

/// RFC 6455 §5.5: control frames have a limit of their own (125 bytes) and never count
/// against MAX_FRAME_BYTES. A ping of the largest size, sent while a message that ends
/// exactly at the limit is half received, is answered at once, and the message is too.
#[tokio::test]
async fn a_ping_inside_a_message_at_the_size_limit_is_answered() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;

    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("MAX_FRAME_BYTES", "1024")]).await;
    let mut a = Client::authed(&server.url(), alice).await;

    let mut text = br#"{"type":"ping","ref":"edge"}"#.to_vec();
    text.resize(1024, b' '); // JSON allows the trailing spaces
    let (head, tail) = text.split_at(1000);
    let first = Frame::message(head.to_vec(), OpCode::Data(Data::Text), false);
    a.ws.send(Message::Frame(first)).await.unwrap();
    let ping = vec![b'p'; 125];
    a.ws.send(Message::Ping(ping.clone().into())).await.unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), a.ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("well-formed");
    assert_eq!(pong, Message::Pong(ping.into()), "answered mid-message");

    let rest = Frame::message(tail.to_vec(), OpCode::Data(Data::Continue), true);
    a.ws.send(Message::Frame(rest)).await.unwrap();
    let reply = a.recv().await;
    assert_eq!(
        (reply["type"].as_str(), reply["ref"].as_str()),
        (Some("pong"), Some("edge")),
        "{reply}"
    );
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn metric(server: &TestServer, name: &str, label: Option<&str>) -> f64 {
    let (_, text) = server.get("/metrics").await;
    raw_ws::metric(&text, name, label)
}

/// RFC 6455 §7.4: a client's Close with a code that may not be on the wire, a 1-byte
/// payload or a reason that is not UTF-8 gets 1002; a valid one is echoed, and a Close
/// without a code gets one without a code (never 1005).
#[tokio::test]
async fn close_frames_are_validated_and_reserved_codes_never_sent() {
    let db = common::TestDb::new().await;
    let server = TestServer::start(&db, &[]).await;
    let with_code = |code: u16, reason: &[u8]| [&code.to_be_bytes()[..], reason].concat();
    let mut cases: Vec<(Vec<u8>, Option<u16>)> = vec![
        (vec![], None),
        (with_code(1000, b"bye"), Some(1000)),
        (with_code(1001, b""), Some(1001)),
        (with_code(3000, b""), Some(3000)),
        (with_code(4999, "fin é".as_bytes()), Some(4999)),
        (vec![0x03], Some(1002)),
        (with_code(1000, &[b'o', 0xC3]), Some(1002)),
    ];
    for forbidden in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        cases.push((with_code(forbidden, b""), Some(1002)));
    }
    for (payload, expected) in &cases {
        let mut ws = raw_ws::RawWs::upgrade(raw_ws::tcp(LOCAL, server.addr, false).await).await;
        ws.send(raw_ws::CLOSE, payload).await;
        let (op, reply) = ws
            .frame(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no Close in reply to {payload:?}"));
        assert_eq!(op, raw_ws::CLOSE, "reply to {payload:?}");
        assert_eq!(
            raw_ws::close_code(&reply),
            *expected,
            "reply to {payload:?}"
        );
    }
    let refused = cases.iter().filter(|(_, c)| *c == Some(1002)).count() as f64;
    assert!(metric(&server, "pgchat_closes_total", Some("code=\"1002\"")).await >= refused);
    assert!(metric(&server, "pgchat_closes_total", Some("code=\"none\"")).await >= 1.0);
    let (_, text) = server.get("/metrics").await;
    for never in ["1005", "1006", "1015"] {
        assert!(
            !text.contains(&format!("code=\"{never}\"")),
            "{never} sent: {text}"
        );
    }
}

/// RFC 6455 §4.4: another version, or none, gets 426 naming the one spoken here.
#[tokio::test]
async fn the_upgrade_requires_websocket_version_13() {
    let db = common::TestDb::new().await;
    let server = TestServer::start(&db, &[]).await;
    for version in [Some("8"), Some("14"), None] {
        let stream = raw_ws::tcp(LOCAL, server.addr, false).await;
        let request = raw_ws::upgrade_request(version, "");
        let (status, head, _) = raw_ws::RawWs::handshake(stream, &request).await;
        assert_eq!(status, 426, "{version:?}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-version: 13\r\n"),
            "{head}"
        );
    }
    let stream = raw_ws::tcp(LOCAL, server.addr, false).await;
    let request = raw_ws::upgrade_request(Some("13"), "");
    assert_eq!(raw_ws::RawWs::handshake(stream, &request).await.0, 101);
}

/// A raw client of `user`'s, joined to `room`, whose receive buffer is as small as the
/// kernel allows: once it stops reading, the server's writes to it stall halfway.
async fn stalling_reader(server: &TestServer, user: i64, room: i64) -> raw_ws::RawWs {
    let stream = raw_ws::tcp(LOCAL, server.addr, true).await;
    let mut ws = raw_ws::RawWs::upgrade(stream).await;
    ws.send_json(json!({"type": "auth", "token": token_for(user, Some(3600))}))
        .await;
    ws.recv_type("authenticated").await;
    ws.send_json(json!({"type": "join", "roomId": room})).await;
    ws.recv_type("joined").await;
    ws
}

/// The bytes a server sent until it ended the connection parse as whole frames to the
/// very end, and the last is a Close with `code`; the others are JSON text frames.
#[track_caller]
fn assert_whole_frames_then_close(wire: &[u8], code: u16) {
    let (frames, used) = raw_ws::parse_frames(wire, usize::MAX);
    let (last_op, last) = frames.last().expect("frames");
    assert_eq!(
        used,
        wire.len(),
        "{} bytes after {} whole frames (last opcode {last_op:#x}): a frame was cut short",
        wire.len() - used,
        frames.len()
    );
    assert_eq!(*last_op, raw_ws::CLOSE);
    assert_eq!(raw_ws::close_code(last), Some(code));
    for (op, payload) in &frames[..frames.len() - 1] {
        assert_eq!(*op, raw_ws::TEXT);
        serde_json::from_slice::<serde_json::Value>(payload).expect("a whole JSON frame");
    }
}

/// A reader too slow for its queue is killed (4003) while the server is stuck halfway
/// through a frame to it: the frame is finished before the Close, not cut by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_after_a_whole_frame() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "slow").await;
    let server =
        TestServer::start(&db, &[("OUTBOUND_QUEUE", "4"), ("RATE_LIMIT_PER_SEC", "0")]).await;
    let mut slow = stalling_reader(&server, alice, room).await;
    // 20 KB rows until the kill: far more than the socket buffers hold.
    let text = "😀".repeat(5000);
    let mut posted = 0;
    while metric(&server, "pgchat_slow_consumer_closes_total", None).await < 1.0 {
        assert!(posted < 1500, "slow reader never kicked");
        for _ in 0..5 {
            posted += 1;
            pg.rpc(
                &Claims::user(alice),
                "send_message",
                &[("room_id", &room), ("message", &text)],
            )
            .await
            .unwrap();
        }
    }
    let wire = slow.read_to_end(Duration::from_secs(10)).await;
    assert_whole_frames_then_close(&wire, 4003);
}

/// Shutdown while a frame is half on the wire: the frame is finished, then Close 1001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_in_the_middle_of_a_frame_finishes_it_then_closes_1001() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "big").await;
    let server = TestServer::start(&db, &[("RATE_LIMIT_PER_SEC", "0")]).await;
    let mut slow = stalling_reader(&server, alice, room).await;
    let mut reader = Client::authed(&server.url(), alice).await;
    reader
        .request(json!({"type": "join", "roomId": room}))
        .await;
    // 8 MB for a socket whose buffers hold well under half of it (4 MB send buffer at
    // most): its session is stuck writing when the last row has reached the reader.
    let text = "😀".repeat(5000);
    for seq in 1..=400 {
        pg.send(alice, room, &text).await;
        let m = reader.recv_type("message").await;
        assert_eq!(m["message"]["seq"], seq);
    }
    server.cancel.cancel();
    let wire = slow.read_to_end(Duration::from_secs(10)).await;
    assert_whole_frames_then_close(&wire, 1001);
    server.stop().await;
}
