//! What each client frame does. Every chat action runs as the user through
//! [`crate::db::Db::as_user`]; replies echo the request's `ref`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_postgres::types::ToSql;

use crate::db::{DbError, RawJson};
use crate::hub::PresenceChange;
use crate::protocol::{self, ClientFrame, ErrorCode, FrameError, Request, RoomId};
use crate::session::{Closed, Session};

/// A socket relays `isTyping: true` at most this often per room.
const TYPING_THROTTLE: Duration = Duration::from_secs(2);
/// Messages replayed per query when a client resumes with `since`.
const REPLAY_PAGE: i32 = 1000;

type Reply = Result<(), FrameError>;

/// Maps a database refusal to the protocol's error codes; internals go to the log only.
pub fn db_error(e: DbError) -> FrameError {
    match e {
        DbError::Forbidden(m) => {
            tracing::debug!(reason = %m, "refused by the database");
            FrameError::new(ErrorCode::Forbidden, "not allowed")
        }
        DbError::NotFound(m) => FrameError::new(ErrorCode::NotFound, m),
        DbError::Check { constraint } if constraint.ends_with("too_long") => {
            FrameError::new(ErrorCode::MessageTooLong, "too long")
        }
        DbError::Check { constraint } => {
            FrameError::invalid(format!("rejected by rule {constraint}"))
        }
        DbError::Conflict(m) => FrameError::new(ErrorCode::Conflict, m),
        DbError::User(m) => FrameError::invalid(m),
        DbError::Unavailable(m) | DbError::Internal(m) => {
            tracing::error!(error = %m, "database error");
            FrameError::new(ErrorCode::Internal, "internal error")
        }
    }
}

fn not_member() -> FrameError {
    FrameError::new(ErrorCode::Forbidden, "not a member of this room")
}

#[derive(Deserialize)]
struct RoomState {
    room: LastSeq,
}
#[derive(Deserialize)]
struct LastSeq {
    last_seq: i64,
}
#[derive(Deserialize)]
struct Stored {
    id: i64,
    seq: i64,
}
#[derive(Deserialize)]
struct ReadMarker {
    last_read_seq: i64,
}

