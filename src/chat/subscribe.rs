//! Joining and leaving a room's live stream on one socket.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use serde_json::Value;

use super::commands::Reply;
use super::replay::{Resume, REPLAY_LIMIT};
use super::{db_error, not_member, parse, Closed, Ctx, Replies};
use crate::app::App;
use crate::db::DbError;
use crate::hub::{online_json, Name, Online, PresenceChange, UserId};
use crate::protocol::{self, FrameError, RoomId};
use crate::relay::presence_event;

/// How long a join waits for another join's roster load before asking PostgreSQL.
const ROSTER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Who is online in the room, with `me`, as the `joined` reply's array: from the hub's
/// roster, loading it if nobody has, or from PostgreSQL while it cannot be kept (see
/// `hub::roster`).
async fn online_users(
    app: &App,
    room: RoomId,
    me: (UserId, Option<&str>),
) -> Result<String, DbError> {
    let hub = &app.hub;
    let presence = &app.presence;
    let mut online = hub.online(room, me);
    if let Online::Wait(load) = online {
        // Joins that arrive together share the first one's load.
        let _ = tokio::time::timeout(ROSTER_WAIT, load.acquire()).await;
        online = match hub.online(room, me) {
            Online::Wait(_) => Online::Ask,
            other => other,
        };
    }
    match online {
        Online::Known(online) => Ok(online),
        Online::Load(load) => {
            let guard = RosterLoad { hub, room, load };
            let snapshot = presence.online_snapshot(room, &hub.local_users(room)).await;
            guard.finish(snapshot.as_ref().ok().cloned());
            Ok(online_json(snapshot?, me))
        }
        Online::Ask | Online::Wait(_) => Ok(online_json(
            presence
                .online_snapshot(room, &hub.local_users(room))
                .await?,
            me,
        )),
    }
}

/// Ends a roster load as failed if it is dropped before finishing.
struct RosterLoad<'a> {
    hub: &'a crate::hub::Hub,
    room: RoomId,
    load: u64,
}

impl RosterLoad<'_> {
    /// Hands the load's result (`None`: it failed) to the hub.
    fn finish(self, snapshot: Option<Vec<(UserId, Name)>>) {
        self.hub.roster_loaded(self.room, self.load, snapshot);
        std::mem::forget(self);
    }
}

/// Should the joining future be dropped mid-load, the load ends as failed, so joins
/// waiting on it move on.
impl Drop for RosterLoad<'_> {
    fn drop(&mut self) {
        self.hub.roster_loaded(self.room, self.load, None);
    }
}

#[derive(Deserialize)]
struct LastSeq<'a> {
    last_seq: i64,
    last_rev: i64,
    /// The joining user's display name, as others see it.
    my_name: Option<String>,
    /// With `since`: the messages after it, up to `last_seq`, unless more than the
    /// replay limit.
    #[serde(borrow)]
    messages: Option<Vec<&'a RawValue>>,
}

/// Membership check and splice point in one read, as the user: RLS shows the room row
/// only to members. Leaner than `api.room_state` (no member count), as joins are hot.
const ROOM_LAST_SEQ_SQL: &str =
    "select json_build_object('last_seq', r.last_seq, 'last_rev', r.last_rev, \
     'my_name', private.display_name(api.current_user_id())) from api.chat_rooms r where r.id = $1";

/// The same for a join with `since` ($2), with the messages after it ($3: the replay
/// limit) read in the same statement, so in the same snapshot as `last_seq`: a resume
/// is one database call, not two. When a daemon dies, its sockets all resume on the
/// others at once, and each call of theirs waits its turn for a join permit.
const ROOM_LAST_SEQ_REPLAY_SQL: &str =
    "select json_build_object('last_seq', r.last_seq, 'last_rev', r.last_rev, \
     'my_name', private.display_name(api.current_user_id()), \
     'messages', case when r.last_seq > $2 and r.last_seq - $2 <= $3 \
                 then api.messages_since(r.id, $2, $3::int) end) \
     from api.chat_rooms r where r.id = $1";

