//! Unit tests of reading, defaults, limits and refusals.

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn plan_names_work_and_defaults_apply() {
    let c = Config::from_pairs([
        ("DATABASE_URL", "postgres://u@localhost/db"),
        ("JWT_SECRET", SECRET),
        ("WS_PORT", "4000"),
    ])
    .unwrap();
    assert_eq!(c.ws_port, 4000);
    assert_eq!(c.message_max_chars, 5000);
    assert_eq!(c.jwt_role_claim_key, ".role");
    assert_eq!(c.notify_channel, "pgchat");
    assert_eq!(
        c.user_concurrency(),
        4,
        "a quarter of the 16-connection pool"
    );
}

#[test]
fn user_concurrency_defaults_to_a_quarter_of_the_pool_and_0_turns_it_off() {
    let with = |pairs: Vec<(&str, &str)>| {
        let mut all = vec![("JWT_SECRET", SECRET)];
        all.extend(pairs);
        Config::from_pairs(all).unwrap().user_concurrency()
    };
    assert_eq!(with(vec![("DB_POOL_SIZE", "3")]), 1, "never below 1");
    assert_eq!(with(vec![("DB_POOL_SIZE", "40")]), 10);
    assert_eq!(with(vec![("DB_USER_CONCURRENCY", "0")]), 0);
    assert_eq!(with(vec![("DB_USER_CONCURRENCY", "3")]), 3);
}

#[test]
fn refuses_missing_short_and_bad_values() {
    let err = |pairs: Vec<(&str, &str)>| Config::from_pairs(pairs).unwrap_err().to_string();
    assert!(err(vec![]).contains("JWT_SECRET is not set"));
    assert!(err(vec![("JWT_SECRET", "short")]).contains("at least 32"));
    assert!(
        err(vec![("JWT_SECRET", SECRET), ("DATABASE_URL", "nope://x y")]).contains("DATABASE_URL")
    );
    assert!(err(vec![("JWT_SECRET", SECRET), ("LOG_FORMAT", "xml")]).contains("LOG_FORMAT"));
    assert!(
        err(vec![("JWT_SECRET", SECRET), ("NOTIFY_CHANNEL", "pgrst")]).contains("NOTIFY_CHANNEL")
    );
    assert!(err(vec![
        ("JWT_SECRET", SECRET),
        ("TRUSTED_PROXIES", "10.0.0.0/40")
    ])
    .contains("TRUSTED_PROXIES"));
    assert!(
        err(vec![("JWT_SECRET", SECRET), ("UPGRADE_TIMEOUT_SECS", "0")])
            .contains("UPGRADE_TIMEOUT_SECS")
    );
}

#[test]
fn unauthenticated_cap_defaults_to_a_quarter() {
    let with = |pairs: Vec<(&str, &str)>| {
        let mut all = vec![("JWT_SECRET", SECRET)];
        all.extend(pairs);
        Config::from_pairs(all).unwrap()
    };
    let c = with(vec![]);
    assert_eq!(c.max_unauthenticated(), 4500);
    assert_eq!((c.header_timeout_secs, c.upgrade_timeout_secs), (10, 10));
    assert_eq!(c.max_connections_per_ip, 0);
    assert_eq!(
        with(vec![("MAX_CONNECTIONS", "60")]).max_unauthenticated(),
        15
    );
    assert_eq!(
        with(vec![("MAX_CONNECTIONS", "3")]).max_unauthenticated(),
        1
    );
    let c = with(vec![
        ("MAX_CONNECTIONS", "60"),
        ("MAX_UNAUTHENTICATED", "100"),
    ]);
    assert_eq!(c.max_unauthenticated(), 60);
}

#[test]
fn base64_secret_accepts_url_safe_alphabet() {
    // 33 bytes of 0xfb encode with '+'/'/' in the standard alphabet, '-'/'_' in URL-safe.
    use base64::Engine;
    let raw = vec![0xfbu8; 33];
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    let c = Config::from_pairs([
        ("JWT_SECRET", url_safe.as_str()),
        ("JWT_SECRET_IS_BASE64", "true"),
    ])
    .unwrap();
    let key = c.hmac_signing_key().unwrap().unwrap();
    assert_eq!((key.kid.as_str(), key.secret), ("", raw));
}
