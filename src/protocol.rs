//! The WebSocket protocol: client frames parsed and validated, server frames built.
//! Frame shapes are SPEC §2.2; `docs/protocol.md` is the reference for clients.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub type RoomId = i64;

/// Stable error codes sent in `error` frames.
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
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const AUTH_TIMEOUT: u16 = 4000;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const RATE_LIMITED: u16 = 4002;
    pub const SLOW_CONSUMER: u16 = 4003;
    pub const IDLE_TIMEOUT: u16 = 4004;
}

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

#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Join {
        room_id: RoomId,
        since: Option<i64>,
    },
    Leave {
        room_id: RoomId,
    },
    Message {
        room_id: RoomId,
        message: String,
        client_id: Option<String>,
    },
    Typing {
        room_id: RoomId,
        is_typing: bool,
    },
    Read {
        room_id: RoomId,
        seq: i64,
    },
    History {
        room_id: RoomId,
        before_seq: Option<i64>,
        limit: Option<i64>,
    },
    Rooms,
    CreateRoom {
        name: String,
        description: Option<String>,
    },
    JoinRoom {
        room_id: RoomId,
    },
    LeaveRoom {
        room_id: RoomId,
    },
    Ping,
}

/// A parsed client frame with its optional `ref`, echoed in the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub reference: Option<Value>,
    pub frame: ClientFrame,
}

/// Room ids arrive as numbers from the plan's client; numeric strings are accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Number(i64),
    Text(String),
}

