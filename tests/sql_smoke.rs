mod common;

use common::postgrest::Claims;

#[tokio::test]
async fn a_user_creates_a_room_and_posts() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg
        .rpc(
            &Claims::user(alice),
            "create_chat_room",
            &[("name", &"General"), ("description", &"")],
        )
        .await
        .unwrap();
    let room_id = room["id"].as_i64().unwrap();
    let msg = pg
        .rpc(
            &Claims::user(alice),
            "send_message",
            &[
                ("room_id", &room_id),
                ("message", &"hello"),
                ("client_id", &"c-1"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(msg["seq"], 1);
    assert_eq!(msg["user_name"], "Alice");
}
