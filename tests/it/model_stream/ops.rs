//! The random operations, each by one of the paths a real deployment has: a socket,
//! PostgREST's request context (RPC or table write under RLS), or plain SQL as the
//! superuser. Each returns the rev the operation reported, when it reports one.

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;

use super::client::Outcome;
use super::world::World;
use crate::common::postgrest::Claims;

#[derive(Debug, Clone, Copy)]
pub enum Path {
    Rpc,
    Table,
    Superuser,
}

/// One message as the superuser sees it.
struct Msg {
    id: i64,
    author: i64,
    deleted: bool,
}

impl World {
    async fn messages(&self) -> Vec<Msg> {
        self.admin
            .query(
                "select id, user_id, deleted_at is not null from api.chat_messages
                  where room_id = $1 order by id",
                &[&self.room],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| Msg {
                id: r.get(0),
                author: r.get(1),
                deleted: r.get(2),
            })
            .collect()
    }

    async fn last_seq(&self) -> i64 {
        self.admin
            .query_one(
                "select last_seq from api.chat_rooms where id = $1",
                &[&self.room],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// A connected, subscribed client of `user`, if any.
    fn socket_of(&self, user: i64) -> Option<usize> {
        let ids: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].user == user && self.clients[i].subscribed)
            .collect();
        ids.first().copied()
    }

