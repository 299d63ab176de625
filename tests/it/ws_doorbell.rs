//! NOTIFY is only a doorbell, over real sockets: forged notifications put nothing on a
//! socket, a membership removed while LISTEN is down is enforced on reconnect, a
//! catch-up backlog larger than a socket's queue reaches a fast reader whole, typing
//! cannot be flooded, and a join lists who joined on the same daemon just before.
//! Absence is proven by a sentinel that must arrive after what must not.
use crate::common;

use std::time::Duration;

use common::postgrest::Claims;
use common::server::{Client, TestServer};
use common::TestDb;
use pgchat::typing_throttle;
use serde_json::{json, Value};

/// Alice and Bob in two rooms; returns (alice, bob, room, other_room).
async fn two_rooms(db: &TestDb) -> (i64, i64, i64, i64) {
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "Room").await;
    let other = pg.create_room(alice, "Other").await;
    for r in [room, other] {
        pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &r)])
            .await
            .unwrap();
    }
    (alice, bob, room, other)
}

async fn join(c: &mut Client, room: i64) -> Value {
    let reply = c.request(json!({"type": "join", "roomId": room})).await;
    assert_eq!(reply["type"], "joined", "{reply}");
    reply
}

/// Frames until the `message` whose text is `text`; returns the frames before it.
async fn until_message(c: &mut Client, text: &str) -> Vec<Value> {
    let mut before = Vec::new();
    loop {
        let Some(f) = c.try_recv(Duration::from_secs(15)).await else {
            panic!("the sentinel {text:?} never arrived; before it: {before:?}");
        };
        if f["type"] == "message" && f["message"]["message"] == text {
            return before;
        }
        before.push(f);
    }
}

async fn send(pg: &common::postgrest::Postgrest, user: i64, room: i64, text: &str) -> Value {
    pg.send(user, room, text).await
}

#[tokio::test]
async fn forged_notifications_put_nothing_on_a_socket() {
    let db = TestDb::new().await;
    let (alice, bob, room, _) = two_rooms(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut a, room).await;
    join(&mut b, room).await;
    a.recv_type("user_joined").await;
    let pg = db.postgrest().await;
    let first = send(&pg, alice, room, "real one").await;
    until_message(&mut a, "real one").await;
    until_message(&mut b, "real one").await;
    let next_seq = first["seq"].as_i64().unwrap() + 1;
    let rev = first["rev"].as_i64().unwrap();

    // A login role with no grants at all rings whatever it likes on the channel.
    let stranger = common::stranger::Stranger::new(&db).await;
    let forger = stranger.connect().await;
    let fake_row = json!({"id": 999, "room_id": room, "seq": next_seq, "user_id": bob,
        "user_name": "Bob", "message": "FORGED", "created_at": "2026-01-01T00:00:00Z", "client_id": null});
    let forged = [
        json!({"t": "message", "room_id": room, "seq": next_seq, "row": fake_row}).to_string(),
        json!({"t": "message_updated", "room_id": room, "seq": 1, "row": fake_row}).to_string(),
        json!({"t": "member_left", "room_id": room, "user_id": bob}).to_string(),
        json!({"t": "member_joined", "room_id": 4242, "user_id": bob,
               "room": {"id": 4242, "name": "FAKE ROOM"}}).to_string(),
        json!({"t": "presence", "room_id": room, "user_id": 777, "user_name": "Ghost", "online": true}).to_string(),
        json!({"t": "typing", "room_id": room, "user_id": bob, "user_name": "Bob", "is_typing": true}).to_string(),
        json!({"t": "read", "room_id": room, "user_id": bob, "user_name": "Bob", "seq": 1}).to_string(),
        // Doorbells that name real rooms and revs: a read each, and nothing new in it.
        format!("c:{room}:{}", rev + 1000),
        format!("c:{room}:{rev}"),
        format!("m:{room}:1"),
        format!("p:{room}"),
        format!("t:{room}"),
        "m:4242:1".to_string(),
    ];
    for payload in &forged {
        forger
            .execute("select pg_notify('pgchat', $1)", &[payload])
            .await
            .unwrap();
    }
    // The real message that takes the seq the forgery claimed.
    send(&pg, alice, room, "sentinel").await;
    for (who, c) in [("alice", &mut a), ("bob", &mut b)] {
        let before = until_message(c, "sentinel").await;
        assert!(before.is_empty(), "{who} got forged frames: {before:?}");
    }
    // Bob was not evicted, and the seq the forgery named was delivered, not dropped.
    send(&pg, alice, room, "still here").await;
    let before = until_message(&mut b, "still here").await;
    assert!(before.is_empty(), "{before:?}");
    server.stop().await;
}

