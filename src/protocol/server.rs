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

pub fn user_json(id: i64, name: Option<&str>) -> Value {
    serde_json::json!({"id": id, "name": name})
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
