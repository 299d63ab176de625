//! One model client: a real WebSocket connection of one user to one daemon, and what it
//! knows of the room, built only from its snapshot and the frames it received. It checks
//! the stream's contract as frames arrive: every stream frame's `prevRev` is the rev of
//! the last one it applied, `message` comes only for an unknown id and `message_updated`
//! only for a known one (live or replayed), a deletion has no text.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::snapshot;
use super::view::Known;
use crate::common::postgrest::Postgrest;
use crate::common::server::Client;

/// The most revs a `join {sinceRev}` replays (docs/protocol.md, "Too far behind").
const REPLAY_LIMIT: i64 = 1000;

/// Frames that belong to the room's change stream and carry `rev` and `prevRev`.
const STREAM: [&str; 5] = [
    "message",
    "message_updated",
    "read",
    "member_joined",
    "member_left",
];

pub struct ModelClient {
    pub name: String,
    pub user: i64,
    pub room: i64,
    pub daemon: usize,
    ws: Option<Client>,
    pub known: Option<Known>,
    /// Subscribed (a `joined` arrived, no `room_left` since).
    pub subscribed: bool,
    /// Between sending `join` and its reply: frames are replayed ones.
    joining: bool,
    /// Frames with a rev above this are live (the `joined` reply's `lastRev`).
    live_after: i64,
    /// What the current replay sent: each message, and each member's membership and
    /// read marker, at most once (the replay is compacted).
    replayed: HashSet<(&'static str, i64)>,
    /// A `room` arrived while unsubscribed: the user (re)joined the room.
    pub room_offered: bool,
    replies: HashMap<String, Value>,
    next_ref: u64,
    /// The last frames received, for a failure's report.
    recent: Vec<String>,
}

pub type Outcome<T> = Result<T, String>;

impl ModelClient {
    pub fn new(name: String, user: i64, room: i64, daemon: usize) -> ModelClient {
        ModelClient {
            name,
            user,
            room,
            daemon,
            ws: None,
            known: None,
            subscribed: false,
            joining: false,
            live_after: i64::MAX,
            room_offered: false,
            replayed: HashSet::new(),
            replies: HashMap::new(),
            next_ref: 0,
            recent: Vec::new(),
        }
    }

    pub fn connected(&self) -> bool {
        self.ws.is_some()
    }

    /// Connects and authenticates (not subscribed to anything yet).
    pub async fn connect(&mut self, url: &str, daemon: usize) {
        self.ws = Some(Client::authed(url, self.user).await);
        self.daemon = daemon;
        self.subscribed = false;
        self.room_offered = false;
        self.replies.clear();
    }

    /// Drops the connection without a word; what the client knows is kept for resuming.
    pub async fn disconnect(&mut self) {
        if let Some(mut c) = self.ws.take() {
            let _ = c.ws.close(None).await;
        }
        self.subscribed = false;
        self.joining = false;
        self.room_offered = false;
    }

    pub fn recent(&self) -> String {
        self.recent.join("\n      ")
    }

    /// Subscribes: a fresh snapshot when the client knows nothing of the room (or, with
    /// `from_zero`, an empty state that `sinceRev: 0` must fill), else a resume from its
    /// last rev. Not a member: stays unsubscribed.
    pub async fn subscribe(&mut self, pg: &Postgrest, from_zero: bool) -> Outcome<()> {
        let snap = snapshot::read(pg, self.user, self.room).await;
        if snap.room.is_none() {
            return Ok(());
        }
        match self.known.as_mut() {
            Some(k) => k.refresh_membership(&snap),
            None => {
                let mut k = Known::from_snapshot(&snap, self.room, self.user);
                if from_zero {
                    k.messages.clear();
                    k.members.clear();
                    k.markers.clear();
                    k.rev = 0;
                }
                self.known = Some(k);
            }
        }
        let known = self.known.as_ref().unwrap();
        let since = known.rev;
        // My last seq beside sinceRev: the replay then splits exactly into `message`
        // (new to me) and `message_updated` (docs/protocol.md).
        let last_seq = known
            .messages
            .values()
            .filter_map(|m| m["seq"].as_i64())
            .max();
        self.joining = true;
        self.live_after = i64::MAX;
        self.replayed.clear();
        let reply = self
            .request(json!({
                "type": "join", "roomId": self.room, "sinceRev": since, "since": last_seq.unwrap_or(0)
            }))
            .await;
        self.joining = false;
        let reply = reply?;
        match reply["type"].as_str() {
            Some("joined") => {}
            Some("error") if reply["code"] == "forbidden" => return Ok(()),
            _ => return Err(format!("{}: join sinceRev {since} → {reply}", self.name)),
        }
        let last_rev = reply["lastRev"]
            .as_i64()
            .ok_or_else(|| format!("{}: joined without lastRev: {reply}", self.name))?;
        if reply["behind"] == json!(true) {
            // Further behind than the replay limit: nothing was replayed, and the client
            // starts over from a fresh snapshot, as a real one loads the latest page.
            if last_rev - since <= REPLAY_LIMIT {
                return Err(format!(
                    "{}: behind only {} revs: {reply}",
                    self.name,
                    last_rev - since
                ));
            }
            if !self.replayed.is_empty() {
                return Err(format!("{}: frames replayed before behind", self.name));
            }
            self.known = None;
            return Box::pin(self.subscribe(pg, false)).await;
        }
        if reply["lastSeq"].as_i64().is_none() {
            return Err(format!("{}: joined without lastSeq: {reply}", self.name));
        }
        // The replay covered the room up to lastRev, compacted: a row changed again after
        // lastRev was left to the live stream, so the last replayed rev may be lower.
        // Live frames chain from lastRev.
        let known = self.known.as_mut().unwrap();
        if known.rev > last_rev {
            return Err(format!(
                "{}: replayed up to {}, past lastRev {last_rev}",
                self.name, known.rev
            ));
        }
        known.rev = last_rev;
        self.live_after = last_rev;
        self.subscribed = true;
        self.room_offered = false;
        Ok(())
    }

