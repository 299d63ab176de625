//! Every protocol error code with a real trigger, and every close code the server uses
//! for abuse or shutdown, against the real server and real WebSocket clients.
//!
//! `internal` is provoked honestly: the database cancels a user's statement (statement
//! timeout) because an operator's trigger is slow. That is a server-side failure the user
//! cannot fix, so it must surface as `internal` without leaking details.
use crate::common;
use crate::common::ws_extra;

use std::time::Duration;

use common::postgrest::Claims;
use common::server::{token_for, Client, TestServer};
use common::TestDb;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use ws_extra::*;

/// Alice's room, joined (membership) by the given users; returns its id.
async fn room_with(c: &mut Client, members: &mut [&mut Client]) -> i64 {
    let room = c
        .request(json!({"type": "create_room", "name": "General"}))
        .await;
    assert_eq!(room["type"], "room", "{room}");
    let id = room["room"]["id"].as_i64().unwrap();
    for m in members.iter_mut() {
        let r = m.request(json!({"type": "join_room", "roomId": id})).await;
        assert_eq!(r["type"], "room", "{r}");
    }
    id
}

async fn message_count(db: &TestDb) -> i64 {
    db.admin()
        .await
        .query_one("select count(*) from api.chat_messages", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn unauthenticated_before_auth() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut c = Client::connect(&server.url()).await;
    for frame in [
        json!({"type": "rooms"}),
        json!({"type": "join", "roomId": 1}),
        json!({"type": "message", "roomId": 1, "message": "hi"}),
        json!({"type": "create_room", "name": "x"}),
    ] {
        let r = c.request(frame).await;
        assert_error(&r, "unauthenticated");
    }
    assert_alive(&mut c).await;
    assert_eq!(
        auth(&mut c, &token_for(alice, Some(60))).await["type"],
        "authenticated"
    );
    assert_eq!(c.request(json!({"type": "rooms"})).await["type"], "rooms");
    assert_eq!(message_count(&db).await, 0);
}

#[tokio::test]
async fn invalid_and_expired_tokens_are_refused_and_connection_lives() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut c = Client::connect(&server.url()).await;
    assert_error(&auth(&mut c, "a.b.c").await, "invalid_token");
    assert_alive(&mut c).await;
    let expired = token_with(alice, json!({"exp": now() - 120}));
    assert_error(&auth(&mut c, &expired).await, "token_expired");
    assert_alive(&mut c).await;
    assert_error(
        &c.request(json!({"type": "rooms"})).await,
        "unauthenticated",
    );
}

#[tokio::test]
async fn forbidden_for_a_room_the_user_is_not_in() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    let room = room_with(&mut a, &mut []).await;
    a.request(json!({"type": "join", "roomId": room})).await;

    for frame in [
        json!({"type": "message", "roomId": room, "message": "let me in"}),
        json!({"type": "join", "roomId": room}),
        json!({"type": "history", "roomId": room}),
        json!({"type": "read", "roomId": room, "seq": 1}),
        json!({"type": "typing", "roomId": room, "isTyping": true}),
    ] {
        let r = b.request(frame.clone()).await;
        assert_error(&r, "forbidden");
    }
    assert_alive(&mut b).await;
    // Nothing was stored or relayed to the member.
    assert_eq!(message_count(&db).await, 0);
    let (frames, _) = drain(&mut a, Duration::from_millis(300)).await;
    assert!(
        frames
            .iter()
            .all(|f| !matches!(f["type"].as_str(), Some("message" | "typing" | "read"))),
        "{frames:?}"
    );
}

#[tokio::test]
async fn not_found_for_a_missing_room() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let r = a
        .request(json!({"type": "join_room", "roomId": 987_654}))
        .await;
    assert_error(&r, "not_found");
    assert_alive(&mut a).await;
}