fn parse<'a, T: Deserialize<'a>>(raw: &'a RawJson) -> Result<T, FrameError> {
    serde_json::from_str(&raw.0)
        .map_err(|e| db_error(DbError::Internal(format!("unexpected result: {e}"))))
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(crate) async fn dispatch(&mut self, request: Request) -> Result<(), Closed> {
        let reference = request.reference;
        let r = reference.as_ref();
        let outcome = match request.frame {
            ClientFrame::Auth { token } => return self.authenticate(r, &token).await,
            ClientFrame::Ping => return self.reply(protocol::frame("pong", r, json!({}))).await,
            _ if self.identity.is_none() => Err(FrameError::new(
                ErrorCode::Unauthenticated,
                "send `auth` first",
            )),
            frame => {
                if let Err(e) = self.check_rate(&frame) {
                    if !self.strike() {
                        return Err(Closed);
                    }
                    Err(e)
                } else {
                    self.command(r, frame).await?
                }
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => self.send_error(r, e).await,
        }
    }

    fn check_rate(&self, frame: &ClientFrame) -> Reply {
        if matches!(
            frame,
            ClientFrame::Typing { .. } | ClientFrame::Leave { .. }
        ) {
            return Ok(()); // typing has its own throttle; leaving is always allowed
        }
        let Some(limiter) = &self.app.limiter else {
            return Ok(());
        };
        let key = self.user_key();
        limiter
            .check_key(&key)
            .map_err(|_| FrameError::new(ErrorCode::RateLimited, "too many requests; slow down"))
    }

    fn user_key(&self) -> String {
        let id = self.identity.as_ref().expect("authenticated");
        id.user_id
            .map_or_else(|| id.claims_json.clone(), |u| u.to_string())
    }

    /// Runs one command. The outer error ends the connection; the inner one is a refusal.
    async fn command(&mut self, r: Option<&Value>, frame: ClientFrame) -> Result<Reply, Closed> {
        let id = self.identity.clone().expect("authenticated");
        let user = id.user_id;
        Ok(match frame {
            ClientFrame::Join { room_id, since } => return self.join(r, room_id, since).await,
            ClientFrame::Leave { room_id } => {
                self.leave_locally(room_id).await;
                return self
                    .reply(protocol::frame("left", r, json!({"roomId": room_id})))
                    .await
                    .map(Ok);
            }
            ClientFrame::Message {
                room_id,
                message,
                client_id,
            } => match self.post(room_id, &message, client_id.as_deref()).await {
                Ok(stored) => {
                    let ack = protocol::frame(
                        "ack",
                        r,
                        json!({"id": stored.id, "seq": stored.seq, "roomId": room_id}),
                    );
                    return self.reply(ack).await.map(Ok);
                }
                Err(e) => Err(e),
            },
            ClientFrame::Typing { room_id, is_typing } => {
                let Some(user) = user else {
                    return Ok(Err(not_member()));
                };
                if !self.app.hub.is_subscribed(room_id, self.handle.conn_id) {
                    return Ok(Err(FrameError::new(
                        ErrorCode::Forbidden,
                        "join the room before typing in it",
                    )));
                }
                let now = Instant::now();
                let relay = if is_typing {
                    let fresh = self
                        .typing_sent
                        .get(&room_id)
                        .is_none_or(|t| now - *t >= TYPING_THROTTLE);
                    if fresh {
                        self.typing_sent.insert(room_id, now);
                    }
                    fresh
                } else {
                    self.typing_sent.remove(&room_id).is_some()
                };
                if relay {
                    self.app
                        .presence
                        .typing(room_id, user, is_typing)
                        .await
                        .map_err(db_error)
                } else {
                    Ok(())
                }
            }
            ClientFrame::Read { room_id, seq } => {
                match self
                    .call(
                        "/rpc/mark_read",
                        "select api.mark_read(room_id := $1, seq := $2)",
                        &[&room_id, &seq],
                    )
                    .await
                {
                    Ok(Some(raw)) => match parse::<ReadMarker>(&raw) {
                        Ok(m) => {
                            let ack = protocol::frame(
                                "ack",
                                r,
                                json!({"roomId": room_id, "seq": m.last_read_seq}),
                            );
                            return self.reply(ack).await.map(Ok);
                        }
                        Err(e) => Err(e),
                    },
                    Ok(None) => Err(not_member()),
                    Err(e) => Err(e),
                }
            }
            ClientFrame::History {
                room_id,
                before_seq,
                limit,
            } => {
                let limit = limit.unwrap_or(50).clamp(1, 100) as i32;
                let sql = "select case when exists (select 1 from api.chat_rooms where id = $1) \
                           then api.chat_history(room_id := $1, before_seq := $2, max_rows := $3) end";
                match self
                    .call("/rpc/chat_history", sql, &[&room_id, &before_seq, &limit])
                    .await
                {
                    Ok(Some(raw)) => {
                        let f = protocol::frame_with_raw(
                            "history",
                            r,
                            Some(room_id),
                            "messages",
                            &raw.0,
                        );
                        return self.reply(f).await.map(Ok);
                    }
                    Ok(None) => Err(not_member()),
                    Err(e) => Err(e),
                }
            }
            ClientFrame::Rooms => {
                let sql = "select coalesce(json_agg(r order by r.last_message_at desc nulls last, r.id desc), '[]'::json) \
                           from api.my_chat_rooms r";
                match self.call("/my_chat_rooms", sql, &[]).await {
                    Ok(raw) => {
                        let raw = raw.map_or_else(|| "[]".to_string(), |r| r.0);
                        return self
                            .reply(protocol::frame_with_raw("rooms", r, None, "rooms", &raw))
                            .await
                            .map(Ok);
                    }
                    Err(e) => Err(e),
                }
            }
            ClientFrame::CreateRoom { name, description } => {
                let name = name.trim().to_string();
                if name.is_empty() || name.chars().count() > 100 {
                    Err(FrameError::invalid("room name must be 1 to 100 characters"))
                } else {
                    let description = description.unwrap_or_default();
                    let sql = "select api.create_chat_room(name := $1, description := $2)";
                    return self
                        .room_reply(r, "/rpc/create_chat_room", sql, &[&name, &description])
                        .await;
                }
            }
            ClientFrame::JoinRoom { room_id } => {
                let sql = "select api.join_chat_room(room_id := $1)";
                return self
                    .room_reply(r, "/rpc/join_chat_room", sql, &[&room_id])
                    .await;
            }
            ClientFrame::LeaveRoom { room_id } => {
                let sql = "select api.leave_chat_room(room_id := $1)";
                match self.call("/rpc/leave_chat_room", sql, &[&room_id]).await {
                    Ok(_) => {
                        self.leave_room_everywhere_here(room_id).await;
                        let f = protocol::frame("room_left", r, json!({"roomId": room_id}));
                        return self.reply(f).await.map(Ok);
                    }
                    Err(e) => Err(e),
                }
            }
            ClientFrame::Auth { .. } | ClientFrame::Ping => unreachable!("handled in dispatch"),
        })
    }

    async fn call(
        &mut self,
        path: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<RawJson>, FrameError> {
        let id = self.identity.as_ref().expect("authenticated");
        let started = std::time::Instant::now();
        let result = self.app.db.as_user(id, path, sql, params).await;
        metrics::histogram!("pgchat_db_latency_seconds").record(started.elapsed().as_secs_f64());
        result.map_err(db_error)
    }

    async fn room_reply(
        &mut self,
        r: Option<&Value>,
        path: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Reply, Closed> {
        match self.call(path, sql, params).await {
            Ok(Some(raw)) => self
                .reply(protocol::frame_with_raw("room", r, None, "room", &raw.0))
                .await
                .map(Ok),
            Ok(None) => Ok(Err(FrameError::new(ErrorCode::NotFound, "room not found"))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn post(
        &mut self,
        room_id: RoomId,
        message: &str,
        client_id: Option<&str>,
    ) -> Result<Stored, FrameError> {
        let chars = message.chars().count();
        if chars == 0 {
            return Err(FrameError::invalid("message is empty"));
        }
        if chars > self.app.config.message_max_chars {
            return Err(FrameError::new(
                ErrorCode::MessageTooLong,
                format!(
                    "message is {chars} characters; the limit is {}",
                    self.app.config.message_max_chars
                ),
            ));
        }
        if client_id.is_some_and(|c| c.is_empty() || c.chars().count() > 100) {
            return Err(FrameError::invalid("clientId must be 1 to 100 characters"));
        }
        metrics::counter!("pgchat_messages_in_total").increment(1);
        let sql = "select api.send_message(room_id := $1, message := $2, client_id := $3)";
        match self
            .call("/rpc/send_message", sql, &[&room_id, &message, &client_id])
            .await?
        {
            Some(raw) => parse(&raw),
            None => Err(not_member()),
        }
    }

    /// Subscribes this socket to a room: membership is checked as the user, missed
    /// messages after `since` are replayed in order, then live events flow.
    async fn join(
        &mut self,
        r: Option<&Value>,
        room_id: RoomId,
        since: Option<i64>,
    ) -> Result<Reply, Closed> {
        let Some(user) = self.identity.as_ref().and_then(|i| i.user_id) else {
            return Ok(Err(not_member()));
        };
        let hub = self.app.hub.clone();
        let conn = self.handle.conn_id;
        // Subscribe before reading the room's state, so nothing committed after the read
        // can be missed; events are held until activate().
        let change = hub.subscribe(room_id, user, self.handle.clone());
        let last_seq = match self
            .call(
                "/rpc/room_state",
                "select api.room_state(room_id := $1)",
                &[&room_id],
            )
            .await
        {
            Ok(Some(raw)) => match parse::<RoomState>(&raw) {
                Ok(state) => state.room.last_seq,
                Err(e) => return self.abort_join(room_id, e),
            },
            Ok(None) => return self.abort_join(room_id, not_member()),
            Err(e) => return self.abort_join(room_id, e),
        };
        self.rooms.insert(room_id);
        if let Some(since) = since {
            if let Err(e) = self.replay(room_id, since, last_seq).await? {
                return self.abort_join(room_id, e);
            }
        }
        let online = if change == PresenceChange::Arrived {
            self.app.presence.join(room_id, user).await
        } else {
            self.app.presence.online(room_id).await
        };
        let online = match online {
            Ok(raw) => raw.0,
            Err(e) => return self.abort_join(room_id, db_error(e)),
        };
        let joined = format!(
            "{{\"type\":\"joined\"{},\"roomId\":{room_id},\"lastSeq\":{last_seq},\"online\":{online}}}",
            r.map(|v| format!(",\"ref\":{v}")).unwrap_or_default()
        );
        self.reply(joined.into()).await?;
        hub.activate(room_id, conn, last_seq);
        Ok(Ok(()))
    }

    fn abort_join(&mut self, room_id: RoomId, e: FrameError) -> Result<Reply, Closed> {
        self.app.hub.unsubscribe(room_id, self.handle.conn_id);
        self.rooms.remove(&room_id);
        Ok(Err(e))
    }

    /// Sends, as the user, every message in (since, until] in seq order.
    async fn replay(
        &mut self,
        room_id: RoomId,
        mut since: i64,
        until: i64,
    ) -> Result<Reply, Closed> {
        let sql = "select api.messages_since(room_id := $1, after_seq := $2, max_rows := $3)";
        while since < until {
            let page = match self
                .call(
                    "/rpc/messages_since",
                    sql,
                    &[&room_id, &since, &REPLAY_PAGE],
                )
                .await
            {
                Ok(Some(raw)) => raw,
                Ok(None) => return Ok(Err(not_member())),
                Err(e) => return Ok(Err(e)),
            };
            let rows: Vec<&RawValue> = match serde_json::from_str(&page.0) {
                Ok(rows) => rows,
                Err(e) => return Ok(Err(db_error(DbError::Internal(e.to_string())))),
            };
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let seq = serde_json::from_str::<LastSeqOf>(row.get())
                    .map(|s| s.seq)
                    .unwrap_or(i64::MAX);
                if seq > until {
                    return Ok(Ok(()));
                }
                self.reply(protocol::message_frame(room_id, row.get()))
                    .await?;
                since = seq;
            }
        }
        Ok(Ok(()))
    }

    /// Unsubscribes this socket from a room and announces departure if it was the last.
    async fn leave_locally(&mut self, room_id: RoomId) {
        self.rooms.remove(&room_id);
        self.typing_sent.remove(&room_id);
        let Some(user) = self.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        if self.app.hub.unsubscribe(room_id, self.handle.conn_id) == PresenceChange::Departed {
            if let Err(e) = self.app.presence.leave(room_id, user).await {
                tracing::warn!(room = room_id, error = %e, "could not record departure");
            }
        }
    }

    /// Membership ended: every socket of this user here stops receiving the room now.
    async fn leave_room_everywhere_here(&mut self, room_id: RoomId) {
        let Some(user) = self.identity.as_ref().and_then(|i| i.user_id) else {
            return;
        };
        self.rooms.remove(&room_id);
        let evicted = self.app.hub.evict_user(room_id, user);
        let notice = protocol::frame("room_left", None, json!({"roomId": room_id}));
        for handle in evicted.iter().filter(|h| h.conn_id != self.handle.conn_id) {
            handle.push(notice.clone());
        }
        if !evicted.is_empty() {
            if let Err(e) = self.app.presence.leave(room_id, user).await {
                tracing::warn!(room = room_id, error = %e, "could not record departure");
            }
        }
    }

    /// Verifies a token (first auth, or a refresh for the same user).
    pub(crate) async fn authenticate(
        &mut self,
        r: Option<&Value>,
        token: &str,
    ) -> Result<(), Closed> {
        let identity = match self.app.verifier.verify(token, crate::auth::unix_now()) {
            Ok(id) => id,
            Err(e) => {
                return self
                    .send_error(r, FrameError::new(code_of(&e), e.to_string()))
                    .await
            }
        };
        if let Some(current) = &self.identity {
            if current.user_id != identity.user_id || current.role != identity.role {
                let err = FrameError::new(
                    ErrorCode::InvalidToken,
                    "a refreshed token must be for the same user and role",
                );
                return self.send_error(r, err).await;
            }
        }
        if let Err(e) = self.app.check_role(&identity).await {
            return self.send_error(r, e).await;
        }
        if self.identity.is_none() {
            if let Some(user) = identity.user_id {
                self.app.hub.add_user_socket(user, self.handle.clone());
            }
        }
        let user = json!({"id": identity.user_id, "name": identity.name, "role": identity.role});
        self.identity = Some(identity);
        self.reply(protocol::frame("authenticated", r, json!({"user": user})))
            .await
    }
}

#[derive(Deserialize)]
struct LastSeqOf {
    seq: i64,
}

fn code_of(e: &crate::auth::AuthError) -> ErrorCode {
    match e.code() {
        "token_expired" => ErrorCode::TokenExpired,
        _ => ErrorCode::InvalidToken,
    }
}