    /// Sends a frame with a ref and reads (applying every frame) until its reply.
    pub async fn request(&mut self, mut frame: Value) -> Outcome<Value> {
        self.next_ref += 1;
        let r = format!("{}-{}", self.name, self.next_ref);
        frame["ref"] = json!(r);
        self.ws
            .as_mut()
            .ok_or_else(|| format!("{}: request while disconnected", self.name))?
            .send(frame.clone())
            .await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(reply) = self.replies.remove(&r) {
                return Ok(reply);
            }
            if !self.pump_one(deadline).await? {
                return Err(format!("{}: no reply to {frame}", self.name));
            }
        }
    }

    /// Reads and applies one frame; false when none came before the deadline.
    pub async fn pump_one(&mut self, deadline: Instant) -> Outcome<bool> {
        let ws = self
            .ws
            .as_mut()
            .ok_or_else(|| format!("{}: reading while disconnected", self.name))?;
        // Reading by hand, not with `try_recv`: a Close from the server is a failure to
        // report, not a quiet end of the wait.
        let frame = loop {
            let next = match tokio::time::timeout_at(deadline, ws.ws.next()).await {
                Err(_) => return Ok(false),
                Ok(next) => next,
            };
            match next {
                Some(Ok(Message::Text(t))) => {
                    break serde_json::from_str::<Value>(t.as_str())
                        .map_err(|e| format!("{}: not JSON ({e}): {t}", self.name))?
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(format!(
                        "{}: the server closed the socket: {f:?}",
                        self.name
                    ))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("{}: the socket failed: {e}", self.name)),
                None => return Err(format!("{}: the socket ended", self.name)),
            }
        };
        self.recent.push(frame.to_string());
        if self.recent.len() > 12 {
            self.recent.remove(0);
        }
        self.handle(&frame)
            .map_err(|e| format!("{}: {e}\n    on frame {frame}", self.name))?;
        if let Some(r) = frame["ref"].as_str() {
            self.replies.insert(r.to_string(), frame.clone());
        }
        Ok(true)
    }

    /// Applies every frame already received, without waiting. Run for every connected
    /// client after each step, even one that waits for nothing: its pings get answered
    /// (an unread socket is closed as idle) and a stray frame is caught at once.
    pub async fn drain_ready(&mut self) -> Outcome<()> {
        while self.ws.is_some() && self.pump_one(Instant::now()).await? {}
        Ok(())
    }

    fn handle(&mut self, f: &Value) -> Outcome<()> {
        let kind = f["type"].as_str().unwrap_or_default();
        match kind {
            k if STREAM.contains(&k) => self.stream(f),
            "message_deleted" => Err("message_deleted is no longer sent".into()),
            "resync" => Err("resync in a small room".into()),
            "room" => {
                if !self.subscribed {
                    self.room_offered = true;
                }
                Ok(())
            }
            "room_left" => {
                self.subscribed = false;
                self.room_offered = false;
                Ok(())
            }
            "error" if f["ref"].is_null() => Err("an error nobody asked for".into()),
            _ => Ok(()), // replies, presence, typing: not on the stream
        }
    }

