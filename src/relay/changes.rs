//! The room change stream: every change to a room's visible state has the room's next
//! `rev` (sql/050), and the relay reads a followed room's changes after the last rev it
//! read, in rev order (sql/055). Each becomes one stream frame with `rev` and `prevRev`
//! (the hub writes `prevRev`): a message newer than the room's seq cursor goes out as
//! `message`, an older one as `message_updated`, both with its whole current state (a
//! deletion is a `message_updated` with `deleted_at` set); read markers as `read`;
//! memberships as `member_joined` / `member_left` to the room's subscribers, and as
//! `room` / `room_left` to the member's own sockets.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Relay;
use crate::db::DbError;
use crate::hub::{Event, UserId};
use crate::protocol::{self, user_json, RoomId, StreamFrame};

/// Changes read per query at most; a page also fits in half of a socket's queue.
const MAX_PAGE: usize = 500;
/// A room further behind than this many revs is not replayed after a LISTEN loss: its
/// subscribers are told to reload (`resync`) and it continues from where it stands.
const MAX_CATCH_UP_REVS: i64 = 10_000;
/// How long catch-up waits for subscribers' queues to drain below half before writing
/// the next page; a reader still over it then is too slow, and the next page closes it.
const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// How long a queue may stay as full as it was before the reader counts as stalled.
const STALL_WAIT: Duration = Duration::from_secs(1);

/// Which messages a read (one page, or every page of a catch-up) has sent as `message`.
/// A message above the room's seq cursor as the read began was never sent from here: it
/// is a `message` the first time the read meets it, even after a newer one moved the
/// cursor (it was edited after that one was written, so its rev is higher and it comes
/// later, perhaps pages later), and a `message_updated` if the read meets it again (it
/// was edited while the read went on).
struct FirstSeen {
    cursor: Option<i64>,
    sent: HashSet<i64>,
}

impl FirstSeen {
    fn first_time(&mut self, seq: i64) -> bool {
        self.cursor.is_none_or(|c| seq > c) && self.sent.insert(seq)
    }
}

/// One row of `pgchat.stream_after_rooms`.
struct Change {
    rev: i64,
    kind: String,
    seq: Option<i64>,
    user: Option<UserId>,
    body: Option<String>,
    /// The member's display name (joined, left, read).
    name: Option<String>,
    /// The member's role (joined).
    role: Option<String>,
}

impl Relay {
    /// Reads one page of each room's changes in one statement, relays them, and reads on
    /// in pages for rooms that had more.
    pub(super) async fn read_changes(&self, rooms: &[RoomId]) -> Result<(), DbError> {
        let (rooms, afters): (Vec<RoomId>, Vec<i64>) = rooms
            .iter()
            .filter_map(|r| {
                self.hub
                    .position(*r)
                    .and_then(|(_, rev)| rev)
                    .map(|a| (*r, a))
            })
            .unzip();
        if rooms.is_empty() {
            return Ok(());
        }
        let page_size = self.page_size();
        let rows = {
            let client = self.db.client().await?;
            let stmt = client
                .prepare_cached(
                    "select room_id, rev, kind, seq, user_id, body, name, role
                       from pgchat.stream_after_rooms($1, $2, $3)",
                )
                .await?;
            client.query(&stmt, &[&rooms, &afters, &page_size]).await?
        };
        // Rows come grouped by room in the order asked, in rev order within each.
        let mut rows = rows.iter().peekable();
        for (room, after) in rooms.into_iter().zip(afters) {
            let mut page = Vec::new();
            while let Some(row) = rows.next_if(|r| r.get::<_, RoomId>(0) == room) {
                page.push(to_change(row, 1));
            }
            let full = page.len() == page_size as usize;
            let mut seen = self.first_seen(room);
            let last = self.apply(room, &page, &mut seen).await;
            if full {
                self.drain(room).await;
                self.stream(room, last.unwrap_or(after), seen).await?;
            }
        }
        Ok(())
    }

    /// Relays a room's changes after `after` page by page, each page written before the
    /// next is read, until the stream is exhausted. A backlog too large to replay is
    /// skipped with a `resync`.
    async fn stream(
        &self,
        room: RoomId,
        mut after: i64,
        mut seen: FirstSeen,
    ) -> Result<(), DbError> {
        let client = self.db.client().await?;
        let position = client
            .query_opt(
                "select last_seq, last_rev from pgchat.room_position($1)",
                &[&room],
            )
            .await?;
        if let Some(row) = position {
            let (last_seq, last_rev): (i64, i64) = (row.get(0), row.get(1));
            if last_rev - after > MAX_CATCH_UP_REVS {
                tracing::info!(
                    room,
                    behind = last_rev - after,
                    "backlog too large to replay; subscribers resync"
                );
                metrics::counter!("pgchat_resyncs_total").increment(1);
                let frame = protocol::frame(
                    "resync",
                    None,
                    json!({"roomId": room, "lastSeq": last_seq, "lastRev": last_rev}),
                );
                self.hub.skip_to(room, last_seq, last_rev, frame);
                return Ok(());
            }
        }
        let stmt = client
            .prepare_cached(
                "select rev, kind, seq, user_id, body, name, role
                   from pgchat.stream_after_rooms(array[$1::bigint], array[$2::bigint], $3)",
            )
            .await?;
        let page_size = self.page_size();
        loop {
            if self.hub.position(room).is_none() {
                return Ok(()); // everyone left meanwhile
            }
            let page: Vec<Change> = client
                .query(&stmt, &[&room, &after, &page_size])
                .await?
                .iter()
                .map(|row| to_change(row, 0))
                .collect();
            let full = page.len() == page_size as usize;
            if let Some(last) = self.apply(room, &page, &mut seen).await {
                after = last;
            }
            if !full {
                return Ok(());
            }
            self.drain(room).await;
        }
    }

