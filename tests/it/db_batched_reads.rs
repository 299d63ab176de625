//! Joins' reads sent in batches (`ReadQueue`): many as-user transactions on one
//! connection in one round trip must each still be exactly `Db::as_user`'s transaction,
//! as its own user, and a read that fails must take no other down with it.
use crate::common;

use std::time::Duration;

use pgchat::db::{Db, DbError, Param, ReadQueue};
use serde_json::Value;

/// What the transaction sees of its context, and its own transaction id.
const WHO_AM_I: &str = "select json_build_object(
       'sub', current_setting('request.jwt.claims', true)::json->>'sub',
       'role', current_user,
       'path', current_setting('request.path', true),
       'xid', txid_current(),
       'arg', $1::bigint)";
/// Fails when its argument is 0 (division by zero, 22012: an error for the user).
const DIVIDES: &str = "select json_build_object('q', 10 / $1::int)";
/// Holds its connection for a while, so that the reads behind it queue up.
const SLOW: &str = "select json_build_object('slept', pg_sleep(0.3)::text)";

#[tokio::test]
async fn each_read_of_a_batch_runs_as_its_own_user_in_its_own_transaction() {
    let db = common::TestDb::new().await;
    let mut users = Vec::new();
    for n in 0..40 {
        let (user, _) = db
            .signup(&format!("u{n}@example.com"), &format!("U {n}"))
            .await;
        users.push(user);
    }
    let pool = Db::new(&db.authenticator_url, 2, Duration::from_secs(5)).unwrap();
    // One connection: everything queued behind the slow read goes in one round trip.
    let queue = ReadQueue::new(1);
    let slow = {
        let (queue, pool) = (queue.clone(), pool.clone());
        let who = common::server::identity_for(users[0]);
        tokio::spawn(async move { queue.read(&pool, &who, "/slow", SLOW, vec![]).await })
    };
    while queue.batches() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // 40 users' reads, every fifth with a role that does not exist and every seventh
    // dividing by zero, all queued while the slow read holds the connection.
    let mut reads = Vec::new();
    for (n, &user) in users.iter().enumerate() {
        let (queue, pool) = (queue.clone(), pool.clone());
        let mut who = common::server::identity_for(user);
        if n % 5 == 4 {
            who.role = "no_such_role".into();
        }
        let (sql, params): (&'static str, Vec<Param>) = if n % 7 == 6 {
            (DIVIDES, vec![Box::new(0i32)])
        } else {
            (WHO_AM_I, vec![Box::new(n as i64)])
        };
        reads.push(tokio::spawn(async move {
            queue.read(&pool, &who, "/chat_rooms", sql, params).await
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queue.waiting() < 41 {
        assert!(std::time::Instant::now() < deadline, "41 reads waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!slow.is_finished(), "all queued behind the slow read");
    assert!(slow.await.unwrap().unwrap().is_some());

    let mut xids = std::collections::HashSet::new();
    for (n, read) in reads.into_iter().enumerate() {
        let got = read.await.unwrap();
        if n % 5 == 4 {
            assert!(
                matches!(got, Err(DbError::Forbidden(_))),
                "read {n}: {got:?}"
            );
            continue;
        }
        if n % 7 == 6 {
            assert!(matches!(got, Err(DbError::User(_))), "read {n}: {got:?}");
            continue;
        }
        let got: Value = serde_json::from_str(&got.unwrap().unwrap().0).unwrap();
        assert_eq!(got["sub"], users[n].to_string(), "read {n}: {got}");
        assert_eq!(got["role"], "authenticated", "read {n}: {got}");
        assert_eq!(got["path"], "/chat_rooms", "read {n}: {got}");
        assert_eq!(got["arg"], n as i64, "read {n}: {got}");
        assert!(
            xids.insert(got["xid"].to_string()),
            "read {n} shares a transaction"
        );
    }
    // The slow read alone, then the 40 together (at most 64 to a batch).
    assert_eq!(queue.batches(), 2);
    assert_eq!(queue.waiting(), 0);

    // The connection is clean afterwards: no transaction left open, no role left set.
    let who = common::server::identity_for(users[1]);
    let got = queue
        .read(&pool, &who, "/x", WHO_AM_I, vec![Box::new(1i64)])
        .await
        .unwrap()
        .unwrap();
    let got: Value = serde_json::from_str(&got.0).unwrap();
    assert_eq!(got["sub"], users[1].to_string());
}

#[tokio::test]
async fn reads_use_at_most_their_connections_and_the_pool_says_when_it_is_gone() {
    let db = common::TestDb::new().await;
    let (user, _) = db.signup("a@example.com", "A").await;
    let pool = Db::new(&db.authenticator_url, 4, Duration::from_secs(5)).unwrap();
    let queue = ReadQueue::new(2);
    let who = common::server::identity_for(user);
    let spawn_slow = || {
        let (queue, pool, who) = (queue.clone(), pool.clone(), who.clone());
        tokio::spawn(async move { queue.read(&pool, &who, "/slow", SLOW, vec![]).await })
    };
    // The first two take a connection each; the other four find none free and wait
    // for one of them.
    let mut reads = Vec::new();
    for sent in 1..=2 {
        reads.push(spawn_slow());
        while queue.batches() < sent {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    reads.extend((0..4).map(|_| spawn_slow()));
    let admin = db.admin().await;
    let sleeping = "select count(*) from pg_stat_activity
                     where datname = current_database() and wait_event = 'PgSleep'";
    // Each slow read holds its connection for 0.3 s: never more than two asleep at once.
    let mut most = 0;
    while reads.iter().any(|r| !r.is_finished()) {
        let in_db: i64 = admin.query_one(sleeping, &[]).await.unwrap().get(0);
        most = most.max(in_db);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(most, 2, "two connections at most, and both used");
    for read in reads {
        assert!(read.await.unwrap().unwrap().is_some());
    }
    // The four waiting ones went together, behind whichever connection came free first.
    assert_eq!(queue.batches(), 3);

    // A pool that cannot connect fails every read of the batch with a clear error.
    let dead = Db::new(
        "postgres://authenticator@127.0.0.1:1/nothing",
        1,
        Duration::from_secs(5),
    )
    .unwrap();
    let queue = ReadQueue::new(1);
    let reads: Vec<_> = (0..3)
        .map(|_| {
            let (queue, dead, who) = (queue.clone(), dead.clone(), who.clone());
            tokio::spawn(async move {
                queue
                    .read(&dead, &who, "/x", WHO_AM_I, vec![Box::new(1i64)])
                    .await
            })
        })
        .collect();
    for read in reads {
        let got = read.await.unwrap();
        assert!(matches!(got, Err(DbError::Unavailable(_))), "{got:?}");
    }
    assert_eq!(queue.waiting(), 0);
}
