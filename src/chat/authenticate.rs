//! The `auth` request: the first authentication, or a refresh for the same user.

use serde_json::{json, Value};

use super::{db_error, Closed, Ctx, Replies};
use crate::app::App;
use crate::auth::Identity;
use crate::db::DbError;
use crate::protocol::{self, ErrorCode, FrameError};

/// Refuses a token whose role `authenticator` cannot switch to (missing or not
/// granted), as PostgREST would on its first query. A role once proven is remembered.
pub async fn check_role(app: &App, identity: &Identity) -> Result<(), FrameError> {
    if app.known_roles.lock().unwrap().contains(&identity.role) {
        return Ok(());
    }
    match app
        .db
        .as_user(identity, "/", "select null::json", &[])
        .await
    {
        Ok(_) => {
            app.known_roles
                .lock()
                .unwrap()
                .insert(identity.role.clone());
            Ok(())
        }
        Err(DbError::Forbidden(_)) => Err(FrameError::new(
            ErrorCode::Forbidden,
            format!("role `{}` is not allowed", identity.role),
        )),
        Err(e) => Err(db_error(e)),
    }
}

impl<R: Replies> Ctx<'_, R> {
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
                    .refuse(r, FrameError::new(code_of(&e), e.to_string()), None)
                    .await
            }
        };
        if let Some(current) = &self.conn.identity {
            if current.user_id != identity.user_id || current.role != identity.role {
                let err = FrameError::new(
                    ErrorCode::InvalidToken,
                    "a refreshed token must be for the same user and role",
                );
                return self.refuse(r, err, identity.user_id).await;
            }
        }
        if let Err(e) = check_role(self.app, &identity).await {
            return self.refuse(r, e, identity.user_id).await;
        }
        if self.conn.identity.is_none() {
            if let Some(user) = identity.user_id {
                self.app.hub.add_user_socket(user, self.conn.handle.clone());
            }
            // Out of the unauthenticated pool: its place is free for a newcomer.
            if let Some(ticket) = self.conn.ticket.as_mut() {
                ticket.authenticated();
            }
        }
        let user = json!({"id": identity.user_id, "name": identity.name, "role": identity.role});
        self.conn.identity = Some(identity);
        self.reply(protocol::frame("authenticated", r, json!({"user": user})))
            .await
    }

    /// Refuses an `auth` (or upgrade token), counted by error code and logged with the
    /// reason, never the token, and the user: the token's when it was genuine, else the
    /// socket's when it authenticated before (a failed refresh).
    async fn refuse(
        &mut self,
        r: Option<&Value>,
        err: FrameError,
        user: Option<i64>,
    ) -> Result<(), Closed> {
        metrics::counter!("pgchat_auth_failures_total", "code" => err.code.as_str()).increment(1);
        let user = user.or_else(|| self.conn.identity.as_ref().and_then(|i| i.user_id));
        tracing::info!(user, code = err.code.as_str(), reason = %err.message, "authentication refused");
        self.send_error(r, err).await
    }
}

fn code_of(e: &crate::auth::AuthError) -> ErrorCode {
    match e.code() {
        "token_expired" => ErrorCode::TokenExpired,
        _ => ErrorCode::InvalidToken,
    }
}
