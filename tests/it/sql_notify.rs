//! NOTIFY triggers ring doorbells: a kind and ids, never text and no user ids, for every
//! write path; the daemon's privileged reads return what changed. The listener is a
//! plain `authenticator` connection driven with `Connection::poll_message`, like the
//! daemon's; a stranger (a login role with no grants) listens too.

use crate::common;

use common::doorbell::Listener;
use common::postgrest::Claims;
use serde_json::Value;

/// The privileged read of a room's change stream, as the daemon calls it.
async fn changes_after(
    l: &Listener,
    room: i64,
    after: i64,
) -> Vec<(i64, String, Option<i64>, Option<i64>, Option<Value>)> {
    l.client
        .query(
            "select rev, kind, seq, user_id, body from pgchat.changes_after($1, $2, 1000)",
            &[&room, &after],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let body: Option<String> = r.get(4);
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                body.map(|b| serde_json::from_str(&b).unwrap_or(Value::String(b))),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_change_rings_a_doorbell_with_ids_only_and_reads_back_from_the_stream() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let start = db
        .admin()
        .await
        .query_one(
            "select last_rev from api.chat_rooms where id = $1",
            &[&room],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    let mut l = Listener::start(&db).await;
    let stranger = common::stranger::Stranger::new(&db).await;
    let mut spy = Listener::start_as(&stranger.url).await;

    let secret = "the launch code is 1234";
    let sent = pg.send(alice, room, secret).await;
    assert_eq!(l.next().await, ("c".into(), room, Some(start + 1)));
    assert_eq!(sent["rev"].as_i64(), Some(start + 1));

    // Edits and deletions from any SQL client ring too, each at the room's next rev.
    let admin = db.admin().await;
    admin
        .execute(
            "update api.chat_messages set message = 'edited' where room_id = $1",
            &[&room],
        )
        .await
        .unwrap();
    assert_eq!(l.next().await, ("c".into(), room, Some(start + 2)));
    pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(l.next().await, ("m".into(), room, Some(start + 3)));
    pg.rpc(
        &Claims::user(bob),
        "mark_read",
        &[("room_id", &room), ("seq", &1i64)],
    )
    .await
    .unwrap();
    assert_eq!(l.next().await, ("c".into(), room, Some(start + 4)));
    // A marker that does not move rings nothing (the sentinel comes first).
    pg.rpc(
        &Claims::user(bob),
        "mark_read",
        &[("room_id", &room), ("seq", &0i64)],
    )
    .await
    .unwrap();
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());
    pg.rpc(
        &Claims::user(bob),
        "set_typing",
        &[("room_id", &room), ("is_typing", &true)],
    )
    .await
    .unwrap();
    assert_eq!(l.next().await, ("t".into(), room, None));
    admin
        .execute("delete from api.chat_messages where room_id = $1", &[&room])
        .await
        .unwrap();
    assert_eq!(l.next().await, ("c".into(), room, Some(start + 5)));
    pg.rpc(&Claims::user(bob), "leave_chat_room", &[("room_id", &room)])
        .await
        .unwrap();
    assert_eq!(l.next().await, ("m".into(), room, Some(start + 6)));

    // What the doorbells stood for, read back in rev order as the daemon reads it.
    let changes = changes_after(&l, room, start).await;
    let kinds: Vec<(i64, &str)> = changes.iter().map(|c| (c.0, c.1.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (start + 4, "read"),
            (start + 5, "message"),
            (start + 6, "left")
        ],
        "the edited message was deleted since (softly: its current state, once); bob's join \
         was followed by his leave"
    );
    assert_eq!(changes[0].2, Some(1));
    assert_eq!(changes[0].3, Some(bob));
    let deleted = changes[1].4.as_ref().unwrap();
    assert_eq!(deleted["id"], sent["id"]);
    assert_eq!(deleted["seq"], 1);
    assert_eq!(deleted["message"], "");
    assert!(deleted["deleted_at"].is_string(), "{deleted}");
    assert!(deleted["edited_at"].is_string(), "{deleted}");
    assert_eq!(
        deleted["deleted_by"],
        Value::Null,
        "deleted in plain SQL, by nobody"
    );

    // A stranger's LISTEN heard the same doorbells and learned no text and no user id.
    // (It stops at the sentinel rung above first, then at its own.)
    let mut heard = spy.until_sentinel().await;
    heard.extend(spy.until_sentinel().await);
    assert_eq!(heard.len(), 7, "{heard:?}");
    for raw in &heard {
        assert!(!raw.contains("launch") && !raw.contains("edited"), "{raw}");
        let ids: Vec<&str> = raw.split(':').skip(1).collect();
        assert!(
            !ids.contains(&bob.to_string().as_str()) || ids[0] == room.to_string(),
            "{raw}"
        );
    }

    // The reads are the daemon's alone.
    let err = pg
        .query(
            &Claims::user(alice),
            "select * from pgchat.changes_after($1, 0, 10)",
            &[&room],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let stranger_client = stranger.connect().await;
    for sql in [
        "select * from pgchat.changes_after(1, 0, 10)",
        "select * from pgchat.presence_in('{1}')",
        "select * from pgchat.typing_in('{1}')",
        "select * from private.room_changes",
        "select * from private.typing",
    ] {
        let err = stranger_client.query(sql, &[]).await.unwrap_err();
        assert_eq!(err.code().unwrap().code(), "42501", "{sql}");
    }
}

#[tokio::test]
async fn a_message_keeps_its_seq_and_room_and_a_noop_update_takes_no_rev() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let other = pg.create_room(alice, "Other").await;
    let sent = pg.send(alice, room, "hello").await;
    let admin = db.admin().await;
    for sql in [
        "update api.chat_messages set seq = 7 where room_id = $1",
        "update api.chat_messages set room_id = $2 where room_id = $1",
    ] {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if sql.contains("$2") {
            vec![&room, &other]
        } else {
            vec![&room]
        };
        let err = admin.execute(sql, &params).await.unwrap_err();
        assert_eq!(common::sqlstate(&err), "22023", "{sql}");
    }
    let mut l = Listener::start(&db).await;
    admin
        .execute(
            "update api.chat_messages set message = message where room_id = $1",
            &[&room],
        )
        .await
        .unwrap();
    assert_eq!(
        l.until_sentinel().await,
        Vec::<String>::new(),
        "nothing changed"
    );
    let rev: i64 = admin
        .query_one(
            "select rev from api.chat_messages where room_id = $1",
            &[&room],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(Some(rev), sent["rev"].as_i64());
}

#[tokio::test]
async fn refused_writes_ring_nothing() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (carol, _) = db.signup("carol@example.com", "Carol").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let mut l = Listener::start(&db).await;
    for (user, rpc, args) in [
        (
            carol,
            "send_message",
            vec![
                (
                    "room_id",
                    &room as &(dyn tokio_postgres::types::ToSql + Sync),
                ),
                ("message", &"let me in"),
            ],
        ),
        (
            alice,
            "send_message",
            vec![("room_id", &room), ("message", &"x".repeat(5001))],
        ),
        (
            carol,
            "set_typing",
            vec![("room_id", &room), ("is_typing", &true)],
        ),
    ] {
        assert!(
            pg.rpc(&Claims::user(user), rpc, &args).await.is_err(),
            "{rpc}"
        );
    }
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_5000_character_message_rings_the_same_small_doorbell() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    let mut l = Listener::start(&db).await;
    let text = "長".repeat(5000);
    let sent = pg.send(alice, room, &text).await;
    let raw = l.next_raw().await;
    assert!(raw.len() < 40, "{raw}");
    let changes = changes_after(&l, room, sent["rev"].as_i64().unwrap() - 1).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].4.as_ref().unwrap(), &sent);
    assert_eq!(
        changes[0].4.as_ref().unwrap()["message"].as_str(),
        Some(text.as_str())
    );
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
    let mut by_seq = std::collections::BTreeMap::<i64, String>::new();
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

    // Doorbells arrive in rev order, one per message, and the stream reads back each
    // message at its seq.
    let mut revs = Vec::new();
    for _ in 0..total {
        let (kind, r, rev) = l.next().await;
        assert_eq!((kind.as_str(), r), ("c", room));
        revs.push(rev.unwrap());
    }
    assert!(revs.windows(2).all(|w| w[1] == w[0] + 1), "{revs:?}");
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());
    let changes = changes_after(&l, room, revs[0] - 1).await;
    let read: Vec<(i64, String)> = changes
        .iter()
        .map(|c| {
            (
                c.2.unwrap(),
                c.4.as_ref().unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(read, by_seq.clone().into_iter().collect::<Vec<_>>());

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

    for _ in [1, 2] {
        // `next` insists on the channel `pgchat`; the doorbell only has to be this room's.
        let (kind, r, _) = l.next().await;
        assert_eq!((kind.as_str(), r), ("c", room));
    }
}
