//! The chat core without a socket: requests go to `chat::dispatch`, replies into a
//! `Vec`, and live events are read from the connection's hub queue.

use pgchat::app::App;
use pgchat::chat::{dispatch, Conn};
use pgchat::config::Config;
use pgchat::protocol::close;
use serde_json::{json, Value};

use crate::common::server::token_for;
use crate::common::{TestDb, JWT_SECRET};

fn app(db: &TestDb, extra: &[(&str, &str)]) -> App {
    let mut pairs = vec![
        ("DATABASE_URL", db.authenticator_url.as_str()),
        ("JWT_SECRET", JWT_SECRET),
        ("DB_POOL_SIZE", "4"),
    ];
    pairs.extend_from_slice(extra);
    App::new(Config::from_pairs(pairs).expect("valid config")).expect("app")
}

/// Sends one request; returns its replies as JSON. Panics if the connection ended.
async fn send(app: &App, conn: &mut Conn, request: Value) -> Vec<Value> {
    let request = pgchat::protocol::parse(&request.to_string()).expect("a valid request");
    let mut out = Vec::new();
    dispatch(app, conn, request, &mut out)
        .await
        .expect("the connection lives");
    out.iter()
        .map(|f| serde_json::from_str(f.as_str()).expect("replies are JSON"))
        .collect()
}

/// The one reply to a request.
async fn ask(app: &App, conn: &mut Conn, request: Value) -> Value {
    let mut replies = send(app, conn, request.clone()).await;
    assert_eq!(replies.len(), 1, "one reply to {request}: {replies:?}");
    replies.remove(0)
}

async fn authed(app: &App, user: i64) -> Conn {
    let mut conn = Conn::new(app, None, None);
    let token = token_for(user, Some(3600));
    let reply = ask(
        app,
        &mut conn,
        json!({"type": "auth", "token": token, "ref": 1}),
    )
    .await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user"]["id"], user);
    assert_eq!(reply["ref"], 1);
    conn
}

/// Live events queued for the connection so far.
async fn queued(conn: &Conn) -> Vec<Value> {
    let pop = conn.handle.queue().pop_batch(64);
    let batch = tokio::time::timeout(std::time::Duration::from_secs(5), pop)
        .await
        .expect("events queued");
    conn.handle.queue().end_write();
    batch
        .frames
        .iter()
        .map(|f| serde_json::from_str(f.as_str()).unwrap())
        .collect()
}

#[tokio::test]
async fn before_auth_only_ping_and_auth_are_answered() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let app = app(&db, &[]);
    let mut conn = Conn::new(&app, None, None);
    let pong = ask(&app, &mut conn, json!({"type": "ping", "ref": "p"})).await;
    assert_eq!(
        (pong["type"].as_str(), pong["ref"].as_str()),
        (Some("pong"), Some("p"))
    );
    let refused = ask(&app, &mut conn, json!({"type": "rooms", "ref": 2})).await;
    assert_eq!(refused["code"], "unauthenticated", "{refused}");
    let bad = ask(&app, &mut conn, json!({"type": "auth", "token": "x.y.z"})).await;
    assert_eq!(bad["code"], "invalid_token", "{bad}");
    assert!(conn.identity().is_none());
    let token = token_for(alice, Some(3600));
    let ok = ask(&app, &mut conn, json!({"type": "auth", "token": token})).await;
    assert_eq!(ok["type"], "authenticated", "{ok}");
    assert_eq!(conn.identity().and_then(|i| i.user_id), Some(alice));
    // A refresh must be for the same user.
    let other = token_for(alice + 1, Some(3600));
    let refused = ask(&app, &mut conn, json!({"type": "auth", "token": other})).await;
    assert_eq!(refused["code"], "invalid_token", "{refused}");
    assert_eq!(conn.identity().and_then(|i| i.user_id), Some(alice));
}

