//! The `online` list of a `joined` reply, which each daemon keeps in memory from
//! presence notifications once a room's roster is loaded: it follows users on other
//! daemons, and it is reloaded after the LISTEN connection was lost.
use crate::common;

use std::time::Duration;

use common::server::{Client, TestServer};
use common::TestDb;
use serde_json::{json, Value};

/// A room with `names.len()` members; returns (user ids, room).
async fn room_of(db: &TestDb, names: &[&str]) -> (Vec<i64>, i64) {
    let mut ids = Vec::new();
    for name in names {
        let (id, _) = db
            .signup(&format!("{}@example.com", name.to_lowercase()), name)
            .await;
        ids.push(id);
    }
    let pg = db.postgrest().await;
    let room = pg.create_room(ids[0], "Roster").await;
    for &id in &ids[1..] {
        pg.rpc(
            &common::postgrest::Claims::user(id),
            "join_chat_room",
            &[("room_id", &room)],
        )
        .await
        .unwrap();
    }
    (ids, room)
}

async fn join(c: &mut Client, room: i64) -> Value {
    let reply = c.request(json!({"type": "join", "roomId": room})).await;
    assert_eq!(reply["type"], "joined", "{reply}");
    reply
}

fn online_ids(joined: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = joined["online"]
        .as_array()
        .expect("online")
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn online_lists_follow_users_on_other_daemons() {
    let db = TestDb::new().await;
    let (ids, room) = room_of(&db, &["Alice", "Bob", "Carol", "Dave"]).await;
    let (alice, bob, carol, dave) = (ids[0], ids[1], ids[2], ids[3]);
    let one = TestServer::start(&db, &[]).await;
    let two = TestServer::start(&db, &[]).await;

    let mut a = Client::authed(&one.url(), alice).await;
    join(&mut a, room).await; // daemon one loads the room's roster here
    let mut b = Client::authed(&two.url(), bob).await;
    join(&mut b, room).await;
    settled(&db, &mut a, room, alice, &[alice, bob]).await;

    let mut c = Client::authed(&one.url(), carol).await;
    let joined = join(&mut c, room).await;
    assert_eq!(online_ids(&joined), vec![alice, bob, carol]);
    let bob_entry = joined["online"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == bob)
        .unwrap();
    assert_eq!(bob_entry["name"], "Bob");

    drop(b);
    assert_eq!(a.recv_type("user_left").await["user"]["id"], bob);
    settled(&db, &mut a, room, alice, &[alice, carol]).await;
    let mut d = Client::authed(&one.url(), dave).await;
    assert_eq!(
        online_ids(&join(&mut d, room).await),
        vec![alice, carol, dave]
    );

    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn online_lists_are_reloaded_after_the_listen_connection_is_lost() {
    let db = TestDb::new().await;
    let (ids, room) = room_of(&db, &["Alice", "Bob", "Carol", "Dave"]).await;
    let (alice, bob, carol, dave) = (ids[0], ids[1], ids[2], ids[3]);
    let server = TestServer::start(&db, &[]).await;
    let mut a = Client::authed(&server.url(), alice).await;
    join(&mut a, room).await;
    settled(&db, &mut a, room, alice, &[alice]).await;

    // Bob comes online through another daemon whose notification this one never sees
    // (as when it arrives while the LISTEN connection is down).
    let admin = db.admin().await;
    admin
        .batch_execute(&format!(
            "insert into pgchat.daemons (id) values ('00000000-0000-0000-0000-0000000000b0');
             insert into pgchat.presence (daemon_id, room_id, user_id)
             values ('00000000-0000-0000-0000-0000000000b0', {room}, {bob});"
        ))
        .await
        .unwrap();
    // The roster, fed by notifications, does not know.
    let mut d = Client::authed(&server.url(), dave).await;
    assert_eq!(online_ids(&join(&mut d, room).await), vec![alice, dave]);
    settled(&db, &mut a, room, alice, &[alice, dave]).await;

    // Lose the LISTEN connection; once a new one exists, the roster is rebuilt from
    // PostgreSQL and Bob is there.
    let old = listener_pid(&admin).await.expect("a LISTEN backend");
    admin
        .execute("select pg_terminate_backend($1)", &[&old])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match listener_pid(&admin).await {
            Some(pid) if pid != old => break,
            _ if tokio::time::Instant::now() > deadline => panic!("LISTEN did not come back"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    server.wait_ready().await;
    let mut c = Client::authed(&server.url(), carol).await;
    assert_eq!(
        online_ids(&join(&mut c, room).await),
        vec![alice, bob, carol, dave]
    );
    server.stop().await;
}

/// Waits until `users` are all recorded online in `room`, then until `observer`'s daemon
/// has relayed a message committed after that: notifications arrive in commit order,
/// so by then the daemon has applied those users' presence changes too.
async fn settled(db: &TestDb, observer: &mut Client, room: i64, sender: i64, users: &[i64]) {
    let admin = db.admin().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = admin
            .query_one(
                "select count(distinct user_id) from pgchat.presence
                  where room_id = $1 and user_id = any($2)",
                &[&room, &users],
            )
            .await
            .unwrap()
            .get(0);
        if n == users.len() as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence not recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pg = db.postgrest().await;
    let sent = pg.send(sender, room, "barrier").await;
    let seq = sent["seq"].as_i64().expect("seq");
    loop {
        let m = observer.recv_type("message").await;
        if m["message"]["seq"] == seq {
            return;
        }
    }
}

async fn listener_pid(admin: &tokio_postgres::Client) -> Option<i32> {
    admin
        .query_opt(
            "select pid from pg_stat_activity
              where application_name = 'pgchat-listener' and datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}
