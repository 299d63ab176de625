//! PostgREST's `jwt-role-claim-key` syntax: `.key`, `."quoted key"`, each segment
//! optionally followed by `[n]` array indexes, e.g. `.realm_access.roles[0]`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<Step>);

#[derive(Debug, thiserror::Error)]
#[error("invalid claim path at byte {0}")]
pub struct ClaimPathError(usize);

impl ClaimPath {
    pub fn parse(src: &str) -> Result<Self, ClaimPathError> {
        let bytes = src.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'.' {
                return Err(ClaimPathError(i));
            }
            i += 1;
            let key = if bytes.get(i) == Some(&b'"') {
                let end = src[i + 1..].find('"').ok_or(ClaimPathError(i))? + i + 1;
                let key = src[i + 1..end].to_string();
                i = end + 1;
                key
            } else {
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b'.' | b'[' | b'"') {
                    i += 1;
                }
                if start == i {
                    return Err(ClaimPathError(i));
                }
                src[start..i].to_string()
            };
            steps.push(Step::Key(key));
            while bytes.get(i) == Some(&b'[') {
                let end = src[i..].find(']').ok_or(ClaimPathError(i))? + i;
                let n = src[i + 1..end].parse().map_err(|_| ClaimPathError(i))?;
                steps.push(Step::Index(n));
                i = end + 1;
            }
        }
        if steps.is_empty() {
            return Err(ClaimPathError(0));
        }
        Ok(ClaimPath(steps))
    }

    /// The value at this path, if every step exists.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(claims, |v, step| match step {
            Step::Key(k) => v.get(k.as_str()),
            Step::Index(n) => v.get(*n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_plain_quoted_and_indexed_segments() {
        let claims =
            json!({"role": "a", "realm_access": {"roles": ["x", "y"]}, "my key": {"r": "q"}});
        let get = |p: &str| ClaimPath::parse(p).unwrap().lookup(&claims).cloned();
        assert_eq!(get(".role"), Some(json!("a")));
        assert_eq!(get(".realm_access.roles[0]"), Some(json!("x")));
        assert_eq!(get(".realm_access.roles[1]"), Some(json!("y")));
        assert_eq!(get(".realm_access.roles[2]"), None);
        assert_eq!(get(".\"my key\".r"), Some(json!("q")));
        assert_eq!(get(".missing"), None);
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in ["", "role", ".", ".a[", ".a[x]", ".\"open"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
