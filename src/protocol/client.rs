//! Client frames: parsing and validation. A refusal keeps whatever `ref` could be read.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{FrameError, RoomId};

#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Join {
        room_id: RoomId,
        since: Option<i64>,
        /// Resume from this rev of the room's change stream (wins over `since`).
        since_rev: Option<i64>,
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
    since_rev: Option<i64>,
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
                    since_rev: f.since_rev,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
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
                since: None,
                since_rev: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"join","roomId":"7","since":4}"#),
            ClientFrame::Join {
                room_id: 7,
                since: Some(4),
                since_rev: None
            }
        );
        assert_eq!(
            ok(r#"{"type":"join","roomId":7,"sinceRev":12}"#),
            ClientFrame::Join {
                room_id: 7,
                since: None,
                since_rev: Some(12)
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
}