#[tokio::test]
async fn malformed_frames_get_invalid_message_and_connection_lives() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let room = room_with(&mut a, &mut []).await;

    for text in [
        "not json",
        "[1, 2]",
        "{\"roomId\": 1}",
        "{\"type\": 5}",
        "{\"type\": \"fly\"}",
        "{\"type\": \"join\"}",
        "{\"type\": \"join\", \"roomId\": \"abc\"}",
        "{\"type\": \"message\", \"roomId\": 1}",
        "{\"type\": \"typing\", \"roomId\": 1}",
        "{\"type\": \"auth\"}",
    ] {
        a.send_text(text).await;
        let r = a.recv_type("error").await;
        assert_error(&r, "invalid_message");
        assert_alive(&mut a).await;
    }
    // A refused frame still has its ref echoed.
    let r = a.request(json!({"type": "join"})).await;
    assert_error(&r, "invalid_message");
    // Binary frames are not part of the protocol.
    a.ws.send(Message::Binary(vec![0u8, 1].into()))
        .await
        .unwrap();
    assert_error(&a.recv_type("error").await, "invalid_message");
    // An empty message is invalid too, and nothing is stored.
    let r = a
        .request(json!({"type": "message", "roomId": room, "message": ""}))
        .await;
    assert_error(&r, "invalid_message");
    assert_alive(&mut a).await;
    assert_eq!(message_count(&db).await, 0);
}

#[tokio::test]
async fn message_too_long_at_the_default_limit() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let room = room_with(&mut a, &mut []).await;

    let r = a
        .request(json!({"type": "message", "roomId": room, "message": "x".repeat(5001)}))
        .await;
    assert_error(&r, "message_too_long");
    // The limit counts characters, not bytes: 5000 two-byte characters are fine.
    let r = a
        .request(json!({"type": "message", "roomId": room, "message": "é".repeat(5000)}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
    assert_eq!(message_count(&db).await, 1);
}

#[tokio::test]
async fn message_too_long_at_a_configured_limit_and_from_the_database_rule() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let small = TestServer::start(&db, &[("MESSAGE_MAX_CHARS", "10")]).await;
    let mut a = Client::authed(&small.url(), alice).await;
    let room = room_with(&mut a, &mut []).await;
    let r = a
        .request(json!({"type": "message", "roomId": room, "message": "12345678901"}))
        .await;
    assert_error(&r, "message_too_long");
    let r = a
        .request(json!({"type": "message", "roomId": room, "message": "1234567890"}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
    small.stop().await;

    // A daemon configured above the database's own 5000-character rule: the database
    // refuses, and the refusal is still `message_too_long`.
    let big = TestServer::start(&db, &[("MESSAGE_MAX_CHARS", "6000")]).await;
    let mut a = Client::authed(&big.url(), alice).await;
    let r = a
        .request(json!({"type": "message", "roomId": room, "message": "y".repeat(5500)}))
        .await;
    assert_error(&r, "message_too_long");
    assert_eq!(message_count(&db).await, 1);
}

#[tokio::test]
async fn internal_when_the_database_cancels_the_statement() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    db.admin()
        .await
        .batch_execute(
            "create function public.slow_insert() returns trigger language plpgsql as $$ \
             begin if new.message = 'slow' then perform pg_sleep(3); end if; return new; end $$; \
             create trigger slow_insert before insert on api.chat_messages \
               for each row execute function public.slow_insert();",
        )
        .await
        .unwrap();
    let server = TestServer::start(&db, &[("DB_TIMEOUT_MS", "500")]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    let room = room_with(&mut a, &mut [&mut b]).await;
    b.request(json!({"type": "join", "roomId": room})).await;

    let r = a
        .request(json!({"type": "message", "roomId": room, "message": "slow"}))
        .await;
    assert_error(&r, "internal");
    let text = r["message"].as_str().unwrap().to_lowercase();
    assert!(
        !text.contains("timeout") && !text.contains("cancel") && !text.contains("57014"),
        "database details leaked to the client: {r}"
    );
    // Nothing committed, nothing broadcast; the connection and the server carry on.
    assert_eq!(message_count(&db).await, 0);
    let ok = a
        .request(json!({"type": "message", "roomId": room, "message": "fast"}))
        .await;
    assert_eq!(ok["type"], "ack", "{ok}");
    let m = b.recv_type("message").await;
    assert_eq!(m["message"]["message"], "fast", "{m}");
}

#[tokio::test]
async fn rate_limited_then_closed_4002() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let server = TestServer::start(
        &db,
        &[("RATE_LIMIT_PER_SEC", "1"), ("RATE_LIMIT_BURST", "1")],
    )
    .await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;

    for i in 0..20 {
        a.send(json!({"type": "rooms", "ref": i})).await;
    }
    let (frames, end) = drain(&mut a, Duration::from_secs(10)).await;
    let limited = frames
        .iter()
        .filter(|f| f["type"] == "error" && f["code"] == "rate_limited")
        .count();
    let served = frames.iter().filter(|f| f["type"] == "rooms").count();
    assert!(served >= 1, "{frames:?}");
    // Ten refusals are tolerated; the eleventh within a minute closes the connection.
    assert_eq!(limited, 10, "{frames:?}");
    assert_eq!(frames.len(), served + limited, "{frames:?}");
    assert_eq!(end, End::Close(4002));
    // The limit is per user: Bob is served.
    assert_eq!(b.request(json!({"type": "rooms"})).await["type"], "rooms");
}

#[tokio::test]
async fn rate_limited_refusal_keeps_the_connection() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(
        &db,
        &[("RATE_LIMIT_PER_SEC", "1"), ("RATE_LIMIT_BURST", "1")],
    )
    .await;
    let mut a = Client::authed(&server.url(), alice).await;
    a.send(json!({"type": "rooms", "ref": "first"})).await;
    let r = a.request(json!({"type": "rooms"})).await;
    assert_error(&r, "rate_limited");
    assert_alive(&mut a).await;
}

