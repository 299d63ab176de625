//! Presence doorbells. Each room-wide presence change takes the room's next presence
//! rev and is logged (sql/060), like the room change stream: a doorbell makes the relay
//! read, in one query per burst, the changes after the rev each room's roster reflects,
//! and announce who came and went (`user_joined` / `user_left`). A room without a known
//! rev (new here, after a lost LISTEN, or whose log was pruned past its rev) is read
//! whole, installed as its roster, and its difference from the roster it replaces is
//! announced. A forged doorbell reads nothing new and announces nothing.

use std::collections::HashMap;
use std::sync::Arc;

use super::Relay;
use crate::db::DbError;
use crate::hub::{Event, Name, PresenceEntry, UserId};
use crate::protocol::{self, user_json, RoomId};

/// A room's presence read whole, at its presence rev.
#[derive(Default)]
struct Snapshot {
    rev: i64,
    users: Vec<(UserId, Name)>,
}

impl Relay {
    /// Reads what changed in the rooms' presence since each roster's rev.
    pub(super) async fn read_presence(&self, rooms: &[RoomId]) -> Result<(), DbError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let (known, mut whole) = self.hub.presence_positions(rooms);
        if !known.is_empty() {
            let mut changes = self.presence_after(&known).await?;
            for (room, after) in known {
                let Some(list) = changes.remove(&room) else {
                    continue; // nothing new: a forged or repeated doorbell
                };
                match self.hub.apply_presence_changes(room, after, &list) {
                    Some(came_and_went) => self.announce_presence(room, came_and_went),
                    None => whole.push(room),
                }
            }
        }
        self.read_presence_whole(&whole).await
    }

    /// Reads the rooms' presence whole and installs it as their rosters.
    pub(super) async fn read_presence_whole(&self, rooms: &[RoomId]) -> Result<(), DbError> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut snapshots = self.presence_snapshot(rooms).await?;
        for room in rooms {
            let snapshot = snapshots.remove(room).unwrap_or_default();
            let came_and_went =
                self.hub
                    .install_presence(*room, snapshot.users, Some(snapshot.rev));
            self.announce_presence(*room, came_and_went);
        }
        Ok(())
    }

    fn announce_presence(&self, room: RoomId, came_and_went: Vec<(UserId, Name, bool)>) {
        let events: Vec<Event> = came_and_went
            .into_iter()
            .map(|(user, name, arrived)| {
                if !arrived {
                    self.stop_typing(room, user);
                }
                presence_event(room, user, name.as_deref(), arrived)
            })
            .collect();
        if !events.is_empty() {
            self.hub.announce(room, &events);
        }
    }

    /// The presence changes of each room after the rev given for it, in rev order.
    async fn presence_after(
        &self,
        rooms: &[(RoomId, i64)],
    ) -> Result<HashMap<RoomId, Vec<PresenceEntry>>, DbError> {
        let (ids, afters): (Vec<RoomId>, Vec<i64>) = rooms.iter().copied().unzip();
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached(
                "select room_id, rev, user_id, online, name from pgchat.presence_after($1, $2)",
            )
            .await?;
        let mut out: HashMap<RoomId, Vec<PresenceEntry>> = HashMap::new();
        for row in client.query(&stmt, &[&ids, &afters]).await? {
            let name: Option<String> = row.get(4);
            out.entry(row.get(0)).or_default().push(PresenceEntry {
                rev: row.get(1),
                user: row.get(2),
                online: row.get(3),
                name: name.map(Arc::from),
            });
        }
        Ok(out)
    }

    /// Who is online in each of these rooms, with the room's presence rev, in one
    /// snapshot.
    async fn presence_snapshot(
        &self,
        rooms: &[RoomId],
    ) -> Result<HashMap<RoomId, Snapshot>, DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select room_id, rev, user_id, name from pgchat.presence_snapshot($1)")
            .await?;
        let mut out: HashMap<RoomId, Snapshot> = HashMap::new();
        for row in client.query(&stmt, &[&rooms]).await? {
            let entry = out.entry(row.get(0)).or_default();
            entry.rev = row.get(1);
            if let Some(user) = row.get::<_, Option<UserId>>(2) {
                let name: Option<String> = row.get(3);
                entry.users.push((user, name.map(Arc::from)));
            }
        }
        Ok(out)
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
