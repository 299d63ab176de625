//! Finds the SQL files at build time: `sql/migrations/NNNN_name.sql` (forward-only,
//! numbered from 0001 without gaps) and `sql/definitions/NNN_name.sql` (re-runnable,
//! applied in name order), and writes them as constants that `src/migrate/files.rs`
//! includes. A misnamed or misnumbered file fails the build, not a deployment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The first line that makes a migration run outside a transaction.
const NO_TRANSACTION: &str = "-- pgchat:no-transaction";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let migrations = sql_files(&root.join("sql/migrations"));
    let definitions = sql_files(&root.join("sql/definitions"));
    let mut out = String::new();

    out.push_str("pub const MIGRATIONS: &[Migration] = &[\n");
    for (i, path) in migrations.iter().enumerate() {
        let name = file_name(path);
        let version = migration_version(&name);
        assert_eq!(
            version as usize,
            i + 1,
            "sql/migrations: {name} should be numbered {:04} (numbers start at 0001, no gaps)",
            i + 1
        );
        let sql = std::fs::read_to_string(path).unwrap();
        let transactional = !sql.starts_with(NO_TRANSACTION);
        if !transactional {
            // Run statement by statement: the splitter does not know dollar quoting.
            assert!(
                !sql.contains('$'),
                "sql/migrations/{name}: a no-transaction migration cannot use dollar quotes"
            );
        }
        writeln!(
            out,
            "    Migration {{ version: {version}, name: {name:?}, transactional: {transactional}, sql: include_str!({:?}) }},",
            path.display()
        )
        .unwrap();
    }
    out.push_str("];\n\npub const DEFINITIONS: &[Definition] = &[\n");
    for path in &definitions {
        let name = file_name(path);
        assert!(
            name.len() > 4 && name[..3].bytes().all(|b| b.is_ascii_digit()) && &name[3..4] == "_",
            "sql/definitions: {name} is not named NNN_name.sql"
        );
        writeln!(
            out,
            "    Definition {{ name: {name:?}, sql: include_str!({:?}) }},",
            path.display()
        )
        .unwrap();
    }
    out.push_str("];\n");

    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("sql_files.rs");
    std::fs::write(dest, out).unwrap();
    println!("cargo:rerun-if-changed=sql/migrations");
    println!("cargo:rerun-if-changed=sql/definitions");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The `.sql` files of a directory, sorted by name.
fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_string()
}

fn migration_version(name: &str) -> u32 {
    let ok = name.len() > 9
        && name[..4].bytes().all(|b| b.is_ascii_digit())
        && &name[4..5] == "_"
        && name[5..name.len() - 4]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    assert!(
        ok,
        "sql/migrations: {name} is not named NNNN_lowercase_name.sql"
    );
    name[..4].parse().unwrap()
}
