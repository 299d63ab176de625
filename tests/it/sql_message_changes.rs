//! Edits and deletions (SPEC §6.1, §6.2) on every path: the RPCs, PostgREST's
//! PATCH/DELETE on /chat_messages (the same statements as the user) and plain SQL. Each
//! takes the room's next rev and rings the doorbell with ids only; a DELETE is soft
//! (the row, its seq and who deleted it stay); the change stream returns each message
//! once, as its current state, in rev order.

use crate::common;

use common::doorbell::Listener;
use common::postgrest::Claims;
use common::sqlstate;
use serde_json::Value;

struct Room {
    db: common::TestDb,
    pg: common::postgrest::Postgrest,
    alice: i64,
    bob: i64,
    carol: i64,
    room: i64,
}

/// Alice and Bob in a room; Carol outside it.
async fn room() -> Room {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let (carol, _) = db.signup("carol@example.com", "Carol").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    Room {
        db,
        pg,
        alice,
        bob,
        carol,
        room,
    }
}

impl Room {
    async fn last_rev(&self) -> i64 {
        self.db
            .admin()
            .await
            .query_one(
                "select last_rev from api.chat_rooms where id = $1",
                &[&self.room],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn state(&self, id: i64) -> Value {
        self.db
            .admin()
            .await
            .query_one(
                "select private.message_json(m) from api.chat_messages m where id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn edit(&self, user: i64, id: i64, text: &str) -> Result<Value, tokio_postgres::Error> {
        self.pg
            .rpc(
                &Claims::user(user),
                "edit_message",
                &[("message_id", &id), ("message", &text)],
            )
            .await
    }

    async fn delete(&self, user: i64, id: i64) -> Result<Value, tokio_postgres::Error> {
        self.pg
            .rpc(
                &Claims::user(user),
                "delete_message",
                &[("message_id", &id)],
            )
            .await
    }
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap()
}

#[tokio::test]
async fn edits_and_deletions_on_every_path_take_a_rev_and_ring_ids_only() {
    let r = room().await;
    let secret = "the launch code is 1234";
    let m1 = r.pg.send(r.alice, r.room, secret).await;
    let m2 = r.pg.send(r.alice, r.room, "second").await;
    let m3 = r.pg.send(r.alice, r.room, "third").await;
    let mut l = Listener::start(&r.db).await;
    let admin = r.db.admin().await;
    let start = r.last_rev().await;

    // 1. The RPC.
    let edited = r.edit(r.alice, id(&m1), "the code changed").await.unwrap();
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 1)));
    assert_eq!(edited["rev"], start + 1);
    assert_eq!(edited["seq"], 1);
    assert_eq!(edited["message"], "the code changed");
    assert!(edited["edited_at"].is_string());
    // 2. PostgREST's PATCH /chat_messages?id=eq.… as the author.
    let patched =
        r.pg.query(
            &Claims::user(r.alice),
            "update api.chat_messages set message = 'patched' where id = $1 returning rev",
            &[&id(&m2)],
        )
        .await
        .unwrap();
    assert_eq!(patched[0].get::<_, i64>(0), start + 2);
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 2)));
    // 3. Plain SQL.
    admin
        .execute(
            "update api.chat_messages set message = 'typed in psql' where id = $1",
            &[&id(&m3)],
        )
        .await
        .unwrap();
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 3)));
    assert!(r.state(id(&m3)).await["edited_at"].is_string());

    // Deletions: the RPC, PostgREST's DELETE, plain SQL.
    let deleted = r.delete(r.alice, id(&m1)).await.unwrap();
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 4)));
    assert_eq!(deleted["rev"], start + 4);
    assert_eq!(deleted["message"], "");
    assert!(deleted["deleted_at"].is_string());
    assert_eq!(deleted["deleted_by"], r.alice);
    let gone =
        r.pg.query(
            &Claims::user(r.alice),
            "delete from api.chat_messages where id = $1 returning id",
            &[&id(&m2)],
        )
        .await
        .unwrap();
    assert!(gone.is_empty(), "the row was not deleted, only its content");
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 5)));
    assert_eq!(r.state(id(&m2)).await["deleted_by"], r.alice);
    admin
        .execute("delete from api.chat_messages where id = $1", &[&id(&m3)])
        .await
        .unwrap();
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 6)));
    assert_eq!(r.state(id(&m3)).await["deleted_by"], Value::Null);

    // Deleting again, or a no-op edit, takes no rev and rings nothing.
    assert_eq!(r.delete(r.alice, id(&m1)).await.unwrap()["rev"], start + 4);
    admin
        .execute(
            "delete from api.chat_messages where room_id = $1",
            &[&r.room],
        )
        .await
        .unwrap();
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());
    assert_eq!(r.last_rev().await, start + 6);

    // The rows stay where they were: no hole in seq; the next message goes on.
    let seqs: Vec<(i64, bool)> = admin
        .query(
            "select seq, deleted_at is not null from api.chat_messages where room_id = $1 order by seq",
            &[&r.room],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(seqs, [(1, true), (2, true), (3, true)]);
    let m4 = r.pg.send(r.bob, r.room, "still here").await;
    assert_eq!(
        (m4["seq"].as_i64(), m4["rev"].as_i64()),
        (Some(4), Some(start + 7))
    );
    assert_eq!(l.next().await, ("c".into(), r.room, Some(start + 7)));

    // `next` accepts a doorbell of ids only: no text went through NOTIFY, and none
    // came after the sentinel either.
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());
}

