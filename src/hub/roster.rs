//! Who is online in a room, kept in memory from presence notifications, so that a
//! `joined` reply lists the room's online users without a query per join.
//!
//! A room's roster is loaded from PostgreSQL when a join finds none. After that, every
//! presence doorbell for the room makes the relay read the room's presence from the
//! table and install it here ([`Hub::apply_presence`]); the difference from the roster
//! it replaces is what gets announced. A daemon's own arrivals are applied at once
//! ([`Hub::local_arrival`]), and its own subscribers always count as online, so a
//! read that overtakes their presence rows does not announce them gone.
//!
//! A lost LISTEN connection means doorbells were missed: joins ask PostgreSQL until it
//! is back and presence has been read again, compared with the rosters kept meanwhile.
//!
//! Each user is kept as their `online` list entry, serialised when they come online, so
//! a join's list is a concatenation under the lock: in a join storm of 5,000 the lists
//! add up to 12.5 M entries, and building a JSON value for each was a third of the
//! daemon's CPU.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::online_list::{entry_json, name_of, online_array};
use super::{Hub, Room, UserId};
use crate::protocol::RoomId;

/// A display name; shared, so that a join copies the roster out cheaply.
pub type Name = Option<Arc<str>>;

pub(super) enum Roster {
    /// Being loaded by the join that holds `epoch`; other joins wait for it: `done` is
    /// closed when the load ends, however it ends (a presence read may also end it).
    Loading {
        epoch: u64,
        done: Arc<tokio::sync::Semaphore>,
    },
    /// User → their `online` entry, `{"id":…,"name":…}`.
    Ready(BTreeMap<UserId, Box<str>>),
}

impl Roster {
    /// Installs the loaded snapshot, if this is still the load started at `epoch`.
    pub(super) fn finish_load(&mut self, epoch: u64, snapshot: Vec<(UserId, Name)>) -> bool {
        let Roster::Loading { epoch: e, done } = self else {
            return false;
        };
        if *e != epoch {
            return false;
        }
        done.close();
        *self = Roster::Ready(
            snapshot
                .into_iter()
                .map(|(id, name)| (id, entry_json(id, name.as_deref())))
                .collect(),
        );
        true
    }

    #[cfg(test)]
    pub(super) fn users(&self) -> Option<&BTreeMap<UserId, Box<str>>> {
        match self {
            Roster::Ready(users) => Some(users),
            Roster::Loading { .. } => None,
        }
    }
}

/// Where a joining socket gets the room's online users from.
pub enum Online {
    /// The roster as the `online` array, with the joining user added if not listed yet
    /// (their own arrival may still be on its way).
    Known(String),
    /// Nobody has loaded it: load it and hand it over with [`Hub::roster_loaded`].
    Load(u64),
    /// Another join is loading it: wait for `acquire` on this to fail (the load ended),
    /// then ask again.
    Wait(Arc<tokio::sync::Semaphore>),
    /// LISTEN is down: ask PostgreSQL without keeping the answer.
    Ask,
}

/// The hub's side of rosters: one per room with sockets here, under the rooms lock.
impl Hub {
    /// The room's online users, from memory when its roster is loaded; `me` is the
    /// joining user and their name.
    pub fn online(&self, room_id: RoomId, me: (UserId, Option<&str>)) -> Online {
        let me = (me.0, entry_json(me.0, me.1));
        let mut rooms = self.rooms.lock().unwrap();
        if !self.rosters_on.load(Ordering::Acquire) {
            return Online::Ask;
        }
        let Some(room) = rooms.get_mut(&room_id) else {
            return Online::Ask;
        };
        match &room.roster {
            Some(Roster::Ready(users)) => Online::Known(online_array(
                users.iter().map(|(id, entry)| (*id, &**entry)),
                users.len(),
                (me.0, &me.1),
            )),
            Some(Roster::Loading { done, .. }) => Online::Wait(done.clone()),
            None => {
                let load = self.roster_loads.fetch_add(1, Ordering::Relaxed);
                room.roster = Some(Roster::Loading {
                    epoch: load,
                    done: Arc::new(tokio::sync::Semaphore::new(0)),
                });
                Online::Load(load)
            }
        }
    }

