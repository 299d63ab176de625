//! Seeding through SQL as the superuser: users, rooms and memberships in bulk, named
//! with a fresh run id so runs never collide; then one HS256 token per user.

use anyhow::Context;
use serde_json::{Map, Value};
use tokio_postgres::NoTls;

pub struct User {
    pub id: i64,
    /// The claims the token carries (without iat/exp), as PostgREST would set them.
    pub claims_json: String,
    pub token: String,
}

pub struct Room {
    pub id: i64,
    /// Indices into [`Seeded::users`].
    pub members: Vec<usize>,
}

pub struct Seeded {
    pub run: String,
    pub users: Vec<User>,
    pub rooms: Vec<Room>,
}

/// A fresh run id: 8 hex digits.
pub fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// `users` users split into consecutive rooms of `room_size` (the last may be smaller).
pub fn consecutive_rooms(users: usize, room_size: usize) -> Vec<Vec<usize>> {
    let size = room_size.max(1);
    (0..users)
        .collect::<Vec<_>>()
        .chunks(size)
        .map(<[usize]>::to_vec)
        .collect()
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Hides a password in a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Seeds `users` users and one room per entry of `rooms` (member indices), and mints
/// a token for every user with `secret`.
pub async fn seed(
    admin_url: &str,
    secret: &[u8],
    users: usize,
    rooms: &[Vec<usize>],
) -> anyhow::Result<Seeded> {
    let run = run_id();
    let db = connect(admin_url).await?;
    let tag = format!("bench-{run}-");
    let rows = db
        .query(
            "insert into private.users (email, name, password_hash) \
             select $1 || g || '@bench.invalid', $1 || g, 'x' \
               from generate_series(0, $2::int - 1) g \
             returning id, name",
            &[&tag, &(users as i32)],
        )
        .await
        .context("seeding users (is --admin-url a superuser of a migrated database?)")?;
    let mut ids = vec![0i64; users];
    for row in rows {
        let name: String = row.get(1);
        let idx = index_of(&tag, &name).context("unexpected seeded user name")?;
        ids[idx] = row.get(0);
    }
    let mut room_ids = vec![0i64; rooms.len()];
    if !rooms.is_empty() {
        let owner = ids
            .first()
            .copied()
            .context("rooms need at least one user")?;
        let rows = db
            .query(
                "insert into api.chat_rooms (name, created_by) \
                 select $1 || g, $2 from generate_series(0, $3::int - 1) g \
                 returning id, name",
                &[&tag, &owner, &(rooms.len() as i32)],
            )
            .await
            .context("seeding rooms")?;
        for row in rows {
            let name: String = row.get(1);
            room_ids[index_of(&tag, &name).context("unexpected seeded room name")?] = row.get(0);
        }
        let (mut member_rooms, mut member_users) = (Vec::new(), Vec::new());
        for (r, members) in rooms.iter().enumerate() {
            for &u in members {
                member_rooms.push(room_ids[r]);
                member_users.push(ids[u]);
            }
        }
        db.execute(
            "insert into api.room_members (room_id, user_id) \
             select * from unnest($1::bigint[], $2::bigint[])",
            &[&member_rooms, &member_users],
        )
        .await
        .context("seeding memberships")?;
    }
    // A seed grows these tables by orders of magnitude at once. Autovacuum would
    // analyze them within a minute; until then the planner works from the old sizes
    // (on a fresh database the first fanout ran at p50 247 ms instead of 4 ms).
    db.batch_execute("analyze private.users, api.chat_rooms, api.room_members")
        .await
        .context("analyzing the seeded tables")?;
    let users = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| user(secret, id, format!("{tag}{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rooms = rooms
        .iter()
        .zip(room_ids)
        .map(|(members, id)| Room {
            id,
            members: members.clone(),
        })
        .collect();
    Ok(Seeded { run, users, rooms })
}

fn index_of(tag: &str, name: &str) -> Option<usize> {
    name.strip_prefix(tag)?.parse().ok()
}

fn user(secret: &[u8], id: i64, name: String) -> anyhow::Result<User> {
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::String(id.to_string()));
    claims.insert("role".into(), Value::String("authenticated".into()));
    claims.insert("name".into(), Value::String(name));
    let claims_json = Value::Object(claims.clone()).to_string();
    let token = pgchat::auth::mint_token(secret, claims, Some(24 * 3600))?;
    Ok(User {
        id,
        claims_json,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_consecutive_chunks() {
        assert_eq!(
            consecutive_rooms(5, 2),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        assert!(consecutive_rooms(0, 3).is_empty());
    }

    #[test]
    fn names_map_back_to_indices() {
        assert_eq!(index_of("bench-ab-", "bench-ab-17"), Some(17));
        assert_eq!(index_of("bench-ab-", "bench-cd-17"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn tokens_carry_the_claims() {
        let u = user(b"0123456789abcdef0123456789abcdef", 42, "n".into()).unwrap();
        let claims: Value = serde_json::from_str(&u.claims_json).unwrap();
        assert_eq!(claims["sub"], "42");
        assert_eq!(claims["role"], "authenticated");
        assert_eq!(u.token.split('.').count(), 3);
    }
}
