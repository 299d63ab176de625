//! Typing writes from a daemon's sockets are committed in batches, each write as its own
//! user under RLS: one commit (one turn of PostgreSQL's NOTIFY lock) for many users,
//! and a write RLS refuses costs nobody else theirs.
use crate::common;

use std::time::Duration;

use common::doorbell::Listener;
use common::postgrest::Claims;
use pgchat::db::Db;
use pgchat::typing_writer::{TypingWrite, TypingWriter};

fn start(user: i64, room: i64) -> TypingWrite {
    TypingWrite {
        who: common::server::identity_for(user),
        room,
        typing: true,
    }
}

async fn typing_rows(db: &common::TestDb, room: i64) -> Vec<i64> {
    db.admin()
        .await
        .query(
            "select user_id from private.typing where room_id = $1 order by user_id",
            &[&room],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Alice's room with Bob and Carol in it, and Dave, who is in no room.
async fn room_of_three(db: &common::TestDb) -> (i64, [i64; 4]) {
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let (bob, _) = db.signup("bob@example.com", "Bob").await;
    let (carol, _) = db.signup("carol@example.com", "Carol").await;
    let (dave, _) = db.signup("dave@example.com", "Dave").await;
    let pg = db.postgrest().await;
    let room = pg.create_room(alice, "General").await;
    for user in [bob, carol] {
        pg.rpc(&Claims::user(user), "join_chat_room", &[("room_id", &room)])
            .await
            .unwrap();
    }
    (room, [alice, bob, carol, dave])
}

#[tokio::test]
async fn three_users_starts_commit_together_as_each_user_and_ring_once() {
    let db = common::TestDb::new().await;
    let (room, [alice, bob, carol, _]) = room_of_three(&db).await;
    let writer =
        TypingWriter::new(Db::new(&db.authenticator_url, 2, Duration::from_secs(5)).unwrap());
    let mut l = Listener::start(&db).await;

    writer
        .write_batch(&[start(alice, room), start(bob, room), start(carol, room)])
        .await;

    // Each row carries its own writer's id: the claims changed with every call.
    assert_eq!(typing_rows(&db, room).await, vec![alice, bob, carol]);
    // One transaction: PostgreSQL folds its three identical doorbells into one.
    assert_eq!(l.next().await, ("t".into(), room, None));
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());

    // A stop after a start of the same user in one batch ends it.
    writer
        .write_batch(&[
            start(alice, room),
            TypingWrite {
                typing: false,
                ..start(alice, room)
            },
        ])
        .await;
    assert_eq!(typing_rows(&db, room).await, vec![bob, carol]);
}

#[tokio::test]
async fn a_write_rls_refuses_costs_the_others_nothing() {
    let db = common::TestDb::new().await;
    let (room, [alice, bob, _, dave]) = room_of_three(&db).await;
    let writer =
        TypingWriter::new(Db::new(&db.authenticator_url, 2, Duration::from_secs(5)).unwrap());

    // Dave is no member: RLS refuses his row, which fails the batch's transaction; each
    // write is then tried alone.
    writer
        .write_batch(&[start(alice, room), start(dave, room), start(bob, room)])
        .await;
    assert_eq!(typing_rows(&db, room).await, vec![alice, bob]);
}

#[tokio::test]
async fn starts_queued_while_a_batch_commits_go_out_in_the_next_one() {
    let db = common::TestDb::new().await;
    let (room, [alice, bob, carol, _]) = room_of_three(&db).await;
    let writer = std::sync::Arc::new(TypingWriter::new(
        Db::new(&db.authenticator_url, 2, Duration::from_secs(5)).unwrap(),
    ));
    // Queued before the writer runs: they form one batch.
    for user in [alice, bob, carol] {
        assert!(writer.write(start(user, room)));
    }
    let mut l = Listener::start(&db).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (writer, cancel) = (writer.clone(), cancel.clone());
        async move { writer.run(cancel).await }
    });
    assert_eq!(l.next().await, ("t".into(), room, None));
    assert_eq!(l.until_sentinel().await, Vec::<String>::new());
    assert_eq!(typing_rows(&db, room).await, vec![alice, bob, carol]);
    cancel.cancel();
    task.await.unwrap();
}