#[tokio::test]
async fn auth_timeout_closes_4000() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("AUTH_TIMEOUT_SECS", "1")]).await;
    let mut idle = Client::connect(&server.url()).await;
    let mut authed = Client::authed(&server.url(), alice).await;
    let (frames, end) = drain(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(end, End::Close(4000), "{frames:?}");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_error(&frames[0], "unauthenticated");
    // The socket that authenticated in time is past the deadline and still served.
    assert_alive(&mut authed).await;
}

#[tokio::test]
async fn expired_token_not_refreshed_closes_4001() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut c = Client::connect(&server.url()).await;
    let r = auth(&mut c, &token_with(alice, json!({"exp": now() - 28}))).await;
    assert_eq!(r["type"], "authenticated", "{r}");
    let (frames, end) = drain(&mut c, Duration::from_secs(6)).await;
    assert_eq!(end, End::Close(4001), "{frames:?}");
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_error(&frames[0], "token_expired");
}

#[tokio::test]
async fn idle_timeout_closes_4004_and_activity_keeps_alive() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(
        &db,
        &[("IDLE_TIMEOUT_SECS", "1"), ("PING_INTERVAL_SECS", "10")],
    )
    .await;
    let mut idle = Client::authed(&server.url(), alice).await;
    let mut busy = Client::authed(&server.url(), alice).await;
    let keep_busy = async {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_alive(&mut busy).await;
        }
    };
    let (_, (frames, end)) = tokio::join!(keep_busy, drain(&mut idle, Duration::from_secs(6)));
    assert_eq!(end, End::Close(4004), "{frames:?}");
    assert!(frames.is_empty(), "{frames:?}");
}

#[tokio::test]
async fn shutdown_closes_1001() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let room = room_with(&mut a, &mut []).await;
    a.request(json!({"type": "join", "roomId": room})).await;
    let mut anonymous = Client::connect(&server.url()).await;
    assert_alive(&mut anonymous).await;
    let (_, ca, cb) = tokio::join!(
        server.stop(),
        a.close_code(Duration::from_secs(10)),
        anonymous.close_code(Duration::from_secs(10))
    );
    assert_eq!(ca, Some(1001));
    assert_eq!(cb, Some(1001));
}

