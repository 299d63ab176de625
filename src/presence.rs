//! Presence and typing, shared by every daemon on the database.
//!
//! Presence lives in PostgreSQL (`pgchat.presence`, sql/060): each daemon records which
//! users it holds sockets for, per room; the SQL functions announce `user_joined` /
//! `user_left` once per user across all daemons, and sweep daemons that stop
//! heartbeating. Typing is a row written as the user (`private.typing`, sql/060); every
//! daemon reads it after a doorbell and ends indicators by themselves when they expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, DbError, RawJson};
use crate::hub::{Name, UserId};
use crate::protocol::RoomId;

/// How long a typing row lives in the database after each write (`api.set_typing`
/// writes `expires_at` as now() + 5 s). A daemon's indicator ends at the row's expiry,
/// or earlier when `TYPING_TTL_MS` is shorter.
pub const TYPING_ROW_TTL: Duration = Duration::from_secs(5);
/// How often a daemon proves it is alive; peers silent for 3× this are swept.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

pub struct Presence {
    db: Db,
    /// This daemon's id in `pgchat.daemons` (a random UUID per process).
    daemon_id: String,
    changes: mpsc::Sender<Change>,
    /// Taken by [`Presence::run_batcher`].
    pending: Mutex<Option<mpsc::Receiver<Change>>>,
}

/// One user's presence in one room changing on this daemon.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Change {
    room: RoomId,
    user: UserId,
    online: bool,
}

/// Changes waiting to be written; beyond it, sessions wait (backpressure, not loss).
const CHANGE_BUFFER: usize = 65_536;
/// Changes written per transaction at most.
const MAX_BATCH: usize = 1000;
/// A batch smaller than [`GATHER_BELOW`] waits this long for more before it is written:
/// each batch is a commit taking PostgreSQL's NOTIFY lock and a doorbell every daemon
/// reads, and a join storm whose changes trickle in one by one would otherwise write
/// hundreds of batches of a few. Only other daemons wait for it: the local sockets are
/// told at once.
const GATHER: Duration = Duration::from_millis(10);
const GATHER_BELOW: usize = 100;

impl Presence {
    pub fn new(db: Db) -> Self {
        let (changes, pending) = mpsc::channel(CHANGE_BUFFER);
        Self {
            db,
            daemon_id: random_uuid(),
            changes,
            pending: Mutex::new(Some(pending)),
        }
    }

    pub fn daemon_id(&self) -> &str {
        &self.daemon_id
    }

    /// The user's first socket here joined the room. Written in the next batch; the
    /// batch's NOTIFY announces `user_joined` when no other daemon had them present.
    pub async fn arrive(&self, room: RoomId, user: UserId) {
        let _ = self
            .changes
            .send(Change {
                room,
                user,
                online: true,
            })
            .await;
    }

    /// The user's last socket here left the room.
    pub async fn depart(&self, room: RoomId, user: UserId) {
        let _ = self
            .changes
            .send(Change {
                room,
                user,
                online: false,
            })
            .await;
    }

    /// Who is online in the room now, according to PostgreSQL (all daemons), with
    /// `local`: this daemon's subscribers, whose rows may still be on their way.
    pub async fn online_snapshot(
        &self,
        room: RoomId,
        local: &[UserId],
    ) -> Result<Vec<(UserId, Name)>, DbError> {
        #[derive(serde::Deserialize)]
        struct Online {
            id: UserId,
            name: Option<String>,
        }
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.presence_online_plus($1, $2)")
            .await?;
        let raw: RawJson = client.query_one(&stmt, &[&room, &local]).await?.get(0);
        let users: Vec<Online> = serde_json::from_str(&raw.0)
            .map_err(|e| DbError::Unavailable(format!("malformed online list: {e}")))?;
        Ok(users
            .into_iter()
            .map(|u| (u.id, u.name.map(Arc::from)))
            .collect())
    }

    /// Writes queued changes in batches: whatever accumulated while the previous batch
    /// was being written (or within [`GATHER`] of a small batch's first change) goes in
    /// the next one, so a join storm costs few transactions.
    pub async fn run_batcher(self: Arc<Self>, cancel: CancellationToken) {
        let Some(mut pending) = self.pending.lock().unwrap().take() else {
            return;
        };
        let mut batch = Vec::with_capacity(64);
        loop {
            let got = tokio::select! {
                n = pending.recv_many(&mut batch, MAX_BATCH) => n,
                _ = cancel.cancelled() => return,
            };
            if got == 0 {
                return;
            }
            if got < GATHER_BELOW {
                tokio::select! {
                    _ = tokio::time::sleep(GATHER) => {}
                    _ = cancel.cancelled() => return,
                }
                while batch.len() < MAX_BATCH {
                    match pending.try_recv() {
                        Ok(change) => batch.push(change),
                        Err(_) => break,
                    }
                }
            }
            if let Err(e) = self.apply(&batch).await {
                tracing::warn!(error = %e, changes = batch.len(), "could not record presence changes");
            }
            batch.clear();
        }
    }

