//! Resuming a room: what a `join` with `since` (by seq) or `sinceRev` (by the room's
//! change-stream rev) replays before `joined`, and the limit beyond which nothing is
//! replayed and the client is told it is `behind`.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::commands::Reply;
use super::{db_error, not_member, Closed, Ctx, Replies};
use crate::db::DbError;
use crate::protocol::{self, user_json, FrameError, RoomId, StreamFrame};

/// The most a join replays: a client further behind than this many messages (`since`)
/// or revs (`sinceRev`) gets `joined {behind: true}` and nothing replayed, and loads the
/// latest history page instead. `api.room_replay` refuses a wider range (sql/055).
pub(crate) const REPLAY_LIMIT: i64 = 1000;

/// Where a join resumes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resume {
    /// Messages with a greater seq, as `message` frames, in seq order.
    Seq(i64),
    /// The room's changes with a greater rev, compacted, as stream frames in rev order;
    /// with the client's last seq, when it sent one (`since` beside `sinceRev`), which
    /// replayed messages are new to it (see [`replay_frames`]).
    Rev(i64, Option<i64>),
}

impl Resume {
    pub(crate) fn of(since: Option<i64>, since_rev: Option<i64>) -> Option<Self> {
        match since_rev {
            Some(rev) => Some(Resume::Rev(rev, since)),
            None => since.map(Resume::Seq),
        }
    }

    /// Whether resuming from here to (`last_seq`, `last_rev`) exceeds the replay limit.
    pub(crate) fn behind(self, last_seq: i64, last_rev: i64) -> bool {
        match self {
            Resume::Seq(since) => last_seq - since > REPLAY_LIMIT,
            Resume::Rev(since, _) => last_rev - since > REPLAY_LIMIT,
        }
    }
}

#[derive(Deserialize)]
struct SeqRev {
    seq: i64,
    rev: i64,
}

/// `api.room_replay`'s answer (sql/055).
#[derive(Deserialize)]
struct Replay<'a> {
    boundary_seq: i64,
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
    changes: Vec<MemberChange>,
}

/// A member's latest membership or read-marker change in the replayed range.
#[derive(Deserialize)]
struct MemberChange {
    rev: i64,
    kind: String,
    user: UserRef,
    role: Option<String>,
    seq: Option<i64>,
}

#[derive(Deserialize)]
struct UserRef {
    id: i64,
    name: Option<String>,
}

impl<R: Replies> Ctx<'_, R> {
    /// Sends, as the user, the room's state changed in (since, until]: every message
    /// changed, once, as its current state, and each member's latest membership and
    /// read-marker change, merged in rev order, each with `rev` and a `prevRev` chain
    /// that starts at `since`. `known_seq`: the client's last seq, if it said.
    pub(super) async fn replay_rev(
        &mut self,
        room_id: RoomId,
        since: i64,
        known_seq: Option<i64>,
        until: i64,
    ) -> Result<Reply, Closed> {
        if since >= until {
            return Ok(Ok(()));
        }
        let sql = "select api.room_replay(room_id := $1, after_rev := $2, until_rev := $3)";
        let raw = match self
            .join_call(
                "/rpc/room_replay",
                sql,
                vec![Box::new(room_id), Box::new(since), Box::new(until)],
            )
            .await
        {
            Ok(Some(raw)) => raw,
            Ok(None) => return Ok(Err(not_member())),
            Err(e) => return Ok(Err(e)),
        };
        let frames = match replay_frames(room_id, since, known_seq, &raw.0) {
            Ok(frames) => frames,
            Err(e) => return Ok(Err(e)),
        };
        for frame in frames {
            self.reply(frame).await?;
        }
        Ok(Ok(()))
    }

    /// Sends the messages a join with `since` read with the room's position, in seq
    /// order (see `subscribe`).
    pub(super) async fn replay_messages(
        &mut self,
        room_id: RoomId,
        messages: &[&RawValue],
    ) -> Result<Reply, Closed> {
        for row in messages {
            self.reply(protocol::message_frame(room_id, row.get()))
                .await?;
        }
        Ok(Ok(()))
    }
}

fn internal(e: serde_json::Error) -> FrameError {
    db_error(DbError::Internal(e.to_string()))
}

