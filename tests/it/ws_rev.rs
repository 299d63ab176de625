//! The room change stream on the socket (SPEC §6.1, issue 13 §2): `rev` and `prevRev`
//! on every stream frame, whole message state on `message` / `message_updated`, edits
//! and deletions from every path, membership frames, `join {sinceRev}` and the replay
//! limit. Real PostgreSQL, real daemons, real WebSocket clients; "nothing else arrived"
//! is proven by a sentinel message that must arrive after it.
use crate::common;

use std::time::Duration;

use common::postgrest::{Claims, Postgrest};
use common::server::{Client, TestServer};
use common::TestDb;
use serde_json::{json, Value};

/// The frames that come from a room's change stream and carry `rev` / `prevRev`.
const STREAM: [&str; 5] = [
    "message",
    "message_updated",
    "read",
    "member_joined",
    "member_left",
];

struct Setup {
    db: TestDb,
    pg: Postgrest,
    server: TestServer,
    alice: i64,
    bob: i64,
    room: i64,
}

impl Setup {
    /// Alice (the room's creator) and Bob in one room, and a daemon.
    async fn new() -> Setup {
        let db = TestDb::new().await;
        let (alice, _) = db.signup("alice@example.com", "Alice").await;
        let (bob, _) = db.signup("bob@example.com", "Bob").await;
        let pg = db.postgrest().await;
        let room = pg.create_room(alice, "Room").await;
        pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
            .await
            .unwrap();
        let server = TestServer::start(&db, &[("RATE_LIMIT_PER_SEC", "0")]).await;
        Setup {
            db,
            pg,
            server,
            alice,
            bob,
            room,
        }
    }

    /// A socket of `user` subscribed to the room (with `extra` join fields); returns it,
    /// the frames that came before `joined`, and `joined`.
    async fn join(&self, user: i64, extra: Value) -> (Client, Vec<Value>, Value) {
        let mut c = Client::authed(&self.server.url(), user).await;
        let mut frame = json!({"type": "join", "roomId": self.room, "ref": "j"});
        for (k, v) in extra.as_object().unwrap() {
            frame[k] = v.clone();
        }
        c.send(frame).await;
        let mut before = Vec::new();
        loop {
            let f = next(&mut c).await;
            if f["ref"] == "j" {
                assert_eq!(f["type"], "joined", "{f}");
                return (c, before, f);
            }
            before.push(f);
        }
    }

    async fn send(&self, user: i64, text: &str) -> Value {
        self.pg.send(user, self.room, text).await
    }

    async fn rpc(&self, user: i64, function: &str, id: i64, text: Option<&str>) -> Value {
        match text {
            Some(text) => self
                .pg
                .rpc(
                    &Claims::user(user),
                    function,
                    &[("message_id", &id), ("message", &text)],
                )
                .await
                .unwrap(),
            None => self
                .pg
                .rpc(&Claims::user(user), function, &[("message_id", &id)])
                .await
                .unwrap(),
        }
    }

    /// The room's last rev, from the table.
    async fn last_rev(&self) -> i64 {
        let admin = self.db.admin().await;
        admin
            .query_one(
                "select last_rev from api.chat_rooms where id = $1",
                &[&self.room],
            )
            .await
            .unwrap()
            .get(0)
    }
}

async fn next(c: &mut Client) -> Value {
    c.try_recv(Duration::from_secs(15))
        .await
        .expect("a frame within 15 s")
}

/// Stream frames for `room` until (and including) the `message` whose text is
/// `sentinel`; other frames (presence, typing) are skipped.
async fn stream_until(c: &mut Client, room: i64, sentinel: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let f = next(c).await;
        assert_ne!(f["type"], "message_deleted", "no longer sent: {f}");
        if f["roomId"] != room || !STREAM.contains(&f["type"].as_str().unwrap_or("")) {
            continue;
        }
        let done = f["type"] == "message" && f["message"]["message"] == sentinel;
        out.push(f);
        if done {
            return out;
        }
    }
}

/// Each frame's `prevRev` is the previous frame's `rev` (the first's is `start`), and
/// revs increase.
fn assert_chain(frames: &[Value], start: i64) {
    let mut prev = start;
    for f in frames {
        let rev = f["rev"].as_i64().unwrap_or_else(|| panic!("no rev: {f}"));
        assert_eq!(f["prevRev"], prev, "chain broken at {f}");
        assert!(rev > prev, "revs increase: {f}");
        prev = rev;
    }
}

