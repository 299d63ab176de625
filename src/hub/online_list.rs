//! The `online` list of a `joined` reply: each user kept as their entry, serialised
//! once when they come online, and a join's list a concatenation of entries in id order.

use std::sync::Arc;

use super::{Name, UserId};

/// The display name inside a stored `{"id":…,"name":…}` entry.
pub(super) fn name_of(entry: &str) -> Name {
    #[derive(serde::Deserialize)]
    struct Entry {
        name: Option<String>,
    }
    serde_json::from_str::<Entry>(entry)
        .ok()
        .and_then(|e| e.name)
        .map(Arc::from)
}

/// The `online` array of a `joined` reply from PostgreSQL's answer: `users` plus `me`
/// (whose own arrival may still be on its way), by id.
pub fn online_json(mut users: Vec<(UserId, Name)>, me: (UserId, Option<&str>)) -> String {
    users.sort_unstable_by_key(|(id, _)| *id);
    users.dedup_by_key(|(id, _)| *id);
    let entries: Vec<(UserId, Box<str>)> = users
        .into_iter()
        .map(|(id, name)| (id, entry_json(id, name.as_deref())))
        .collect();
    online_array(
        entries.iter().map(|(id, entry)| (*id, &**entry)),
        entries.len(),
        (me.0, &entry_json(me.0, me.1)),
    )
}

/// One user's entry in an `online` array.
pub(super) fn entry_json(id: UserId, name: Option<&str>) -> Box<str> {
    crate::protocol::user_json(id, name)
        .to_string()
        .into_boxed_str()
}

/// Joins entries, in ascending id order, into a JSON array, with `me` put in its place
/// unless an entry of theirs is there already (the stored name wins over the token's).
pub(super) fn online_array<'a>(
    entries: impl Iterator<Item = (UserId, &'a str)>,
    count: usize,
    me: (UserId, &str),
) -> String {
    let mut out = String::with_capacity((count + 1) * (me.1.len() + 8) + 2);
    let put = |out: &mut String, entry: &str| {
        out.push(if out.is_empty() { '[' } else { ',' });
        out.push_str(entry);
    };
    let mut me_pending = true;
    for (id, entry) in entries {
        if me_pending && me.0 <= id {
            if me.0 < id {
                put(&mut out, me.1);
            }
            me_pending = false;
        }
        put(&mut out, entry);
    }
    if me_pending {
        put(&mut out, me.1);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_json_adds_me_once_and_sorts() {
        let n = |s: &str| Some(Arc::<str>::from(s));
        let json = online_json(vec![(9, n("Zed")), (2, n("Bo"))], (5, Some("Me")));
        assert_eq!(
            json,
            r#"[{"id":2,"name":"Bo"},{"id":5,"name":"Me"},{"id":9,"name":"Zed"}]"#
        );
        let json = online_json(vec![(5, n("Stored"))], (5, Some("Token")));
        assert_eq!(json, r#"[{"id":5,"name":"Stored"}]"#);
        assert_eq!(online_json(vec![], (5, None)), r#"[{"id":5,"name":null}]"#);
        let json = online_json(vec![(1, n("A\"q")), (3, None)], (7, Some("Z")));
        assert_eq!(
            json,
            r#"[{"id":1,"name":"A\"q"},{"id":3,"name":null},{"id":7,"name":"Z"}]"#
        );
    }
}
