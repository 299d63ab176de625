//! The read marker moves only forward and never past the room's last message, whether it
//! is written by `mark_read` or by a direct `PATCH /room_members` (plain UPDATE).
use crate::common;

use common::postgrest::Claims;

#[tokio::test]
async fn direct_updates_of_the_read_marker_are_clamped() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let me = Claims::user(alice);
    let room = pg
        .rpc(
            &me,
            "create_chat_room",
            &[("name", &"r"), ("description", &"")],
        )
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    for text in ["one", "two", "three"] {
        pg.rpc(
            &me,
            "send_message",
            &[("room_id", &room), ("message", &text)],
        )
        .await
        .unwrap();
    }
    let patch = |seq: i64| {
        let pg = &pg;
        let me = me.clone();
        async move {
            let rows = pg
                .query(
                    &me,
                    "update api.room_members set last_read_seq = $2 where room_id = $1 returning last_read_seq",
                    &[&room, &seq],
                )
                .await
                .unwrap();
            rows[0].get::<_, i64>(0)
        }
    };
    assert_eq!(patch(2).await, 2);
    assert_eq!(patch(99).await, 3, "capped at the room's last seq");
    assert_eq!(patch(1).await, 3, "never moves back");
    // Joining cannot preset a marker either: only room_id and user_id may be inserted.
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let err = pg
        .query(
            &Claims::user(bob),
            "insert into api.room_members (room_id, user_id, last_read_seq) values ($1, $2, 3)",
            &[&room, &bob],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
}
