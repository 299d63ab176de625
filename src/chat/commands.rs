//! The chat commands: message, typing, read, history, rooms, create/join/leave room,
//! and the per-user rate limit in front of them.

use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;

use super::{db_error, not_member, parse, Closed, Ctx, Replies};
use crate::db::{Param, RawJson};
use crate::hub::Event;
use crate::protocol::{self, ClientFrame, ErrorCode, FrameError, Request, RoomId, StreamFrame};
use crate::relay::WriteGuard;
use crate::typing_writer::TypingWrite;

pub(crate) type Reply = Result<(), FrameError>;

#[derive(Deserialize)]
struct Stored {
    id: i64,
    seq: i64,
    rev: i64,
}
#[derive(Deserialize)]
struct ReadMarker {
    last_read_seq: i64,
}

impl<R: Replies> Ctx<'_, R> {
    pub(crate) async fn dispatch(&mut self, request: Request) -> Result<(), Closed> {
        let reference = request.reference;
        let r = reference.as_ref();
        let outcome = match request.frame {
            ClientFrame::Auth { token } => return self.authenticate(r, &token).await,
            ClientFrame::Ping => return self.reply(protocol::frame("pong", r, json!({}))).await,
            _ if self.conn.identity.is_none() => Err(FrameError::new(
                ErrorCode::Unauthenticated,
                "send `auth` first",
            )),
            frame => {
                if let Err(e) = self.check_rate(&frame) {
                    if !self.conn.strike() {
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
            // Typing is throttled first and counted only when written (`within_quota`);
            // leaving is always allowed.
            return Ok(());
        }
        let Some(limiter) = &self.app.limiter else {
            return Ok(());
        };
        let key = self.conn.user_key();
        limiter
            .check_key(&key)
            .map_err(|_| FrameError::new(ErrorCode::RateLimited, "too many requests; slow down"))
    }

    /// Takes one unit of the user's quota, if there is room for it.
    fn within_quota(&self) -> bool {
        self.app
            .limiter
            .as_ref()
            .is_none_or(|l| l.check_key(&self.conn.user_key()).is_ok())
    }

    /// Runs one command. The outer error ends the connection; the inner one is a refusal.
    async fn command(&mut self, r: Option<&Value>, frame: ClientFrame) -> Result<Reply, Closed> {
        let id = self.conn.identity.clone().expect("authenticated");
        let user = id.user_id;
        Ok(match frame {
            ClientFrame::Join {
                room_id,
                since,
                since_rev,
            } => return self.join(r, room_id, since, since_rev).await,
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
                Ok((stored, row, writing)) => {
                    self.deliver_own(room_id, &stored, row);
                    writing.end(&self.app.hub);
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
                if !self
                    .app
                    .hub
                    .is_subscribed(room_id, self.conn.handle.conn_id)
                {
                    return Ok(Err(FrameError::new(
                        ErrorCode::Forbidden,
                        "join the room before typing in it",
                    )));
                }
                // Throttled per (user, room) whatever the value; what passes is a write
                // (and a doorbell every daemon reads), so it counts against the user's
                // quota too. Both drop silently: typing is best effort.
                let written = self.app.typing_throttle.admit(
                    user,
                    room_id,
                    is_typing,
                    std::time::Instant::now(),
                ) && self.within_quota();
                // Written in this daemon's next typing batch (see `typing_writer`).
                if written {
                    let who = self.conn.identity.clone().expect("authenticated");
                    self.app.typing_writer.write(TypingWrite {
                        who,
                        room: room_id,
                        typing: is_typing,
                    });
                }
                Ok(())
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

    pub(crate) async fn call(
        &mut self,
        path: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<RawJson>, FrameError> {
        let id = self.conn.identity.as_ref().expect("authenticated");
        let started = std::time::Instant::now();
        let result = self.app.db.as_user(id, path, sql, params).await;
        metrics::histogram!("pgchat_db_latency_seconds").record(started.elapsed().as_secs_f64());
        result.map_err(db_error)
    }

    /// [`Ctx::call`] for a join's reads: queued, and sent with the other joins' reads
    /// waiting meanwhile, on at most [`crate::app::App::join_reads`]' connections (half
    /// the pool). A reconnect wave (a daemon's 12,500 sockets resuming on the others)
    /// then costs a round trip per batch, not per join, and sends, history and rooms keep
    /// the rest of the pool. Only the database call waits here, never a write to the
    /// socket, so a client that stops reading during its replay holds nothing.
    pub(crate) async fn join_call(
        &mut self,
        path: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<RawJson>, FrameError> {
        let app = self.app;
        let id = self.conn.identity.as_ref().expect("authenticated");
        let started = std::time::Instant::now();
        let result = app.join_reads.read(&app.db, id, path, sql, params).await;
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
    ) -> Result<(Stored, RawJson, WriteGuard), FrameError> {
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
        // Held doorbells of the room wait for this write's own delivery (see `relay`).
        let writing = self.app.wakes.writing(room_id);
        match self
            .call("/rpc/send_message", sql, &[&room_id, &message, &client_id])
            .await?
        {
            Some(raw) => Ok((parse(&raw)?, raw, writing)),
            None => Err(not_member()),
        }
    }

    /// The message just committed goes out from here when it is the room's next change
    /// (see [`crate::hub::Hub::deliver_own`]); its doorbell then finds nothing to read.
    /// It is written here and now, not with the relay's next flush: the relay may be
    /// reading the database for a while (a join storm's presence took 280 ms), and a
    /// message waiting for it then was the tail of fanout's latency (p99 45–67 ms vs 6).
    fn deliver_own(&self, room_id: RoomId, stored: &Stored, row: RawJson) {
        let frame = StreamFrame::raw("message", room_id, stored.rev, "message", &row.0);
        let event = Event::stream(frame, Some(stored.seq));
        if self.app.hub.deliver_own(room_id, event) {
            metrics::counter!("pgchat_messages_out_total").increment(1);
            self.app.hub.flush();
        } else if self
            .app
            .hub
            .position(room_id)
            .is_some_and(|(_, read)| read.is_some_and(|r| r < stored.rev))
        {
            // Something before it is not delivered yet: the relay reads the stream now
            // rather than after the room's writes in flight here (which could go on).
            self.app.wakes.wake(room_id);
        }
    }
}