    /// Applies one stream frame, checking the chain and the message state's rules.
    fn stream(&mut self, f: &Value) -> Outcome<()> {
        if f["roomId"] != json!(self.room) {
            return Err("a frame for another room".into());
        }
        if !self.subscribed && !self.joining {
            return Err("a stream frame while not subscribed".into());
        }
        let known = self.known.as_mut().ok_or("a stream frame with no state")?;
        let rev = f["rev"].as_i64().ok_or("a stream frame without rev")?;
        let prev = f["prevRev"]
            .as_i64()
            .ok_or("a stream frame without prevRev")?;
        if prev != known.rev {
            return Err(format!(
                "prevRev {prev}, but the last rev seen is {}",
                known.rev
            ));
        }
        if rev <= prev {
            return Err(format!("rev {rev} not after prevRev {prev}"));
        }
        let live = rev > self.live_after;
        let kind = f["type"].as_str().unwrap();
        if self.joining {
            let (class, id) = match kind {
                "read" => ("read", &f["user"]["id"]),
                "member_joined" | "member_left" => ("member", &f["user"]["id"]),
                _ => ("message", &f["message"]["id"]),
            };
            let id = id.as_i64().ok_or("a stream frame without its id")?;
            if !self.replayed.insert((class, id)) {
                return Err(format!("the replay sent {class} {id} twice: not compacted"));
            }
        }
        match kind {
            kind @ ("message" | "message_updated") => {
                let m = &f["message"];
                let id = m["id"].as_i64().ok_or("a message without id")?;
                if m["rev"] != json!(rev) {
                    return Err("the message's rev is not the frame's".into());
                }
                let deleted = !m["deleted_at"].is_null();
                if deleted && !(m["message"].is_null() || m["message"] == "") {
                    return Err("a deleted message still has text".into());
                }
                // Live or replayed: `message` the first time, `message_updated` after.
                let had = known.messages.contains_key(&id);
                if kind == "message" && had {
                    return Err(format!("`message` for message {id}, already known"));
                }
                if kind == "message_updated" && !had {
                    return Err(format!("`message_updated` for unknown message {id}"));
                }
                let seq = m["seq"].as_i64().ok_or("a message without seq")?;
                if live && kind == "message" && m["user_id"] == json!(known.me) {
                    known.last_sent_seq = known.last_sent_seq.max(seq);
                }
                known.messages.insert(id, m.clone());
            }
            "read" => {
                let user = f["user"]["id"].as_i64().ok_or("read without user.id")?;
                let seq = f["seq"].as_i64().ok_or("read without seq")?;
                known.markers.insert(user, seq);
            }
            "member_joined" => {
                let user = f["user"]["id"]
                    .as_i64()
                    .ok_or("member_joined without user.id")?;
                let role = f.get("role").cloned();
                known
                    .members
                    .insert(user, (f["user"]["name"].clone(), role));
                known.markers.insert(user, 0);
            }
            "member_left" => {
                let user = f["user"]["id"]
                    .as_i64()
                    .ok_or("member_left without user.id")?;
                known.members.remove(&user);
                known.markers.remove(&user);
                if user == known.me && !self.joining {
                    self.subscribed = false;
                }
            }
            _ => unreachable!(),
        }
        known.rev = rev;
        Ok(())
    }

    /// Reads until this client is where the room is: subscribed at `target` when its
    /// user is a member (subscribing when a `room` tells it so), unsubscribed when not.
    pub async fn settle(
        &mut self,
        pg: &Postgrest,
        member: bool,
        target: i64,
        deadline: Instant,
    ) -> Outcome<()> {
        loop {
            if !self.connected() {
                return Ok(());
            }
            if member && self.subscribed {
                let rev = self.known.as_ref().map_or(0, |k| k.rev);
                if rev == target {
                    return Ok(());
                }
                if rev > target {
                    return Err(format!(
                        "{}: at rev {rev}, past the room's {target}",
                        self.name
                    ));
                }
            } else if member && self.room_offered {
                self.subscribe(pg, false).await?;
                continue;
            } else if !member && !self.subscribed {
                return Ok(());
            }
            if !self.pump_one(deadline).await? {
                let at = self.known.as_ref().map(|k| k.rev);
                return Err(format!(
                    "{}: stuck (member {member}, subscribed {}, rev {at:?}, room's {target})\n      {}",
                    self.name,
                    self.subscribed,
                    self.recent()
                ));
            }
        }
    }
}
