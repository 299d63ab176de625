//! Runs SQL exactly in PostgREST's transaction context (POSTGREST.md §2), connected as
//! `authenticator`: BEGIN; set search_path, role, request.jwt.claims, method, path;
//! the statement with bound parameters; COMMIT (ROLLBACK on error).

use serde_json::{json, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

/// The claims of one request, and the role PostgREST would switch to for them.
#[derive(Clone, Debug)]
pub struct Claims {
    pub role: String,
    pub json: Value,
}

impl Claims {
    pub fn user(id: i64) -> Claims {
        Claims {
            role: "authenticated".into(),
            json: json!({"sub": id.to_string(), "role": "authenticated"}),
        }
    }

    pub fn anon() -> Claims {
        Claims {
            role: "anon".into(),
            json: json!({"role": "anon"}),
        }
    }
}

pub struct Postgrest {
    pub client: Client,
}

impl Postgrest {
    pub fn new(client: Client) -> Self {
        Postgrest { client }
    }

    /// `POST /rpc/<function>` with named arguments: `select "api"."fn"("a" := $1, …)`.
    pub async fn rpc(
        &self,
        claims: &Claims,
        function: &str,
        args: &[(&str, &(dyn ToSql + Sync))],
    ) -> Result<Value, tokio_postgres::Error> {
        let named: Vec<String> = args
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("\"{name}\" := ${}", i + 1))
            .collect();
        let sql = format!(
            "select to_json(\"api\".\"{function}\"({}))",
            named.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|(_, v)| *v).collect();
        let rows = self
            .run(claims, &format!("/rpc/{function}"), &sql, &params)
            .await?;
        // A function returning SQL NULL is served by PostgREST as JSON `null`.
        Ok(rows
            .first()
            .and_then(|r| r.get::<_, Option<Value>>(0))
            .unwrap_or(Value::Null))
    }

    /// `POST /rpc/create_chat_room` as `user`; returns the new room's id.
    pub async fn create_room(&self, user: i64, name: &str) -> i64 {
        self.rpc(&Claims::user(user), "create_chat_room", &[("name", &name)])
            .await
            .expect("create_chat_room")["id"]
            .as_i64()
            .expect("room id")
    }

    /// `POST /rpc/send_message` as `user`; returns the stored row.
    pub async fn send(&self, user: i64, room: i64, text: &str) -> Value {
        self.rpc(
            &Claims::user(user),
            "send_message",
            &[("room_id", &room), ("message", &text)],
        )
        .await
        .expect("send_message")
    }

    /// Any statement (table reads and writes) in the same request context.
    pub async fn query(
        &self,
        claims: &Claims,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.run(claims, "/", sql, params).await
    }

    async fn run(
        &self,
        claims: &Claims,
        path: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        self.client.batch_execute("BEGIN").await?;
        let result = async {
            self.client
                .execute(
                    "select set_config('search_path', '\"api\", \"public\"', true), \
                     set_config('role', $1, true), \
                     set_config('request.jwt.claims', $2, true), \
                     set_config('request.method', 'POST', true), \
                     set_config('request.path', $3, true)",
                    &[&claims.role, &claims.json.to_string(), &path],
                )
                .await?;
            self.client.query(sql, params).await
        }
        .await;
        match result {
            Ok(rows) => {
                self.client.batch_execute("COMMIT").await?;
                Ok(rows)
            }
            Err(e) => {
                self.client.batch_execute("ROLLBACK").await?;
                Err(e)
            }
        }
    }
}
