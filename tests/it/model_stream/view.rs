//! What one client knows of the room: a snapshot plus the stream frames it received
//! since (`Known`), and the comparable shape both it and a fresh snapshot reduce to
//! (`View`). Everything in a `View` is derived from frames, except the two fields of the
//! user's own membership that no frame carries (`joined_at`, `last_sent_seq`): those
//! are taken from the user's membership row whenever the client (re)subscribes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::snapshot::Snapshot;

/// The comparable state: room metadata, every message's full state, members with
/// their role and read marker, and the user's `api.my_chat_rooms` row.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub room: Value,
    pub messages: BTreeMap<i64, Value>,
    pub members: BTreeMap<i64, Value>,
    pub mine: Value,
}

/// The room fields compared (all of `api.chat_rooms`, plus the member count).
pub const ROOM_FIELDS: [&str; 10] = [
    "id",
    "name",
    "description",
    "created_by",
    "created_at",
    "last_seq",
    "last_rev",
    "message_count",
    "last_message_at",
    "member_count",
];

/// The `api.my_chat_rooms` fields compared (all of today's columns).
pub const MINE_FIELDS: [&str; 13] = [
    "id",
    "name",
    "description",
    "created_by",
    "created_at",
    "last_seq",
    "member_count",
    "message_count",
    "last_message_at",
    "unread_count",
    "last_read_seq",
    "joined_at",
    "last_rev",
];

pub fn pick(v: &Value, fields: &[&str]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|f| (f.to_string(), v.get(*f).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

/// A member as compared: name, role and read marker.
fn member(name: &Value, role: Option<&Value>, read: i64) -> Value {
    json!({"name": name, "role": role.cloned().unwrap_or(Value::Null), "last_read_seq": read})
}

/// A client's state for one room.
#[derive(Debug, Clone)]
pub struct Known {
    pub room_id: i64,
    pub me: i64,
    /// name, description, created_by, created_at: never changed by any operation here.
    pub statics: Value,
    pub messages: BTreeMap<i64, Value>,
    /// user id → (name, role)
    pub members: BTreeMap<i64, (Value, Option<Value>)>,
    /// user id → read marker; kept for non-members too (a `read` may precede the
    /// `member_joined` in a replay), reset to 0 by `member_joined`.
    pub markers: BTreeMap<i64, i64>,
    /// The rev of the last stream frame applied (or of the snapshot).
    pub rev: i64,
    pub joined_at: Value,
    pub last_sent_seq: i64,
}

impl Known {
    /// The state a fresh snapshot shows (the snapshot must be of a member).
    pub fn from_snapshot(s: &Snapshot, room_id: i64, me: i64) -> Known {
        let room = s.room.as_ref().expect("a member's snapshot has the room");
        let me_row = s.me.as_ref().expect("a member's snapshot has my row");
        Known {
            room_id,
            me,
            statics: pick(room, &["name", "description", "created_by", "created_at"]),
            messages: s.messages.clone(),
            members: s
                .members
                .iter()
                .map(|(id, m)| (*id, (m["name"].clone(), Some(m["role"].clone()))))
                .collect(),
            markers: s
                .members
                .iter()
                .map(|(id, m)| (*id, m["last_read_seq"].as_i64().unwrap_or(-1)))
                .collect(),
            rev: room["last_rev"].as_i64().expect("last_rev"),
            joined_at: me_row["joined_at"].clone(),
            last_sent_seq: me_row["last_sent_seq"].as_i64().expect("last_sent_seq"),
        }
    }

    /// Takes the fields of my membership that no frame carries, on (re)subscribing.
    pub fn refresh_membership(&mut self, s: &Snapshot) {
        if let Some(me_row) = s.me.as_ref() {
            self.joined_at = me_row["joined_at"].clone();
            self.last_sent_seq = me_row["last_sent_seq"].as_i64().expect("last_sent_seq");
        }
    }

    /// The comparable state these frames imply.
    pub fn view(&self) -> View {
        let last = self.messages.values().max_by_key(|m| m["seq"].as_i64());
        let last_seq = last.and_then(|m| m["seq"].as_i64()).unwrap_or(0);
        let last_message_at = last.map(|m| m["created_at"].clone()).unwrap_or(Value::Null);
        let message_count = self
            .messages
            .values()
            .filter(|m| m["deleted_at"].is_null())
            .count();
        let marker = |u: &i64| self.markers.get(u).copied().unwrap_or(0);
        let mut room = self.statics.clone();
        room["id"] = json!(self.room_id);
        room["last_seq"] = json!(last_seq);
        room["last_rev"] = json!(self.rev);
        room["message_count"] = json!(message_count);
        room["last_message_at"] = last_message_at;
        room["member_count"] = json!(self.members.len());
        let my_read = marker(&self.me);
        let mut mine = room.clone();
        mine["unread_count"] = json!((last_seq - my_read.max(self.last_sent_seq)).max(0));
        mine["last_read_seq"] = json!(my_read);
        mine["joined_at"] = self.joined_at.clone();
        View {
            room: pick(&room, &ROOM_FIELDS),
            messages: self.messages.clone(),
            members: self
                .members
                .iter()
                .map(|(id, (name, role))| (*id, member(name, role.as_ref(), marker(id))))
                .collect(),
            mine: pick(&mine, &MINE_FIELDS),
        }
    }
}

impl Snapshot {
    /// The comparable state read from the tables; None when the user sees no room.
    pub fn view(&self) -> Option<View> {
        let room = self.room.as_ref()?;
        Some(View {
            room: pick(room, &ROOM_FIELDS),
            messages: self.messages.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| {
                    let read = m["last_read_seq"].as_i64().unwrap_or(-1);
                    (*id, member(&m["name"], Some(&m["role"]), read))
                })
                .collect(),
            mine: pick(self.mine.as_ref().unwrap_or(&Value::Null), &MINE_FIELDS),
        })
    }
}

/// A readable account of how two views differ (empty when equal).
pub fn diff(client: &View, fresh: &View) -> String {
    let mut out = String::new();
    if client.room != fresh.room {
        out += &format!("  room: client {} / tables {}\n", client.room, fresh.room);
    }
    if client.mine != fresh.mine {
        out += &format!(
            "  my_chat_rooms: client {} / tables {}\n",
            client.mine, fresh.mine
        );
    }
    diff_maps(&mut out, "message", &client.messages, &fresh.messages);
    diff_maps(&mut out, "member", &client.members, &fresh.members);
    out
}

fn diff_maps(out: &mut String, what: &str, a: &BTreeMap<i64, Value>, b: &BTreeMap<i64, Value>) {
    let ids: std::collections::BTreeSet<&i64> = a.keys().chain(b.keys()).collect();
    for id in ids {
        match (a.get(id), b.get(id)) {
            (x, y) if x == y => {}
            (x, y) => {
                let show = |v: Option<&Value>| v.map_or("(none)".to_string(), |v| v.to_string());
                *out += &format!("  {what} {id}: client {} / tables {}\n", show(x), show(y));
            }
        }
    }
}
