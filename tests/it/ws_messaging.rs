//! The core path over real sockets: auth, join, message + ack + broadcast, typing,
//! read, history, rooms, create/join/leave room, ping.
use crate::common;

use std::time::Duration;

use common::server::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn two_users_chat_in_a_room() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let server = TestServer::start(&db, &[]).await;

    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    let room = a
        .request(json!({"type": "create_room", "name": "General", "description": "hi"}))
        .await;
    assert_eq!(room["type"], "room", "{room}");
    let room_id = room["room"]["id"].as_i64().unwrap();
    let joined = b
        .request(json!({"type": "join_room", "roomId": room_id}))
        .await;
    assert_eq!(joined["room"]["id"], room_id);

    let ja = a.request(json!({"type": "join", "roomId": room_id})).await;
    assert_eq!(ja["type"], "joined");
    assert_eq!(ja["lastSeq"], 0);
    let jb = b.request(json!({"type": "join", "roomId": room_id})).await;
    assert!(
        jb["online"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == bob),
        "{jb}"
    );
    common::server::assert_sees_online(&mut b, &jb, alice).await;
    let announced = a.recv_type("user_joined").await;
    assert_eq!(announced["user"]["id"], bob);
    assert_eq!(announced["user"]["name"], "Bob");

    let ack = a
        .request(
            json!({"type": "message", "roomId": room_id, "message": "Hello!", "clientId": "m1"}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["seq"], 1);
    for c in [&mut a, &mut b] {
        let m = c.recv_type("message").await;
        assert_eq!(m["roomId"], room_id);
        assert_eq!(m["message"]["message"], "Hello!");
        assert_eq!(m["message"]["user_name"], "Alice");
        assert_eq!(m["message"]["client_id"], "m1");
        assert_eq!(m["message"]["seq"], 1);
    }

    b.send(json!({"type": "typing", "roomId": room_id, "isTyping": true}))
        .await;
    let t = a.recv_type("typing").await;
    assert_eq!(t["user"]["id"], bob);
    assert_eq!(t["isTyping"], true);

    let read = b
        .request(json!({"type": "read", "roomId": room_id, "seq": 1}))
        .await;
    assert_eq!(read["type"], "ack");
    let r = a.recv_type("read").await;
    assert_eq!(r["user"]["id"], bob);
    assert_eq!(r["seq"], 1);

    let h = b
        .request(json!({"type": "history", "roomId": room_id}))
        .await;
    assert_eq!(h["messages"][0]["message"], "Hello!");

    let rooms = b.request(json!({"type": "rooms"})).await;
    assert_eq!(rooms["rooms"][0]["id"], room_id);
    assert_eq!(rooms["rooms"][0]["unread_count"], 0);

    let pong = a.request(json!({"type": "ping"})).await;
    assert_eq!(pong["type"], "pong");

    let left = b.request(json!({"type": "leave", "roomId": room_id})).await;
    assert_eq!(left["type"], "left");
    let gone = a.recv_type("user_left").await;
    assert_eq!(gone["user"]["id"], bob);

    // After `leave` b no longer receives the room.
    a.request(json!({"type": "message", "roomId": room_id, "message": "still there?"}))
        .await;
    assert!(b.try_recv(Duration::from_millis(500)).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn typing_is_throttled_per_socket() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    let room = a.request(json!({"type": "create_room", "name": "t"})).await["room"]["id"]
        .as_i64()
        .unwrap();
    b.request(json!({"type": "join_room", "roomId": room}))
        .await;
    a.request(json!({"type": "join", "roomId": room})).await;
    b.request(json!({"type": "join", "roomId": room})).await;
    for _ in 0..10 {
        b.send(json!({"type": "typing", "roomId": room, "isTyping": true}))
            .await;
    }
    b.send(json!({"type": "ping", "ref": "done"})).await;
    b.recv_type("pong").await;
    let mut typing = 0;
    while let Some(f) = a.try_recv(Duration::from_millis(700)).await {
        if f["type"] == "typing" && f["isTyping"] == true {
            typing += 1;
        }
    }
    assert_eq!(
        typing, 1,
        "ten keystrokes within 2 s relay one typing event"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_token_for_an_unknown_user_gets_conflict_not_a_crash() {
    let db = common::TestDb::new().await;
    let server = TestServer::start(&db, &[]).await;
    // A validly signed token whose `sub` is no user: the database's foreign key refuses
    // the write (23503), which PostgREST reports as 409 Conflict.
    let mut ghost = Client::authed(&server.url(), 987_654).await;
    let reply = ghost
        .request(json!({"type": "create_room", "name": "nobody's"}))
        .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "conflict");
    assert_eq!(ghost.request(json!({"type": "ping"})).await["type"], "pong");
    server.stop().await;
}