#[tokio::test]
async fn commands_run_as_the_user_without_a_socket() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let app = app(&db, &[("MESSAGE_MAX_CHARS", "20")]);
    let mut a = authed(&app, alice).await;
    let mut b = authed(&app, bob).await;

    let room = ask(
        &app,
        &mut a,
        json!({"type": "create_room", "name": " Core ", "ref": 1}),
    )
    .await;
    assert_eq!(room["type"], "room", "{room}");
    assert_eq!(room["room"]["name"], "Core");
    let room_id = room["room"]["id"].as_i64().unwrap();
    let blank = ask(&app, &mut a, json!({"type": "create_room", "name": "  "})).await;
    assert_eq!(blank["code"], "invalid_message", "{blank}");

    // Bob is no member yet: the database refuses, as him.
    let refused = ask(
        &app,
        &mut b,
        json!({"type": "message", "roomId": room_id, "message": "hi"}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let joined = ask(
        &app,
        &mut b,
        json!({"type": "join_room", "roomId": room_id}),
    )
    .await;
    assert_eq!(joined["type"], "room", "{joined}");

    let ack = ask(
        &app,
        &mut a,
        json!({"type": "message", "roomId": room_id, "message": "first", "ref": "m"}),
    )
    .await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["seq"].as_i64(),
            ack["ref"].as_str()
        ),
        (Some("ack"), Some(1), Some("m"))
    );
    let long = ask(
        &app,
        &mut a,
        json!({"type": "message", "roomId": room_id, "message": "x".repeat(21)}),
    )
    .await;
    assert_eq!(long["code"], "message_too_long", "{long}");
    let empty = ask(
        &app,
        &mut a,
        json!({"type": "message", "roomId": room_id, "message": ""}),
    )
    .await;
    assert_eq!(empty["code"], "invalid_message", "{empty}");

    let history = ask(&app, &mut b, json!({"type": "history", "roomId": room_id})).await;
    assert_eq!(history["type"], "history", "{history}");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["first"]);
    let read = ask(
        &app,
        &mut b,
        json!({"type": "read", "roomId": room_id, "seq": 1}),
    )
    .await;
    assert_eq!(
        (read["type"].as_str(), read["seq"].as_i64()),
        (Some("ack"), Some(1)),
        "{read}"
    );
    let rooms = ask(&app, &mut b, json!({"type": "rooms"})).await;
    let listed: Vec<i64> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [room_id], "{rooms}");

    let left = ask(
        &app,
        &mut b,
        json!({"type": "leave_room", "roomId": room_id}),
    )
    .await;
    assert_eq!(left["type"], "room_left", "{left}");
    let gone = ask(&app, &mut b, json!({"type": "history", "roomId": room_id})).await;
    assert_eq!(gone["code"], "forbidden", "{gone}");
}

#[tokio::test]
async fn a_join_subscribes_the_connection_and_the_hub_queues_its_events() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let app = app(&db, &[]);
    let mut a = authed(&app, alice).await;
    let mut b = authed(&app, bob).await;
    let room = ask(&app, &mut a, json!({"type": "create_room", "name": "R"})).await["room"]["id"]
        .as_i64()
        .unwrap();
    ask(&app, &mut b, json!({"type": "join_room", "roomId": room})).await;

    let joined = ask(
        &app,
        &mut a,
        json!({"type": "join", "roomId": room, "ref": "j"}),
    )
    .await;
    assert_eq!(
        (joined["type"].as_str(), joined["lastSeq"].as_i64()),
        (Some("joined"), Some(0)),
        "{joined}"
    );
    let online: Vec<i64> = joined["online"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    assert_eq!(online, [alice]);
    // Bob on two connections; leaving the room on one stops the other at once, through
    // the hub (no relay runs here).
    let mut b2 = authed(&app, bob).await;
    ask(&app, &mut b, json!({"type": "join", "roomId": room})).await;
    ask(&app, &mut b2, json!({"type": "join", "roomId": room})).await;
    let left = ask(&app, &mut b2, json!({"type": "leave_room", "roomId": room})).await;
    assert_eq!(left["type"], "room_left", "{left}");
    let events = queued(&b).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "room_left" && e["roomId"] == room),
        "{events:?}"
    );
    ask(&app, &mut b, json!({"type": "join_room", "roomId": room})).await;
    ask(&app, &mut b, json!({"type": "join", "roomId": room})).await;
    // Typing needs a join first; the throttle lets the first start through.
    let typing = send(
        &app,
        &mut b,
        json!({"type": "typing", "roomId": room, "isTyping": true}),
    )
    .await;
    assert!(typing.is_empty(), "typing has no reply: {typing:?}");
    let left = ask(&app, &mut b, json!({"type": "leave", "roomId": room})).await;
    assert_eq!(left["type"], "left", "{left}");
    let refused = ask(
        &app,
        &mut b,
        json!({"type": "typing", "roomId": room, "isTyping": true}),
    )
    .await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
}

#[tokio::test]
async fn too_many_refusals_for_rate_close_the_connection() {
    let db = TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let app = app(
        &db,
        &[("RATE_LIMIT_PER_SEC", "1"), ("RATE_LIMIT_BURST", "1")],
    );
    let mut a = authed(&app, alice).await;
    let first = ask(&app, &mut a, json!({"type": "rooms"})).await;
    assert_eq!(first["type"], "rooms", "{first}");
    let mut refusals = 0;
    let ended = loop {
        let request = pgchat::protocol::parse(r#"{"type":"rooms"}"#).unwrap();
        let mut out = Vec::new();
        match dispatch(&app, &mut a, request, &mut out).await {
            Ok(()) => {
                let reply: Value = serde_json::from_str(out[0].as_str()).unwrap();
                assert_eq!(reply["code"], "rate_limited", "{reply}");
                refusals += 1;
            }
            Err(_) => break refusals,
        }
        assert!(refusals <= 10, "ten refusals are tolerated, not more");
    };
    assert_eq!(ended, 10);
    assert_eq!(a.close_code(), Some(close::RATE_LIMITED));
}
