//! The chat core: what each client request does, for any transport. It knows no
//! socket: a transport parses a [`Request`], calls [`dispatch`] with the connection's
//! state ([`Conn`]) and somewhere to put replies ([`Replies`]), and writes what comes
//! out. Live events reach the connection through its hub handle, not through here.
//!
//! - [`conn`]: one connection's state: who it is, the rooms it joined, its quota strikes
//! - [`authenticate`]: the `auth` request, first or refreshing; role checks
//! - [`commands`]: the chat commands (message, typing, read, history, rooms, create,
//!   join and leave room), rate limits
//! - [`subscribe`]: joining and leaving a room's live stream on this connection
//! - [`replay`]: what a join resumes with (`since`, `sinceRev`) and its limit
//! - [`errors`]: database refusals as protocol errors
//!
//! Every chat action runs as the user through [`crate::db::Db::as_user`]; replies echo
//! the request's `ref`.

use std::future::Future;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::app::App;
use crate::protocol::{self, FrameError, Request};

mod authenticate;
mod commands;
mod conn;
mod errors;
mod replay;
mod subscribe;

pub use authenticate::check_role;
pub use conn::Conn;
pub use errors::db_error;
pub(crate) use errors::{not_member, parse};

/// The transport is gone: stop handling this connection.
#[derive(Debug)]
pub struct Closed;

/// Where a request's replies go, in order. A WebSocket writes each at once; an HTTP
/// transport may collect them into one response.
pub trait Replies: Send {
    fn reply(&mut self, frame: Utf8Bytes) -> impl Future<Output = Result<(), Closed>> + Send;
}

/// Collects replies (for transports that answer once, and for tests).
impl Replies for Vec<Utf8Bytes> {
    async fn reply(&mut self, frame: Utf8Bytes) -> Result<(), Closed> {
        self.push(frame);
        Ok(())
    }
}

/// Handles one request: replies go to `out`; `Err(Closed)` ends the connection (its
/// transport is gone, or it was closed for abuse: see [`Conn::close_code`]).
pub async fn dispatch<R: Replies>(
    app: &App,
    conn: &mut Conn,
    request: Request,
    out: &mut R,
) -> Result<(), Closed> {
    Ctx { app, conn, out }.dispatch(request).await
}

/// Authenticates with a token that came with the connection (e.g. on the upgrade), as
/// an `auth` request without a `ref` would.
pub async fn authenticate<R: Replies>(
    app: &App,
    conn: &mut Conn,
    token: &str,
    out: &mut R,
) -> Result<(), Closed> {
    Ctx { app, conn, out }.authenticate(None, token).await
}

/// Sends an error reply, counted by code.
pub async fn send_error<R: Replies>(
    out: &mut R,
    reference: Option<&Value>,
    err: FrameError,
) -> Result<(), Closed> {
    metrics::counter!("pgchat_errors_total", "code" => err.code.as_str()).increment(1);
    out.reply(protocol::error_frame(reference, &err)).await
}

/// One request being handled: the daemon, the connection, and where replies go.
pub(crate) struct Ctx<'a, R> {
    pub app: &'a App,
    pub conn: &'a mut Conn,
    pub out: &'a mut R,
}

impl<R: Replies> Ctx<'_, R> {
    /// Writes one reply frame now.
    pub(crate) async fn reply(&mut self, frame: Utf8Bytes) -> Result<(), Closed> {
        self.out.reply(frame).await
    }

    pub(crate) async fn send_error(
        &mut self,
        reference: Option<&Value>,
        err: FrameError,
    ) -> Result<(), Closed> {
        send_error(self.out, reference, err).await
    }
}