fn types(frames: &[Value]) -> Vec<&str> {
    frames.iter().map(|f| f["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn live_frames_carry_rev_prev_rev_and_the_whole_message_state() {
    let s = Setup::new().await;
    let (mut bob, _, joined) = s.join(s.bob, json!({})).await;
    let start = joined["lastRev"].as_i64().expect("joined carries lastRev");
    assert_eq!(start, s.last_rev().await);
    assert!(joined["lastSeq"].is_i64());
    assert!(joined.get("behind").is_none(), "{joined}");

    let sent = s.send(s.alice, "hello").await;
    s.pg.rpc(
        &Claims::user(s.bob),
        "mark_read",
        &[
            ("room_id", &s.room),
            ("seq", &sent["seq"].as_i64().unwrap()),
        ],
    )
    .await
    .unwrap();
    s.send(s.alice, "sentinel").await;
    let frames = stream_until(&mut bob, s.room, "sentinel").await;
    assert_eq!(types(&frames), ["message", "read", "message"]);
    assert_chain(&frames, start);

    let m = &frames[0];
    assert_eq!(m["rev"], start + 1);
    assert_eq!(
        m["message"]["rev"], m["rev"],
        "the state's rev is the frame's"
    );
    for field in [
        "id",
        "room_id",
        "seq",
        "rev",
        "kind",
        "user_id",
        "user_name",
        "message",
        "created_at",
        "client_id",
        "edited_at",
        "deleted_at",
        "deleted_by",
    ] {
        assert!(
            m["message"].get(field).is_some(),
            "whole state: {field} in {m}"
        );
    }
    assert_eq!(m["message"]["message"], "hello");
    assert_eq!(m["message"]["kind"], "text");
    assert_eq!(m["message"]["user_name"], "Alice");
    let r = &frames[1];
    assert_eq!(r["user"], json!({"id": s.bob, "name": "Bob"}));
    assert_eq!(r["seq"], sent["seq"]);
}

/// The next stream frame for `room`, skipping presence and typing.
async fn next_stream(c: &mut Client, room: i64) -> Value {
    loop {
        let f = next(c).await;
        assert_ne!(f["type"], "message_deleted", "no longer sent: {f}");
        if f["roomId"] == room && STREAM.contains(&f["type"].as_str().unwrap_or("")) {
            return f;
        }
    }
}

#[tokio::test]
async fn edits_and_deletes_from_plain_sql_and_postgrest_arrive_as_message_updated() {
    let s = Setup::new().await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            s.send(s.alice, &format!("m{i}")).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let (mut bob, _, joined) = s.join(s.bob, json!({})).await;
    let start = joined["lastRev"].as_i64().unwrap();
    let admin = s.db.admin().await;
    let alice = Claims::user(s.alice);
    // Each change is awaited on the socket before the next: two changes of one message
    // read in one go may be coalesced into its latest state (allowed), and each path
    // must be seen to arrive.
    let mut frames = Vec::new();
    let mut expect = async |id: i64, text: &str, deleted: bool| {
        let f = next_stream(&mut bob, s.room).await;
        assert_eq!(f["type"], "message_updated", "{f}");
        assert_eq!(f["message"]["id"], id, "{f}");
        assert_eq!(f["message"]["message"], text, "{f}");
        assert_eq!(f["message"]["deleted_at"].is_string(), deleted, "{f}");
        assert!(f["message"]["edited_at"].is_string() || deleted, "{f}");
        assert_eq!(
            f["message"]["rev"], f["rev"],
            "the state's rev is the frame's"
        );
        let seq = ids.iter().position(|m| *m == id).unwrap() as i64 + 1;
        assert_eq!(f["message"]["seq"], seq, "a message keeps its seq: {f}");
        frames.push(f.clone());
        f
    };
    // Plain SQL, as typed in psql.
    admin
        .execute(
            "update api.chat_messages set message = 'edited in psql' where id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    expect(ids[0], "edited in psql", false).await;
    admin
        .execute("delete from api.chat_messages where id = $1", &[&ids[1]])
        .await
        .unwrap();
    let f = expect(ids[1], "", true).await;
    assert_eq!(f["message"]["deleted_by"], Value::Null, "nobody, in psql");
    // PostgREST: the RPCs, and PATCH / DELETE on the table endpoint.
    s.rpc(s.alice, "edit_message", ids[2], Some("edited by rpc"))
        .await;
    expect(ids[2], "edited by rpc", false).await;
    s.pg.query(
        &alice,
        "update api.chat_messages set message = $1 where id = $2",
        &[&"patched", &ids[3]],
    )
    .await
    .unwrap();
    expect(ids[3], "patched", false).await;
    s.rpc(s.alice, "delete_message", ids[2], None).await;
    let f = expect(ids[2], "", true).await;
    assert_eq!(f["message"]["deleted_by"], s.alice);
    s.pg.query(
        &alice,
        "delete from api.chat_messages where id = $1",
        &[&ids[3]],
    )
    .await
    .unwrap();
    let f = expect(ids[3], "", true).await;
    assert_eq!(f["message"]["deleted_by"], s.alice);
    s.send(s.alice, "sentinel").await;
    frames.extend(stream_until(&mut bob, s.room, "sentinel").await);
    assert_eq!(types(&frames).len(), 7, "nothing else arrived: {frames:?}");
    assert_chain(&frames, start);
}

#[tokio::test]
async fn membership_changes_reach_every_subscriber_and_the_member_its_room() {
    let s = Setup::new().await;
    let (carol, _) = s.db.signup("carol@example.com", "Carol").await;
    let (mut alice, _, joined) = s.join(s.alice, json!({})).await;
    let start = joined["lastRev"].as_i64().unwrap();
    // Carol is online but not subscribed: she hears of the room itself.
    let mut carol_socket = Client::authed(&s.server.url(), carol).await;

    s.pg.rpc(
        &Claims::user(carol),
        "join_chat_room",
        &[("room_id", &s.room)],
    )
    .await
    .unwrap();
    let room = carol_socket.recv_type("room").await;
    assert_eq!(room["room"]["id"], s.room);
    s.pg.rpc(
        &Claims::user(carol),
        "leave_chat_room",
        &[("room_id", &s.room)],
    )
    .await
    .unwrap();
    // Bob leaves by plain SQL.
    s.db.admin()
        .await
        .execute(
            "delete from api.room_members where room_id = $1 and user_id = $2",
            &[&s.room, &s.bob],
        )
        .await
        .unwrap();
    s.send(s.alice, "sentinel").await;

    let frames = stream_until(&mut alice, s.room, "sentinel").await;
    assert_chain(&frames, start);
    assert_eq!(
        types(&frames),
        ["member_joined", "member_left", "member_left", "message"]
    );
    assert_eq!(frames[0]["user"], json!({"id": carol, "name": "Carol"}));
    assert_eq!(frames[0]["role"], "member");
    assert_eq!(frames[1]["user"], json!({"id": carol, "name": "Carol"}));
    assert!(frames[1].get("role").is_none());
    assert_eq!(frames[2]["user"], json!({"id": s.bob, "name": "Bob"}));
}

#[tokio::test]
async fn a_leaving_member_gets_room_left_not_member_left() {
    let s = Setup::new().await;
    let (mut alice, _, _) = s.join(s.alice, json!({})).await;
    let (mut bob, _, _) = s.join(s.bob, json!({})).await;
    s.pg.rpc(
        &Claims::user(s.bob),
        "leave_chat_room",
        &[("room_id", &s.room)],
    )
    .await
    .unwrap();
    loop {
        let f = next(&mut bob).await;
        assert_ne!(f["type"], "member_left", "about itself: {f}");
        if f["type"] == "room_left" {
            assert_eq!(f["roomId"], s.room);
            break;
        }
    }
    s.send(s.alice, "sentinel").await;
    let frames = stream_until(&mut alice, s.room, "sentinel").await;
    assert_eq!(types(&frames), ["member_left", "message"]);
}

#[tokio::test]
async fn join_since_rev_replays_compacted_state_in_one_chain_then_goes_live() {
    let s = Setup::new().await;
    let (carol, _) = s.db.signup("carol@example.com", "Carol").await;
    let old = s.send(s.alice, "old").await["id"].as_i64().unwrap();
    let untouched = s.send(s.alice, "untouched").await;
    let (_, _, joined) = s.join(s.bob, json!({})).await;
    let since = joined["lastRev"].as_i64().unwrap();

    // While Bob is away: a new message edited three times, an old one deleted, a new
    // member who reads twice.
    let new = s.send(s.alice, "v0").await["id"].as_i64().unwrap();
    for v in 1..=3 {
        s.rpc(s.alice, "edit_message", new, Some(&format!("v{v}")))
            .await;
    }
    s.rpc(s.alice, "delete_message", old, None).await;
    s.pg.rpc(
        &Claims::user(carol),
        "join_chat_room",
        &[("room_id", &s.room)],
    )
    .await
    .unwrap();
    for seq in [1i64, 3] {
        s.pg.rpc(
            &Claims::user(carol),
            "mark_read",
            &[("room_id", &s.room), ("seq", &seq)],
        )
        .await
        .unwrap();
    }
    let last = s.send(s.alice, "last while away").await;

    let (mut bob, replayed, joined) = s.join(s.bob, json!({"sinceRev": since})).await;
    let last_rev = joined["lastRev"].as_i64().unwrap();
    assert_eq!(last_rev, s.last_rev().await);
    assert!(joined.get("behind").is_none());
    assert_chain(&replayed, since);
    assert_eq!(replayed.last().unwrap()["rev"], last_rev);
    let summary: Vec<(&str, Value)> = replayed
        .iter()
        .map(|f| {
            let what = match f["type"].as_str().unwrap() {
                "message" | "message_updated" => f["message"]["message"].clone(),
                "read" => json!([f["user"]["id"], f["seq"]]),
                _ => f["user"]["id"].clone(),
            };
            (f["type"].as_str().unwrap(), what)
        })
        .collect();
    // Rev order: the new message's last edit came before the deletion of the old one.
    assert_eq!(
        summary,
        [
            ("message", json!("v3")),
            ("message_updated", json!("")),
            ("member_joined", json!(carol)),
            ("read", json!([carol, 3])),
            ("message", json!("last while away")),
        ]
    );
    assert_eq!(replayed[0]["message"]["id"], new);
    assert!(replayed[0]["message"]["edited_at"].is_string());
    assert_eq!(replayed[1]["message"]["id"], old);
    assert_eq!(replayed[4]["message"]["id"], last["id"]);
    assert!(
        replayed
            .iter()
            .all(|f| f["message"]["id"] != untouched["id"]),
        "unchanged since: not replayed"
    );

    // Live from the joined reply's lastRev, no gap, no duplicate.
    s.send(s.alice, "sentinel").await;
    let live = stream_until(&mut bob, s.room, "sentinel").await;
    assert_eq!(types(&live), ["message"]);
    assert_chain(&live, last_rev);
}

#[tokio::test]
async fn a_since_rev_join_during_writes_splices_replay_and_live_without_gap_or_duplicate() {
    let s = Setup::new().await;
    let (_, _, joined) = s.join(s.bob, json!({})).await;
    let since = joined["lastRev"].as_i64().unwrap();
    for i in 0..20 {
        s.send(s.alice, &format!("before {i}")).await;
    }
    let writer = {
        let pg = s.db.postgrest().await;
        let (alice, room) = (s.alice, s.room);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                let m = pg.send(alice, room, &format!("during {i}")).await;
                ids.push(m["id"].as_i64().unwrap());
                if i % 5 == 0 {
                    pg.rpc(
                        &Claims::user(alice),
                        "edit_message",
                        &[("message_id", &ids[0]), ("message", &format!("edit {i}"))],
                    )
                    .await
                    .unwrap();
                }
            }
        })
    };
    let (mut bob, replayed, joined) = s.join(s.bob, json!({"sinceRev": since})).await;
    writer.await.unwrap();
    s.send(s.alice, "sentinel").await;
    let live = stream_until(&mut bob, s.room, "sentinel").await;
    let last_rev = joined["lastRev"].as_i64().unwrap();
    assert_chain(&replayed, since);
    assert!(
        replayed
            .last()
            .map_or(since, |f| f["rev"].as_i64().unwrap())
            <= last_rev
    );
    assert_chain(&live, last_rev);

    // Every change after `since` is covered exactly once: each rev at most once, and
    // every message's final state is the last one seen for it.
    let all: Vec<&Value> = replayed.iter().chain(&live).collect();
    let mut revs: Vec<i64> = all.iter().map(|f| f["rev"].as_i64().unwrap()).collect();
    let n = revs.len();
    revs.dedup();
    assert_eq!(revs.len(), n, "no rev twice");
    let mut seen = std::collections::BTreeMap::new();
    for f in &all {
        seen.insert(f["message"]["id"].as_i64().unwrap(), f["message"].clone());
    }
    let admin = s.db.admin().await;
    let rows = admin
        .query(
            "select private.message_json(m)::text from api.chat_messages m \
             where room_id = $1 and rev > $2 order by id",
            &[&s.room, &since],
        )
        .await
        .unwrap();
    let want: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect();
    let got: Vec<Value> = seen.into_values().collect();
    assert_eq!(got, want, "client state = table state");
}

