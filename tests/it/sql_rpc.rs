//! Every chat RPC and the api.my_chat_rooms view, called as PostgREST calls them:
//! connected as authenticator, role and claims set for the request, named arguments.

use crate::common;

use common::sqlstate;

use common::postgrest::Claims;
use serde_json::Value;

fn seqs(page: &Value) -> Vec<i64> {
    page.as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn create_chat_room_returns_the_room_and_joins_the_creator() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"General"), ("description", &"Everything")],
        )
        .await
        .unwrap();
    assert!(room["id"].as_i64().unwrap() > 0);
    assert_eq!(room["name"], "General");
    assert_eq!(room["description"], "Everything");
    assert_eq!(room["created_by"].as_i64(), Some(alice));
    assert_eq!(room["member_count"], 1);
    assert_eq!(room["last_seq"], 0);

    // description is optional.
    let bare = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"Bare")],
        )
        .await
        .unwrap();
    assert_eq!(bare["description"], "");

    // Anonymous callers cannot create rooms.
    let err = pg
        .rpc(&Claims::anon(), "create_chat_room", &[("name", &"Nope")])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    // Names are 1..100 characters.
    let err = pg
        .rpc(&Claims::user(alice), "create_chat_room", &[("name", &"")])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23514");
}

#[tokio::test]
async fn join_and_leave_chat_room() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;

    let joined = pg
        .rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(joined["id"].as_i64(), Some(room));
    assert_eq!(joined["name"], "General");
    assert_eq!(joined["member_count"], 2);
    // Joining again changes nothing.
    let again = pg
        .rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(again["member_count"], 2);
    // A room that does not exist.
    let err = pg
        .rpc(
            &Claims::user(bob),
            "join_chat_room",
            &[("room_id", &999_999i64)],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "P0002");

    let left = pg
        .rpc(&Claims::user(bob), "leave_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(left["room_id"].as_i64(), Some(room));
    assert_eq!(left["left"], true);
    let again = pg
        .rpc(&Claims::user(bob), "leave_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(again["left"], false);
    let state = pg
        .rpc(&Claims::user(alice), "room_state", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(state["room"]["member_count"], 1);
}

#[tokio::test]
async fn send_message_returns_the_stored_row() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let m = pg
        .rpc(
            &Claims::user(alice),
            "send_message",
            &[
                ("room_id", &room),
                ("message", &"こんにちは"),
                ("client_id", &"c-1"),
            ],
        )
        .await
        .unwrap();
    assert!(m["id"].as_i64().unwrap() > 0);
    assert_eq!(m["room_id"].as_i64(), Some(room));
    assert_eq!(m["seq"], 1);
    assert_eq!(m["user_id"].as_i64(), Some(alice));
    assert_eq!(m["user_name"], "Alice");
    assert_eq!(m["message"], "こんにちは");
    assert_eq!(m["client_id"], "c-1");
    assert!(m["created_at"].is_string());
    // Without client_id: the next seq, client_id null.
    let m2 = pg.send(alice, room, "second").await;
    assert_eq!(m2["seq"], 2);
    assert_eq!(m2["client_id"], Value::Null);
}

#[tokio::test]
async fn chat_history_pages_newest_first() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    for i in 1..=7 {
        pg.send(alice, room, &format!("m{i}")).await;
    }
    let c = Claims::user(alice);
    let page = pg
        .rpc(
            &c,
            "chat_history",
            &[("room_id", &room), ("max_rows", &3i32)],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![7, 6, 5]);
    assert_eq!(page[0]["message"], "m7");
    assert_eq!(page[0]["user_name"], "Alice");
    let page = pg
        .rpc(
            &c,
            "chat_history",
            &[
                ("room_id", &room),
                ("before_seq", &5i64),
                ("max_rows", &3i32),
            ],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![4, 3, 2]);
    let page = pg
        .rpc(
            &c,
            "chat_history",
            &[("room_id", &room), ("before_seq", &2i64)],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![1]);
    let page = pg
        .rpc(
            &c,
            "chat_history",
            &[("room_id", &room), ("before_seq", &1i64)],
        )
        .await
        .unwrap();
    assert_eq!(page, serde_json::json!([]));
    // Defaults: every message (fewer than 50), newest first.
    let page = pg
        .rpc(&c, "chat_history", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![7, 6, 5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn messages_since_replays_oldest_first() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    for i in 1..=5 {
        pg.send(alice, room, &format!("m{i}")).await;
    }
    let c = Claims::user(alice);
    let page = pg
        .rpc(
            &c,
            "messages_since",
            &[("room_id", &room), ("after_seq", &2i64)],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![3, 4, 5]);
    assert_eq!(page[0]["message"], "m3");
    let page = pg
        .rpc(
            &c,
            "messages_since",
            &[
                ("room_id", &room),
                ("after_seq", &0i64),
                ("max_rows", &2i32),
            ],
        )
        .await
        .unwrap();
    assert_eq!(seqs(&page), vec![1, 2]);
    let page = pg
        .rpc(
            &c,
            "messages_since",
            &[("room_id", &room), ("after_seq", &5i64)],
        )
        .await
        .unwrap();
    assert_eq!(page, serde_json::json!([]));
}

#[tokio::test]
async fn mark_read_moves_forward_only_and_is_clamped() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    for i in 1..=4 {
        pg.send(alice, room, &format!("m{i}")).await;
    }
    let c = Claims::user(alice);
    let mark = |seq: i64| {
        let pg = &pg;
        let c = c.clone();
        async move {
            pg.rpc(&c, "mark_read", &[("room_id", &room), ("seq", &seq)])
                .await
        }
    };
    let r = mark(3).await.unwrap();
    assert_eq!(r["room_id"].as_i64(), Some(room));
    assert_eq!(r["last_read_seq"], 3);
    assert_eq!(mark(1).await.unwrap()["last_read_seq"], 3, "moved back");
    assert_eq!(
        mark(100).await.unwrap()["last_read_seq"],
        4,
        "past last seq"
    );
    // A non-member has no marker to move.
    let err = pg
        .rpc(
            &Claims::user(bob),
            "mark_read",
            &[("room_id", &room), ("seq", &1i64)],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[tokio::test]
async fn room_state_for_a_member_and_null_for_others() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    pg.send(alice, room, "hi").await;
    pg.send(alice, room, "there").await;
    pg.rpc(
        &Claims::user(alice),
        "mark_read",
        &[("room_id", &room), ("seq", &1i64)],
    )
    .await
    .unwrap();
    let state = pg
        .rpc(&Claims::user(alice), "room_state", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(state["room"]["id"].as_i64(), Some(room));
    assert_eq!(state["room"]["name"], "General");
    assert_eq!(state["room"]["last_seq"], 2);
    assert_eq!(state["last_read_seq"], 1);
    let other = pg
        .rpc(&Claims::user(bob), "room_state", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(other, Value::Null);
}

#[tokio::test]
async fn my_chat_rooms_lists_my_rooms_with_counts() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let general = pg.create_room(alice, "General").await;
    let quiet = pg.create_room(alice, "Quiet").await;
    let bobs = pg.create_room(bob, "Bob's").await;
    pg.rpc(
        &Claims::user(bob),
        "join_chat_room",
        &[("room_id", &general)],
    )
    .await
    .unwrap();
    pg.send(alice, general, "a1").await;
    pg.send(bob, general, "b1").await;
    pg.send(bob, general, "b2").await;
    pg.send(bob, bobs, "secret").await;

    let rows = pg
        .query(
            &Claims::user(alice),
            "select to_json(r) from api.my_chat_rooms r order by id",
            &[],
        )
        .await
        .unwrap();
    let rooms: Vec<Value> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    let g = &rooms[0];
    assert_eq!(g["id"].as_i64(), Some(general));
    assert_eq!(g["name"], "General");
    assert_eq!(g["member_count"], 2);
    assert_eq!(g["message_count"], 3);
    assert_eq!(g["last_seq"], 3);
    assert!(g["last_message_at"].is_string());
    // Bob's two messages are unread; Alice's own never count.
    assert_eq!(g["unread_count"], 2);
    let q = &rooms[1];
    assert_eq!(q["id"].as_i64(), Some(quiet));
    assert_eq!(q["message_count"], 0);
    assert_eq!(q["last_message_at"], Value::Null);
    assert_eq!(q["unread_count"], 0);

    pg.rpc(
        &Claims::user(alice),
        "mark_read",
        &[("room_id", &general), ("seq", &2i64)],
    )
    .await
    .unwrap();
    let unread: i64 = pg
        .query(
            &Claims::user(alice),
            "select unread_count from api.my_chat_rooms where id = $1",
            &[&general],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(unread, 1);

    // Anonymous callers get no room list at all.
    let err = pg
        .query(&Claims::anon(), "select * from api.my_chat_rooms", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}
