//! Bugs the model found, each made deterministic, kept as regression tests (both are
//! fixed in the relay): while a daemon's LISTEN connection is down (its backend
//! terminated, and new connections to the database refused until the changes are
//! committed, so the reconnect cannot win the race), changes are made; the daemon's
//! catch-up after reconnecting must tell its sockets what a live doorbell would have
//! told them.

use serde_json::Value;

use crate::common::postgrest::{Claims, Postgrest};
use crate::common::server::{Client, TestServer};
use crate::common::TestDb;

/// Cuts the daemon's LISTEN connection and keeps it from coming back until `release`.
struct ListenDown<'a> {
    db: &'a TestDb,
    admin: tokio_postgres::Client,
}

impl<'a> ListenDown<'a> {
    async fn begin(db: &'a TestDb) -> ListenDown<'a> {
        let admin = db.admin().await;
        // The pool's connections stay; only new ones (the LISTEN reconnect) are refused.
        admin
            .batch_execute(&format!(
                "revoke connect on database \"{}\" from public",
                db.name
            ))
            .await
            .unwrap();
        // Waits (up to 5 s) until the backend is gone.
        let killed = admin
            .query(
                "select pg_terminate_backend(pid, 5000) from pg_stat_activity
                  where application_name = 'pgchat-listener' and datname = current_database()",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(killed.len(), 1, "one LISTEN backend");
        ListenDown { db, admin }
    }

    /// Lets the daemon reconnect, after checking it had not yet.
    async fn release(self) {
        let listening: i64 = self
            .admin
            .query_one(
                "select count(*) from pg_stat_activity
                  where application_name = 'pgchat-listener' and datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(listening, 0, "the changes were made while LISTEN was down");
        self.admin
            .batch_execute(&format!(
                "grant connect on database \"{}\" to public",
                self.db.name
            ))
            .await
            .unwrap();
    }
}

async fn two_users(db: &TestDb) -> (Postgrest, i64, i64, i64) {
    let (owner, _) = db.signup("owner@model.test", "Owner").await;
    let (other, _) = db.signup("other@model.test", "Other").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(owner, "while down").await;
    (pg, owner, other, room)
}

/// A room of two members on a daemon started with `config`, one of them (the owner)
/// following it on a socket there; returns the other member to write with.
async fn followed_room(
    db: &TestDb,
    config: &[(&str, &str)],
) -> (Postgrest, i64, i64, TestServer, Client) {
    let (pg, owner, other, room) = two_users(db).await;
    pg.rpc(
        &Claims::user(other),
        "join_chat_room",
        &[("room_id", &room)],
    )
    .await
    .expect("join_chat_room");
    let server = TestServer::start(db, config).await;
    let mut socket = Client::authed(&server.url(), owner).await;
    let joined = socket
        .request(serde_json::json!({"type": "join", "roomId": room}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    (pg, other, room, server, socket)
}

/// A user who becomes a member while LISTEN is down is told of the room (`room`) on
/// that daemon's sockets once it is back. The catch-up once read only rooms some
/// socket there follows: a membership in any other room begun meanwhile was never
/// announced, and a client waiting for it (the model's does) waited forever.
#[tokio::test]
async fn a_membership_begun_while_listen_is_down_is_announced() {
    let db = TestDb::new().await;
    let (pg, _, newcomer, room) = two_users(&db).await;
    let server = TestServer::start(&db, &[]).await;
    let mut socket = Client::authed(&server.url(), newcomer).await;
    let down = ListenDown::begin(&db).await;
    pg.rpc(
        &Claims::user(newcomer),
        "join_chat_room",
        &[("room_id", &room)],
    )
    .await
    .expect("join_chat_room");
    down.release().await;
    let told = socket.recv_type("room").await;
    assert_eq!(told["room"]["id"], room, "{told}");
    drop(socket);
    server.stop().await;
}

/// A message the daemon never sent is a `message` (docs/protocol.md: `message` the first
/// time, `message_updated` for later changes), even when it was edited before the daemon
/// read it and a newer message came in the same read. The relay once compared each
/// message's seq with a seq cursor that the same page's newer message had already
/// moved, so the older one went out as `message_updated` for an id no client had seen:
/// a client that only updates messages it knows (or counts unread on `message`) loses
/// it. Seen by the model as "live `message_updated` for unknown message" (seed 106).
#[tokio::test]
async fn a_message_first_read_after_its_edit_is_a_message() {
    let db = TestDb::new().await;
    let (pg, other, room, server, mut socket) = followed_room(&db, &[]).await;
    let down = ListenDown::begin(&db).await;
    let first = pg.send(other, room, "first").await;
    pg.send(other, room, "second").await;
    let first_id = first["id"].as_i64().unwrap();
    pg.rpc(
        &Claims::user(other),
        "edit_message",
        &[("message_id", &first_id), ("message", &"first, edited")],
    )
    .await
    .expect("edit_message");
    down.release().await;
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 2 {
        let f = socket.recv().await;
        if f["type"] == "message" || f["type"] == "message_updated" {
            seen.push(f);
        }
    }
    let about_first: Vec<&Value> = seen
        .iter()
        .filter(|f| f["message"]["id"] == first_id)
        .collect();
    assert_eq!(about_first.len(), 1, "{seen:?}");
    assert_eq!(
        about_first[0]["type"], "message",
        "never sent before, so `message`: {seen:?}"
    );
    assert_eq!(about_first[0]["message"]["message"], "first, edited");
    drop(socket);
    server.stop().await;
}

/// The same across pages of one catch-up: a message edited while LISTEN was down comes
/// after every newer message in the stream, pages after them when the backlog is long
/// (here the page is 4 changes: `OUTBOUND_QUEUE` 8). Each message's first frame is a
/// `message`, whatever page it falls in, and none is sent twice.
#[tokio::test]
async fn a_message_first_read_pages_after_its_edit_is_a_message() {
    let db = TestDb::new().await;
    let (pg, other, room, server, mut socket) =
        followed_room(&db, &[("OUTBOUND_QUEUE", "8")]).await;
    let down = ListenDown::begin(&db).await;
    let mut ids = Vec::new();
    for n in 1..=6 {
        let sent = pg.send(other, room, &format!("m{n}")).await;
        ids.push(sent["id"].as_i64().unwrap());
    }
    pg.rpc(
        &Claims::user(other),
        "edit_message",
        &[("message_id", &ids[0]), ("message", &"m1, edited")],
    )
    .await
    .expect("edit_message");
    down.release().await;
    let mut seen: Vec<Value> = Vec::new();
    while seen.len() < 6 {
        let f = socket.recv().await;
        if f["type"] == "message" || f["type"] == "message_updated" {
            seen.push(f);
        }
    }
    // A sentinel written after the catch-up: nothing about m1..m6 may come before it.
    let sentinel = pg.send(other, room, "sentinel").await["id"]
        .as_i64()
        .unwrap();
    loop {
        let f = socket.recv().await;
        if f["message"]["id"] == sentinel {
            break;
        }
        if f["type"] == "message" || f["type"] == "message_updated" {
            seen.push(f);
        }
    }
    let kinds: Vec<(i64, &str)> = seen
        .iter()
        .map(|f| {
            (
                f["message"]["id"].as_i64().unwrap(),
                f["type"].as_str().unwrap(),
            )
        })
        .collect();
    let mut expected: Vec<(i64, &str)> = ids[1..].iter().map(|id| (*id, "message")).collect();
    expected.push((ids[0], "message"));
    assert_eq!(kinds, expected, "each once, as `message`: {seen:?}");
    assert_eq!(seen[5]["message"]["message"], "m1, edited");
    drop(socket);
    server.stop().await;
}
