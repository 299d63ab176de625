//! The frame layer over real sockets: pongs and other frames
//! written by pgchat's own writer never interleave; large frames (64-bit length form,
//! many partial writes) arrive whole; the server pings on its interval.
mod common;

use std::time::Duration;

use common::server::{Client, TestServer};
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
