//! Server frames, each built once and shared by every recipient.

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{FrameError, RoomId};

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

/// A frame of a room's change stream: `{"type":…,"roomId":…,"rev":…,"prevRev":…,…}`,
/// kept in two parts around the `prevRev` value. The hub writes that value when it
/// delivers the frame: the rev of the previous stream frame the room's subscribers got,
/// or, for a socket that knows more (it joined at a later rev), what that socket knows
/// (see `hub`). Built once; only a socket whose chain differs gets its own copy.
#[derive(Debug)]
pub struct StreamFrame {
    pub rev: i64,
    /// Up to and including `"prevRev":`.
    head: String,
    /// After the `prevRev` value, to the closing brace.
    tail: String,
}

impl StreamFrame {
    /// A stream frame whose one further field is JSON text already produced by
    /// PostgreSQL (a message's state), spliced in without re-parsing.
    pub fn raw(kind: &str, room_id: RoomId, rev: i64, field: &str, raw: &str) -> Self {
        let mut tail = String::with_capacity(raw.len() + field.len() + 8);
        tail.push(',');
        tail.push_str(&Value::from(field).to_string());
        tail.push(':');
        tail.push_str(raw);
        tail.push('}');
        Self::with_tail(kind, room_id, rev, tail)
    }

    /// A stream frame with these further fields (`fields` must be an object).
    pub fn fields(kind: &str, room_id: RoomId, rev: i64, fields: Value) -> Self {
        let object = fields.to_string();
        let inner = object
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or("");
        let tail = if inner.is_empty() {
            "}".to_string()
        } else {
            format!(",{inner}}}")
        };
        Self::with_tail(kind, room_id, rev, tail)
    }

    fn with_tail(kind: &str, room_id: RoomId, rev: i64, tail: String) -> Self {
        let head = format!(
            "{{\"type\":{},\"roomId\":{room_id},\"rev\":{rev},\"prevRev\":",
            Value::from(kind)
        );
        Self { rev, head, tail }
    }

    /// The frame's bytes with this `prevRev`.
    pub fn with_prev(&self, prev_rev: i64) -> Utf8Bytes {
        let prev = prev_rev.to_string();
        let mut s = String::with_capacity(self.head.len() + prev.len() + self.tail.len());
        s.push_str(&self.head);
        s.push_str(&prev);
        s.push_str(&self.tail);
        s.into()
    }
}

pub fn user_json(id: i64, name: Option<&str>) -> Value {
    serde_json::json!({"id": id, "name": name})
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_frames_carry_rev_and_the_prev_rev_given() {
        let m = StreamFrame::raw("message_updated", 3, 9, "message", r#"{"id":1}"#);
        let v: Value = serde_json::from_str(m.with_prev(7).as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"message_updated","roomId":3,"rev":9,"prevRev":7,"message":{"id":1}})
        );
        let r = StreamFrame::fields("read", 3, 10, json!({"seq": 4}));
        let v: Value = serde_json::from_str(r.with_prev(9).as_str()).unwrap();
        assert_eq!(
            v,
            json!({"type":"read","roomId":3,"rev":10,"prevRev":9,"seq":4})
        );
        let e = StreamFrame::fields("x", 1, 2, json!({}));
        let v: Value = serde_json::from_str(e.with_prev(1).as_str()).unwrap();
        assert_eq!(v, json!({"type":"x","roomId":1,"rev":2,"prevRev":1}));
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
