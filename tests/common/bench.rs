//! The bench binary for the tests that drive it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Builds `pgchat-bench` once per test process, into this test binary's target dir and
/// profile: a test gets `CARGO_BIN_EXE_*` only for its own package's binaries, not for
/// another workspace member's. The build is a no-op when the binary is up to date.
pub fn bench_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // <target>/<profile>/deps/bench_smoke-<hash>
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("<target>/<profile>");
            let target_dir = profile_dir.parent().expect("<target>");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => "dev",
                Some(other) => other,
                None => panic!("no profile in {exe:?}"),
            };
            let out = std::process::Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "pgchat-bench",
                    "--bin",
                    "pgchat-bench",
                ])
                .args(["--profile", profile, "--target-dir"])
                .arg(target_dir)
                .arg("--manifest-path")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .output()
                .expect("cargo runs");
            assert!(
                out.status.success(),
                "building pgchat-bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            profile_dir.join("pgchat-bench")
        })
        .clone()
}
