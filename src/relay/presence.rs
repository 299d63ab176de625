//! Presence doorbells: the rooms' presence is read from `pgchat.presence` in one query
//! per burst, installed as each room's roster, and who came and went since the roster
//! it replaces is announced (`user_joined` / `user_left`). A forged doorbell reads the
//! same state again and announces nothing.

use super::Relay;
use crate::db::DbError;
use crate::hub::Event;
use crate::protocol::{self, user_json, RoomId};

impl Relay {
    pub(super) async fn read_presence(&self, rooms: &[RoomId]) -> Result<(), DbError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut online = self.presence.online_in(rooms).await?;
        for room in rooms {
            let snapshot = online.remove(room).unwrap_or_default();
            let events: Vec<Event> = self
                .hub
                .apply_presence(*room, snapshot)
                .into_iter()
                .map(|(user, name, arrived)| {
                    if !arrived {
                        self.stop_typing(*room, user);
                    }
                    presence_event(*room, user, name.as_deref(), arrived)
                })
                .collect();
            if !events.is_empty() {
                self.hub.announce(*room, &events);
            }
        }
        Ok(())
    }
}

/// `user_joined` / `user_left` for everyone in the room but that user.
pub fn presence_event(room: RoomId, user: i64, name: Option<&str>, arrived: bool) -> Event {
    let kind = if arrived { "user_joined" } else { "user_left" };
    let frame = protocol::frame(
        kind,
        None,
        serde_json::json!({"roomId": room, "user": user_json(user, name)}),
    );
    Event::ephemeral_to_others(user, frame)
}