#[tokio::test]
async fn a_client_too_far_behind_is_told_so_and_nothing_is_replayed() {
    let s = Setup::new().await;
    let (_, _, joined) = s.join(s.bob, json!({})).await;
    let (since_seq, since_rev) = (
        joined["lastSeq"].as_i64().unwrap(),
        joined["lastRev"].as_i64().unwrap(),
    );
    // 1,001 messages in one statement: one rev each.
    s.db.admin()
        .await
        .execute(
            "insert into api.chat_messages (room_id, user_id, message) \
             select $1, $2, 'bulk ' || g from generate_series(1, 1001) g",
            &[&s.room, &s.alice],
        )
        .await
        .unwrap();
    let last_rev = s.last_rev().await;
    assert_eq!(last_rev - since_rev, 1001);

    for resume in [json!({"sinceRev": since_rev}), json!({"since": since_seq})] {
        let (mut bob, replayed, joined) = s.join(s.bob, resume.clone()).await;
        assert_eq!(joined["behind"], true, "{resume}: {joined}");
        assert_eq!(joined["lastRev"], s.last_rev().await);
        assert!(joined["lastSeq"].as_i64().unwrap() >= since_seq + 1001);
        assert!(
            replayed
                .iter()
                .all(|f| !STREAM.contains(&f["type"].as_str().unwrap())),
            "{resume}: nothing replayed"
        );
        // Live goes on from lastRev.
        s.send(s.alice, "sentinel").await;
        let live = stream_until(&mut bob, s.room, "sentinel").await;
        assert_chain(&live, joined["lastRev"].as_i64().unwrap());
        // The latest page is what the client loads instead.
        let page = bob
            .request(json!({"type": "history", "roomId": s.room, "limit": 1}))
            .await;
        assert_eq!(page["messages"][0]["message"], "sentinel");
    }

    // At the limit exactly: replayed, not behind.
    let (_, replayed, joined) = s
        .join(s.bob, json!({"sinceRev": s.last_rev().await - 1000}))
        .await;
    assert!(joined.get("behind").is_none(), "{joined}");
    assert_eq!(replayed.len(), 1000);
    assert_chain(&replayed, joined["lastRev"].as_i64().unwrap() - 1000);
    let (_, replayed, joined) = s
        .join(
            s.bob,
            json!({"since": joined["lastSeq"].as_i64().unwrap() - 1000}),
        )
        .await;
    assert!(joined.get("behind").is_none(), "{joined}");
    assert_eq!(replayed.len(), 1000);
}