    /// A roster load finished: `Some(snapshot)`, or `None` when it failed.
    pub fn roster_loaded(&self, room_id: RoomId, load: u64, snapshot: Option<Vec<(UserId, Name)>>) {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get_mut(&room_id) else {
            return;
        };
        let installed = match (&mut room.roster, snapshot) {
            (Some(roster), Some(snapshot)) => {
                if roster.finish_load(load, snapshot.clone()) {
                    true
                } else {
                    // A presence read installed the roster meanwhile; it may have overtaken
                    // the rows of subscribers here, which the load listed with their names.
                    if let Roster::Ready(users) = roster {
                        for (id, name) in snapshot {
                            if room.subscribers.values().any(|s| s.user_id == id) {
                                users
                                    .entry(id)
                                    .or_insert_with(|| entry_json(id, name.as_deref()));
                            }
                        }
                    }
                    false
                }
            }
            _ => false,
        };
        if !installed {
            if let Some(Roster::Loading { epoch, done, .. }) = &room.roster {
                if *epoch == load {
                    // Ours failed: let waiters ask PostgreSQL, and the next join retry.
                    done.close();
                    room.roster = None;
                }
            }
        }
    }

    /// The room's presence as read from PostgreSQL after a doorbell (`snapshot`, every
    /// daemon's users), with this daemon's own subscribers added (their rows may still
    /// be on their way): installs it as the roster and returns who came and went since
    /// the roster it replaces, to be announced. With no roster to compare, nothing is.
    pub fn apply_presence(
        &self,
        room_id: RoomId,
        snapshot: Vec<(UserId, Name)>,
    ) -> Vec<(UserId, Name, bool)> {
        self.install_presence(room_id, snapshot, None)
    }

    /// [`Hub::apply_presence`] of a snapshot read at the room's presence rev `rev`: from
    /// then on the room's presence changes after it are enough
    /// ([`Hub::apply_presence_changes`]).
    pub fn install_presence(
        &self,
        room_id: RoomId,
        snapshot: Vec<(UserId, Name)>,
        rev: Option<i64>,
    ) -> Vec<(UserId, Name, bool)> {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(room) = rooms.get_mut(&room_id) else {
            return Vec::new();
        };
        room.presence_rev = rev;
        let mut now: BTreeMap<UserId, Box<str>> = snapshot
            .iter()
            .map(|(id, name)| (*id, entry_json(*id, name.as_deref())))
            .collect();
        let old = match room.roster.take() {
            Some(Roster::Ready(users)) => Some(users),
            Some(Roster::Loading { done, .. }) => {
                done.close();
                None
            }
            None => None,
        };
        // Subscribers here whose rows a read overtook stay listed (a new one is listed by
        // `local_arrival`, or by the read after its row is written).
        if let Some(old) = &old {
            for sub in room.subscribers.values() {
                if let Some(entry) = old.get(&sub.user_id) {
                    now.entry(sub.user_id).or_insert_with(|| entry.clone());
                }
            }
        }
        let mut changes = Vec::new();
        if let Some(old) = &old {
            let names: BTreeMap<UserId, &Name> = snapshot.iter().map(|(id, n)| (*id, n)).collect();
            for id in now.keys().filter(|id| !old.contains_key(id)) {
                changes.push((
                    *id,
                    names.get(id).map(|n| (*n).clone()).unwrap_or(None),
                    true,
                ));
            }
            for (id, entry) in old.iter().filter(|(id, _)| !now.contains_key(id)) {
                changes.push((*id, name_of(entry), false));
            }
        }
        room.roster = Some(Roster::Ready(now));
        changes
    }

    /// Which of `rooms` have a roster at a known presence rev, with that rev (their
    /// changes after it are enough); the others must be read whole.
    pub fn presence_positions(&self, rooms: &[RoomId]) -> (Vec<(RoomId, i64)>, Vec<RoomId>) {
        let guard = self.rooms.lock().unwrap();
        let mut known = Vec::new();
        let mut whole = Vec::new();
        for id in rooms {
            match guard.get(id) {
                Some(Room {
                    roster: Some(Roster::Ready(_)),
                    presence_rev: Some(rev),
                    ..
                }) => known.push((*id, *rev)),
                Some(_) => whole.push(*id),
                None => {}
            }
        }
        (known, whole)
    }