/// The frames of one `api.room_replay` answer, in rev order, chained from `since`. A
/// replayed message is `message` when it is new to the client: above `known_seq` (the
/// client's last seq, exact) or, without it, above the answer's `boundary_seq` (the
/// newest message unchanged since `since`: exact unless the newest messages the client
/// had were all changed since, which then come as `message` too).
fn replay_frames(
    room_id: RoomId,
    since: i64,
    known_seq: Option<i64>,
    raw: &str,
) -> Result<Vec<tokio_tungstenite::tungstenite::Utf8Bytes>, FrameError> {
    let replay: Replay = serde_json::from_str(raw).map_err(internal)?;
    let boundary = known_seq.unwrap_or(replay.boundary_seq);
    let mut items: Vec<StreamFrame> =
        Vec::with_capacity(replay.messages.len() + replay.changes.len());
    for m in &replay.messages {
        let at: SeqRev = serde_json::from_str(m.get()).map_err(internal)?;
        let kind = if at.seq > boundary {
            "message"
        } else {
            "message_updated"
        };
        items.push(StreamFrame::raw(kind, room_id, at.rev, "message", m.get()));
    }
    for c in replay.changes {
        let user = user_json(c.user.id, c.user.name.as_deref());
        let frame = match (c.kind.as_str(), c.seq) {
            ("read", Some(seq)) => {
                StreamFrame::fields("read", room_id, c.rev, json!({"user": user, "seq": seq}))
            }
            ("joined", _) => StreamFrame::fields(
                "member_joined",
                room_id,
                c.rev,
                json!({"user": user, "role": c.role.as_deref().unwrap_or("member")}),
            ),
            ("left", _) => {
                StreamFrame::fields("member_left", room_id, c.rev, json!({"user": user}))
            }
            _ => continue,
        };
        items.push(frame);
    }
    items.sort_by_key(|f| f.rev);
    let mut prev = since;
    Ok(items
        .into_iter()
        .map(|f| {
            let frame = f.with_prev(prev);
            prev = f.rev;
            frame
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn replay_merges_messages_and_member_changes_by_rev_in_one_chain() {
        let raw = r#"{"boundary_seq":4,
            "messages":[{"id":1,"seq":3,"rev":7},{"id":9,"seq":5,"rev":12}],
            "changes":[{"rev":9,"kind":"read","user":{"id":2,"name":"B"},"role":null,"seq":3},
                       {"rev":10,"kind":"joined","user":{"id":3,"name":"C"},"role":"member","seq":null},
                       {"rev":11,"kind":"left","user":{"id":4,"name":"D"},"role":null,"seq":null}]}"#;
        let frames: Vec<Value> = replay_frames(1, 6, None, raw)
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str(f.as_str()).unwrap())
            .collect();
        let chain: Vec<(&str, i64, i64)> = frames
            .iter()
            .map(|f| {
                (
                    f["type"].as_str().unwrap(),
                    f["rev"].as_i64().unwrap(),
                    f["prevRev"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            chain,
            [
                ("message_updated", 7, 6),
                ("read", 9, 7),
                ("member_joined", 10, 9),
                ("member_left", 11, 10),
                ("message", 12, 11),
            ]
        );
        assert_eq!(frames[2]["role"], "member");
        assert_eq!(frames[1]["user"]["name"], "B");
        assert_eq!(frames[4]["message"]["id"], 9);
        // The client's own last seq, when given, decides instead.
        let kinds: Vec<String> = replay_frames(1, 6, Some(2), raw)
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str::<Value>(f.as_str()).unwrap()["type"].to_string())
            .collect();
        assert_eq!(kinds[0], "\"message\"");
    }

    #[test]
    fn behind_is_beyond_the_limit_by_seq_or_by_rev() {
        assert!(!Resume::Seq(0).behind(REPLAY_LIMIT, 0));
        assert!(Resume::Seq(0).behind(REPLAY_LIMIT + 1, 0));
        assert!(!Resume::Rev(5, None).behind(0, REPLAY_LIMIT + 5));
        assert!(Resume::Rev(5, Some(0)).behind(0, REPLAY_LIMIT + 6));
    }
}
