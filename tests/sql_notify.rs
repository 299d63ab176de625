//! NOTIFY triggers: payloads, the by-reference form for rows too large for a payload,
//! membership events, and ordering under concurrent inserts. The listener is a plain
//! `authenticator` connection driven with `Connection::poll_message`, like the daemon's.

mod common;

use std::time::Duration;

use common::postgrest::Claims;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

struct Listener {
    rx: mpsc::UnboundedReceiver<(String, String)>,
    client: tokio_postgres::Client,
}

impl Listener {
    /// LISTENs on `pgchat` and on PostgREST's `pgrst`, which must stay silent.
    async fn start(db: &common::TestDb) -> Listener {
        let (client, mut conn) = tokio_postgres::connect(&db.authenticator_url, NoTls)
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                match msg {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client
            .batch_execute("listen pgchat; listen pgrst")
            .await
            .unwrap();
        Listener { rx, client }
    }

    /// The next notification's raw payload.
    async fn next_raw(&mut self) -> String {
        let (channel, payload) = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
            .await
            .expect("a notification within 20 s")
            .expect("listener alive");
        assert_eq!(channel, "pgchat", "{payload}");
        payload
    }

    async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_raw().await).unwrap()
    }

    /// Nothing more arrives for a while.
    async fn quiet(&mut self) {
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await
        {
            panic!("unexpected notification {n:?}");
        }
    }
}

#[tokio::test]
async fn message_insert_update_delete_notify_with_the_row() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let mut l = Listener::start(&db).await;

    let sent = pg.send(alice, room, "hello").await;
    let n = l.next().await;
    assert_eq!(n["t"], "message");
    assert_eq!(n["room_id"].as_i64(), Some(room));
    assert_eq!(n["seq"], 1);
    assert_eq!(
        n["row"], sent,
        "the payload row is what send_message returned"
    );
    assert_eq!(n["row"]["user_name"], "Alice");

    // Edits and deletions made from any SQL client are announced too.
    let admin = db.admin().await;
    admin
        .execute(
            "update api.chat_messages set message = 'edited' where room_id = $1",
            &[&room],
        )
        .await
        .unwrap();
    let n = l.next().await;
    assert_eq!(n["t"], "message_updated");
    assert_eq!(n["seq"], 1);
    assert_eq!(n["row"]["message"], "edited");
    admin
        .execute("delete from api.chat_messages where room_id = $1", &[&room])
        .await
        .unwrap();
    let n = l.next().await;
    assert_eq!(n["t"], "message_deleted");
    assert_eq!(n["room_id"].as_i64(), Some(room));
    assert_eq!(n["seq"], 1);
    assert_eq!(n["row"]["id"], sent["id"]);
    l.quiet().await;
}

#[tokio::test]
async fn membership_changes_notify() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    pg.send(alice, room, "one").await;
    pg.send(alice, room, "two").await;
    let mut l = Listener::start(&db).await;

    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    let n = l.next().await;
    assert_eq!(n["t"], "member_joined");
    assert_eq!(n["room_id"].as_i64(), Some(room));
    assert_eq!(n["user_id"].as_i64(), Some(bob));
    assert_eq!(n["user_name"], "Bob");

    let mark = |seq: i64| {
        let pg = &pg;
        async move {
            pg.rpc(
                &Claims::user(bob),
                "mark_read",
                &[("room_id", &room), ("seq", &seq)],
            )
            .await
            .unwrap()
        }
    };
    mark(2).await;
    let n = l.next().await;
    assert_eq!(n["t"], "read");
    assert_eq!(n["user_id"].as_i64(), Some(bob));
    assert_eq!(n["seq"], 2);
    // A marker that does not move announces nothing.
    mark(1).await;
    l.quiet().await;

    pg.rpc(&Claims::user(bob), "leave_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    let n = l.next().await;
    assert_eq!(n["t"], "member_left");
    assert_eq!(n["room_id"].as_i64(), Some(room));
    assert_eq!(n["user_id"].as_i64(), Some(bob));
    l.quiet().await;
}

#[tokio::test]
async fn refused_writes_notify_nothing() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (carol, _) = db.signup("carol@example.com", "Carol").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let mut l = Listener::start(&db).await;
    let outsider = pg
        .rpc(
            &Claims::user(carol),
            "send_message",
            &[("room_id", &room), ("message", &"let me in")],
        )
        .await;
    assert!(outsider.is_err());
    let too_long = pg
        .rpc(
            &Claims::user(alice),
            "send_message",
            &[("room_id", &room), ("message", &"x".repeat(5001))],
        )
        .await;
    assert!(too_long.is_err());
    l.quiet().await;
}

