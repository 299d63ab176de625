//! Database refusals as protocol errors.

use serde::Deserialize;

use crate::db::{DbError, RawJson};
use crate::protocol::{ErrorCode, FrameError};

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
        DbError::OverShare(e) => FrameError::new(ErrorCode::RateLimited, e.to_string()),
        DbError::Unavailable(m) | DbError::Internal(m) => {
            tracing::error!(error = %m, "database error");
            FrameError::new(ErrorCode::Internal, "internal error")
        }
    }
}

pub(crate) fn not_member() -> FrameError {
    FrameError::new(ErrorCode::Forbidden, "not a member of this room")
}

/// A JSON result of the database's, as `T`.
pub(crate) fn parse<'a, T: Deserialize<'a>>(raw: &'a RawJson) -> Result<T, FrameError> {
    serde_json::from_str(&raw.0)
        .map_err(|e| db_error(DbError::Internal(format!("unexpected result: {e}"))))
}