#[tokio::test]
async fn only_the_author_edits_or_deletes_and_never_after_deletion() {
    let r = room().await;
    let m = r.pg.send(r.alice, r.room, "mine").await;
    let mut l = Listener::start(&r.db).await;
    // Bob is a member but not the author; Carol cannot even see it.
    for (user, code) in [(r.bob, "42501"), (r.carol, "P0002")] {
        assert_eq!(
            sqlstate(&r.edit(user, id(&m), "theirs").await.unwrap_err()),
            code
        );
        assert_eq!(sqlstate(&r.delete(user, id(&m)).await.unwrap_err()), code);
        for sql in [
            "update api.chat_messages set message = 'theirs' where id = $1 returning 1",
            "delete from api.chat_messages where id = $1 returning 1",
        ] {
            let rows =
                r.pg.query(&Claims::user(user), sql, &[&id(&m)])
                    .await
                    .unwrap();
            assert!(rows.is_empty(), "{sql}");
        }
    }
    // Only the text can be written, and it obeys the same rules as a new message.
    let err =
        r.pg.query(
            &Claims::user(r.alice),
            "update api.chat_messages set seq = 9, user_id = $2 where id = $1",
            &[&id(&m), &r.bob],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(
        sqlstate(&r.edit(r.alice, id(&m), "").await.unwrap_err()),
        "23514"
    );
    assert_eq!(
        sqlstate(
            &r.edit(r.alice, id(&m), &"x".repeat(5001))
                .await
                .unwrap_err()
        ),
        "23514"
    );
    assert_eq!(
        sqlstate(&r.edit(r.alice, 0, "nothing").await.unwrap_err()),
        "P0002"
    );
    assert_eq!(
        l.until_sentinel().await,
        Vec::<String>::new(),
        "nothing rang"
    );

    r.delete(r.alice, id(&m)).await.unwrap();
    assert_eq!(l.next().await.0, "c");
    assert_eq!(
        sqlstate(&r.edit(r.alice, id(&m), "back").await.unwrap_err()),
        "22023"
    );
    // Not even the database owner brings a deleted message back.
    let err =
        r.db.admin()
            .await
            .execute(
                "update api.chat_messages set deleted_at = null, message = 'back' where id = $1",
                &[&id(&m)],
            )
            .await
            .unwrap_err();
    assert_eq!(sqlstate(&err), "22023");
    assert_eq!(r.state(id(&m)).await["message"], "");
}

/// What `join {sinceRev}` replays: each changed message once, as its current state, in
/// rev order, paged, and only to members.
#[tokio::test]
async fn the_change_stream_returns_current_states_in_rev_order() {
    let r = room().await;
    let a = r.pg.send(r.alice, r.room, "a").await;
    let b = r.pg.send(r.bob, r.room, "b").await;
    let since = r.last_rev().await;
    for text in ["a1", "a2", "a3"] {
        r.edit(r.alice, id(&a), text).await.unwrap();
    }
    let c = r.pg.send(r.bob, r.room, "c").await;
    r.delete(r.bob, id(&b)).await.unwrap();
    let page = |after: i64, rows: i32| {
        let pg = &r.pg;
        let (room, bob) = (r.room, r.bob);
        async move {
            pg.rpc(
                &Claims::user(bob),
                "messages_since_rev",
                &[
                    ("room_id", &room),
                    ("after_rev", &after),
                    ("max_rows", &rows),
                ],
            )
            .await
            .unwrap()
        }
    };
    let all = page(since, 100).await;
    let got: Vec<(i64, &str, bool)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                id(m),
                m["message"].as_str().unwrap(),
                m["deleted_at"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (id(&a), "a3", false),
            (id(&c), "c", false),
            (id(&b), "", true)
        ]
    );
    let revs: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["rev"].as_i64().unwrap())
        .collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    // Paged: the next page starts after the last rev of the one before.
    let first = page(since, 2).await;
    assert_eq!(first.as_array().unwrap().len(), 2);
    let rest = page(first[1]["rev"].as_i64().unwrap(), 2).await;
    assert_eq!(rest.as_array().unwrap().len(), 1);
    assert_eq!(id(&rest[0]), id(&b));
    // A non-member reads nothing of it.
    let theirs =
        r.pg.rpc(
            &Claims::user(r.carol),
            "messages_since_rev",
            &[("room_id", &r.room), ("after_rev", &0i64)],
        )
        .await
        .unwrap();
    assert_eq!(theirs, serde_json::json!([]));
}

