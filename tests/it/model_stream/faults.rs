//! The faults the model injects besides ordinary operations: a writer racing a resume
//! on a connection of its own, and a daemon's LISTEN backend terminated.

use rand::seq::SliceRandom;

use super::client::Outcome;
use super::world::World;
use crate::common::postgrest::Claims;

impl World {
    /// Five messages and an edit of the first, as `user`, on a connection of their own,
    /// concurrently with whatever the caller does next.
    pub fn burst(&self, user: i64, step: usize) -> tokio::task::JoinHandle<Outcome<()>> {
        let (pg, room) = (self.writer.clone(), self.room);
        tokio::spawn(async move {
            let claims = Claims::user(user);
            let mut first = None;
            for k in 0..5 {
                let text = format!("step {step} burst {k}");
                let row = pg
                    .rpc(
                        &claims,
                        "send_message",
                        &[("room_id", &room), ("message", &text)],
                    )
                    .await
                    .map_err(|e| format!("burst send: {e}"))?;
                first = first.or(row["id"].as_i64());
            }
            let edit = format!("step {step} burst edited");
            pg.rpc(
                &claims,
                "edit_message",
                &[("message_id", &first), ("message", &edit)],
            )
            .await
            .map_err(|e| format!("burst edit: {e}"))?;
            Ok(())
        })
    }

    /// Terminates one daemon's LISTEN backend (a real `pg_terminate_backend`).
    pub async fn kill_listener(&mut self) -> Option<i32> {
        let pids: Vec<i32> = self
            .admin
            .query(
                "select pid from pg_stat_activity
                  where application_name = 'pgchat-listener' and datname = current_database()
                  order by pid",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let pid = *pids.choose(&mut self.rng)?;
        self.admin
            .execute("select pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        Some(pid)
    }
}
