//! Presence and typing, shared by every daemon on the database.
//!
//! Presence lives in PostgreSQL (`pgchat.presence`, sql/060): each daemon records which
//! users it holds sockets for, per room; the SQL functions announce `user_joined` /
//! `user_left` once per user across all daemons, and sweep daemons that stop
//! heartbeating. Typing is relayed by NOTIFY and expires on every daemon by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::{Db, DbError, RawJson};
use crate::hub::UserId;
use crate::protocol::RoomId;

/// A typing indicator not refreshed within this time ends by itself.
pub const TYPING_TTL: Duration = Duration::from_secs(5);
/// How often a daemon proves it is alive; peers silent for 3× this are swept.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

pub struct Presence {
    db: Db,
    /// This daemon's id in `pgchat.daemons` (a random UUID per process).
    daemon_id: String,
}

impl Presence {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            daemon_id: random_uuid(),
        }
    }

    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    /// Marks the user present in the room and returns the room's online users as JSON.
    pub async fn join(&self, room: RoomId, user: UserId) -> Result<RawJson, DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.presence_join($1::text::uuid, $2, $3)")
            .await?;
        let row = client
            .query_one(&stmt, &[&self.daemon_id, &room, &user])
            .await?;
        Ok(row.get(0))
    }

    /// The room's online users as JSON, without changing presence (a second socket of
    /// a user who is already present).
    pub async fn online(&self, room: RoomId) -> Result<RawJson, DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached(
                "select coalesce(json_agg(json_build_object('id', user_id, 'name', user_name)), '[]'::json)
                   from pgchat.presence_online($1)",
            )
            .await?;
        Ok(client.query_one(&stmt, &[&room]).await?.get(0))
    }

    pub async fn leave(&self, room: RoomId, user: UserId) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.presence_set($1::text::uuid, $2, $3, false)")
            .await?;
        client
            .execute(&stmt, &[&self.daemon_id, &room, &user])
            .await?;
        Ok(())
    }

    pub async fn heartbeat(&self) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let stale = format!("{} seconds", HEARTBEAT_EVERY.as_secs() * 3);
        client
            .execute(
                "select pgchat.daemon_heartbeat($1::text::uuid, $2::text::interval)",
                &[&self.daemon_id, &stale],
            )
            .await?;
        Ok(())
    }

    /// Clean shutdown: our users are announced gone now rather than after the sweep.
    pub async fn stop(&self) -> Result<(), DbError> {
        let client = self.db.client().await?;
        client
            .execute(
                "select pgchat.daemon_stop($1::text::uuid)",
                &[&self.daemon_id],
            )
            .await?;
        Ok(())
    }

    /// Relays a typing change to every daemon (NOTIFY). The caller checked membership.
    pub async fn typing(&self, room: RoomId, user: UserId, is_typing: bool) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.notify_typing($1, $2, $3)")
            .await?;
        client.execute(&stmt, &[&room, &user, &is_typing]).await?;
        Ok(())
    }
}

fn random_uuid() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A typing user's deadline and display name.
type TypingEntry = (Instant, Option<String>);

/// Who is typing where, so indicators end by themselves when refreshes stop.
#[derive(Default)]
pub struct TypingTracker {
    // std Mutex: only short map updates under it.
    active: Mutex<HashMap<(RoomId, UserId), TypingEntry>>,
}

impl TypingTracker {
    /// Records a typing change seen on the channel. Returns false for a redundant stop.
    pub fn update(
        &self,
        room: RoomId,
        user: UserId,
        name: Option<String>,
        is_typing: bool,
        now: Instant,
    ) -> bool {
        let mut active = self.active.lock().unwrap();
        if is_typing {
            active.insert((room, user), (now + TYPING_TTL, name));
            true
        } else {
            active.remove(&(room, user)).is_some()
        }
    }

    /// Ends typing for a user without a frame of their own (they sent a message or left).
    pub fn clear(&self, room: RoomId, user: UserId) -> Option<Option<String>> {
        self.active
            .lock()
            .unwrap()
            .remove(&(room, user))
            .map(|(_, name)| name)
    }

    /// Removes and returns indicators whose time ran out.
    pub fn expire(&self, now: Instant) -> Vec<(RoomId, UserId, Option<String>)> {
        let mut active = self.active.lock().unwrap();
        let expired: Vec<(RoomId, UserId)> = active
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        expired
            .into_iter()
            .filter_map(|k| active.remove(&k).map(|(_, name)| (k.0, k.1, name)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_expires_by_itself_and_refresh_extends_it() {
        let t = TypingTracker::default();
        let start = Instant::now();
        assert!(t.update(1, 2, Some("A".into()), true, start));
        assert!(t.expire(start + Duration::from_secs(4)).is_empty());
        t.update(1, 2, Some("A".into()), true, start + Duration::from_secs(4));
        assert!(
            t.expire(start + Duration::from_secs(6)).is_empty(),
            "refreshed at 4 s"
        );
        let gone = t.expire(start + Duration::from_secs(10));
        assert_eq!(gone, vec![(1, 2, Some("A".into()))]);
        assert!(
            !t.update(1, 2, None, false, start),
            "stop after expiry is redundant"
        );
    }

    #[test]
    fn uuids_are_well_formed_and_distinct() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
    }
}
