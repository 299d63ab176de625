//! The world the model runs in: one database, two daemons on it, five users (four
//! members of the room, one not yet), and clients of those users spread over both
//! daemons. After every operation it waits until every connected client reached the
//! room's rev, then compares each client's state with a fresh snapshot as its user.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::time::Instant;

use super::client::{ModelClient, Outcome};
use super::snapshot;
use super::view::diff;
use crate::common::postgrest::{Claims, Postgrest};
use crate::common::server::TestServer;
use crate::common::TestDb;

/// How long a client may take to reach the room's rev (a LISTEN reconnect included).
const SETTLE: Duration = Duration::from_secs(20);

pub struct World {
    pub rng: StdRng,
    pub servers: Vec<TestServer>,
    pub admin: tokio_postgres::Client,
    pub pg: Postgrest,
    /// A second request connection, for writes concurrent with the harness's own.
    pub writer: Arc<Postgrest>,
    pub room: i64,
    pub users: Vec<i64>,
    pub clients: Vec<ModelClient>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub step: usize,
    /// Kept last: the database is dropped after the daemons stop.
    pub _db: TestDb,
}

impl World {
    pub async fn new(seed: u64, log: Arc<Mutex<Vec<String>>>) -> World {
        let db = TestDb::new().await;
        let mut users = Vec::new();
        for i in 0..5 {
            users.push(
                db.signup(&format!("u{i}@model.test"), &format!("User {i}"))
                    .await
                    .0,
            );
        }
        let pg = db.postgrest().await;
        let room = pg.create_room(users[0], "model").await;
        for &u in &users[1..4] {
            pg.rpc(&Claims::user(u), "join_chat_room", &[("room_id", &room)])
                .await
                .expect("join_chat_room");
        }
        let admin = db.admin().await;
        let mut servers = Vec::new();
        for _ in 0..2 {
            servers.push(TestServer::start(&db, &[]).await);
        }
        // Users 0 and 1 have a socket on each daemon; user 4 is not a member yet.
        let layout = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (3, 0), (4, 1)];
        let mut clients = Vec::new();
        for (i, (u, d)) in layout.into_iter().enumerate() {
            let name = format!("c{i}(user {})", users[u]);
            clients.push(ModelClient::new(name, users[u], room, d));
        }
        let writer = Arc::new(db.postgrest().await);
        let mut world = World {
            rng: StdRng::seed_from_u64(seed),
            servers,
            admin,
            pg,
            writer,
            room,
            users,
            clients,
            log,
            step: 0,
            _db: db,
        };
        for i in 0..world.clients.len() {
            let d = world.clients[i].daemon;
            let url = world.servers[d].url();
            world.clients[i].connect(&url, d).await;
            let from_zero = i % 3 == 2;
            let pg = &world.pg;
            world.clients[i]
                .subscribe(pg, from_zero)
                .await
                .unwrap_or_else(|e| panic!("initial subscribe: {e}"));
        }
        world
    }

    /// Closes every client, then stops both daemons gracefully.
    pub async fn finish(mut self) {
        for c in self.clients.iter_mut() {
            c.disconnect().await;
        }
        for s in self.servers.drain(..) {
            s.stop().await;
        }
    }

    pub fn note(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }

    /// The room's last rev, read as the superuser.
    pub async fn last_rev(&self) -> i64 {
        self.admin
            .query_one(
                "select last_rev from api.chat_rooms where id = $1",
                &[&self.room],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn members(&self) -> Vec<i64> {
        self.admin
            .query(
                "select user_id from api.room_members where room_id = $1 order by user_id",
                &[&self.room],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Waits until every connected client has reached the room's rev (`expected`, when
    /// the operation returned one, must be that rev), then checks each against a fresh
    /// snapshot as its user.
    pub async fn settle_and_check(&mut self, expected: Option<i64>) -> Outcome<()> {
        let target = self.last_rev().await;
        if let Some(rev) = expected {
            if rev != target {
                return Err(format!(
                    "the operation returned rev {rev}, the room is at {target}"
                ));
            }
        }
        let members = self.members().await;
        let deadline = Instant::now() + SETTLE;
        for c in self.clients.iter_mut() {
            let member = members.contains(&c.user);
            c.settle(&self.pg, member, target, deadline).await?;
        }
        for c in self.clients.iter_mut() {
            c.drain_ready().await?;
        }
        for c in &self.clients {
            if !c.connected() {
                continue;
            }
            let snap = snapshot::read(&self.pg, c.user, self.room).await;
            match (snap.view(), c.subscribed, c.known.as_ref()) {
                (None, false, _) => {}
                (Some(fresh), true, Some(known)) => {
                    let mine = known.view();
                    if mine != fresh {
                        return Err(format!(
                            "{} (daemon {}) differs from a fresh snapshot at rev {target}:\n{}    last frames:\n      {}",
                            c.name,
                            c.daemon,
                            diff(&mine, &fresh),
                            c.recent()
                        ));
                    }
                }
                (fresh, subscribed, _) => {
                    return Err(format!(
                        "{}: member in the tables {}, subscribed {subscribed}",
                        c.name,
                        fresh.is_some()
                    ))
                }
            }
        }
        Ok(())
    }
}
