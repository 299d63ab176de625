//! Row Level Security, positive and negative, per table and operation. Every statement
//! under test runs as the user through the PostgREST helper; the superuser only sets up
//! and inspects.

use crate::common;

use common::sqlstate;

use common::postgrest::{Claims, Postgrest};
use tokio_postgres::types::ToSql;

/// alice created `room` and bob joined it; carol is a member only of her own room.
struct Fixture {
    db: common::TestDb,
    pg: Postgrest,
    alice: i64,
    bob: i64,
    carol: i64,
    room: i64,
    carols_room: i64,
}

async fn fixture() -> Fixture {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let (carol, _) = db.signup("carol@example.com", "Carol").await;
    let pg = db.postgrest().await;
    let create = |user: i64, name: &'static str| {
        let pg = &pg;
        async move {
            pg.rpc(&Claims::user(user), "create_chat_room", &[("name", &name)])
                .await
                .unwrap()["id"]
                .as_i64()
                .unwrap()
        }
    };
    let room = create(alice, "General").await;
    let carols_room = create(carol, "Carol's").await;
    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    for (user, text) in [(alice, "from alice"), (bob, "from bob")] {
        pg.rpc(
            &Claims::user(user),
            "send_message",
            &[("room_id", &room), ("message", &text)],
        )
        .await
        .unwrap();
    }
    Fixture {
        db,
        pg,
        alice,
        bob,
        carol,
        room,
        carols_room,
    }
}