/// Ends the daemon's LISTEN connection and keeps it from reconnecting until the
/// returned guard's `release`: new connections to the test database are refused
/// (the daemon's pool keeps the connections it has).
async fn hold_listen_down(db: &TestDb) {
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "alter database \"{}\" connection limit 0",
            db.name
        ))
        .await
        .unwrap();
    let killed = admin
        .query(
            "select pg_terminate_backend(pid) from pg_stat_activity
              where application_name = 'pgchat-listener' and datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1);
}

async fn release_listen(db: &TestDb) {
    db.admin()
        .await
        .batch_execute(&format!(
            "alter database \"{}\" connection limit -1",
            db.name
        ))
        .await
        .unwrap();
}

/// Waits until the daemon has a LISTEN connection again.
async fn listener_back(db: &TestDb) {
    let admin = db.admin().await;
    for _ in 0..200 {
        let n: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity
                  where application_name = 'pgchat-listener' and datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the listener did not come back");
}

#[tokio::test]
async fn a_membership_removed_while_listen_is_down_is_enforced_on_reconnect() {
    let db = TestDb::new().await;
    let (alice, bob, room, other) = two_rooms(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room).await;
    join(&mut b, other).await;
    let pg = db.postgrest().await;
    send(&pg, alice, room, "before").await;
    until_message(&mut b, "before").await;

    hold_listen_down(&db).await;
    // Bob's membership ends through PostgREST while no doorbell can reach the daemon,
    // and the room goes on talking.
    pg.rpc(&Claims::user(bob), "leave_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    send(&pg, alice, room, "not for bob").await;
    release_listen(&db).await;
    listener_back(&db).await;
    send(&pg, alice, room, "still not for bob").await;
    send(&pg, alice, other, "sentinel").await;
    let before = until_message(&mut b, "sentinel").await;
    assert!(
        before
            .iter()
            .any(|f| f["type"] == "room_left" && f["roomId"] == room),
        "{before:?}"
    );
    assert!(
        !before
            .iter()
            .any(|f| f["type"] == "message" && f["roomId"] == room),
        "a revoked room was relayed: {before:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_catch_up_larger_than_the_queue_reaches_a_fast_reader_whole() {
    let db = TestDb::new().await;
    let (alice, bob, room, _) = two_rooms(&db).await;
    let server = TestServer::start(&db, &[("OUTBOUND_QUEUE", "64")]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room).await;

    hold_listen_down(&db).await;
    // 600 messages while LISTEN is down: ten times the socket's queue.
    db.admin()
        .await
        .execute(
            "insert into api.chat_messages (room_id, user_id, message)
             select $1, $2, 'm' || g from generate_series(1, 600) g",
            &[&room, &alice],
        )
        .await
        .unwrap();
    release_listen(&db).await;
    let pg = db.postgrest().await;
    listener_back(&db).await;
    send(&pg, alice, room, "sentinel").await;
    let before = until_message(&mut b, "sentinel").await;
    let seqs: Vec<i64> = before
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["message"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=600).collect::<Vec<_>>(), "each once, in order");
    server.stop().await;
}

#[tokio::test]
async fn a_backlog_too_large_to_replay_tells_subscribers_to_resync() {
    let db = TestDb::new().await;
    let (alice, bob, room, _) = two_rooms(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut b = Client::authed(&server.url(), bob).await;
    join(&mut b, room).await;

    hold_listen_down(&db).await;
    // Beyond the relay's catch-up bound of 10,000 revs.
    let behind: i64 = 10_500;
    db.admin()
        .await
        .execute(
            "insert into api.chat_messages (room_id, user_id, message)
             select $1, $2, 'm' || g from generate_series(1, $3::bigint) g",
            &[&room, &alice, &behind],
        )
        .await
        .unwrap();
    release_listen(&db).await;
    let pg = db.postgrest().await;
    listener_back(&db).await;
    // The sentinel is written once the resync told where the room stands: written any
    // earlier, it may be counted in `lastSeq` (a reload finds it) and never come live.
    let mut before = Vec::new();
    loop {
        let f = b
            .try_recv(Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("no resync came; before it: {before:?}"));
        let resync = f["type"] == "resync";
        before.push(f);
        if resync {
            break;
        }
    }
    send(&pg, alice, room, "sentinel").await;
    before.extend(until_message(&mut b, "sentinel").await);
    let resyncs: Vec<&Value> = before.iter().filter(|f| f["type"] == "resync").collect();
    assert_eq!(resyncs.len(), 1, "one resync before the sentinel");
    assert_eq!(resyncs[0]["roomId"].as_i64(), Some(room));
    assert_eq!(resyncs[0]["lastSeq"].as_i64(), Some(behind));
    let replayed = before.iter().filter(|f| f["type"] == "message").count();
    assert!(
        replayed < behind as usize,
        "the backlog is not replayed whole: {replayed} messages"
    );
    // Live delivery goes on from where the room stands, with no gap after the resync.
    let after_resync: Vec<i64> = before
        .iter()
        .skip_while(|f| f["type"] != "resync")
        .filter(|f| f["type"] == "message")
        .map(|f| f["message"]["seq"].as_i64().unwrap())
        .collect();
    assert!(
        after_resync.is_empty(),
        "nothing replayed after the resync: {after_resync:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn alternating_typing_is_throttled_per_user_and_room() {
    let db = TestDb::new().await;
    let (alice, bob, room, _) = two_rooms(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    // Two sockets of Bob's share one throttle.
    let mut b2 = Client::authed(&server.url(), bob).await;
    join(&mut a, room).await;
    join(&mut b, room).await;
    join(&mut b2, room).await;
    for i in 0..500 {
        let c = if i % 2 == 0 { &mut b } else { &mut b2 };
        c.send(json!({"type": "typing", "roomId": room, "isTyping": i % 4 < 2}))
            .await;
    }
    // Each socket's frames are handled in order: a ping answered means its typing was.
    assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
    assert_eq!(b2.request(json!({"type": "ping"})).await["type"], "pong");
    // Whatever the flood wrote has been read well within the throttle's window; the
    // sentinel is read after it.
    tokio::time::sleep(typing_throttle::TYPING_THROTTLE).await;
    let pg = db.postgrest().await;
    send(&pg, alice, room, "sentinel").await;
    let before = until_message(&mut a, "sentinel").await;
    let typing = before.iter().filter(|f| f["type"] == "typing").count();
    // The window's write budget at most (read together, writes may show as nothing).
    assert!(
        typing <= typing_throttle::TYPING_WRITES_PER_WINDOW as usize,
        "{typing} typing frames for 500 alternating changes: {before:?}"
    );
    // Once the window has passed, a start is relayed again.
    b.send(json!({"type": "typing", "roomId": room, "isTyping": true}))
        .await;
    let started = a.recv_type("typing").await;
    assert_eq!(
        (
            started["user"]["id"].as_i64(),
            started["isTyping"].as_bool()
        ),
        (Some(bob), Some(true))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_join_lists_who_joined_on_the_same_daemon_just_before() {
    let db = TestDb::new().await;
    let (alice, bob, room, _) = two_rooms(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    let mut b = Client::authed(&server.url(), bob).await;
    for round in 0..10 {
        join(&mut a, room).await;
        let jb = join(&mut b, room).await;
        let online: Vec<i64> = jb["online"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_i64().unwrap())
            .collect();
        assert!(online.contains(&alice), "round {round}: {jb}");
        for c in [&mut a, &mut b] {
            let left = c.request(json!({"type": "leave", "roomId": room})).await;
            assert_eq!(left["type"], "left");
        }
    }
    server.stop().await;
}
