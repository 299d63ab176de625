//! The relay driven by either bus: PostgreSQL LISTEN (the SQL triggers ring) and the
//! in-memory bus (the test rings what the triggers would). The same tests run on both:
//! that is the seam a NATS or Redis bus would use. Absence is proven by a sentinel.

use std::time::Duration;

use pgchat::bus::memory::MemoryBus;
use serde_json::json;

use crate::common::postgrest::Claims;
use crate::common::server::{Client, TestServer};
use crate::common::TestDb;

/// Which bus rings the daemon's relay.
enum Bell {
    /// LISTEN: the triggers ring by themselves.
    Listen,
    Memory(MemoryBus),
}

struct Setup {
    db: TestDb,
    server: TestServer,
    bell: Bell,
    alice: i64,
    bob: i64,
    room: i64,
}

impl Setup {
    /// Alice and Bob in one room, and a daemon with short typing indicators.
    async fn new(memory: bool) -> Setup {
        let db = TestDb::new().await;
        let (alice, _) = db.signup("alice@example.com", "Alice").await;
        let (bob, _) = db.signup("bob@example.com", "Bob").await;
        let pg = db.postgrest().await;
        let room = pg.create_room(alice, "Room").await;
        pg.rpc(&Claims::user(bob), "join_chat_room", &[("room_id", &room)])
            .await
            .unwrap();
        let extra = [("TYPING_TTL_MS", "300")];
        let (server, bell) = if memory {
            let bus = MemoryBus::default();
            let server = TestServer::start_with_bus(&db, &extra, bus.clone()).await;
            (server, Bell::Memory(bus))
        } else {
            (TestServer::start(&db, &extra).await, Bell::Listen)
        };
        Setup {
            db,
            server,
            bell,
            alice,
            bob,
            room,
        }
    }

    async fn joined(&self, user: i64) -> Client {
        let mut c = Client::authed(&self.server.url(), user).await;
        let reply = c
            .request(json!({"type": "join", "roomId": self.room}))
            .await;
        assert_eq!(reply["type"], "joined", "{reply}");
        c
    }

    /// Alice and Bob joined, Alice's `before` delivered to Bob, then the bus lost.
    async fn joined_then_lost(&self) -> (Client, Client) {
        let mut a = self.joined(self.alice).await;
        let mut b = self.joined(self.bob).await;
        self.post(&mut a, "before").await;
        assert_eq!(messages_until(&mut b, "before").await, Vec::<String>::new());
        self.lose().await;
        (a, b)
    }

    /// Rings what the room's change stream trigger rings (the memory bus only).
    async fn ring_changes(&self) {
        if let Bell::Memory(bus) = &self.bell {
            let admin = self.db.admin().await;
            let rev: i64 = admin
                .query_one(
                    "select last_rev from api.chat_rooms where id = $1",
                    &[&self.room],
                )
                .await
                .unwrap()
                .get(0);
            bus.ring(&format!("c:{}:{rev}", self.room));
        }
    }

    fn ring(&self, payload: &str) {
        if let Bell::Memory(bus) = &self.bell {
            bus.ring(payload);
        }
    }