impl Fixture {
    /// Runs `sql` as `user` and returns how many rows it returned.
    async fn rows(&self, user: i64, sql: &str, params: &[&(dyn ToSql + Sync)]) -> usize {
        self.pg
            .query(&Claims::user(user), sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .len()
    }

    async fn refused(&self, user: i64, sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
        let err = self
            .pg
            .query(&Claims::user(user), sql, params)
            .await
            .expect_err(sql);
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
        err.as_db_error().unwrap().message().to_string()
    }

    /// Superuser inspection: a single i64.
    async fn inspect(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
        self.db
            .admin()
            .await
            .query_one(sql, params)
            .await
            .unwrap()
            .get(0)
    }

    /// What `user` can see of `room`: (rooms, members, messages).
    async fn visible(&self, user: i64, room: i64) -> (usize, usize, usize) {
        (
            self.rows(user, "select * from api.chat_rooms where id = $1", &[&room])
                .await,
            self.rows(
                user,
                "select * from api.room_members where room_id = $1",
                &[&room],
            )
            .await,
            self.rows(
                user,
                "select * from api.chat_messages where room_id = $1",
                &[&room],
            )
            .await,
        )
    }
}

#[tokio::test]
async fn members_see_their_room_and_non_members_see_nothing() {
    let f = fixture().await;
    assert_eq!(f.visible(f.alice, f.room).await, (1, 2, 2));
    assert_eq!(f.visible(f.bob, f.room).await, (1, 2, 2));
    assert_eq!(f.visible(f.carol, f.room).await, (0, 0, 0));
    // Without a filter carol sees exactly her own room, its one member and no messages.
    assert_eq!(
        f.rows(f.carol, "select * from api.chat_rooms", &[]).await,
        1
    );
    assert_eq!(
        f.rows(f.carol, "select * from api.room_members", &[]).await,
        1
    );
    assert_eq!(
        f.rows(f.carol, "select * from api.chat_messages", &[])
            .await,
        0
    );
    assert_eq!(f.visible(f.alice, f.carols_room).await, (0, 0, 0));
    // The RPCs that read run as the caller too: nothing, and no error.
    let c = Claims::user(f.carol);
    let h =
        f.pg.rpc(&c, "chat_history", &[("room_id", &f.room)])
            .await
            .unwrap();
    assert_eq!(h, serde_json::json!([]));
    let s =
        f.pg.rpc(
            &c,
            "messages_since",
            &[("room_id", &f.room), ("after_seq", &0i64)],
        )
        .await
        .unwrap();
    assert_eq!(s, serde_json::json!([]));
}

#[tokio::test]
async fn a_non_member_cannot_insert_and_learns_nothing_from_the_refusal() {
    let f = fixture().await;
    let sql = "insert into api.chat_messages (room_id, message) values ($1, 'hi')";
    let existing = f.refused(f.carol, sql, &[&f.room]).await;
    // A room that does not exist is refused in exactly the same words.
    let missing = f.refused(f.carol, sql, &[&999_999i64]).await;
    assert_eq!(existing, missing);
    let err =
        f.pg.rpc(
            &Claims::user(f.carol),
            "send_message",
            &[("room_id", &f.room), ("message", &"hi")],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
    let n = f
        .inspect(
            "select count(*) from api.chat_messages where room_id = $1",
            &[&f.room],
        )
        .await;
    assert_eq!(n, 2);
    let last = f
        .inspect(
            "select last_seq from api.chat_rooms where id = $1",
            &[&f.room],
        )
        .await;
    assert_eq!(last, 2, "a refused insert must not use up a seq");
}

#[tokio::test]
async fn nobody_posts_as_someone_else() {
    let f = fixture().await;
    let sql = "insert into api.chat_messages (room_id, user_id, message) values ($1, $2, 'x')";
    // A member naming another member, and a non-member naming a member.
    f.refused(f.bob, sql, &[&f.room, &f.alice]).await;
    f.refused(f.carol, sql, &[&f.room, &f.alice]).await;
    // Nor by choosing the seq or the time.
    f.refused(
        f.bob,
        "insert into api.chat_messages (room_id, message, seq) values ($1, 'x', 99)",
        &[&f.room],
    )
    .await;
    f.refused(
        f.bob,
        "insert into api.chat_messages (room_id, message, created_at) values ($1, 'x', now())",
        &[&f.room],
    )
    .await;
    let forged = f
        .inspect(
            "select count(*) from api.chat_messages where user_id = $1",
            &[&f.alice],
        )
        .await;
    assert_eq!(forged, 1);

    // Positive: as oneself, with user_id left to its default or named explicitly.
    let rows = f
        .pg
        .query(
            &Claims::user(f.bob),
            "insert into api.chat_messages (room_id, message) values ($1, 'mine') returning user_id, seq",
            &[&f.room],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), f.bob);
    assert_eq!(rows[0].get::<_, i64>(1), 3);
    assert_eq!(f.rows(f.bob, sql, &[&f.room, &f.bob]).await, 0);
    let bobs = f
        .inspect(
            "select count(*) from api.chat_messages where user_id = $1",
            &[&f.bob],
        )
        .await;
    assert_eq!(bobs, 3);
}

#[tokio::test]
async fn rooms_change_only_through_the_rpcs() {
    let f = fixture().await;
    f.refused(
        f.alice,
        "insert into api.chat_rooms (name) values ('direct')",
        &[],
    )
    .await;
    f.refused(
        f.alice,
        "update api.chat_rooms set name = 'renamed', last_seq = 0 where id = $1",
        &[&f.room],
    )
    .await;
    f.refused(
        f.alice,
        "delete from api.chat_rooms where id = $1",
        &[&f.room],
    )
    .await;
    f.refused(
        f.carol,
        "delete from api.chat_rooms where id = $1",
        &[&f.room],
    )
    .await;
    let n = f
        .inspect(
            "select count(*) from api.chat_rooms where id = $1 and name = 'General' and last_seq = 2",
            &[&f.room],
        )
        .await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_member_changes_only_their_own_membership_row() {
    let f = fixture().await;
    let mark = "update api.room_members set last_read_seq = $1 where room_id = $2 and user_id = $3 returning 1";
    // Own row: allowed.
    assert_eq!(f.rows(f.bob, mark, &[&2i64, &f.room, &f.bob]).await, 1);
    // Another member's row, or any row of a room one is not in: untouched.
    assert_eq!(f.rows(f.bob, mark, &[&2i64, &f.room, &f.alice]).await, 0);
    assert_eq!(f.rows(f.carol, mark, &[&2i64, &f.room, &f.alice]).await, 0);
    let alice_read = f
        .inspect(
            "select last_read_seq from api.room_members where room_id = $1 and user_id = $2",
            &[&f.room, &f.alice],
        )
        .await;
    assert_eq!(alice_read, 0);
    // Only the read marker is writable, even on one's own row.
    f.refused(
        f.bob,
        "update api.room_members set user_id = $1 where room_id = $2 and user_id = $3",
        &[&f.alice, &f.room, &f.bob],
    )
    .await;
    // Removing someone else does nothing.
    let kick = "delete from api.room_members where room_id = $1 and user_id = $2 returning 1";
    assert_eq!(f.rows(f.bob, kick, &[&f.room, &f.alice]).await, 0);
    assert_eq!(f.rows(f.carol, kick, &[&f.room, &f.alice]).await, 0);
    // Adding someone else is refused; adding oneself is joining (rooms are open), and
    // PostgREST's insert … returning works for it.
    f.refused(
        f.bob,
        "insert into api.room_members (room_id, user_id) values ($1, $2)",
        &[&f.carols_room, &f.alice],
    )
    .await;
    assert_eq!(
        f.rows(
            f.carol,
            "insert into api.room_members (room_id) values ($1) returning *",
            &[&f.room],
        )
        .await,
        1
    );
    let members = f
        .inspect(
            "select count(*) from api.room_members where room_id = $1",
            &[&f.room],
        )
        .await;
    assert_eq!(members, 3);
    let in_carols = f
        .inspect(
            "select count(*) from api.room_members where room_id = $1",
            &[&f.carols_room],
        )
        .await;
    assert_eq!(in_carols, 1);
}

#[tokio::test]
async fn nobody_edits_or_deletes_another_members_message() {
    let f = fixture().await;
    for (user, sql) in [
        (f.bob, "update api.chat_messages set message = 'edited' where room_id = $1 and seq = 1 returning 1"),
        (f.bob, "delete from api.chat_messages where room_id = $1 and seq = 1 returning 1"),
        (f.carol, "update api.chat_messages set message = 'edited' where room_id = $1 and seq = 1 returning 1"),
        (f.carol, "delete from api.chat_messages where room_id = $1 and seq = 1 returning 1"),
    ] {
        // Refused outright or matching no row; either way nothing changes.
        match f.pg.query(&Claims::user(user), sql, &[&f.room]).await {
            Ok(rows) => assert!(rows.is_empty(), "{sql}"),
            Err(e) => assert_eq!(sqlstate(&e), "42501", "{sql}"),
        }
    }
    let intact = f
        .inspect(
            "select count(*) from api.chat_messages where room_id = $1 and seq = 1 and message = 'from alice'",
            &[&f.room],
        )
        .await;
    assert_eq!(intact, 1);
}

async fn assert_lost_access(f: &Fixture, user: i64) {
    assert_eq!(f.visible(user, f.room).await, (0, 0, 0));
    let c = Claims::user(user);
    let h =
        f.pg.rpc(&c, "chat_history", &[("room_id", &f.room)])
            .await
            .unwrap();
    assert_eq!(h, serde_json::json!([]));
    let state =
        f.pg.rpc(&c, "room_state", &[("room_id", &f.room)])
            .await
            .unwrap();
    assert_eq!(state, serde_json::Value::Null);
    assert_eq!(
        f.rows(
            user,
            "select * from api.my_chat_rooms where id = $1",
            &[&f.room]
        )
        .await,
        0
    );
    f.refused(
        user,
        "insert into api.chat_messages (room_id, message) values ($1, 'still here?')",
        &[&f.room],
    )
    .await;
    let err =
        f.pg.rpc(&c, "mark_read", &[("room_id", &f.room), ("seq", &1i64)])
            .await
            .unwrap_err();
    assert_eq!(sqlstate(&err), "42501");
}

#[tokio::test]
async fn a_member_who_leaves_loses_access() {
    let f = fixture().await;
    assert_eq!(f.visible(f.bob, f.room).await, (1, 2, 2));
    f.pg.rpc(
        &Claims::user(f.bob),
        "leave_chat_room",
        &[("room_id", &f.room)],
    )
    .await
    .unwrap();
    assert_lost_access(&f, f.bob).await;
    // The others keep theirs.
    assert_eq!(f.visible(f.alice, f.room).await, (1, 1, 2));
}

#[tokio::test]
async fn deleting_ones_own_membership_row_is_leaving() {
    let f = fixture().await;
    let n = f
        .rows(
            f.bob,
            "delete from api.room_members where room_id = $1 and user_id = $2 returning 1",
            &[&f.room, &f.bob],
        )
        .await;
    assert_eq!(n, 1);
    assert_lost_access(&f, f.bob).await;
}
