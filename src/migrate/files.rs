//! The SQL files embedded in the binary, found at build time by `build.rs`.

/// A numbered, forward-only schema change: applied once, never edited afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    /// False when the file starts with `-- pgchat:no-transaction` (for `CREATE INDEX
    /// CONCURRENTLY` on a big table): then its statements run one by one.
    pub transactional: bool,
    pub sql: &'static str,
}

/// A re-runnable file of functions, views, policies and grants for one feature:
/// all of them are applied again, in name order, whenever any of them changed or a
/// migration was applied.
#[derive(Debug, Clone, Copy)]
pub struct Definition {
    pub name: &'static str,
    pub sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/sql_files.rs"));

/// Splits a no-transaction migration into statements: at each `;` outside quotes and
/// comments (build.rs refuses dollar quotes in such files).
pub fn statements(sql: &str) -> Vec<&str> {
    let bytes = sql.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b';' => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| {
            !s.lines()
                .all(|l| l.trim().is_empty() || l.trim().starts_with("--"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        assert!(MIGRATIONS.iter().all(|m| m.transactional));
        assert!(DEFINITIONS.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql = "-- pgchat:no-transaction\n-- a comment; still a comment\n\
                   drop index concurrently if exists x;\n\
                   create index concurrently x on t (a) where b <> ';';\n-- end\n";
        assert_eq!(
            statements(sql),
            [
                "-- pgchat:no-transaction\n-- a comment; still a comment\n\
                 drop index concurrently if exists x",
                "create index concurrently x on t (a) where b <> ';'"
            ]
        );
    }
}