    async fn post(&self, c: &mut Client, text: &str) {
        let ack = c
            .request(json!({"type": "message", "roomId": self.room, "message": text}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        self.ring_changes().await;
    }

    /// Doorbells are missed from here: the bus is lost.
    async fn lose(&self) {
        match &self.bell {
            Bell::Memory(bus) => bus.lose(),
            Bell::Listen => {
                let admin = self.db.admin().await;
                admin
                    .execute(
                        "select pg_terminate_backend(pid) from pg_stat_activity \
                         where application_name = 'pgchat-listener' and datname = $1",
                        &[&self.db.name],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    /// The bus is back (LISTEN reconnects by itself).
    fn regain(&self) {
        if let Bell::Memory(bus) = &self.bell {
            bus.regain();
        }
    }
}

/// Message texts until `sentinel` (which must come); panics on any other frame type
/// than `message` and presence.
async fn messages_until(c: &mut Client, sentinel: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("message") => {
                let text = f["message"]["message"].as_str().unwrap().to_string();
                if text == sentinel {
                    return texts;
                }
                texts.push(text);
            }
            Some("user_joined" | "user_left") => {}
            _ => panic!("unexpected frame before `{sentinel}`: {f}"),
        }
    }
}

async fn messages_reach_subscribers_once_in_order(memory: bool) {
    let s = Setup::new(memory).await;
    let mut a = s.joined(s.alice).await;
    let mut b = s.joined(s.bob).await;
    for i in 1..=3 {
        s.post(&mut a, &format!("m{i}")).await;
    }
    s.post(&mut a, "end").await;
    assert_eq!(messages_until(&mut b, "end").await, ["m1", "m2", "m3"]);
    s.server.stop().await;
}

async fn forged_doorbells_put_nothing_on_a_socket(memory: bool) {
    let s = Setup::new(memory).await;
    let mut a = s.joined(s.alice).await;
    let mut b = s.joined(s.bob).await;
    let room = s.room;
    for forged in [
        format!("c:{room}:999999"),
        format!("p:{room}"),
        format!("t:{room}"),
        format!("m:{room}:999999"),
        "nonsense".into(),
    ] {
        match &s.bell {
            Bell::Memory(bus) => bus.ring(&forged),
            Bell::Listen => {
                s.db.admin()
                    .await
                    .execute("select pg_notify('pgchat', $1)", &[&forged])
                    .await
                    .unwrap();
            }
        }
    }
    s.post(&mut a, "sentinel").await;
    assert!(messages_until(&mut b, "sentinel").await.is_empty());
    s.server.stop().await;
}

async fn after_a_loss_the_relay_catches_up_from_the_tables(memory: bool) {
    let s = Setup::new(memory).await;
    let (mut a, mut b) = s.joined_then_lost().await;
    // Written while the bus is lost: no doorbell reaches the relay for these.
    for i in 1..=3 {
        let ack = a
            .request(json!({"type": "message", "roomId": s.room, "message": format!("lost {i}")}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    s.regain();
    s.post(&mut a, "after").await;
    assert_eq!(
        messages_until(&mut b, "after").await,
        ["lost 1", "lost 2", "lost 3"]
    );
    s.server.stop().await;
}

async fn after_a_loss_nobody_is_told_again_of_a_room_they_are_in(memory: bool) {
    let s = Setup::new(memory).await;
    let (mut a, mut b) = s.joined_then_lost().await;
    // Written through PostgREST while the bus is lost: only the catch-up after the loss
    // delivers it, after the memberships begun meanwhile have been told.
    s.db.postgrest().await.send(s.alice, s.room, "lost").await;
    s.regain();
    // Bob's membership began a moment before the loss; a `room` frame for it (or
    // anything but messages and presence) fails here.
    assert_eq!(messages_until(&mut b, "lost").await, Vec::<String>::new());
    // Alice's own `before` came back to her socket too.
    assert_eq!(messages_until(&mut a, "lost").await, ["before"]);
    s.server.stop().await;
}

async fn typing_shows_and_ends_after_the_configured_ttl(memory: bool) {
    let s = Setup::new(memory).await;
    let mut a = s.joined(s.alice).await;
    let mut b = s.joined(s.bob).await;
    b.send(json!({"type": "typing", "roomId": s.room, "isTyping": true}))
        .await;
    // Frames of one socket are handled in order: the pong means the row is written.
    assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
    s.ring(&format!("t:{}", s.room));
    let started = tokio::time::Instant::now();
    let t = a.recv_type("typing").await;
    assert_eq!(
        (t["user"]["id"].as_i64(), t["isTyping"].as_bool()),
        (Some(s.bob), Some(true))
    );
    let t = a.recv_type("typing").await;
    assert_eq!(t["isTyping"], false, "{t}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ended after the 300 ms TTL, not the row's 5 s: {:?}",
        started.elapsed()
    );
    s.server.stop().await;
}

macro_rules! on_both_buses {
    ($($name:ident),*) => {
        mod listen {
            $( #[tokio::test] async fn $name() { super::$name(false).await } )*
        }
        mod memory {
            $( #[tokio::test] async fn $name() { super::$name(true).await } )*
        }
    };
}

on_both_buses!(
    messages_reach_subscribers_once_in_order,
    forged_doorbells_put_nothing_on_a_socket,
    after_a_loss_the_relay_catches_up_from_the_tables,
    after_a_loss_nobody_is_told_again_of_a_room_they_are_in,
    typing_shows_and_ends_after_the_configured_ttl
);

/// The writer's daemon delivers its own committed message from the RPC's result when it
/// is the room's next change; the relay reads only what it has not delivered.
mod own_delivery {
    use super::*;

    #[tokio::test]
    async fn a_message_sent_here_reaches_subscribers_before_its_doorbell_and_once() {
        let s = Setup::new(true).await;
        let mut a = s.joined(s.alice).await;
        let mut b = s.joined(s.bob).await;
        // No doorbell rings for this one (the memory bus rings only when told).
        let ack = a
            .request(json!({"type": "message", "roomId": s.room, "message": "own"}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(messages_until(&mut b, "own").await, Vec::<String>::new());
        // Its doorbell rings late: the relay finds it delivered and sends nothing again.
        s.ring_changes().await;
        s.post(&mut a, "sentinel").await;
        assert_eq!(
            messages_until(&mut b, "sentinel").await,
            Vec::<String>::new()
        );
        s.server.stop().await;
    }

    #[tokio::test]
    async fn a_change_committed_elsewhere_first_keeps_its_place() {
        let s = Setup::new(true).await;
        let mut a = s.joined(s.alice).await;
        let mut b = s.joined(s.bob).await;
        // Bob writes through PostgREST; its doorbell has not rung yet.
        s.db.postgrest()
            .await
            .rpc(
                &Claims::user(s.bob),
                "send_message",
                &[("room_id", &s.room), ("message", &"elsewhere")],
            )
            .await
            .unwrap();
        // Alice's message comes after it in the room: it must not overtake it.
        let ack = a
            .request(json!({"type": "message", "roomId": s.room, "message": "mine"}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        s.post(&mut a, "sentinel").await;
        assert_eq!(
            messages_until(&mut b, "sentinel").await,
            ["elsewhere", "mine"]
        );
        s.server.stop().await;
    }
}

/// Presence is read as each room's changes after the rev its roster reflects; a gap in
/// those revs (a pruned or emptied log) makes the daemon read the room whole.
mod presence_stream {
    use super::*;

    /// Marks `user` online or offline in the room for another daemon, as its batch would.
    async fn elsewhere(s: &Setup, user: i64, online: bool) {
        s.db.admin()
            .await
            .execute(
                "select pgchat.presence_set('00000000-0000-0000-0000-0000000000aa', $1, $2, $3)",
                &[&s.room, &user, &online],
            )
            .await
            .unwrap();
    }

    async fn next_presence(c: &mut Client) -> (String, i64) {
        loop {
            let f = c.recv().await;
            if let Some(kind @ ("user_joined" | "user_left")) = f["type"].as_str() {
                return (kind.to_string(), f["user"]["id"].as_i64().unwrap());
            }
        }
    }

    #[tokio::test]
    async fn changes_after_the_rosters_rev_and_a_gap_reads_the_room_whole() {
        let s = Setup::new(false).await;
        let (carol, _) = s.db.signup("carol@example.com", "Carol").await;
        let (dave, _) = s.db.signup("dave@example.com", "Dave").await;
        let mut a = s.joined(s.alice).await;
        elsewhere(&s, carol, true).await;
        assert_eq!(next_presence(&mut a).await, ("user_joined".into(), carol));
        // The log loses what the daemon has not read yet, as pruning would.
        let admin = s.db.admin().await;
        admin
            .execute(
                "update pgchat.presence_rooms set rev = rev + 5 where room_id = $1",
                &[&s.room],
            )
            .await
            .unwrap();
        admin
            .execute("delete from pgchat.presence_log", &[])
            .await
            .unwrap();
        elsewhere(&s, dave, true).await;
        assert_eq!(next_presence(&mut a).await, ("user_joined".into(), dave));
        elsewhere(&s, carol, false).await;
        assert_eq!(next_presence(&mut a).await, ("user_left".into(), carol));
        // Bob's arrival through this daemon comes after them all, announced once.
        let _b = s.joined(s.bob).await;
        assert_eq!(next_presence(&mut a).await, ("user_joined".into(), s.bob));
        s.server.stop().await;
    }
}
