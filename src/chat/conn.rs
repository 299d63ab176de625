//! One connection's state, whatever its transport: who it is, the rooms it joined, its
//! rate-limit strikes, and its hold on the server's capacity.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::admission::Ticket;
use crate::app::App;
use crate::auth::Identity;
use crate::hub::{PresenceChange, SessionHandle};
use crate::protocol::{close, RoomId};

/// Rate-limit refusals tolerated per minute before the connection is closed.
const MAX_STRIKES: u32 = 10;

pub struct Conn {
    /// Where the hub queues this connection's live events (and how it is killed).
    pub handle: Arc<SessionHandle>,
    pub(crate) identity: Option<Identity>,
    /// Rooms this connection joined (the hub may have evicted some since).
    pub(crate) rooms: JoinedRooms,
    strikes: u32,
    strike_window: Instant,
    /// The connection's hold on the server's capacity, given back when it ends; it
    /// leaves the unauthenticated pool when the connection authenticates.
    pub(crate) ticket: Option<Ticket>,
}

impl Conn {
    /// A new connection. `fd` is its socket's descriptor when fan-outs may write to it
    /// directly; `ticket` is its admission, if it holds one.
    pub fn new(app: &App, fd: Option<std::os::fd::RawFd>, mut ticket: Option<Ticket>) -> Conn {
        let conn_id = app.next_conn_id();
        let handle = Arc::new(SessionHandle::new(conn_id, app.config.outbound_queue, fd));
        // Evicted while upgrading: another client has its place; it ends at once.
        if ticket.as_mut().is_some_and(|t| !t.attach(&handle)) {
            handle.kill(close::TRY_AGAIN_LATER);
        }
        Conn {
            handle,
            identity: None,
            rooms: JoinedRooms::default(),
            strikes: 0,
            strike_window: Instant::now(),
            ticket,
        }
    }

    /// Who the connection authenticated as, if it did.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Why the connection must end (killed as a slow consumer, for its rate, evicted…).
    pub fn close_code(&self) -> Option<u16> {
        self.handle.close_code()
    }

    /// Counts a rate-limit refusal; too many in a minute ends the connection.
    pub(crate) fn strike(&mut self) -> bool {
        if self.strike_window.elapsed() > Duration::from_secs(60) {
            self.strikes = 0;
            self.strike_window = Instant::now();
        }
        self.strikes += 1;
        if self.strikes > MAX_STRIKES {
            self.handle.kill(close::RATE_LIMITED);
            return false;
        }
        true
    }

    /// The key of the user's rate limit.
    pub(crate) fn user_key(&self) -> String {
        let id = self.identity.as_ref().expect("authenticated");
        id.user_id
            .map_or_else(|| id.claims_json.clone(), |u| u.to_string())
    }

    /// The connection ended: leaves every room (announcing departures) and forgets it.
    pub async fn end(&mut self, app: &App) {
        let Some(user) = self.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        let conn = self.handle.conn_id;
        // On shutdown the daemon clears all its presence at once (Presence::stop).
        let announce = !app.shutdown.is_cancelled();
        for room in self.rooms.take_all() {
            if app.hub.unsubscribe(room, conn) == PresenceChange::Departed && announce {
                app.presence.depart(room, user).await;
            }
        }
        app.hub.remove_user_socket(user, conn);
    }
}

/// Rooms one connection joined: a handful, so a vector rather than a hash table.
/// (Typing is throttled per user and room, across connections: see `typing_throttle`.)
#[derive(Default)]
pub(crate) struct JoinedRooms(Vec<RoomId>);

impl JoinedRooms {
    pub(crate) fn insert(&mut self, room: RoomId) {
        if !self.0.contains(&room) {
            self.0.push(room);
        }
    }

    pub(crate) fn remove(&mut self, room: &RoomId) {
        self.0.retain(|r| r != room);
    }

    /// Every joined room, leaving none.
    pub(crate) fn take_all(&mut self) -> Vec<RoomId> {
        std::mem::take(&mut self.0)
    }
}