fn room_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RoomId, D::Error> {
    match IdValue::deserialize(d)? {
        IdValue::Number(n) => Ok(n),
        IdValue::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
struct AuthFields {
    token: String,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomFields {
    #[serde(deserialize_with = "room_id")]
    room_id: RoomId,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinFields {
    #[serde(deserialize_with = "room_id")]
    room_id: RoomId,
    since: Option<i64>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageFields {
    #[serde(deserialize_with = "room_id")]
    room_id: RoomId,
    message: String,
    client_id: Option<String>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypingFields {
    #[serde(deserialize_with = "room_id")]
    room_id: RoomId,
    is_typing: bool,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadFields {
    #[serde(deserialize_with = "room_id")]
    room_id: RoomId,
    seq: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryFields {
    #[serde(deserialize_with = "room_id")]
    room_id: RoomId,
    before_seq: Option<i64>,
    limit: Option<i64>,
}
#[derive(Deserialize)]
struct CreateRoomFields {
    name: String,
    description: Option<String>,
}

fn fields<T: DeserializeOwned>(kind: &str, value: Value) -> Result<T, FrameError> {
    serde_json::from_value(value)
        .map_err(|e| FrameError::invalid(format!("invalid `{kind}` frame: {e}")))
}

/// Parses one text frame. On failure, returns the error and whatever `ref` could be read,
/// so even a refusal can be matched to its request.
pub fn parse(text: &str) -> Result<Request, (Option<Value>, FrameError)> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| (None, FrameError::invalid(format!("not JSON: {e}"))))?;
    let Value::Object(mut map) = value else {
        return Err((None, FrameError::invalid("a frame must be a JSON object")));
    };
    let reference = match map.remove("ref") {
        None | Some(Value::Null) => None,
        Some(r @ (Value::String(_) | Value::Number(_))) => Some(r),
        Some(_) => {
            return Err((
                None,
                FrameError::invalid("`ref` must be a string or a number"),
            ))
        }
    };
    let kind = match map.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err((reference, FrameError::invalid("missing `type`"))),
    };
    let value = Value::Object(map);
    let frame = (|| {
        Ok(match kind.as_str() {
            "auth" => ClientFrame::Auth {
                token: fields::<AuthFields>(&kind, value)?.token,
            },
            "join" => {
                let f: JoinFields = fields(&kind, value)?;
                ClientFrame::Join {
                    room_id: f.room_id,
                    since: f.since,
                }
            }
            "leave" => ClientFrame::Leave {
                room_id: fields::<RoomFields>(&kind, value)?.room_id,
            },
            "message" => {
                let f: MessageFields = fields(&kind, value)?;
                ClientFrame::Message {
                    room_id: f.room_id,
                    message: f.message,
                    client_id: f.client_id,
                }
            }
            "typing" => {
                let f: TypingFields = fields(&kind, value)?;
                ClientFrame::Typing {
                    room_id: f.room_id,
                    is_typing: f.is_typing,
                }
            }
            "read" => {
                let f: ReadFields = fields(&kind, value)?;
                ClientFrame::Read {
                    room_id: f.room_id,
                    seq: f.seq,
                }
            }
            "history" => {
                let f: HistoryFields = fields(&kind, value)?;
                ClientFrame::History {
                    room_id: f.room_id,
                    before_seq: f.before_seq,
                    limit: f.limit,
                }
            }
            "rooms" => ClientFrame::Rooms,
            "create_room" => {
                let f: CreateRoomFields = fields(&kind, value)?;
                ClientFrame::CreateRoom {
                    name: f.name,
                    description: f.description,
                }
            }
            "join_room" => ClientFrame::JoinRoom {
                room_id: fields::<RoomFields>(&kind, value)?.room_id,
            },
            "leave_room" => ClientFrame::LeaveRoom {
                room_id: fields::<RoomFields>(&kind, value)?.room_id,
            },
            "ping" => ClientFrame::Ping,
            other => return Err(FrameError::invalid(format!("unknown frame type `{other}`"))),
        })
    })();
    match frame {
        Ok(frame) => Ok(Request { reference, frame }),
        Err(e) => Err((reference, e)),
    }
}

/// Builds a server frame: `{"type": kind, "ref"?: …, …fields}`. `fields` must be an object.
pub fn frame(kind: &str, reference: Option<&Value>, fields: Value) -> Utf8Bytes {
    let mut map = match fields {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let mut out = serde_json::Map::with_capacity(map.len() + 2);
    out.insert("type".into(), kind.into());
    if let Some(r) = reference {
        out.insert("ref".into(), r.clone());
    }
    out.append(&mut map);
    Value::Object(out).to_string().into()
}

/// Builds a frame whose one field is JSON text already produced by PostgreSQL, spliced in
/// without re-parsing: `{"type":kind,"ref"?:…,"roomId"?:…, field: <raw>}`.
pub fn frame_with_raw(
    kind: &str,
    reference: Option<&Value>,
    room_id: Option<RoomId>,
    field: &str,
    raw: &str,
) -> Utf8Bytes {
    let mut s = String::with_capacity(raw.len() + 64);
    s.push_str("{\"type\":");
    s.push_str(&Value::from(kind).to_string());
    if let Some(r) = reference {
        s.push_str(",\"ref\":");
        s.push_str(&r.to_string());
    }
    if let Some(room) = room_id {
        s.push_str(",\"roomId\":");
        s.push_str(&room.to_string());
    }
    s.push(',');
    s.push_str(&Value::from(field).to_string());
    s.push(':');
    s.push_str(raw);
    s.push('}');
    s.into()
}

pub fn error_frame(reference: Option<&Value>, err: &FrameError) -> Utf8Bytes {
    frame(
        "error",
        reference,
        serde_json::json!({"code": err.code.as_str(), "message": err.message}),
    )
}

/// `message {roomId, message}` for a row as PostgreSQL rendered it.
pub fn message_frame(room_id: RoomId, row_json: &str) -> Utf8Bytes {
    frame_with_raw("message", None, Some(room_id), "message", row_json)
}

pub fn user_json(id: i64, name: Option<&str>) -> Value {
    serde_json::json!({"id": id, "name": name})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_client_frame_of_the_plan() {
        let ok = |s: &str| parse(s).unwrap().frame;
        assert_eq!(
            ok(r#"{"type":"auth","token":"t"}"#),
            ClientFrame::Auth { token: "t".into() }
        );
        assert_eq!(
            ok(r#"{"type":"join","roomId":123}"#),
            ClientFrame::Join {
                room_id: 123,
                since: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"join","roomId":"7","since":4}"#),
            ClientFrame::Join {
                room_id: 7,
                since: Some(4)
            }
        );
        assert_eq!(
            ok(r#"{"type":"message","roomId":1,"message":"Hello!"}"#),
            ClientFrame::Message {
                room_id: 1,
                message: "Hello!".into(),
                client_id: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"typing","roomId":1,"isTyping":true}"#),
            ClientFrame::Typing {
                room_id: 1,
                is_typing: true
            }
        );
        assert_eq!(ok(r#"{"type":"rooms"}"#), ClientFrame::Rooms);
        assert_eq!(ok(r#"{"type":"ping"}"#), ClientFrame::Ping);
        assert_eq!(
            ok(r#"{"type":"history","roomId":1,"beforeSeq":10,"limit":5}"#),
            ClientFrame::History {
                room_id: 1,
                before_seq: Some(10),
                limit: Some(5)
            }
        );
    }

    #[test]
    fn keeps_ref_even_when_the_frame_is_refused() {
        let r = parse(r#"{"type":"join","ref":"a1"}"#).unwrap_err();
        assert_eq!(r.0, Some(json!("a1")));
        assert_eq!(r.1.code, ErrorCode::InvalidMessage);
        let ok = parse(r#"{"type":"ping","ref":5}"#).unwrap();
        assert_eq!(ok.reference, Some(json!(5)));
    }

    #[test]
    fn refuses_malformed_frames_with_clear_messages() {
        for bad in [
            "nope",
            "[1]",
            r#"{"roomId":1}"#,
            r#"{"type":"fly"}"#,
            r#"{"type":"join","roomId":"x"}"#,
        ] {
            let (_, e) = parse(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn raw_frames_are_valid_json() {
        let f = frame_with_raw(
            "history",
            Some(&json!("r")),
            Some(3),
            "messages",
            r#"[{"a":1}]"#,
        );
        let v: Value = serde_json::from_str(f.as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"history","ref":"r","roomId":3,"messages":[{"a":1}]})
        );
    }
}
