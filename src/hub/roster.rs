//! Who is online in a room, kept in memory from presence notifications, so that a
//! `joined` reply lists the room's online users without a query per join.
//!
//! Every daemon receives every presence change (one NOTIFY per batch, in commit order).
//! A room's roster is loaded from PostgreSQL once, when a join finds none, and kept
//! up to date from those notifications for as long as the room has sockets here.
//! Changes that arrive while the load runs are held and applied on top of it: the
//! load's snapshot reflects some prefix of the changes, the held ones are a suffix
//! that starts no later, and a user's state is that of their last change, so applying
//! the suffix again over the snapshot gives the present state.
//!
//! A lost LISTEN connection means changes were missed: every roster is dropped, and
//! none is kept until LISTEN is back (joins then ask PostgreSQL, as before).
//!
//! Each user is kept as their `online` list entry, serialised when they come online, so
//! a join's list is a concatenation under the lock: in a join storm of 5,000 the lists
//! add up to 12.5 M entries, and building a JSON value for each was a third of the
//! daemon's CPU.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Hub, UserId};
use crate::protocol::RoomId;

/// A display name; shared, so that a join copies the roster out cheaply.
pub type Name = Option<Arc<str>>;

pub(super) enum Roster {
    /// Being loaded by the join that holds `epoch`; changes wait here meanwhile, and so
    /// do other joins: `done` is closed when the load ends, however it ends.
    Loading {
        epoch: u64,
        held: Vec<(UserId, Name, bool)>,
        done: Arc<tokio::sync::Semaphore>,
    },
    /// User → their `online` entry, `{"id":…,"name":…}`.
    Ready(BTreeMap<UserId, Box<str>>),
}

impl Roster {
    pub(super) fn apply(&mut self, user: UserId, name: Name, online: bool) {
        match self {
            Roster::Loading { held, .. } => held.push((user, name, online)),
            Roster::Ready(users) => {
                if online {
                    users.insert(user, entry_json(user, name.as_deref()));
                } else {
                    users.remove(&user);
                }
            }
        }
    }

    /// The loaded snapshot with the held changes applied, if this is still the load
    /// started at `epoch`.
    pub(super) fn finish_load(&mut self, epoch: u64, snapshot: Vec<(UserId, Name)>) -> bool {
        let Roster::Loading {
            epoch: e,
            held,
            done,
        } = self
        else {
            return false;
        };
        if *e != epoch {
            return false;
        }
        done.close();
        let held = std::mem::take(held);
        *self = Roster::Ready(
            snapshot
                .into_iter()
                .map(|(id, name)| (id, entry_json(id, name.as_deref())))
                .collect(),
        );
        for (user, name, online) in held {
            self.apply(user, name, online);
        }
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
                    held: Vec::new(),
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
            (Some(roster), Some(snapshot)) => roster.finish_load(load, snapshot),
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

    /// A user's room-wide presence changed (from a presence notification).
    pub fn presence_changed(
        &self,
        room_id: RoomId,
        user: UserId,
        name: Option<&str>,
        online: bool,
    ) {
        let mut rooms = self.rooms.lock().unwrap();
        if let Some(roster) = rooms.get_mut(&room_id).and_then(|r| r.roster.as_mut()) {
            roster.apply(user, name.map(Arc::from), online);
        }
    }

    /// LISTEN is down (changes may be missed) or just came back: drop every roster, and
    /// keep new ones only while `listening`.
    pub fn reset_rosters(&self, listening: bool) {
        let mut rooms = self.rooms.lock().unwrap();
        for room in rooms.values_mut() {
            if let Some(Roster::Loading { done, .. }) = room.roster.take() {
                done.close();
            }
        }
        self.rosters_on.store(listening, Ordering::Release);
    }
}

/// The `online` array of a `joined` reply from PostgreSQL's answer: `users` plus `me`
/// (whose own arrival may still be on its way), by id.
pub fn online_json(mut users: Vec<(UserId, Name)>, me: (UserId, Option<&str>)) -> String {
    users.sort_unstable_by_key(|(id, _)| *id);
    users.dedup_by_key(|(id, _)| *id);
    let entries: Vec<(UserId, Box<str>)> = users
        .into_iter()
        .map(|(id, name)| (id, entry_json(id, name.as_deref())))
        .collect();
    online_array(
        entries.iter().map(|(id, entry)| (*id, &**entry)),
        entries.len(),
        (me.0, &entry_json(me.0, me.1)),
    )
}

/// One user's entry in an `online` array.
fn entry_json(id: UserId, name: Option<&str>) -> Box<str> {
    crate::protocol::user_json(id, name)
        .to_string()
        .into_boxed_str()
}

/// Joins entries, in ascending id order, into a JSON array, with `me` put in its place
/// unless an entry of theirs is there already (the stored name wins over the token's).
fn online_array<'a>(
    entries: impl Iterator<Item = (UserId, &'a str)>,
    count: usize,
    me: (UserId, &str),
) -> String {
    let mut out = String::with_capacity((count + 1) * (me.1.len() + 8) + 2);
    let put = |out: &mut String, entry: &str| {
        out.push(if out.is_empty() { '[' } else { ',' });
        out.push_str(entry);
    };
    let mut me_pending = true;
    for (id, entry) in entries {
        if me_pending && me.0 <= id {
            if me.0 < id {
                put(&mut out, me.1);
            }
            me_pending = false;
        }
        put(&mut out, entry);
    }
    if me_pending {
        put(&mut out, me.1);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &Roster) -> Vec<UserId> {
        r.users().expect("ready").keys().copied().collect()
    }

    #[test]
    fn changes_during_the_load_apply_over_the_snapshot() {
        let mut r = Roster::Loading {
            epoch: 7,
            held: Vec::new(),
            done: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        // Committed before the snapshot (already in it), delivered after the load began.
        r.apply(1, Some("a".into()), true);
        // Committed after the snapshot.
        r.apply(2, Some("b".into()), false);
        r.apply(3, Some("c".into()), true);
        assert!(r.users().is_none(), "not ready while loading");
        assert!(r.finish_load(7, vec![(1, Some("a".into())), (2, Some("b".into()))]));
        assert_eq!(names(&r), [1, 3]);
        r.apply(1, None, false);
        assert_eq!(names(&r), [3]);
    }

    #[test]
    fn a_stale_load_does_not_install() {
        let mut r = Roster::Loading {
            epoch: 2,
            held: Vec::new(),
            done: Arc::new(tokio::sync::Semaphore::new(0)),
        };
        assert!(!r.finish_load(1, vec![(5, None)]));
        assert!(r.users().is_none());
    }

    #[test]
    fn online_json_adds_me_once_and_sorts() {
        let n = |s: &str| Some(Arc::<str>::from(s));
        let json = online_json(vec![(9, n("Zed")), (2, n("Bo"))], (5, Some("Me")));
        assert_eq!(
            json,
            r#"[{"id":2,"name":"Bo"},{"id":5,"name":"Me"},{"id":9,"name":"Zed"}]"#
        );
        let json = online_json(vec![(5, n("Stored"))], (5, Some("Token")));
        assert_eq!(json, r#"[{"id":5,"name":"Stored"}]"#);
        assert_eq!(online_json(vec![], (5, None)), r#"[{"id":5,"name":null}]"#);
        let json = online_json(vec![(1, n("A\"q")), (3, None)], (7, Some("Z")));
        assert_eq!(
            json,
            r#"[{"id":1,"name":"A\"q"},{"id":3,"name":null},{"id":7,"name":"Z"}]"#
        );
    }
}
