//! Memberships as the relay sees them: a member's sockets here are told when they join a
//! room (`room`) and leave one (`room_left`), also for rooms nobody here follows, and
//! after a LISTEN loss every subscription is checked against the table.

use std::time::Duration;

use serde_json::json;

use super::Relay;
use crate::db::DbError;
use crate::hub::UserId;
use crate::protocol::{self, RoomId};

/// A membership change rung again after this long is not told to the member again.
const MEMBER_CHANGE_FRESH_MS: i64 = 60_000;

impl Relay {
    /// Membership changes in rooms nobody here follows, by their (room, rev): read in one
    /// statement, and each new member with sockets here is told about the room.
    pub(super) async fn member_changes(&self, changes: &[(RoomId, i64)]) -> Result<(), DbError> {
        let users = self.hub.user_ids();
        if changes.is_empty() || users.is_empty() {
            return Ok(());
        }
        let (rooms, revs): (Vec<RoomId>, Vec<i64>) = changes.iter().copied().unzip();
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached(
                "select room_id, rev, user_id, present, body, age_ms
                   from pgchat.member_changes_at($1, $2, $3)",
            )
            .await?;
        for row in client.query(&stmt, &[&rooms, &revs, &users]).await? {
            let (room, rev, user, present, body, age): (
                RoomId,
                i64,
                UserId,
                bool,
                Option<String>,
                i64,
            ) = (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            );
            if present && age < MEMBER_CHANGE_FRESH_MS {
                self.tell_joined(room, rev, user, body.as_deref().unwrap_or("null"));
            }
        }
        Ok(())
    }

    /// After a LISTEN loss that began at `lost_at`: rooms the users with sockets here
    /// joined meanwhile are told to them, as the doorbells would have (a room nobody
    /// here follows is read for no other reason). Already told joins are not told again.
    pub(super) async fn memberships_begun(
        &self,
        lost_at: std::time::SystemTime,
    ) -> Result<(), DbError> {
        let users = self.hub.user_ids();
        if users.is_empty() {
            return Ok(());
        }
        // A minute's margin for the clocks of the daemon's and the database's hosts.
        let since = lost_at - Duration::from_secs(60);
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached(
                "select room_id, rev, user_id, body from pgchat.memberships_begun_since($1, $2)",
            )
            .await?;
        let rows = client.query(&stmt, &[&users, &since]).await?;
        drop(client);
        for row in rows {
            // A room followed here is told by its change stream's catch-up, from the rev
            // read here on: a membership older than that is no news to anyone.
            if self.hub.position(row.get(0)).is_some() {
                continue;
            }
            let body: Option<String> = row.get(3);
            self.tell_joined(
                row.get(0),
                row.get(1),
                row.get(2),
                body.as_deref().unwrap_or("null"),
            );
        }
        Ok(())
    }

    /// The user became a member of the room: their sockets here list it at once.
    pub(super) fn tell_joined(&self, room: RoomId, rev: i64, user: UserId, room_json: &str) {
        if !self.hub.has_user(user) {
            return;
        }
        if self.told_joins.lock().unwrap().first_time(room, rev) {
            let frame = protocol::frame_with_raw("room", None, None, "room", room_json);
            self.hub.push_to_user(user, &frame, None);
        }
    }

    /// The user's membership ended: their sockets here stop receiving the room.
    /// Returns true when any was subscribed.
    pub(super) fn evict(&self, room: RoomId, user: UserId) -> bool {
        let evicted = self.hub.evict_user(room, user);
        let frame = protocol::frame("room_left", None, json!({"roomId": room}));
        for handle in &evicted {
            handle.push(frame.clone());
        }
        !evicted.is_empty()
    }

    /// Evicts every subscription whose membership ended while doorbells could be missed.
    pub(super) async fn recheck_memberships(&self) -> Result<(), DbError> {
        let pairs = self.hub.present_users();
        if pairs.is_empty() {
            return Ok(());
        }
        let (rooms, users): (Vec<RoomId>, Vec<UserId>) = pairs.iter().copied().unzip();
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select room_id, user_id from pgchat.memberships($1, $2)")
            .await?;
        let still: std::collections::HashSet<(RoomId, UserId)> = client
            .query(&stmt, &[&rooms, &users])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        drop(client);
        for (room, user) in pairs.into_iter().filter(|p| !still.contains(p)) {
            tracing::info!(room, user, "membership ended while LISTEN was down");
            if self.evict(room, user) {
                self.presence.depart(room, user).await;
            }
        }
        Ok(())
    }
}
