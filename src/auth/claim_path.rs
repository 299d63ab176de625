//! PostgREST's `jwt-role-claim-key` syntax (v12/v13), all of it:
//!
//! - `.key`, where a key is letters, digits, `_`, `$` and `@`, or `."any text"` quoted
//!   (no escapes: a quoted key ends at the next `"`);
//! - `[n]`, an array index;
//! - at the very end only, a filter on an array of strings: `[?(@ == "x")]` (equals),
//!   `!=` (differs), `^==` (starts with), `==^` (ends with) and `*==` (contains), which
//!   selects the first string that matches.
//!
//! The steps may come in any order, e.g. `.realm_access.roles[0]`,
//! `.roles[?(@ ^== "app_")]`. Anything else is refused at start-up.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Filter(Match, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Equals,
    NotEquals,
    StartsWith,
    EndsWith,
    Contains,
}

impl Match {
    fn test(self, pattern: &str, text: &str) -> bool {
        match self {
            Match::Equals => text == pattern,
            Match::NotEquals => text != pattern,
            Match::StartsWith => text.starts_with(pattern),
            Match::EndsWith => text.ends_with(pattern),
            Match::Contains => text.contains(pattern),
        }
    }
}

/// Operators in the order PostgREST tries them (`==^` before `==`).
const OPERATORS: [(&str, Match); 5] = [
    ("==^", Match::EndsWith),
    ("==", Match::Equals),
    ("!=", Match::NotEquals),
    ("^==", Match::StartsWith),
    ("*==", Match::Contains),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<Step>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid claim path at character {0}")]
pub struct ClaimPathError(usize);

impl ClaimPath {
    pub fn parse(src: &str) -> Result<Self, ClaimPathError> {
        let mut p = Parser {
            chars: src.chars().collect(),
            at: 0,
        };
        let mut steps = Vec::new();
        while !p.done() {
            if matches!(steps.last(), Some(Step::Filter(..))) {
                return Err(p.error()); // a filter is the last step
            }
            steps.push(p.step()?);
        }
        if steps.is_empty() {
            return Err(p.error());
        }
        Ok(ClaimPath(steps))
    }

    /// The value at this path, if every step finds one.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(claims, |v, step| match step {
            Step::Key(k) => v.as_object()?.get(k.as_str()),
            Step::Index(n) => v.as_array()?.get(*n),
            Step::Filter(how, pattern) => v
                .as_array()?
                .iter()
                .find(|item| item.as_str().is_some_and(|s| how.test(pattern, s))),
        })
    }

    /// The role this path names in `claims`, as PostgREST reads it: a string as it is,
    /// any other value found (a number, `null`, an object) as its JSON text.
    pub fn role(&self, claims: &Value) -> Option<String> {
        match self.lookup(claims)? {
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn done(&self) -> bool {
        self.at >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn error(&self) -> ClaimPathError {
        ClaimPathError(self.at)
    }

    fn eat(&mut self, text: &str) -> bool {
        let n = text.chars().count();
        let matches = self.chars.len() >= self.at + n
            && self.chars[self.at..self.at + n]
                .iter()
                .copied()
                .eq(text.chars());
        if matches {
            self.at += n;
        }
        matches
    }

    fn step(&mut self) -> Result<Step, ClaimPathError> {
        if self.eat(".") {
            if self.peek() == Some('"') {
                return Ok(Step::Key(self.quoted()?));
            }
            let start = self.at;
            while self
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '@'))
            {
                self.at += 1;
            }
            if start == self.at {
                return Err(self.error());
            }
            return Ok(Step::Key(self.chars[start..self.at].iter().collect()));
        }
        if self.eat("[?(") {
            return self.filter();
        }
        if self.eat("[") {
            let start = self.at;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.at += 1;
            }
            let digits: String = self.chars[start..self.at].iter().collect();
            let n = digits.parse().map_err(|_| ClaimPathError(start))?;
            if !self.eat("]") {
                return Err(self.error());
            }
            return Ok(Step::Index(n));
        }
        Err(self.error())
    }

    /// After `[?(`: `@`, an operator, a quoted pattern, `)]`.
    fn filter(&mut self) -> Result<Step, ClaimPathError> {
        if !self.eat("@") {
            return Err(self.error());
        }
        self.spaces();
        let how = OPERATORS
            .iter()
            .find_map(|(op, how)| self.eat(op).then_some(*how))
            .ok_or_else(|| self.error())?;
        self.spaces();
        let pattern = self.quoted()?;
        if !self.eat(")]") {
            return Err(self.error());
        }
        Ok(Step::Filter(how, pattern))
    }

    fn spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// `"…"` without escapes.
    fn quoted(&mut self) -> Result<String, ClaimPathError> {
        if !self.eat("\"") {
            return Err(self.error());
        }
        let start = self.at;
        while self.peek().is_some_and(|c| c != '"') {
            self.at += 1;
        }
        let text = self.chars[start..self.at].iter().collect();
        if !self.eat("\"") {
            return Err(self.error());
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Value {
        json!({
            "role": "a",
            "realm_access": {"roles": ["x", "app_reader", "y", 7, "app_writer"]},
            "my key": {"r": "q"},
            "$weird@": "w",
            "": {"empty": "e"},
            "num": 5,
            "nothing": null,
            "obj": {"k": [1]},
            "top": [["nested"]],
        })
    }

    fn get(path: &str) -> Option<Value> {
        ClaimPath::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lookup(&claims())
            .cloned()
    }

    #[test]
    fn keys_quoted_keys_and_indexes() {
        assert_eq!(get(".role"), Some(json!("a")));
        assert_eq!(get(".realm_access.roles[0]"), Some(json!("x")));
        assert_eq!(get(".realm_access.roles[2]"), Some(json!("y")));
        assert_eq!(get(".realm_access.roles[9]"), None);
        assert_eq!(get(".\"my key\".r"), Some(json!("q")));
        assert_eq!(get(".$weird@"), Some(json!("w")));
        assert_eq!(get(".\"\".empty"), Some(json!("e")));
        assert_eq!(get(".top[0][0]"), Some(json!("nested")));
        assert_eq!(get(".missing"), None);
        // An index on an object, a key on an array: nothing.
        assert_eq!(get(".obj[0]"), None);
        assert_eq!(get(".realm_access.roles.x"), None);
        // Steps in any order, an index first included (the claims are an object).
        assert_eq!(get("[0]"), None);
    }

    #[test]
    fn filters_pick_the_first_matching_string() {
        let roles = ".realm_access.roles";
        let f = |filter: &str| get(&format!("{roles}{filter}"));
        assert_eq!(f(r#"[?(@ == "y")]"#), Some(json!("y")));
        assert_eq!(f(r#"[?(@=="y")]"#), Some(json!("y")));
        assert_eq!(f(r#"[?(@ == "z")]"#), None);
        assert_eq!(f(r#"[?(@ != "x")]"#), Some(json!("app_reader")));
        assert_eq!(f(r#"[?(@ ^== "app_")]"#), Some(json!("app_reader")));
        assert_eq!(f(r#"[?(@ ==^ "_writer")]"#), Some(json!("app_writer")));
        assert_eq!(f(r#"[?(@ *== "p_w")]"#), Some(json!("app_writer")));
        // Numbers are never matched; a filter on an object finds nothing.
        assert_eq!(f(r#"[?(@ == "7")]"#), None);
        assert_eq!(get(r#".obj[?(@ == "k")]"#), None);
    }

    #[test]
    fn a_role_that_is_not_a_string_is_its_json_text() {
        let role = |p: &str| ClaimPath::parse(p).unwrap().role(&claims());
        assert_eq!(role(".role").as_deref(), Some("a"));
        assert_eq!(role(".num").as_deref(), Some("5"));
        assert_eq!(role(".nothing").as_deref(), Some("null"));
        assert_eq!(role(".obj").as_deref(), Some(r#"{"k":[1]}"#));
        assert_eq!(role(".missing"), None);
    }

    #[test]
    fn rejects_what_postgrest_rejects() {
        for bad in [
            "",
            "role",
            ".",
            ".a-b",
            ".a b",
            ".a[",
            ".a[x]",
            ".a[-1]",
            ".a[]",
            ".\"open",
            ".a[?(@ == \"x\")].b",
            ".a[?(@ == \"x\")][0]",
            ".a[?(@ = \"x\")]",
            ".a[?(@ == x)]",
            ".a[?(== \"x\")]",
            ".a[?(@ == \"x\"]",
            ".a[99999999999999999999999]",
        ] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
