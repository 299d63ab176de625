//! The plan's core frames as the bench writes and reads them, and the payload every
//! message carries: `t=<unix nanos at send>;k=<sender>:<n>[;p=<padding>]`.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn auth(token: &str) -> String {
    serde_json::json!({"type": "auth", "token": token}).to_string()
}

pub fn join(room: i64) -> String {
    format!(r#"{{"type":"join","roomId":{room},"ref":"j{room}"}}"#)
}

/// `join` with `since`: the server replays every message after `since`, then `joined`.
pub fn join_since(room: i64, since: i64) -> String {
    format!(r#"{{"type":"join","roomId":{room},"since":{since},"ref":"j{room}"}}"#)
}

/// API requests carry `ref` "q<n>", apart from messages' numeric refs.
pub fn rooms(q: u64) -> String {
    format!(r#"{{"type":"rooms","ref":"q{q}"}}"#)
}

pub fn history(room: i64, q: u64) -> String {
    format!(r#"{{"type":"history","roomId":{room},"limit":50,"ref":"q{q}"}}"#)
}

pub fn typing(room: i64, is_typing: bool) -> String {
    format!(r#"{{"type":"typing","roomId":{room},"isTyping":{is_typing}}}"#)
}

/// A `message` frame whose `ref` is the sender's counter `n` and whose `clientId` is
/// unique per run, sender and counter.
pub fn message(run: &str, room: i64, sender: u64, n: u64, sent_at: u64, pad: usize) -> String {
    let mut text = format!("t={sent_at};k={sender}:{n}");
    if pad > 0 {
        text.push_str(";p=");
        text.extend(std::iter::repeat_n('x', pad));
    }
    format!(
        r#"{{"type":"message","roomId":{room},"message":"{text}","clientId":"{run}-{sender}-{n}","ref":{n}}}"#
    )
}

/// What the bench embedded in a message's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub sent_at: u64,
    pub sender: u64,
    pub n: u64,
}

pub fn parse_payload(text: &str) -> Option<Payload> {
    let rest = text.strip_prefix("t=")?;
    let (t, rest) = rest.split_once(";k=")?;
    let (sender, rest) = rest.split_once(':')?;
    let n = rest.split(';').next()?;
    Some(Payload {
        sent_at: t.parse().ok()?,
        sender: sender.parse().ok()?,
        n: n.parse().ok()?,
    })
}

/// A presence announcement (`user_joined` / `user_left`), which no scenario measures,
/// recognised without parsing: a join storm of M members brings M² / 2 of them, and
/// parsing each one made the bench fall behind the first messages after the storm.
/// Frames spelled differently (another server's spacing) are simply parsed.
pub fn is_presence(text: &str) -> bool {
    text.len() <= 512
        && (text.contains("\"type\":\"user_joined\"") || text.contains("\"type\":\"user_left\""))
}

/// A `typing` event, recognised without parsing: `scale` has every socket start typing
/// once a minute, which brings each room's other members a start and (when it runs
/// out) a stop: several times more frames than its messages.
pub fn is_typing(text: &str) -> bool {
    text.len() <= 512 && text.contains("\"type\":\"typing\"")
}

/// A server frame, reduced to the fields the bench looks at. `message` is kept raw and
/// read only when needed: an object in `message` frames, a string in `error` frames
/// (an untagged enum would buffer every frame's value to try each shape).
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(rename = "roomId", default)]
    pub room_id: Option<i64>,
    #[serde(default, borrow)]
    message: Option<&'a RawValue>,
    #[serde(rename = "ref", default)]
    pub reference: Option<serde_json::Value>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
    /// A `joined` reply's last seq.
    #[serde(rename = "lastSeq", default)]
    pub last_seq: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct MessageRow<'a> {
    #[serde(default)]
    pub room_id: Option<i64>,
    #[serde(default)]
    pub seq: Option<i64>,
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

impl<'a> Incoming<'a> {
    pub fn parse(text: &'a str) -> Option<Incoming<'a>> {
        serde_json::from_str(text).ok()
    }

    /// The `ref` as the sender counter it was sent as (number or numeric string).
    pub fn ref_number(&self) -> Option<u64> {
        match self.reference.as_ref()? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The number of an API request's `ref` ("q<n>").
    pub fn query_number(&self) -> Option<u64> {
        self.reference
            .as_ref()?
            .as_str()?
            .strip_prefix('q')?
            .parse()
            .ok()
    }

    /// An error frame's `message` text.
    pub fn error_text(&self) -> Option<String> {
        serde_json::from_str(self.message?.get()).ok()
    }

    /// For a delivered chat message: (room, seq if the server sends one, text).
    pub fn delivery(&self) -> Option<(i64, Option<i64>, Cow<'a, str>)> {
        if self.kind != "message" {
            return None;
        }
        let row: MessageRow<'a> = serde_json::from_str(self.message?.get()).ok()?;
        Some((self.room_id.or(row.room_id)?, row.seq, row.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_frames_are_told_apart_without_parsing() {
        assert!(is_presence(
            r#"{"roomId":1,"type":"user_joined","user":{"id":2,"name":"b"}}"#
        ));
        assert!(is_presence(
            r#"{"roomId":1,"type":"user_left","user":{"id":2}}"#
        ));
        // A chat text that mentions it is escaped inside the message string.
        let message =
            r#"{"type":"message","roomId":1,"message":{"body":"\"type\":\"user_left\""}}"#;
        assert!(!is_presence(message));
        assert!(!is_presence(r#"{"type":"typing","roomId":1}"#));
    }

    #[test]
    fn typing_frames_are_told_apart_without_parsing() {
        assert!(is_typing(
            r#"{"isTyping":true,"roomId":1,"type":"typing","user":{"id":2,"name":"b"}}"#
        ));
        let message =
            r#"{"type":"message","roomId":1,"message":{"message":"{\"type\":\"typing\""}}"#;
        assert!(!is_typing(message));
    }

    #[test]
    fn message_frames_round_trip_their_payload() {
        let frame = message("r1", 7, 3, 42, 1_700_000_000_123_456_789, 5);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["roomId"], 7);
        assert_eq!(v["ref"], 42);
        assert_eq!(v["clientId"], "r1-3-42");
        let p = parse_payload(v["message"].as_str().unwrap()).unwrap();
        assert_eq!(
            p,
            Payload {
                sent_at: 1_700_000_000_123_456_789,
                sender: 3,
                n: 42
            }
        );
        assert!(v["message"].as_str().unwrap().ends_with(";p=xxxxx"));
    }

    #[test]
    fn foreign_texts_are_not_payloads() {
        assert_eq!(parse_payload("hello"), None);
        assert_eq!(parse_payload("t=1;k=a:2"), None);
        assert_eq!(parse_payload("t=1;k=2"), None);
    }

    #[test]
    fn reads_a_broadcast_message() {
        let text = r#"{"type":"message","roomId":5,"message":{"id":9,"room_id":5,"seq":3,
            "user_id":1,"user_name":"a","message":"t=10;k=1:2","created_at":"x","client_id":"c"}}"#;
        let f = Incoming::parse(text).unwrap();
        assert_eq!(f.delivery(), Some((5, Some(3), "t=10;k=1:2".into())));
    }

    #[test]
    fn reads_a_message_without_seq_or_frame_room() {
        let text = r#"{"type":"message","message":{"room_id":5,"message":"hi"}}"#;
        let f = Incoming::parse(text).unwrap();
        assert_eq!(f.delivery(), Some((5, None, "hi".into())));
    }

    #[test]
    fn reads_errors_and_acks() {
        let e = Incoming::parse(
            r#"{"type":"error","code":"rate_limited","message":"slow down","ref":12}"#,
        )
        .unwrap();
        assert_eq!(e.kind, "error");
        assert_eq!(e.code.as_deref(), Some("rate_limited"));
        assert_eq!(e.ref_number(), Some(12));
        assert_eq!(e.error_text().as_deref(), Some("slow down"));
        assert_eq!(e.delivery(), None);
        let a = Incoming::parse(r#"{"type":"ack","ref":"13","id":1,"seq":2}"#).unwrap();
        assert_eq!(a.ref_number(), Some(13));
    }

    #[test]
    fn api_refs_are_apart_from_message_refs() {
        let v: serde_json::Value = serde_json::from_str(&history(4, 7)).unwrap();
        assert_eq!(
            (v["roomId"].as_i64(), v["ref"].as_str()),
            (Some(4), Some("q7"))
        );
        let reply = Incoming::parse(r#"{"type":"rooms","ref":"q7","rooms":[]}"#).unwrap();
        assert_eq!((reply.query_number(), reply.ref_number()), (Some(7), None));
        let joined = Incoming::parse(r#"{"type":"joined","roomId":1,"lastSeq":9}"#).unwrap();
        assert_eq!(joined.last_seq, Some(9));
    }

    #[test]
    fn control_frames_are_valid_json() {
        for f in [
            auth("a\"b"),
            join(3),
            join_since(3, 5),
            rooms(1),
            typing(3, true),
        ] {
            serde_json::from_str::<serde_json::Value>(&f).unwrap();
        }
    }
}
