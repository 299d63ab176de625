//! The WebSocket protocol. Frame shapes are SPEC §2.2; `docs/protocol.md` is the
//! reference for clients.
//!
//! - [`client`]: client frames, parsed and validated
//! - [`server`]: server frames, serialised once

mod client;
mod server;

pub use client::{parse, ClientFrame, Request};
pub use server::{error_frame, frame, frame_with_raw, message_frame, user_json, StreamFrame};

pub type RoomId = i64;

/// Stable error codes sent in `error` frames. The list is also checked in as JSON for
/// the browser SDK (`frontend/sdk/error-codes.json`); a unit test fails if the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    InvalidToken,
    TokenExpired,
    Forbidden,
    NotFound,
    InvalidMessage,
    MessageTooLong,
    RateLimited,
    Conflict,
    Internal,
}

impl ErrorCode {
    /// Every code, for metrics that list each one from the start. A new variant fails
    /// to compile in [`ErrorCode::as_str`] until it is added there, and belongs here too.
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::Unauthenticated,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLong,
        ErrorCode::RateLimited,
        ErrorCode::Conflict,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::MessageTooLong => "message_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Close codes for connections the server ends (documented in docs/protocol.md).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// A connection that had not authenticated made room for another client's.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const AUTH_TIMEOUT: u16 = 4000;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const RATE_LIMITED: u16 = 4002;
    pub const SLOW_CONSUMER: u16 = 4003;
    pub const IDLE_TIMEOUT: u16 = 4004;

    /// Whether `code` may appear in a Close frame on the wire (RFC 6455 §7.4); the
    /// frame codec's rule, which the reader applies to the peer's Close too.
    pub use pgchat_ws::may_be_sent;
}

/// The error codes as the browser SDK loads them: one source for the daemon and the UI.
pub const ERROR_CODES_JSON: &str = include_str!("../../frontend/sdk/error-codes.json");

/// A refusal of one client frame: sent as `error {code, message, ref?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidMessage, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's list (`frontend/sdk/error-codes.json`) and this enum name the same codes
    /// in the same order: a code added on one side only fails here.
    #[test]
    fn error_codes_match_the_sdk_list() {
        let table: serde_json::Value = serde_json::from_str(ERROR_CODES_JSON).unwrap();
        let listed: Vec<&str> = table["codes"]
            .as_array()
            .expect("a `codes` array")
            .iter()
            .map(|c| c["code"].as_str().expect("each entry has a `code`"))
            .collect();
        let ours: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, ours);
        for entry in table["codes"].as_array().unwrap() {
            assert!(
                entry["resend"].is_boolean(),
                "{entry}: `resend` says whether a retry can help"
            );
        }
    }
}
