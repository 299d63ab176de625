//! Message rules: 1..5000 characters (not bytes), and the client_id idempotency key,
//! sequentially and under concurrency. All as the user, through the PostgREST helper.

use crate::common;

use common::postgrest::{Claims, Postgrest};
use serde_json::Value;

async fn setup() -> (common::TestDb, Postgrest, i64, i64) {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"General")],
        )
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    (db, pg, alice, room)
}

async fn send(
    pg: &Postgrest,
    user: i64,
    room: i64,
    text: &str,
    client_id: Option<&str>,
) -> Result<Value, tokio_postgres::Error> {
    pg.rpc(
        &Claims::user(user),
        "send_message",
        &[
            ("room_id", &room),
            ("message", &text),
            ("client_id", &client_id),
        ],
    )
    .await
}

fn assert_check_violation(e: &tokio_postgres::Error, constraint: &str) {
    let db = e.as_db_error().expect("a database error");
    assert_eq!(db.code().code(), "23514", "{e:?}");
    assert_eq!(db.constraint(), Some(constraint), "{e:?}");
}

async fn stored(db: &common::TestDb, room: i64) -> (i64, i64) {
    let row = db
        .admin()
        .await
        .query_one(
            "select (select count(*) from api.chat_messages where room_id = $1),
                    (select last_seq from api.chat_rooms where id = $1)",
            &[&room],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn five_thousand_japanese_characters_are_accepted() {
    let (db, pg, alice, room) = setup().await;
    let text = "あ".repeat(5000);
    assert_eq!(text.len(), 15000, "the limit is in characters, not bytes");
    let m = send(&pg, alice, room, &text, None).await.unwrap();
    assert_eq!(m["message"].as_str(), Some(text.as_str()));
    // Also by a plain insert, as PostgREST's POST /chat_messages would do it.
    pg.query(
        &Claims::user(alice),
        "insert into api.chat_messages (room_id, message) values ($1, $2)",
        &[&room, &"漢".repeat(5000)],
    )
    .await
    .unwrap();
    assert_eq!(stored(&db, room).await, (2, 2));
}

#[tokio::test]
async fn five_thousand_and_one_characters_are_refused() {
    let (db, pg, alice, room) = setup().await;
    let err = send(&pg, alice, room, &"あ".repeat(5001), None)
        .await
        .unwrap_err();
    assert_check_violation(&err, "chat_messages_message_too_long");
    let err = pg
        .query(
            &Claims::user(alice),
            "insert into api.chat_messages (room_id, message) values ($1, $2)",
            &[&room, &"a".repeat(5001)],
        )
        .await
        .unwrap_err();
    assert_check_violation(&err, "chat_messages_message_too_long");
    // Nothing stored, no seq used up.
    assert_eq!(stored(&db, room).await, (0, 0));
    assert_eq!(
        send(&pg, alice, room, "next", None).await.unwrap()["seq"],
        1
    );
}

#[tokio::test]
async fn the_empty_message_is_refused() {
    let (db, pg, alice, room) = setup().await;
    let err = send(&pg, alice, room, "", None).await.unwrap_err();
    assert_check_violation(&err, "chat_messages_message_not_empty");
    let err = pg
        .query(
            &Claims::user(alice),
            "insert into api.chat_messages (room_id, message) values ($1, '')",
            &[&room],
        )
        .await
        .unwrap_err();
    assert_check_violation(&err, "chat_messages_message_not_empty");
    assert_eq!(stored(&db, room).await, (0, 0));
    // A single character is fine.
    assert!(send(&pg, alice, room, "字", None).await.is_ok());
}

#[tokio::test]
async fn resending_a_client_id_returns_the_same_row() {
    let (db, pg, alice, room) = setup().await;
    let first = send(&pg, alice, room, "hello", Some("c-1")).await.unwrap();
    let other = send(&pg, alice, room, "other", Some("c-2")).await.unwrap();
    // The retry carries the same key; whatever its text, the stored row comes back.
    let again = send(&pg, alice, room, "hello (retry)", Some("c-1"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(again["message"], "hello");
    assert_eq!(first["seq"], 1);
    assert_eq!(other["seq"], 2);
    assert_eq!(stored(&db, room).await, (2, 2));
    // The next new message takes the next seq: the retry used none.
    let next = send(&pg, alice, room, "third", Some("c-3")).await.unwrap();
    assert_eq!(next["seq"], 3);
    // Without a key, every send is a new message.
    send(&pg, alice, room, "same", None).await.unwrap();
    send(&pg, alice, room, "same", None).await.unwrap();
    assert_eq!(stored(&db, room).await, (5, 5));
}

#[tokio::test]
async fn client_ids_are_per_user() {
    let (db, pg, alice, room) = setup().await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    let a = send(&pg, alice, room, "from alice", Some("k"))
        .await
        .unwrap();
    let b = send(&pg, bob, room, "from bob", Some("k")).await.unwrap();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(b["user_id"].as_i64(), Some(bob));
    assert_eq!(b["message"], "from bob");
    assert_eq!(stored(&db, room).await, (2, 2));
}

#[tokio::test]
async fn concurrent_resends_of_one_client_id_store_one_row() {
    let (db, _pg, alice, room) = setup().await;
    const CONNECTIONS: usize = 8;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(db.postgrest().await);
    }
    for round in 0..5 {
        let key = format!("burst-{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
        let tasks = clients.into_iter().enumerate().map(|(i, pg)| {
            let key = key.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let out = send(&pg, alice, room, &format!("attempt {i}"), Some(&key)).await;
                (pg, out)
            })
        });
        let results = futures_util::future::join_all(tasks).await;
        clients = Vec::new();
        let mut rows = Vec::new();
        for r in results {
            let (pg, out) = r.unwrap();
            rows.push(out.expect("every resend succeeds"));
            clients.push(pg);
        }
        let first = &rows[0];
        assert!(rows.iter().all(|r| r == first), "{rows:?}");
        assert_eq!(first["seq"].as_i64(), Some(round + 1));
    }
    // Five keys, five rows, seqs 1..5 without gaps.
    assert_eq!(stored(&db, room).await, (5, 5));
}
