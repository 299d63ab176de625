//! The settings SQL reads, written into the private tables of sql/005_settings.sql,
//! and the database-level settings that held them before (`ALTER DATABASE … SET`)
//! removed: any role that can connect reads those, and any session can shadow them.

use tokio_postgres::Client;

use super::DatabaseSettings;

/// Database settings earlier releases wrote; an upgrade resets them.
const LEGACY: [&str; 2] = ["app.jwt_secret", "pgchat.channel"];

/// Writes the key and the channel unless they hold these values already. Returns
/// whether it changed anything. The key changes in one transaction: a concurrent login
/// never finds the old key gone and the new one not there yet.
pub(super) async fn write(
    client: &Client,
    settings: &DatabaseSettings,
) -> Result<bool, tokio_postgres::Error> {
    client.batch_execute("begin").await?;
    let key = match write_key(client, settings).await {
        Ok(changed) => {
            client.batch_execute("commit").await?;
            changed
        }
        Err(e) => {
            let _ = client.batch_execute("rollback").await;
            return Err(e);
        }
    };
    let channel = client
        .execute(
            "insert into private.settings as s (notify_channel) values ($1)
             on conflict (singleton) do update set notify_channel = excluded.notify_channel
             where s.notify_channel is distinct from excluded.notify_channel",
            &[&settings.notify_channel],
        )
        .await?;
    Ok(key || channel > 0)
}

/// The one key SQL signs with: `kid` '' for a plain `JWT_SECRET`, or the `oct` JWK's
/// own. Any other stored key is removed, so a retired secret does not linger; with no
/// key to store, none is left and login and signup refuse. An unchanged key is not
/// written, so `created_at` tells when it last changed.
async fn write_key(
    client: &Client,
    settings: &DatabaseSettings,
) -> Result<bool, tokio_postgres::Error> {
    if settings.jwt_key.is_empty() {
        return Ok(client.execute("delete from private.jwt_keys", &[]).await? > 0);
    }
    let removed = client
        .execute(
            "delete from private.jwt_keys where kid <> $1",
            &[&settings.jwt_kid],
        )
        .await?;
    let written = client
        .execute(
            "insert into private.jwt_keys as k (kid, alg, secret, active)
             values ($1, 'HS256', $2, true)
             on conflict (kid) do update
               set alg = excluded.alg, secret = excluded.secret, active = true,
                   created_at = now()
             where (k.alg, k.secret, k.active)
                   is distinct from (excluded.alg, excluded.secret, excluded.active)",
            &[&settings.jwt_kid, &settings.jwt_key],
        )
        .await?;
    Ok(removed + written > 0)
}

/// Resets the legacy database settings that are still there. Sessions read database
/// settings when they start: open ones keep the value until they reconnect. Returns
/// whether there was anything to reset.
pub(super) async fn reset_legacy(client: &Client) -> Result<bool, tokio_postgres::Error> {
    let mut changed = false;
    let legacy: &[&str] = &LEGACY;
    let stored = client
        .query(
            "select split_part(cfg, '=', 1)
               from pg_db_role_setting s, unnest(s.setconfig) cfg
              where s.setdatabase = (select oid from pg_database
                                      where datname = current_database())
                and s.setrole = 0 and split_part(cfg, '=', 1) = any($1)",
            &[&legacy],
        )
        .await?;
    for row in stored {
        let name: &str = row.get(0);
        let reset: String = client
            .query_one(
                "select format('alter database %I reset %s', current_database(), $1::text)",
                &[&name],
            )
            .await?
            .get(0);
        client.batch_execute(&reset).await?;
        changed = true;
    }
    Ok(changed)
}
