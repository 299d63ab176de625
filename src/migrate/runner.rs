//! Applies what the database lacks: each pending migration in its own transaction (or
//! statement by statement when it says so), then every definition in one transaction
//! when any of them changed or a migration ran. Applied migrations are recorded with a
//! checksum; one that no longer matches its file stops everything.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::files::{statements, Definition, Migration};
use super::{quote_literal, MigrateError};

/// The bookkeeping tables, created before anything else (they say what else exists).
const BOOKKEEPING: &str = "
create schema if not exists pgchat;
create table if not exists pgchat.schema_migrations (
  version       integer primary key,
  name          text not null,
  checksum      text not null,
  transactional boolean not null,
  applied_at    timestamptz not null default now());
create table if not exists pgchat.schema_definitions (
  name       text primary key,
  checksum   text not null,
  applied_at timestamptz not null default now());
revoke all on pgchat.schema_migrations, pgchat.schema_definitions from public;";

pub(super) async fn ensure_bookkeeping(client: &Client) -> Result<(), MigrateError> {
    client.batch_execute(BOOKKEEPING).await?;
    Ok(())
}

/// SHA-256 of each text, hex, computed by the server (one round trip).
pub(super) async fn checksums(
    client: &Client,
    texts: &[&str],
) -> Result<Vec<String>, MigrateError> {
    let texts: Vec<&str> = texts.to_vec();
    let rows = client
        .query(
            "select encode(sha256(convert_to(t, 'UTF8')), 'hex')
               from unnest($1::text[]) with ordinality as x(t, n) order by n",
            &[&texts],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Checks the recorded migrations against the files, then applies the pending ones in
/// order. Returns the names applied.
pub(super) async fn apply_migrations(
    client: &Client,
    migrations: &'static [Migration],
) -> Result<Vec<&'static str>, MigrateError> {
    let sums = checksums(
        client,
        &migrations.iter().map(|m| m.sql).collect::<Vec<_>>(),
    )
    .await?;
    let recorded: HashMap<i32, (String, String)> = client
        .query(
            "select version, name, checksum from pgchat.schema_migrations",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    if let Some(&newest) = recorded
        .keys()
        .filter(|v| **v as usize > migrations.len())
        .max()
    {
        return Err(MigrateError::DatabaseAhead {
            database: newest,
            known: migrations.len() as i32,
        });
    }
    let mut applied = Vec::new();
    for (m, sum) in migrations.iter().zip(&sums) {
        match recorded.get(&m.version) {
            Some((name, checksum)) if name == m.name && checksum == sum => continue,
            Some((name, _)) => {
                return Err(MigrateError::Changed {
                    recorded: name.clone(),
                    file: m.name,
                })
            }
            None => {}
        }
        let record = format!(
            "insert into pgchat.schema_migrations (version, name, checksum, transactional)
             values ({}, {}, {}, {})",
            m.version,
            quote_literal(m.name),
            quote_literal(sum),
            m.transactional
        );
        let result = if m.transactional {
            in_transaction(client, &format!("{}\n;\n{record}", m.sql)).await
        } else {
            run_one_by_one(client, m.sql, &record).await
        };
        result.map_err(|source| MigrateError::Apply {
            file: m.name,
            source,
        })?;
        tracing::info!(migration = m.name, "applied");
        applied.push(m.name);
    }
    Ok(applied)
}

/// Applies every definition in one transaction when any of them differs from what is
/// recorded (or `force`, after a migration). Returns whether it applied them.
pub(super) async fn apply_definitions(
    client: &Client,
    definitions: &'static [Definition],
    force: bool,
) -> Result<bool, MigrateError> {
    let sums = checksums(
        client,
        &definitions.iter().map(|d| d.sql).collect::<Vec<_>>(),
    )
    .await?;
    let mut recorded: Vec<(String, String)> = client
        .query("select name, checksum from pgchat.schema_definitions", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    recorded.sort();
    let wanted: Vec<(String, String)> = definitions
        .iter()
        .zip(&sums)
        .map(|(d, s)| (d.name.to_string(), s.clone()))
        .collect();
    if !force && recorded == wanted {
        return Ok(false);
    }
    let mut sql = String::new();
    for d in definitions {
        sql.push_str(d.sql);
        sql.push_str("\n;\n");
    }
    sql.push_str("delete from pgchat.schema_definitions;\n");
    for (name, sum) in &wanted {
        sql.push_str(&format!(
            "insert into pgchat.schema_definitions (name, checksum) values ({}, {});\n",
            quote_literal(name),
            quote_literal(sum)
        ));
    }
    in_transaction(client, &sql)
        .await
        .map_err(|source| MigrateError::Apply {
            file: "sql/definitions",
            source,
        })?;
    Ok(true)
}

async fn in_transaction(client: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    let result = client
        .batch_execute(&format!("begin;\n{sql}\n;\ncommit;"))
        .await;
    if result.is_err() {
        let _ = client.batch_execute("rollback").await;
    }
    result
}

/// A no-transaction migration: each statement on its own (`CREATE INDEX CONCURRENTLY`
/// refuses to run in a transaction block, implicit ones included), recorded after the
/// last. A failure part-way leaves it unrecorded, so the next run starts it again: such
/// files are written to be re-run (see docs/migrations.md).
async fn run_one_by_one(
    client: &Client,
    sql: &str,
    record: &str,
) -> Result<(), tokio_postgres::Error> {
    for statement in statements(sql) {
        client.batch_execute(statement).await?;
    }
    client.batch_execute(record).await
}
