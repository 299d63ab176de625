//! Turning notifications into hub events: messages (with duplicate and gap handling
//! against the room's cursor), edits, membership, read markers, presence and typing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::db::DbError;
use crate::hub::{Event, Hub};
use crate::listener::Listener;
use crate::presence::TypingTracker;
use crate::protocol::{self, user_json, RoomId};

/// One notification as the SQL triggers write it (sql/050, sql/060).
#[derive(Deserialize)]
struct Note<'a> {
    t: &'a str,
    #[serde(default)]
    room_id: RoomId,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(borrow, default)]
    row: Option<&'a RawValue>,
    #[serde(rename = "ref", default)]
    by_reference: bool,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    online: Option<bool>,
    #[serde(default)]
    is_typing: Option<bool>,
    #[serde(borrow, default)]
    room: Option<&'a RawValue>,
    /// `presence_batch`: several presence changes in one notification.
    #[serde(default)]
    events: Option<Vec<PresenceEvent>>,
}

#[derive(Deserialize)]
struct PresenceEvent {
    room_id: RoomId,
    user_id: i64,
    #[serde(default)]
    user_name: Option<String>,
    online: bool,
}

impl Listener {
    pub(crate) async fn dispatch(&self, payload: &str) -> Result<(), DbError> {
        let note: Note = match serde_json::from_str(payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed notification");
                return Ok(());
            }
        };
        let room = note.room_id;
        match note.t {
            "message" => self.on_message(&note).await?,
            "message_updated" | "message_deleted" => {
                if self.hub.cursor(room).is_none() {
                    return Ok(());
                }
                let row = match (note.row, note.seq) {
                    (Some(row), _) => row.get().to_owned(),
                    (None, Some(seq)) => self.fetch_row(room, seq).await?.unwrap_or_default(),
                    _ => return Ok(()),
                };
                if !row.is_empty() {
                    let frame = protocol::frame_with_raw(note.t, None, Some(room), "message", &row);
                    self.hub.deliver(room, Event::to_all(frame));
                }
            }
            "member_joined" => {
                if let (Some(user), Some(room_json)) = (note.user_id, note.room) {
                    let frame =
                        protocol::frame_with_raw("room", None, None, "room", room_json.get());
                    self.hub.push_to_user(user, &frame, None);
                }
            }
            "member_left" => {
                let Some(user) = note.user_id else {
                    return Ok(());
                };
                let evicted = self.hub.evict_user(room, user);
                if !evicted.is_empty() {
                    let frame =
                        protocol::frame("room_left", None, serde_json::json!({"roomId": room}));
                    for handle in &evicted {
                        handle.push(frame.clone());
                    }
                    self.presence.depart(room, user).await;
                }
            }
            "read" => {
                if let (Some(user), Some(seq)) = (note.user_id, note.seq) {
                    let frame = protocol::frame(
                        "read",
                        None,
                        serde_json::json!({"roomId": room, "user": user_json(user, note.user_name.as_deref()), "seq": seq}),
                    );
                    self.hub.deliver(room, Event::to_all(frame));
                }
            }
            "presence" => {
                if let (Some(user), Some(online)) = (note.user_id, note.online) {
                    let event = self.on_presence(room, user, note.user_name.as_deref(), online);
                    self.hub.announce(room, &[event]);
                }
            }
            "presence_batch" => {
                // Each room's run of changes goes out as one batch (they come sorted by
                // room): in a join storm, one pass over the room per notification.
                let events = note.events.unwrap_or_default();
                for run in events.chunk_by(|a, b| a.room_id == b.room_id) {
                    let announcements: Vec<Event> = run
                        .iter()
                        .map(|e| {
                            self.on_presence(e.room_id, e.user_id, e.user_name.as_deref(), e.online)
                        })
                        .collect();
                    self.hub.announce(run[0].room_id, &announcements);
                }
            }
            "typing" => {
                let (Some(user), Some(is_typing)) = (note.user_id, note.is_typing) else {
                    return Ok(());
                };
                if self.typing.update(
                    room,
                    user,
                    note.user_name.clone(),
                    is_typing,
                    Instant::now(),
                ) {
                    self.hub.deliver(
                        room,
                        typing_event(room, user, note.user_name.as_deref(), is_typing),
                    );
                }
            }
            other => tracing::debug!(kind = other, "ignoring notification"),
        }
        Ok(())
    }

    async fn on_message(&self, note: &Note<'_>) -> Result<(), DbError> {
        let room = note.room_id;
        let Some(seq) = note.seq else { return Ok(()) };
        let Some(cursor) = self.hub.cursor(room) else {
            return Ok(()); // nobody here is subscribed to this room
        };
        if let Some(user) = note
            .user_id
            .or_else(|| note.row.and_then(|r| user_of(r.get())))
        {
            self.stop_typing(room, user);
        }
        match cursor {
            Some(c) if seq <= c => return Ok(()), // already relayed (catch-up overlap)
            Some(c) if seq > c + 1 => return self.catch_up(room, c, Some(seq)).await,
            _ => {}
        }
        let row = match note.row {
            Some(row) if !note.by_reference => row.get().to_owned(),
            _ => match self.fetch_row(room, seq).await? {
                Some(row) => row,
                None => return Ok(()),
            },
        };
        self.relay_message(room, seq, &row);
        Ok(())
    }

    /// The full row of a message notified by reference (too large for a payload).
    async fn fetch_row(&self, room: RoomId, seq: i64) -> Result<Option<String>, DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.messages_after($1, $2, 1)::text")
            .await?;
        let row = client.query_opt(&stmt, &[&room, &(seq - 1)]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A user's room-wide presence changed (announced once across all daemons): updates
    /// the roster, ends their typing if they left, and returns the announcement.
    fn on_presence(&self, room: RoomId, user: i64, name: Option<&str>, online: bool) -> Event {
        self.hub.presence_changed(room, user, name, online);
        if !online {
            self.stop_typing(room, user);
        }
        let kind = if online { "user_joined" } else { "user_left" };
        let frame = protocol::frame(
            kind,
            None,
            serde_json::json!({"roomId": room, "user": user_json(user, name)}),
        );
        Event::ephemeral_to_others(user, frame)
    }

    fn stop_typing(&self, room: RoomId, user: i64) {
        if let Some(name) = self.typing.clear(room, user) {
            self.hub
                .deliver(room, typing_event(room, user, name.as_deref(), false));
        }
    }
}

pub fn typing_event(room: RoomId, user: i64, name: Option<&str>, is_typing: bool) -> Event {
    let fields =
        serde_json::json!({"roomId": room, "user": user_json(user, name), "isTyping": is_typing});
    Event::ephemeral_to_others(user, protocol::frame("typing", None, fields))
}

/// Ends typing indicators whose refreshes stopped, on this daemon's sockets.
pub async fn expire_typing(hub: Arc<Hub>, typing: Arc<TypingTracker>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        for (room, user, name) in typing.expire(Instant::now()) {
            hub.deliver(room, typing_event(room, user, name.as_deref(), false));
        }
        hub.flush();
    }
}

pub(crate) fn seq_of(row_json: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: i64,
    }
    serde_json::from_str::<Seq>(row_json).ok().map(|s| s.seq)
}

fn user_of(row_json: &str) -> Option<i64> {
    #[derive(Deserialize)]
    struct User {
        user_id: i64,
    }
    serde_json::from_str::<User>(row_json)
        .ok()
        .map(|u| u.user_id)
}