    /// Picks and runs one operation; logs it first, so a failure shows what ran.
    pub async fn random_op(&mut self) -> Outcome<Option<i64>> {
        let members = self.members().await;
        let others: Vec<i64> = self
            .users
            .iter()
            .copied()
            .filter(|u| !members.contains(u))
            .collect();
        let messages = self.messages().await;
        let live: Vec<&Msg> = messages.iter().filter(|m| !m.deleted).collect();
        let editable: Vec<&Msg> = live
            .iter()
            .copied()
            .filter(|m| members.contains(&m.author))
            .collect();
        let offline: Vec<usize> = (0..self.clients.len())
            .filter(|&i| !self.clients[i].connected())
            .collect();
        let online: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].connected())
            .collect();
        let step = self.step;
        let roll = self.rng.gen_range(0..100);
        let text = format!("step {step} {}", self.rng.gen::<u32>());
        // Each branch falls through to a send when its precondition does not hold.
        match roll {
            0..=14 if !editable.is_empty() || !live.is_empty() => {
                let superuser = editable.is_empty() || self.rng.gen_bool(0.25);
                let path = if superuser {
                    Path::Superuser
                } else if self.rng.gen_bool(0.5) {
                    Path::Rpc
                } else {
                    Path::Table
                };
                let pool = if superuser { &live } else { &editable };
                let m = pool.choose(&mut self.rng).unwrap();
                let (id, author) = (m.id, m.author);
                self.note(format!(
                    "{step}: edit message {id} by {path:?} (author {author})"
                ));
                self.edit(id, author, path, &text).await
            }
            15..=24 if !live.is_empty() => {
                let superuser = editable.is_empty() || self.rng.gen_bool(0.25);
                let path = if superuser {
                    Path::Superuser
                } else if self.rng.gen_bool(0.5) {
                    Path::Rpc
                } else {
                    Path::Table
                };
                let pool = if superuser { &live } else { &editable };
                let m = pool.choose(&mut self.rng).unwrap();
                let (id, author) = (m.id, m.author);
                self.note(format!(
                    "{step}: delete message {id} by {path:?} (author {author})"
                ));
                self.delete(id, author, path).await
            }
            25..=34 if !members.is_empty() => {
                let user = *members.choose(&mut self.rng).unwrap();
                let seq = self.rng.gen_range(0..=self.last_seq().await + 1);
                let socket = self.socket_of(user).filter(|_| self.rng.gen_bool(0.5));
                self.note(format!(
                    "{step}: user {user} reads up to {seq} (socket {socket:?})"
                ));
                self.read(user, seq, socket).await
            }
            35..=39 if members.len() > 1 => {
                let user = *members.choose(&mut self.rng).unwrap();
                let socket = self.socket_of(user).filter(|_| self.rng.gen_bool(0.5));
                self.note(format!("{step}: user {user} leaves (socket {socket:?})"));
                self.membership(user, false, socket).await
            }
            40..=46 if !others.is_empty() => {
                let user = *others.choose(&mut self.rng).unwrap();
                let sockets: Vec<usize> = (0..self.clients.len())
                    .filter(|&i| self.clients[i].user == user && self.clients[i].connected())
                    .collect();
                let socket = sockets.first().copied().filter(|_| self.rng.gen_bool(0.5));
                self.note(format!("{step}: user {user} joins (socket {socket:?})"));
                self.membership(user, true, socket).await
            }
            47..=52 if online.len() > 2 => {
                let i = *online.choose(&mut self.rng).unwrap();
                self.note(format!("{step}: {} disconnects", self.clients[i].name));
                self.clients[i].disconnect().await;
                Ok(None)
            }
            53..=62 if !offline.is_empty() => {
                let i = *offline.choose(&mut self.rng).unwrap();
                let d = self.rng.gen_range(0..self.servers.len());
                // Now and then others write while the client resumes: the replay and
                // the live stream must meet with no gap and no duplicate.
                let writer = members
                    .choose(&mut self.rng)
                    .copied()
                    .filter(|_| self.rng.gen_bool(0.4));
                let meanwhile =
                    writer.map_or(String::new(), |u| format!(" while user {u} writes a burst"));
                self.note(format!(
                    "{step}: {} resumes on daemon {d}{meanwhile}",
                    self.clients[i].name
                ));
                let burst = writer.map(|u| self.burst(u, step));
                let url = self.servers[d].url();
                self.clients[i].connect(&url, d).await;
                let pg = &self.pg;
                let resumed = self.clients[i].subscribe(pg, false).await;
                if let Some(burst) = burst {
                    burst.await.map_err(|e| format!("burst: {e}"))??;
                }
                resumed.map(|_| None)
            }
            63..=66 => {
                let killed = self.kill_listener().await;
                self.note(format!("{step}: LISTEN backend {killed:?} terminated"));
                Ok(None)
            }
            67..=71 if members.len() > 1 => {
                // Two writers at once, through different paths: every daemon must relay
                // the interleaving in rev order, each change once.
                let mut two: Vec<i64> =
                    members.choose_multiple(&mut self.rng, 2).copied().collect();
                let (a, b) = (two.remove(0), two.remove(0));
                let socket = self.socket_of(b);
                self.note(format!(
                    "{step}: user {a} writes a burst while user {b} sends (socket {socket:?})"
                ));
                let burst = self.burst(a, step);
                let sent = self.send(b, socket, &text).await;
                burst.await.map_err(|e| format!("burst: {e}"))??;
                sent.map(|_| None)
            }
            _ if !members.is_empty() => {
                let user = *members.choose(&mut self.rng).unwrap();
                let socket = self.socket_of(user).filter(|_| self.rng.gen_bool(0.6));
                self.note(format!("{step}: user {user} sends (socket {socket:?})"));
                self.send(user, socket, &text).await
            }
            _ => {
                let user = *others.choose(&mut self.rng).unwrap();
                self.note(format!("{step}: user {user} joins an empty room"));
                self.membership(user, true, None).await
            }
        }
    }

    /// The end: every client resumes, then one more message must reach them all.
    pub async fn sentinel(&mut self) -> Outcome<()> {
        for i in 0..self.clients.len() {
            if !self.clients[i].connected() {
                let d = i % self.servers.len();
                self.note(format!(
                    "end: {} resumes on daemon {d}",
                    self.clients[i].name
                ));
                let url = self.servers[d].url();
                self.clients[i].connect(&url, d).await;
                let pg = &self.pg;
                self.clients[i].subscribe(pg, false).await?;
            }
        }
        self.settle_and_check(None).await?;
        let user = self.members().await[0];
        self.note(format!("end: user {user} sends the sentinel"));
        let rev = self.send(user, None, "sentinel").await?;
        self.settle_and_check(rev).await
    }

    /// Sends `text` as `user`, by the client `socket` or by RPC.
    pub async fn send(
        &mut self,
        user: i64,
        socket: Option<usize>,
        text: &str,
    ) -> Outcome<Option<i64>> {
        let client_id = format!("k{}", self.rng.gen::<u64>());
        match socket {
            Some(i) => {
                let frame = json!({"type": "message", "roomId": self.room, "message": text, "clientId": client_id});
                let ack = self.clients[i].request(frame).await?;
                if ack["type"] != "ack" {
                    return Err(format!("send by socket: {ack}"));
                }
                Ok(ack["rev"].as_i64())
            }
            None => {
                let row = self
                    .pg
                    .rpc(
                        &Claims::user(user),
                        "send_message",
                        &[
                            ("room_id", &self.room),
                            ("message", &text),
                            ("client_id", &client_id),
                        ],
                    )
                    .await
                    .map_err(|e| format!("send_message: {e}"))?;
                Ok(row["rev"].as_i64())
            }
        }
    }

    async fn edit(&mut self, id: i64, author: i64, path: Path, text: &str) -> Outcome<Option<i64>> {
        let claims = Claims::user(author);
        let sql = "update api.chat_messages set message = $2 where id = $1 returning rev";
        let rev = match path {
            Path::Rpc => self
                .pg
                .rpc(
                    &claims,
                    "edit_message",
                    &[("message_id", &id), ("message", &text)],
                )
                .await
                .map(|m| m["rev"].as_i64()),
            Path::Table => self
                .pg
                .query(&claims, sql, &[&id, &text])
                .await
                .map(|rows| rows.first().map(|r| r.get(0))),
            _ => self
                .admin
                .query(sql, &[&id, &text])
                .await
                .map(|rows| rows.first().map(|r| r.get(0))),
        };
        rev.map_err(|e| format!("edit {id} by {path:?}: {e}"))
    }

    async fn delete(&mut self, id: i64, author: i64, path: Path) -> Outcome<Option<i64>> {
        let claims = Claims::user(author);
        let sql = "delete from api.chat_messages where id = $1";
        let done = match path {
            Path::Rpc => self
                .pg
                .rpc(&claims, "delete_message", &[("message_id", &id)])
                .await
                .map(|m| m["rev"].as_i64()),
            Path::Table => self.pg.query(&claims, sql, &[&id]).await.map(|_| None),
            _ => self.admin.execute(sql, &[&id]).await.map(|_| None),
        };
        done.map_err(|e| format!("delete {id} by {path:?}: {e}"))
    }

    async fn read(&mut self, user: i64, seq: i64, socket: Option<usize>) -> Outcome<Option<i64>> {
        match socket {
            Some(i) => {
                let ack = self.clients[i]
                    .request(json!({"type": "read", "roomId": self.room, "seq": seq}))
                    .await?;
                if ack["type"] != "ack" {
                    return Err(format!("read by socket: {ack}"));
                }
            }
            None => {
                self.pg
                    .rpc(
                        &Claims::user(user),
                        "mark_read",
                        &[("room_id", &self.room), ("seq", &seq)],
                    )
                    .await
                    .map_err(|e| format!("mark_read: {e}"))?;
            }
        }
        Ok(None)
    }

    /// Joins (`join`) or leaves the room as `user`, by socket or by RPC.
    async fn membership(
        &mut self,
        user: i64,
        join: bool,
        socket: Option<usize>,
    ) -> Outcome<Option<i64>> {
        match socket {
            Some(i) => {
                let kind = if join { "join_room" } else { "leave_room" };
                let reply = self.clients[i]
                    .request(json!({"type": kind, "roomId": self.room}))
                    .await?;
                let want = if join { "room" } else { "room_left" };
                if reply["type"] != want {
                    return Err(format!("{kind}: {reply}"));
                }
            }
            None => {
                let function = if join {
                    "join_chat_room"
                } else {
                    "leave_chat_room"
                };
                self.pg
                    .rpc(&Claims::user(user), function, &[("room_id", &self.room)])
                    .await
                    .map_err(|e| format!("{function}: {e}"))?;
            }
        }
        Ok(None)
    }
}