    async fn apply(&self, batch: &[Change]) -> Result<(), DbError> {
        let changes = serde_json::to_string(batch).map_err(|e| DbError::Internal(e.to_string()))?;
        let client = self.db.client().await?;
        let stmt = client
            .prepare_cached("select pgchat.presence_apply($1::text::uuid, $2::text::json)")
            .await?;
        client.execute(&stmt, &[&self.daemon_id, &changes]).await?;
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
pub struct TypingTracker {
    // std Mutex: only short map updates under it.
    active: Mutex<HashMap<(RoomId, UserId), TypingEntry>>,
    /// How long an indicator shows after its last write (`TYPING_TTL_MS`).
    ttl: Duration,
}

impl Default for TypingTracker {
    fn default() -> Self {
        Self::new(TYPING_ROW_TTL)
    }
}

impl TypingTracker {
    pub fn new(ttl: Duration) -> Self {
        Self {
            active: Mutex::default(),
            ttl: ttl.min(TYPING_ROW_TTL),
        }
    }

    /// The time an indicator still shows, given the time its row has left: the row was
    /// written `TYPING_ROW_TTL` before it expires, so with a shorter TTL the indicator
    /// ends that much earlier. The same row read twice gives the same deadline.
    fn shown_for(&self, row_left: Duration) -> Duration {
        row_left.saturating_sub(TYPING_ROW_TTL - self.ttl)
    }

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
            active.insert((room, user), (now + self.ttl, name));
            true
        } else {
            active.remove(&(room, user)).is_some()
        }
    }

    /// Installs who is typing in a room as read from the table (user, name, time left)
    /// and returns what changed: starts (true) and stops (false). A refresh of someone
    /// already typing only moves their deadline.
    pub fn apply_room(
        &self,
        room: RoomId,
        rows: &[(UserId, Option<String>, Duration)],
        now: Instant,
    ) -> Vec<(UserId, Option<String>, bool)> {
        let mut active = self.active.lock().unwrap();
        let mut changes = Vec::new();
        // A row whose indicator already ran out here counts as no row.
        let shown = |left: &Duration| !self.shown_for(*left).is_zero();
        for (user, name, left) in rows.iter().filter(|(_, _, left)| shown(left)) {
            let until = now + self.shown_for(*left);
            match active.get_mut(&(room, *user)) {
                Some(entry) => entry.0 = until,
                None => {
                    active.insert((room, *user), (until, name.clone()));
                    changes.push((*user, name.clone(), true));
                }
            }
        }
        let gone: Vec<UserId> = active
            .keys()
            .filter(|(r, u)| {
                *r == room && !rows.iter().any(|(user, _, left)| user == u && shown(left))
            })
            .map(|(_, u)| *u)
            .collect();
        for user in gone {
            if let Some((_, name)) = active.remove(&(room, user)) {
                changes.push((user, name, false));
            }
        }
        changes
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
    fn a_shorter_ttl_ends_indicators_early_and_rereads_do_not_extend_them() {
        let t = TypingTracker::new(Duration::from_millis(300));
        let start = Instant::now();
        let ms = Duration::from_millis;
        // Written 100 ms ago: the row has 4.9 s left, the indicator 200 ms.
        let started = t.apply_room(1, &[(2, Some("A".into()), ms(4900))], start);
        assert_eq!(started, vec![(2, Some("A".into()), true)]);
        // Read again 100 ms later (another user's doorbell): still 100 ms, not 300.
        assert!(t
            .apply_room(1, &[(2, None, ms(4800))], start + ms(100))
            .is_empty());
        assert!(t.expire(start + ms(150)).is_empty());
        assert_eq!(t.expire(start + ms(200)), vec![(1, 2, Some("A".into()))]);
        // A row whose indicator ran out here starts nothing.
        assert!(t.apply_room(1, &[(2, None, ms(4600))], start).is_empty());
        // The default TTL follows the row.
        let d = TypingTracker::default();
        d.apply_room(1, &[(2, None, ms(4900))], start);
        assert!(d.expire(start + ms(4800)).is_empty());
        assert_eq!(d.expire(start + ms(4900)).len(), 1);
    }

    #[test]
    fn uuids_are_well_formed_and_distinct() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_eq!(a.len(), 36);
        assert_ne!(a, b);
    }
}