    /// Applies the room's presence changes read after rev `after`, in rev order: who
    /// came and went, to be announced. `None` when they cannot be applied (the roster
    /// moved on from `after`, or the revs do not follow on: the log was pruned or
    /// emptied), and the room must be read whole. A user with a socket subscribed here
    /// stays listed, as in [`Hub::apply_presence`].
    pub fn apply_presence_changes(
        &self,
        room_id: RoomId,
        after: i64,
        changes: &[PresenceEntry],
    ) -> Option<Vec<(UserId, Name, bool)>> {
        let mut rooms = self.rooms.lock().unwrap();
        let room = rooms.get_mut(&room_id)?;
        let follows = changes
            .iter()
            .enumerate()
            .all(|(i, c)| c.rev == after + 1 + i as i64);
        if room.presence_rev != Some(after) || !follows {
            return None;
        }
        let Some(Roster::Ready(users)) = &mut room.roster else {
            return None;
        };
        let mut out = Vec::new();
        for c in changes {
            if c.online {
                if let std::collections::btree_map::Entry::Vacant(e) = users.entry(c.user) {
                    e.insert(entry_json(c.user, c.name.as_deref()));
                    out.push((c.user, c.name.clone(), true));
                }
            } else if !room.subscribers.values().any(|s| s.user_id == c.user) {
                if let Some(entry) = users.remove(&c.user) {
                    out.push((c.user, name_of(&entry), false));
                }
            }
        }
        room.presence_rev = changes.last().map(|c| c.rev).or(Some(after));
        Some(out)
    }

    /// The user's first socket here joined the room: they are online now, whatever the
    /// table says yet. Returns true when the roster did not list them (announce them to
    /// the others here at once; other daemons learn it from the presence doorbell).
    pub fn local_arrival(&self, room_id: RoomId, user: UserId, name: Option<&str>) -> bool {
        let mut rooms = self.rooms.lock().unwrap();
        if !self.rosters_on.load(Ordering::Acquire) {
            return false;
        }
        match rooms.get_mut(&room_id).and_then(|r| r.roster.as_mut()) {
            Some(Roster::Ready(users)) if !users.contains_key(&user) => {
                users.insert(user, entry_json(user, name));
                true
            }
            _ => false,
        }
    }

    /// LISTEN is down (changes may be missed) or just came back. While it is down, joins
    /// ask PostgreSQL; loaded rosters stay, as the state to compare with once presence
    /// is read again (so who came and went meanwhile is announced).
    pub fn reset_rosters(&self, listening: bool) {
        let mut rooms = self.rooms.lock().unwrap();
        for room in rooms.values_mut() {
            // Changes may be missed (and an emptied log restarts its revs): read whole.
            room.presence_rev = None;
            if let Some(Roster::Loading { .. }) = &room.roster {
                if let Some(Roster::Loading { done, .. }) = room.roster.take() {
                    done.close();
                }
            }
        }
        self.rosters_on.store(listening, Ordering::Release);
    }
}

/// One room-wide presence change read from the room's presence log.
pub struct PresenceEntry {
    pub rev: i64,
    pub user: UserId,
    pub online: bool,
    pub name: Name,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &Roster) -> Vec<UserId> {
        r.users().expect("ready").keys().copied().collect()
    }

    #[test]
    fn a_load_installs_its_snapshot() {
        let mut r = Roster::Loading {
            epoch: 7,
            done: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        assert!(r.users().is_none(), "not ready while loading");
        assert!(r.finish_load(7, vec![(1, Some("a".into())), (3, Some("c".into()))]));
        assert_eq!(names(&r), [1, 3]);
    }

    #[test]
    fn a_stale_load_does_not_install() {
        let mut r = Roster::Loading {
            epoch: 2,
            done: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        assert!(!r.finish_load(1, vec![(5, None)]));
        assert!(r.users().is_none());
    }
}
