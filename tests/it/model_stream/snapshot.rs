//! A fresh read of the room as one user sees it, in PostgREST's request context (so RLS
//! decides), in one statement: one MVCC snapshot, consistent with the room's `last_rev`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::postgrest::{Claims, Postgrest};

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The room row with its member count; None when the user is not a member.
    pub room: Option<Value>,
    /// Every message's state, as `private.message_json` (what the socket sends).
    pub messages: BTreeMap<i64, Value>,
    /// user id → {name, role, last_read_seq}. The role is the membership's `role` column
    /// once there is one; until then SPEC §6.3's rule: the room's creator is its owner.
    pub members: BTreeMap<i64, Value>,
    /// My `api.my_chat_rooms` row.
    pub mine: Option<Value>,
    /// My membership row's `joined_at` and `last_sent_seq`.
    pub me: Option<Value>,
}

const SNAPSHOT_SQL: &str = "
select json_build_object(
  'room', (select json_build_object(
             'id', r.id, 'name', r.name, 'description', r.description,
             'created_by', r.created_by, 'created_at', r.created_at,
             'last_seq', r.last_seq, 'last_rev', r.last_rev,
             'message_count', r.message_count, 'last_message_at', r.last_message_at,
             'member_count', (select count(*) from api.room_members m where m.room_id = r.id))
             from api.chat_rooms r where r.id = $1),
  'messages', (select coalesce(json_agg(private.message_json(m) order by m.id), '[]')
                 from api.chat_messages m where m.room_id = $1),
  'members', (select coalesce(json_agg(json_build_object(
                 'user_id', m.user_id, 'name', private.display_name(m.user_id),
                 'role', coalesce(to_jsonb(m) ->> 'role',
                                  case when m.user_id = r.created_by then 'owner' else 'member' end),
                 'last_read_seq', m.last_read_seq)
                 order by m.user_id), '[]')
                from api.room_members m join api.chat_rooms r on r.id = m.room_id
               where m.room_id = $1),
  'mine', (select to_json(x) from api.my_chat_rooms x where x.id = $1),
  'me', (select json_build_object('joined_at', m.joined_at, 'last_sent_seq', m.last_sent_seq)
           from api.room_members m
          where m.room_id = $1 and m.user_id = api.current_user_id()))";

pub async fn read(pg: &Postgrest, user: i64, room: i64) -> Snapshot {
    let rows = pg
        .query(&Claims::user(user), SNAPSHOT_SQL, &[&room])
        .await
        .unwrap_or_else(|e| panic!("snapshot as user {user}: {e}"));
    let v: Value = rows[0].get(0);
    let by_id = |list: &Value, key: &str| -> BTreeMap<i64, Value> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|x| (x[key].as_i64().unwrap(), x.clone()))
            .collect()
    };
    let some = |x: &Value| (!x.is_null()).then(|| x.clone());
    Snapshot {
        room: some(&v["room"]),
        messages: by_id(&v["messages"], "id"),
        members: by_id(&v["members"], "user_id"),
        mine: some(&v["mine"]),
        me: some(&v["me"]),
    }
}