#[tokio::test]
async fn oversize_frame_ends_the_connection() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("MAX_FRAME_BYTES", "1024")]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut other = Client::authed(&server.url(), alice).await;
    let room = room_with(&mut a, &mut []).await;
    // Just under the limit is fine.
    let ok = a
        .request(json!({"type": "message", "roomId": room, "message": "x".repeat(900)}))
        .await;
    assert_eq!(ok["type"], "ack", "{ok}");

    a.send(json!({"type": "message", "roomId": room, "message": "x".repeat(2000)}))
        .await;
    let (frames, end) = drain(&mut a, Duration::from_secs(5)).await;
    // Nothing answers the oversize frame (room notices pushed earlier may still arrive).
    assert!(
        frames
            .iter()
            .all(|f| !matches!(f["type"].as_str(), Some("ack" | "error" | "message"))),
        "{frames:?}"
    );
    assert!(
        matches!(end, End::Close(1009) | End::Dropped),
        "expected close 1009 or a dropped connection, got {end:?}"
    );
    assert_eq!(message_count(&db).await, 1);
    assert_alive(&mut other).await;
}

/// RFC 6455 §7.4.1: an endpoint refusing a message too big to process closes with 1009.
#[tokio::test]
async fn oversize_frame_closes_1009() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let server = TestServer::start(&db, &[("MAX_FRAME_BYTES", "1024")]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    a.send_text(&"x".repeat(2000)).await;
    let (frames, end) = drain(&mut a, Duration::from_secs(5)).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(end, End::Close(1009));
}

/// The `seq` of every `message` frame, in arrival order.
fn seqs(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["message"]["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_4003_while_readers_get_everything() {
    const MAX_MESSAGES: i64 = 1500;
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let server =
        TestServer::start(&db, &[("OUTBOUND_QUEUE", "4"), ("RATE_LIMIT_PER_SEC", "0")]).await;
    let mut reader = Client::authed(&server.url(), alice).await;
    let mut slow = connect_small_buffer(server.addr, &server.url()).await;
    assert_eq!(
        auth(&mut slow, &token_for(bob, Some(3600))).await["type"],
        "authenticated"
    );
    let room = room_with(&mut reader, &mut [&mut slow]).await;
    reader
        .request(json!({"type": "join", "roomId": room}))
        .await;
    slow.request(json!({"type": "join", "roomId": room})).await;
    // From here on `slow` reads nothing until the end.

    // Big rows (5000 four-byte characters, too big for NOTIFY: the daemon fetches them)
    // posted until the slow socket's kernel buffers and outbound queue overflow. The
    // reader is checked after every message, so its own queue never holds more than one.
    let pg = db.postgrest().await;
    let text = "😀".repeat(5000);
    let mut posted = 0;
    while kicks(&server).await < Some(1.0) {
        assert!(posted < MAX_MESSAGES, "slow reader never kicked");
        for _ in 0..25 {
            posted += 1;
            pg.rpc(
                &Claims::user(alice),
                "send_message",
                &[("room_id", &room), ("message", &text)],
            )
            .await
            .unwrap();
            let m = reader.recv_type("message").await;
            assert_eq!(m["message"]["seq"], posted, "reader missed or reordered");
            assert_eq!(m["message"]["message"], text.as_str());
        }
    }
    assert_alive(&mut reader).await;

    let (frames, end) = drain(&mut slow, Duration::from_secs(10)).await;
    let got = seqs(&frames);
    eprintln!(
        "posted {posted}, slow reader got {} then {end:?}",
        got.len()
    );
    assert!(
        matches!(end, End::Close(4003) | End::Dropped),
        "slow reader not closed: {end:?} after {} messages",
        got.len()
    );
    assert!(
        (got.len() as i64) < posted,
        "a closed slow reader cannot have everything"
    );
    // What it did get is the start of the stream, in order, without gaps.
    assert_eq!(got, (1..=got.len() as i64).collect::<Vec<_>>());
    assert_eq!(kicks(&server).await, Some(1.0));
}

/// `pgchat_slow_consumer_closes_total` (present at zero from start).
async fn kicks(server: &TestServer) -> Option<f64> {
    let (_, metrics) = server.get("/metrics").await;
    metrics
        .lines()
        .find(|l| l.starts_with("pgchat_slow_consumer_closes_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
}