impl<R: Replies> Ctx<'_, R> {
    /// Subscribes this socket to a room: membership is checked as the user, what was
    /// missed after `since` (seq) or `sinceRev` is replayed in order (unless it is more
    /// than the replay limit: then `joined` says `behind`), then live events flow.
    pub(crate) async fn join(
        &mut self,
        r: Option<&Value>,
        room_id: RoomId,
        since: Option<i64>,
        since_rev: Option<i64>,
    ) -> Result<Reply, Closed> {
        let Some(user) = self.conn.identity.as_ref().and_then(|i| i.user_id) else {
            tracing::info!(
                room = room_id,
                reason = "no user id in the token",
                "join refused"
            );
            return Ok(Err(not_member()));
        };
        let hub = self.app.hub.clone();
        let conn = self.conn.handle.conn_id;
        // Subscribe before reading the room's state, so nothing committed after the read
        // can be missed; events are held until activate().
        let change = hub.subscribe(room_id, user, self.conn.handle.clone());
        let resume = Resume::of(since, since_rev);
        let read = match resume {
            Some(Resume::Seq(since)) => {
                self.join_call(
                    "/chat_rooms",
                    ROOM_LAST_SEQ_REPLAY_SQL,
                    vec![Box::new(room_id), Box::new(since), Box::new(REPLAY_LIMIT)],
                )
                .await
            }
            _ => {
                self.join_call("/chat_rooms", ROOM_LAST_SEQ_SQL, vec![Box::new(room_id)])
                    .await
            }
        };
        let raw = match read {
            Ok(Some(raw)) => raw,
            Ok(None) => return self.abort_join(room_id, not_member()),
            Err(e) => return self.abort_join(room_id, e),
        };
        let state = match parse::<LastSeq>(&raw) {
            Ok(state) => state,
            Err(e) => return self.abort_join(room_id, e),
        };
        let (last_seq, last_rev, my_name) = (state.last_seq, state.last_rev, state.my_name);
        self.conn.rooms.insert(room_id);
        let behind = resume.is_some_and(|from| from.behind(last_seq, last_rev));
        let replayed = match resume {
            _ if behind => Ok(()),
            None => Ok(()),
            Some(Resume::Seq(_)) => {
                let messages = state.messages.unwrap_or_default();
                self.replay_messages(room_id, &messages).await?
            }
            Some(Resume::Rev(since, seq)) => self.replay_rev(room_id, since, seq, last_rev).await?,
        };
        if let Err(e) = replayed {
            return self.abort_join(room_id, e);
        }
        // Myself as the others see me (else as my token names me), when no other socket of
        // mine is listed yet.
        let me_name = my_name.or_else(|| self.conn.identity.as_ref().and_then(|i| i.name.clone()));
        if change == PresenceChange::Arrived {
            self.app.presence.arrive(room_id, user).await;
            // The others here see me at once; other daemons when my row is written.
            if hub.local_arrival(room_id, user, me_name.as_deref()) {
                // Announced by the relay with the other arrivals gathered meanwhile, and
                // written with its next flush of announcements (within ANNOUNCE_DELAY):
                // in a join storm, every join announcing to a big room under the hub's
                // lock and flushing it at once held the runtime's threads.
                self.app.wakes.announce_arrival(
                    room_id,
                    presence_event(room_id, user, me_name.as_deref(), true),
                );
            }
        }
        let me_name = me_name.as_deref();
        let online = match online_users(self.app, room_id, (user, me_name)).await {
            Ok(online) => online,
            Err(e) => return self.abort_join(room_id, db_error(e)),
        };
        let joined = format!(
            "{{\"type\":\"joined\"{},\"roomId\":{room_id},\"lastSeq\":{last_seq},\"lastRev\":{last_rev}{},\"online\":{online}}}",
            r.map(|v| format!(",\"ref\":{v}")).unwrap_or_default(),
            if behind { ",\"behind\":true" } else { "" },
        );
        self.reply(joined.into()).await?;
        if hub.activate(room_id, conn, last_seq, last_rev) {
            self.app.wakes.wake(room_id);
        }
        Ok(Ok(()))
    }

    fn abort_join(&mut self, room_id: RoomId, e: FrameError) -> Result<Reply, Closed> {
        let user = self.conn.identity.as_ref().and_then(|i| i.user_id);
        tracing::info!(user, room = room_id, code = e.code.as_str(), reason = %e.message, "join refused");
        self.app.hub.unsubscribe(room_id, self.conn.handle.conn_id);
        self.conn.rooms.remove(&room_id);
        Ok(Err(e))
    }

    /// Unsubscribes this socket from a room and announces departure if it was the last.
    pub(crate) async fn leave_locally(&mut self, room_id: RoomId) {
        self.conn.rooms.remove(&room_id);
        let Some(user) = self.conn.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        if self.app.hub.unsubscribe(room_id, self.conn.handle.conn_id) == PresenceChange::Departed {
            self.app.presence.depart(room_id, user).await;
        }
    }

    /// Membership ended: every socket of this user here stops receiving the room now.
    pub(crate) async fn leave_room_everywhere_here(&mut self, room_id: RoomId) {
        let Some(user) = self.conn.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        self.conn.rooms.remove(&room_id);
        let evicted = self.app.hub.evict_user(room_id, user);
        let notice = protocol::frame("room_left", None, json!({"roomId": room_id}));
        for handle in evicted
            .iter()
            .filter(|h| h.conn_id != self.conn.handle.conn_id)
        {
            handle.push(notice.clone());
        }
        if !evicted.is_empty() {
            self.app.presence.depart(room_id, user).await;
        }
    }
}
