//! `pgchat.presence_apply`, the daemons' batched presence writes: each batch logs the
//! room-wide changes only (a user's first daemon arriving, their last one leaving) at
//! each room's next presence revs, gap-free, and rings one doorbell per changed room.
//! Called as the daemon calls it, on an `authenticator` connection.

use crate::common;

use common::doorbell::Listener;
use serde_json::json;

const A: &str = "00000000-0000-0000-0000-00000000000a";
const B: &str = "00000000-0000-0000-0000-00000000000b";

/// One daemon's batch: (room, user, online) in the order they happened.
async fn apply(c: &tokio_postgres::Client, daemon: &str, changes: &[(i64, i64, bool)]) -> i32 {
    let changes = json!(changes
        .iter()
        .map(|(room, user, online)| json!({"room": room, "user": user, "online": online}))
        .collect::<Vec<_>>())
    .to_string();
    c.query_one(
        "select pgchat.presence_apply($1::text::uuid, $2::text::json)",
        &[&daemon, &changes],
    )
    .await
    .unwrap()
    .get(0)
}

/// The presence log of a room after `after`, as the relay reads it: (rev, user, online).
async fn log_after(c: &tokio_postgres::Client, room: i64, after: i64) -> Vec<(i64, i64, bool)> {
    c.query(
        "select rev, user_id, online from pgchat.presence_after($1, $2)",
        &[&vec![room], &vec![after]],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// The presence doorbells rung before a sentinel, sorted.
async fn rung(l: &mut Listener) -> Vec<String> {
    let mut rung = l.until_sentinel().await;
    rung.sort();
    rung
}

/// The presence doorbells of these rooms, sorted.
fn bells(rooms: &[i64]) -> Vec<String> {
    let mut bells: Vec<String> = rooms.iter().map(|r| format!("p:{r}")).collect();
    bells.sort();
    bells
}

/// Users and two rooms to be present in.
async fn setup(db: &common::TestDb) -> (Vec<i64>, i64, i64) {
    let mut users = Vec::new();
    for name in ["Ann", "Ben", "Cem"] {
        users.push(db.signup(&format!("{name}@example.com"), name).await.0);
    }
    let pg = db.postgrest().await;
    let r1 = pg.create_room(users[0], "One").await;
    let r2 = pg.create_room(users[0], "Two").await;
    (users, r1, r2)
}

#[tokio::test]
async fn a_batch_logs_each_room_wide_change_at_the_next_rev_with_one_doorbell_per_room() {
    let db = common::TestDb::new().await;
    let (u, r1, r2) = setup(&db).await;
    let mut l = Listener::start(&db).await;

    let announced = apply(
        &l.client,
        A,
        &[(r1, u[1], true), (r2, u[0], true), (r1, u[0], true)],
    )
    .await;
    assert_eq!(announced, 3);
    assert_eq!(
        rung(&mut l).await,
        bells(&[r1, r2]),
        "one doorbell per room, ids only"
    );
    assert_eq!(
        log_after(&l.client, r1, 0).await,
        vec![(1, u[0], true), (2, u[1], true)]
    );
    assert_eq!(log_after(&l.client, r2, 0).await, vec![(1, u[0], true)]);

    // The next batch continues each room's revs where the last one ended.
    assert_eq!(
        apply(&l.client, A, &[(r1, u[0], false), (r1, u[2], true)]).await,
        2
    );
    assert_eq!(l.until_sentinel().await, vec![format!("p:{r1}")]);
    assert_eq!(
        log_after(&l.client, r1, 2).await,
        vec![(3, u[0], false), (4, u[2], true)]
    );
    // A repeated arrival or a departure of someone absent changes nothing.
    assert_eq!(
        apply(&l.client, A, &[(r1, u[2], true), (r2, u[1], false)]).await,
        0
    );
    assert!(l.until_sentinel().await.is_empty());
    assert!(log_after(&l.client, r1, 4).await.is_empty());
}

#[tokio::test]
async fn a_user_held_by_another_daemon_is_announced_by_neither_until_the_last_one_leaves() {
    let db = common::TestDb::new().await;
    let (u, r1, _) = setup(&db).await;
    let mut l = Listener::start(&db).await;

    assert_eq!(apply(&l.client, B, &[(r1, u[0], true)]).await, 1);
    assert_eq!(l.until_sentinel().await, vec![format!("p:{r1}")]);
    // Ann opens a socket on daemon A too, then closes it: she was online all along.
    assert_eq!(apply(&l.client, A, &[(r1, u[0], true)]).await, 0);
    assert_eq!(apply(&l.client, A, &[(r1, u[0], false)]).await, 0);
    assert!(l.until_sentinel().await.is_empty());
    assert_eq!(log_after(&l.client, r1, 0).await, vec![(1, u[0], true)]);
    // Back on A, then gone from B: still online (A holds her).
    assert_eq!(apply(&l.client, A, &[(r1, u[0], true)]).await, 0);
    assert_eq!(apply(&l.client, B, &[(r1, u[0], false)]).await, 0);
    assert!(l.until_sentinel().await.is_empty());
    // Her last daemon lets go.
    assert_eq!(apply(&l.client, A, &[(r1, u[0], false)]).await, 1);
    assert_eq!(l.until_sentinel().await, vec![format!("p:{r1}")]);
    assert_eq!(log_after(&l.client, r1, 1).await, vec![(2, u[0], false)]);
}

#[tokio::test]
async fn within_one_batch_only_each_users_last_change_counts() {
    let db = common::TestDb::new().await;
    let (u, r1, _) = setup(&db).await;
    let mut l = Listener::start(&db).await;

    // Came and went between two batches: nobody else ever saw her.
    assert_eq!(
        apply(&l.client, A, &[(r1, u[0], true), (r1, u[0], false)]).await,
        0
    );
    assert!(l.until_sentinel().await.is_empty());
    assert_eq!(
        apply(
            &l.client,
            A,
            &[(r1, u[1], true), (r1, u[1], false), (r1, u[1], true)]
        )
        .await,
        1
    );
    assert_eq!(log_after(&l.client, r1, 0).await, vec![(1, u[1], true)]);
    let present: i64 = l
        .client
        .query_one(
            "select count(*) from pgchat.presence_snapshot($1) where user_id is not null",
            &[&vec![r1]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(present, 1, "Ben only");
}

#[tokio::test]
async fn two_daemons_writing_the_same_users_at_once_neither_deadlock_nor_announce_twice() {
    let db = common::TestDb::new().await;
    let (u, r1, r2) = setup(&db).await;
    let a = db.authenticator().await;
    let b = db.authenticator().await;
    // The same six (room, user) pairs, listed in opposite orders, many times over.
    let pairs: Vec<(i64, i64)> = [r1, r2]
        .iter()
        .flat_map(|r| u.iter().map(move |user| (*r, *user)))
        .collect();
    let forward: Vec<(i64, i64, bool)> = pairs.iter().map(|(r, user)| (*r, *user, true)).collect();
    let backward: Vec<(i64, i64, bool)> = forward.iter().rev().copied().collect();
    let leave = |v: &[(i64, i64, bool)]| -> Vec<(i64, i64, bool)> {
        v.iter().map(|(r, user, _)| (*r, *user, false)).collect()
    };
    let (forward_leave, backward_leave) = (leave(&forward), leave(&backward));
    let mut announced = 0;
    for _ in 0..20 {
        let (x, y) = tokio::join!(apply(&a, A, &forward), apply(&b, B, &backward));
        announced += x + y;
        let (x, y) = tokio::join!(apply(&a, A, &forward_leave), apply(&b, B, &backward_leave));
        announced += x + y;
    }
    // Each round: every pair announced online once and offline once, by whichever daemon
    // came first and left last.
    assert_eq!(announced, 20 * 2 * pairs.len() as i32);
    for room in [r1, r2] {
        let log = log_after(&a, room, 0).await;
        let revs: Vec<i64> = log.iter().map(|(rev, _, _)| *rev).collect();
        assert_eq!(revs, (1..=log.len() as i64).collect::<Vec<_>>(), "gap-free");
        assert_eq!(log.len(), 20 * 2 * u.len());
        for user in &u {
            let states: Vec<bool> = log
                .iter()
                .filter(|(_, who, _)| who == user)
                .map(|(_, _, online)| *online)
                .collect();
            assert!(
                states.chunks(2).all(|c| c == [true, false]),
                "user {user} in room {room}: {states:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_silent_daemons_users_are_swept_and_logged_gone_once_where_no_other_daemon_holds_them() {
    let db = common::TestDb::new().await;
    let (u, r1, r2) = setup(&db).await;
    let mut l = Listener::start(&db).await;
    // A holds Ann in both rooms and Ben in one; B holds Ben there too.
    assert_eq!(
        apply(
            &l.client,
            A,
            &[(r1, u[0], true), (r1, u[1], true), (r2, u[0], true)]
        )
        .await,
        3
    );
    assert_eq!(apply(&l.client, B, &[(r1, u[1], true)]).await, 0);
    let admin = db.admin().await;
    admin
        .execute(
            "insert into pgchat.daemons (id, seen_at) values ($1::text::uuid, now() - interval '1 hour'), \
             ($2::text::uuid, now())",
            &[&A, &B],
        )
        .await
        .unwrap();
    l.until_sentinel().await;

    let swept: i32 = l
        .client
        .query_one(
            "select pgchat.daemon_heartbeat($1::text::uuid, interval '30 seconds')",
            &[&B],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(swept, 1, "daemon A's heartbeat row");
    assert_eq!(
        rung(&mut l).await,
        bells(&[r1, r2]),
        "one doorbell per room"
    );
    // Ann is gone from both rooms at each room's next rev; Ben stays (B holds him).
    assert_eq!(log_after(&l.client, r1, 2).await, vec![(3, u[0], false)]);
    assert_eq!(log_after(&l.client, r2, 1).await, vec![(2, u[0], false)]);
    let left: Vec<(i64, i64, String)> = admin
        .query(
            "select room_id, user_id, daemon_id::text from pgchat.presence order by 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(left, vec![(r1, u[1], B.to_string())]);
    // A second sweep finds nothing more to do.
    l.client
        .execute(
            "select pgchat.daemon_heartbeat($1::text::uuid, interval '30 seconds')",
            &[&B],
        )
        .await
        .unwrap();
    assert!(l.until_sentinel().await.is_empty());
}
