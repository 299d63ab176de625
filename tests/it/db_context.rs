//! The daemon's "run as this user" transaction is PostgREST's: role, claims and the
//! role's own settings (`ALTER ROLE … SET`) all apply.
use crate::common;

use std::time::Duration;

use pgchat::db::{Db, DbError};

#[tokio::test]
async fn role_settings_apply_like_postgrest() {
    let db = common::TestDb::new().await;
    let (alice, _) = db.signup("alice@example.com", "Alice").await;
    let admin = db.admin().await;
    // Per-database role settings keep the cluster-wide roles untouched for other tests.
    admin
        .batch_execute(&format!(
            "alter role authenticated in database \"{0}\" set app.greeting = 'konnichiwa';
             alter role authenticated in database \"{0}\" set statement_timeout = '100ms';
             create function api.greeting() returns json language sql as
               $$ select json_build_object('greeting', current_setting('app.greeting', true),
                                           'user', current_user) $$;
             create function api.slow() returns json language sql as
               $$ select json_build_object('slept', pg_sleep(1)::text) $$;
             grant execute on function api.greeting(), api.slow() to authenticated;",
            db.name
        ))
        .await
        .unwrap();
    let pool = Db::new(&db.authenticator_url, 2, Duration::from_secs(5)).unwrap();
    pool.load_role_settings().await.unwrap();
    let who = common::server::identity_for(alice);

    let got = pool
        .as_user(&who, "/rpc/greeting", "select api.greeting()", &[])
        .await
        .unwrap()
        .unwrap();
    let got: serde_json::Value = serde_json::from_str(&got.0).unwrap();
    assert_eq!(got["greeting"], "konnichiwa");
    assert_eq!(got["user"], "authenticated");

    // statement_timeout rides on the role: the pool's own 5 s limit is not what stops it.
    let err = pool
        .as_user(&who, "/rpc/slow", "select api.slow()", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbError::Internal(ref m) if m.starts_with("57014")),
        "{err:?}"
    );
    // The connection is usable afterwards (the failed transaction was rolled back).
    assert!(pool
        .as_user(&who, "/rpc/greeting", "select api.greeting()", &[])
        .await
        .is_ok());
}