/// The room list reads counters, kept by the same triggers: messages not deleted, the
/// last message's time, and unread = after my read marker and after my own last message.
#[tokio::test]
async fn room_counters_follow_sends_and_deletions() {
    let r = room().await;
    let row = |user: i64| {
        let pg = &r.pg;
        let room = r.room;
        async move {
            let rows = pg
                .query(
                    &Claims::user(user),
                    "select to_json(m) from api.my_chat_rooms m where id = $1",
                    &[&room],
                )
                .await
                .unwrap();
            rows[0].get::<_, Value>(0)
        }
    };
    assert_eq!(row(r.alice).await["message_count"], 0);
    let a1 = r.pg.send(r.alice, r.room, "a1").await;
    r.pg.send(r.bob, r.room, "b1").await;
    r.pg.send(r.bob, r.room, "b2").await;
    let mine = row(r.alice).await;
    assert_eq!(
        (
            mine["message_count"].as_i64(),
            mine["unread_count"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(
        row(r.bob).await["unread_count"],
        0,
        "what I sent and what came before it"
    );
    // Alice answers: what came before her answer is no longer unread to her.
    let a2 = r.pg.send(r.alice, r.room, "a2").await;
    assert_eq!(row(r.alice).await["unread_count"], 0);
    assert_eq!(row(r.bob).await["unread_count"], 1);
    assert_eq!(row(r.alice).await["last_message_at"], a2["created_at"]);
    r.delete(r.alice, id(&a1)).await.unwrap();
    let after = row(r.bob).await;
    assert_eq!(after["message_count"], 3);
    assert_eq!(after["last_rev"], r.last_rev().await);
    // Deleting the room deletes its messages for real (the only hard delete).
    r.db.admin()
        .await
        .execute("delete from api.chat_rooms where id = $1", &[&r.room])
        .await
        .unwrap();
    let left: i64 =
        r.db.admin()
            .await
            .query_one("select count(*) from api.chat_messages", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(left, 0);
}
