//! `JWT_SECRET` read as PostgREST reads `jwt-secret`: `@path` names a file holding the
//! value (less one trailing newline); `JWT_SECRET_IS_BASE64` decodes it (URL-safe
//! alphabet accepted); then it is a JWK or a JWK Set when it starts with `{`, else a
//! plain secret of at least 32 characters.

use super::KeySet;
use crate::config::ConfigError;

pub fn key_set(secret: Option<&str>, is_base64: bool) -> Result<KeySet, ConfigError> {
    let secret = secret.unwrap_or("");
    if secret.is_empty() {
        return Err(ConfigError::MissingSecret);
    }
    let text = match secret.strip_prefix('@') {
        Some(path) => read_secret_file(path)?,
        None => secret.as_bytes().to_vec(),
    };
    let bytes = if is_base64 {
        decode_base64(&text)?
    } else {
        text.clone()
    };
    if KeySet::is_json(&bytes) {
        return Ok(KeySet::from_json(&bytes)?);
    }
    // Characters of the configured text, before decoding, as pgchat always counted.
    if String::from_utf8_lossy(&text).chars().count() < 32 {
        return Err(ConfigError::ShortSecret);
    }
    Ok(KeySet::plain(&bytes))
}

/// PostgREST's `@file` rule: the whole file, less one trailing newline.
fn read_secret_file(path: &str) -> Result<Vec<u8>, ConfigError> {
    let mut content = std::fs::read(path)
        .map_err(|e| ConfigError::UnreadableSecret(path.to_string(), e.to_string()))?;
    if content.last() == Some(&b'\n') {
        content.pop();
    }
    Ok(content)
}

/// Standard or URL-safe base64, padding optional, whitespace ignored.
fn decode_base64(text: &[u8]) -> Result<Vec<u8>, ConfigError> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use base64::Engine;
    let normalized: String = String::from_utf8_lossy(text)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let unpadded = normalized.trim_end_matches('=');
    let padded = format!("{unpadded}{}", "=".repeat((4 - unpadded.len() % 4) % 4));
    STANDARD
        .decode(&padded)
        .or_else(|_| URL_SAFE.decode(&padded))
        .map_err(|_| ConfigError::BadBase64Secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(secret: &str, is_base64: bool) -> String {
        match key_set(Some(secret), is_base64) {
            Ok(_) => panic!("{secret:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_minimum_length_is_for_plain_secrets_only() {
        assert!(err("", false).contains("not set"));
        assert!(err("0123456789012345678901234567890", false).contains("at least 32"));
        assert!(key_set(Some("01234567890123456789012345678901"), false).is_ok());
        // A short JWK is fine: its `k` is what it is.
        assert!(key_set(Some(r#"{"kty":"oct","k":"c2hvcnQ"}"#), false).is_ok());
        assert!(err(r#" {"kty":"oct""#, false).contains("not valid JSON"));
    }

    #[test]
    fn base64_applies_before_the_jwk_is_read() {
        use base64::Engine;
        let jwk = r#"{"kty":"oct","kid":"b","k":"c2VjcmV0"}"#;
        let encoded = base64::engine::general_purpose::STANDARD.encode(jwk);
        let key = key_set(Some(&encoded), true)
            .unwrap()
            .hmac_signing_key()
            .unwrap();
        assert_eq!(
            (key.kid.as_str(), key.secret.as_slice()),
            ("b", &b"secret"[..])
        );
        assert!(err("not base64 at all, not at all!!!!", true).contains("base64"));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let message = err("@/nonexistent/pgchat/secret", false);
        assert!(message.contains("/nonexistent/pgchat/secret"), "{message}");
        assert_eq!(message.lines().count(), 1);
    }
}
