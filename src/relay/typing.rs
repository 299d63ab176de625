//! Typing doorbells: who is typing is read from `private.typing` (rows written as the
//! user) in one query per burst and compared with what this daemon shows; only starts
//! and stops become frames. Indicators end by themselves at the row's expiry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Relay;
use crate::db::DbError;
use crate::hub::{Event, Hub, UserId};
use crate::presence::TypingTracker;
use crate::protocol::{self, user_json, RoomId};
use crate::typing_throttle::TypingThrottle;

type TypingRows = Vec<(UserId, Option<String>, Duration)>;

impl Relay {
    pub(super) async fn read_typing(&self, rooms: &[RoomId]) -> Result<(), DbError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached(
                "select room_id, user_id, name, expires_in_ms from pgchat.typing_in($1)",
            )
            .await?;
        let mut typing: HashMap<RoomId, TypingRows> = HashMap::new();
        for row in client.query(&stmt, &[&rooms]).await? {
            let left: i64 = row.get(3);
            typing.entry(row.get(0)).or_default().push((
                row.get(1),
                row.get(2),
                Duration::from_millis(left.max(0) as u64),
            ));
        }
        drop(client);
        let now = Instant::now();
        for room in rooms {
            let rows = typing.remove(room).unwrap_or_default();
            for (user, name, is_typing) in self.typing.apply_room(*room, &rows, now) {
                self.hub
                    .deliver(*room, typing_event(*room, user, name.as_deref(), is_typing));
            }
        }
        Ok(())
    }

    /// Ends a user's typing indicator here without a read (they left the room).
    pub(super) fn stop_typing(&self, room: RoomId, user: UserId) {
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

/// Ends typing indicators whose rows ran out, on this daemon's sockets, and forgets
/// old throttle entries.
pub async fn expire_typing(
    hub: Arc<Hub>,
    typing: Arc<TypingTracker>,
    throttle: Arc<TypingThrottle>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let now = Instant::now();
        for (room, user, name) in typing.expire(now) {
            hub.deliver(room, typing_event(room, user, name.as_deref(), false));
        }
        throttle.prune(now);
        hub.flush();
    }
}