    /// Changes per read: a page never fills more than half of a socket's queue.
    fn page_size(&self) -> i32 {
        (self.queue_capacity / 2).clamp(1, MAX_PAGE) as i32
    }

    /// Writes what is queued and waits, within [`DRAIN_WAIT`], until every subscriber's
    /// queue is at most half full: a fast reader is never closed by catch-up. A queue
    /// that stops shrinking for [`STALL_WAIT`] belongs to a reader that is not reading:
    /// waiting longer would hold every other room's delivery up for it, so the wait ends
    /// and the next page closes that reader (4003).
    async fn drain(&self, room: RoomId) {
        self.hub.flush();
        let started = Instant::now();
        let mut fullest = self.hub.max_queued(room);
        let mut shrank_at = started;
        while fullest > self.queue_capacity / 2
            && started.elapsed() < DRAIN_WAIT
            && shrank_at.elapsed() < STALL_WAIT
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.hub.flush();
            let now = self.hub.max_queued(room);
            if now < fullest {
                shrank_at = Instant::now();
            }
            fullest = now;
        }
    }

    /// Where a read of `room` starts: what was sent from here before it.
    fn first_seen(&self, room: RoomId) -> FirstSeen {
        FirstSeen {
            cursor: self.hub.position(room).and_then(|(seq, _)| seq),
            sent: HashSet::new(),
        }
    }

    /// Relays one page of a room's changes in order; returns the last rev in it.
    async fn apply(&self, room: RoomId, page: &[Change], seen: &mut FirstSeen) -> Option<i64> {
        let mut departed = Vec::new();
        for change in page {
            let body = change.body.as_deref().unwrap_or("null");
            let rev = change.rev;
            match (change.kind.as_str(), change.seq, change.user) {
                ("message", Some(seq), _) => {
                    let first_time = seen.first_time(seq);
                    let kind = if first_time {
                        metrics::counter!("pgchat_messages_out_total").increment(1);
                        crate::metrics::record_listener_lag(body);
                        "message"
                    } else {
                        "message_updated"
                    };
                    let frame = StreamFrame::raw(kind, room, rev, "message", body);
                    self.hub
                        .deliver(room, Event::stream(frame, first_time.then_some(seq)));
                }
                ("read", Some(seq), Some(user)) => {
                    let fields =
                        json!({"user": user_json(user, change.name.as_deref()), "seq": seq});
                    let frame = StreamFrame::fields("read", room, rev, fields);
                    self.hub.deliver(room, Event::stream(frame, None));
                }
                ("joined", _, Some(user)) => {
                    let fields = json!({
                        "user": user_json(user, change.name.as_deref()),
                        "role": change.role.as_deref().unwrap_or("member"),
                    });
                    let frame = StreamFrame::fields("member_joined", room, rev, fields);
                    self.hub.deliver(room, Event::stream(frame, None));
                    self.tell_joined(room, rev, user, body);
                }
                ("left", _, Some(user)) => {
                    // The member's own sockets here leave the room (`room_left`) before the
                    // others hear of it, so none of them gets `member_left` about itself.
                    if self.evict(room, user) {
                        departed.push(user);
                    }
                    let fields = json!({"user": user_json(user, change.name.as_deref())});
                    let frame = StreamFrame::fields("member_left", room, rev, fields);
                    self.hub.deliver(room, Event::stream(frame, None));
                }
                // Hard deletions recorded before migration 0003 (nothing records them
                // now): the row is gone, so there is no state to send. The next frame's
                // prevRev is the last rev sent, so the chain stays unbroken.
                _ => tracing::debug!(room, kind = %change.kind, "ignoring a change"),
            }
        }
        let last = page.last().map(|c| c.rev);
        if let Some(rev) = last {
            self.hub.advance_rev(room, rev);
        }
        for user in departed {
            self.presence.depart(room, user).await;
        }
        last
    }

    /// Catches every followed room up after a LISTEN loss.
    pub(super) async fn catch_up_all(&self) {
        for (room, after) in self.hub.positions() {
            if let Err(e) = self.stream(room, after, self.first_seen(room)).await {
                tracing::warn!(room, error = %e, "catch-up failed");
            }
        }
    }
}

/// A row of `pgchat.stream_after_rooms` whose `rev` is column `at`.
fn to_change(row: &tokio_postgres::Row, at: usize) -> Change {
    Change {
        rev: row.get(at),
        kind: row.get(at + 1),
        seq: row.get(at + 2),
        user: row.get(at + 3),
        body: row.get(at + 4),
        name: row.get(at + 5),
        role: row.get(at + 6),
    }
}