#[tokio::test]
async fn a_socket_rejoining_with_since_rev_gets_the_replay_then_live_without_duplicates() {
    // What the SDK does when it sees a gap: `join {sinceRev}` again on the same socket,
    // while still subscribed.
    let s = Setup::new().await;
    let (mut bob, _, joined) = s.join(s.bob, json!({})).await;
    let start = joined["lastRev"].as_i64().unwrap();
    let first = s.send(s.alice, "one").await;
    s.send(s.alice, "two").await;
    let seen = stream_until(&mut bob, s.room, "two").await;
    assert_chain(&seen, start);
    let one_rev = seen[0]["rev"].as_i64().unwrap();
    s.rpc(
        s.alice,
        "edit_message",
        first["id"].as_i64().unwrap(),
        Some("one, edited"),
    )
    .await;
    let edit = stream_until_type(&mut bob, "message_updated").await;

    // With `since` (its last seq) beside `sinceRev`, as the SDK sends: the edited
    // message it had comes as `message_updated`, the one it did not as `message`.
    let since = seen[0]["message"]["seq"].clone();
    bob.send(json!({"type": "join", "roomId": s.room, "sinceRev": one_rev, "since": since, "ref": "again"}))
        .await;
    let mut replayed = Vec::new();
    let rejoined = loop {
        let f = next(&mut bob).await;
        if f["ref"] == "again" {
            break f;
        }
        if STREAM.contains(&f["type"].as_str().unwrap_or("")) {
            replayed.push(f);
        }
    };
    assert_eq!(rejoined["type"], "joined");
    // "two" (new after rev `one_rev`) and the edit of "one", once each, in rev order.
    assert_chain(&replayed, one_rev);
    assert_eq!(types(&replayed), ["message", "message_updated"]);
    assert_eq!(replayed[1]["rev"], edit["rev"]);
    let last_rev = rejoined["lastRev"].as_i64().unwrap();
    s.send(s.alice, "sentinel").await;
    let live = stream_until(&mut bob, s.room, "sentinel").await;
    assert_eq!(types(&live), ["message"], "nothing twice after the rejoin");
    assert_chain(&live, last_rev);
}

async fn stream_until_type(c: &mut Client, kind: &str) -> Value {
    loop {
        let f = next(c).await;
        if f["type"] == kind {
            return f;
        }
    }
}