#[tokio::test]
async fn a_row_too_large_for_notify_arrives_as_a_reference_that_resolves() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let mut l = Listener::start(&db).await;

    let text = "長".repeat(5000);
    let sent = pg.send(alice, room, &text).await;
    let raw = l.next_raw().await;
    assert!(raw.len() < 8000, "payload of {} bytes", raw.len());
    let n: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(n["t"], "message");
    assert_eq!(n["room_id"].as_i64(), Some(room));
    assert_eq!(n["seq"], sent["seq"]);
    assert_eq!(n["ref"], true);
    assert!(n.get("row").is_none(), "{raw}");

    // The daemon resolves it as authenticator, with no role switched.
    let seq = n["seq"].as_i64().unwrap();
    let rows = l
        .client
        .query(
            "select pgchat.messages_after($1, $2, 1)",
            &[&room, &(seq - 1)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let row: Value = rows[0].get(0);
    assert_eq!(row, sent);
    assert_eq!(row["message"].as_str(), Some(text.as_str()));

    // A small row in the same room still travels inline.
    let small = pg.send(alice, room, "short").await;
    let n = l.next().await;
    assert_eq!(n["row"], small);
    assert!(n.get("ref").is_none());

    // The privileged read is the daemon's alone: not for a user's role.
    let err = pg
        .query(
            &Claims::user(alice),
            "select pgchat.messages_after($1, 0, 10)",
            &[&room],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
}

#[tokio::test]
async fn concurrent_inserts_get_contiguous_seqs_and_notify_in_seq_order() {
    const CONNECTIONS: usize = 8;
    const PER_CONNECTION: usize = 25;
    let db = common::TestDb::new().await;
    let pg = db.postgrest().await;
    let mut users = Vec::new();
    for i in 0..CONNECTIONS {
        let (id, _) = db
            .signup(&format!("user{i}@example.com"), &format!("User {i}"))
            .await;
        users.push(id);
    }
    let room = pg.create_room(users[0], "General").await;
    for &u in &users[1..] {
        pg.rpc(&Claims::user(u), "join_chat_room", &[("room_id", &room)])
            .await
            .unwrap();
    }
    let mut l = Listener::start(&db).await;

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(CONNECTIONS));
    let mut tasks = Vec::new();
    for (i, &user) in users.iter().enumerate() {
        let pg = db.postgrest().await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut sent = Vec::new();
            for j in 0..PER_CONNECTION {
                let text = format!("c{i}-m{j}");
                let m = pg.send(user, room, &text).await;
                sent.push((m["seq"].as_i64().unwrap(), text));
            }
            sent
        }));
    }
    let mut by_seq = std::collections::BTreeMap::new();
    for t in tasks {
        let sent = t.await.unwrap();
        // Each connection's own messages got increasing seqs.
        assert!(sent.windows(2).all(|w| w[0].0 < w[1].0), "{sent:?}");
        for (seq, text) in sent {
            assert!(
                by_seq.insert(seq, text).is_none(),
                "seq {seq} handed out twice"
            );
        }
    }
    let total = (CONNECTIONS * PER_CONNECTION) as i64;
    let seqs: Vec<i64> = by_seq.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "seqs are 1..N without gaps"
    );

    // Notifications arrive in seq order, each carrying the row that got that seq.
    for expected in 1..=total {
        let n = l.next().await;
        assert_eq!(n["t"], "message");
        assert_eq!(n["seq"].as_i64(), Some(expected), "out of order: {n}");
        assert_eq!(
            n["row"]["message"].as_str(),
            Some(by_seq[&expected].as_str())
        );
    }
    l.quiet().await;

    let row = db
        .admin()
        .await
        .query_one(
            "select count(*), max(seq), (select last_seq from api.chat_rooms where id = $1)
               from api.chat_messages where room_id = $1",
            &[&room],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), total);
    assert_eq!(row.get::<_, i64>(1), total);
    assert_eq!(row.get::<_, i64>(2), total);
}

/// Issue 11 point 3: where the triggers ring is not the writer's to choose. A writer
/// that points `pgchat.channel` elsewhere, for its transaction or its whole session,
/// still rings `pgchat`. The listener also LISTENs on the other channel, so a
/// notification that went there fails this test at once, by name.
#[tokio::test]
async fn a_session_cannot_move_the_channel_its_writes_ring() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let mut l = Listener::start(&db).await;
    l.client.batch_execute("listen elsewhere").await.unwrap();

    // In the request's own transaction, as PostgREST would run the insert.
    let claims = Claims::user(alice);
    pg.client.batch_execute("begin").await.unwrap();
    pg.client
        .execute(
            "select set_config('search_path', '\"api\", \"public\"', true),
                    set_config('role', $1, true),
                    set_config('request.jwt.claims', $2, true),
                    set_config('pgchat.channel', 'elsewhere', true)",
            &[&claims.role, &claims.json.to_string()],
        )
        .await
        .unwrap();
    pg.client
        .execute(
            "insert into api.chat_messages (room_id, message) values ($1, 'hidden?')",
            &[&room],
        )
        .await
        .unwrap();
    pg.client.batch_execute("commit").await.unwrap();
    // For the whole session, then through the RPC.
    pg.client
        .batch_execute("set pgchat.channel = 'elsewhere'")
        .await
        .unwrap();
    pg.send(alice, room, "hidden too?").await;

    for seq in [1, 2] {
        // `next` insists on the channel `pgchat`; the payload only has to be this row's.
        let n = l.next().await;
        assert_eq!(n["room_id"].as_i64(), Some(room), "{n}");
        assert_eq!(n["seq"].as_i64(), Some(seq), "{n}");
    }
}
