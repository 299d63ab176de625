//! No container engine runs in CI, so this reads the deployment files and checks what
//! can be checked without one: the pod's containers and ports, that pgchat gets exactly
//! the environment it reads (and that it validates), the probe paths, and the
//! Containerfile's shape.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Every YAML document of podman.yaml, as JSON values.
fn documents() -> Vec<Value> {
    let text = repo_file("podman.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("podman.yaml is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn doc_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("podman.yaml has no {kind}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .expect("pod has containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("pod has no `{name}` container"))
}

/// The container's environment with secretKeyRef values resolved from the Secret.
fn env_of(container: &Value, secret: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str().expect("env values are strings").to_string()
        } else {
            let key_ref = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(
                key_ref["name"], secret["metadata"]["name"],
                "{name}: unknown secret"
            );
            let key = key_ref["key"].as_str().expect("secret key");
            let b64 = secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("secret has no {key}"));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64 secret");
            String::from_utf8(bytes).expect("utf-8 secret")
        };
        assert!(
            env.insert(name.clone(), value).is_none(),
            "{name} is set twice"
        );
    }
    env
}

/// `Config`'s fields, uppercased as envy reads them, and whether each has a serde default.
/// Read from the source so that a new field shows up here without anyone listing it.
fn config_fields() -> BTreeMap<String, bool> {
    let src = repo_file("src/config.rs");
    let body = src
        .split("pub struct Config {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("src/config.rs defines `pub struct Config { … }`");
    let mut fields = BTreeMap::new();
    let mut has_default = false;
    for line in body.lines().map(str::trim) {
        if line.starts_with("#[serde(") && line.contains("default") {
            has_default = true;
        } else if let Some(rest) = line.strip_prefix("pub ") {
            let name = rest.split(':').next().unwrap().trim();
            fields.insert(name.to_uppercase(), has_default);
            has_default = false;
        }
    }
    assert!(fields.len() > 5, "parsed too few Config fields: {fields:?}");
    fields
}

#[test]
fn pod_has_postgres_postgrest_and_pgchat_with_their_ports() {
    let docs = documents();
    let pod = doc_of_kind(&docs, "Pod");
    let names: Vec<_> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["postgres", "postgrest", "pgchat"]);

    let image = |name| container(pod, name)["image"].as_str().unwrap().to_string();
    assert!(
        image("postgres").contains("postgres:15"),
        "{}",
        image("postgres")
    );
    assert!(
        image("postgrest").contains("postgrest/postgrest"),
        "{}",
        image("postgrest")
    );
    assert_eq!(image("pgchat"), "localhost/pgchat:latest");

    let ports = |name| -> Vec<(u64, Option<u64>)> {
        container(pod, name)["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["containerPort"].as_u64().unwrap(), p["hostPort"].as_u64()))
            .collect()
    };
    assert_eq!(ports("pgchat"), [(3001, Some(3001))]);
    assert_eq!(ports("postgrest"), [(3000, Some(3000))]);
    assert_eq!(
        ports("postgres"),
        [(5432, None)],
        "PostgreSQL stays inside the pod"
    );
}

#[test]
fn pgchat_gets_exactly_the_environment_it_reads_and_it_validates() {
    let docs = documents();
    let pod = doc_of_kind(&docs, "Pod");
    let secret = doc_of_kind(&docs, "Secret");
    let env = env_of(container(pod, "pgchat"), secret);
    let fields = config_fields();

    // RUST_LOG is read by the tracing filter (src/telemetry.rs), not by Config.
    let unknown: Vec<_> = env
        .keys()
        .filter(|k| !fields.contains_key(*k) && k.as_str() != "RUST_LOG")
        .collect();
    assert!(unknown.is_empty(), "pgchat does not read {unknown:?}");
    let missing: Vec<_> = fields
        .iter()
        .filter(|(name, has_default)| !**has_default && !env.contains_key(*name))
        .collect();
    assert!(missing.is_empty(), "required and not set: {missing:?}");
    for name in [
        "DATABASE_URL",
        "ADMIN_DATABASE_URL",
        "JWT_SECRET",
        "WS_PORT",
        "WS_HOST",
        "DB_ANON_ROLE",
        "STATIC_DIR",
        "LOG_FORMAT",
        "ALLOWED_ORIGINS",
    ] {
        assert!(
            env.contains_key(name),
            "{name} should be set explicitly in the pod"
        );
    }

    // pgchat itself accepts the values (secret length, URLs, log format, …).
    let config =
        pgchat::config::Config::from_pairs(env.clone()).expect("pgchat accepts the pod's env");
    assert_eq!(config.ws_port, 3001);
    assert_eq!(config.db_anon_role.as_deref(), Some("anon"));

    // Both URLs point at the Unix socket directory shared with the postgres container.
    for url in [&config.database_url, config.admin_url()] {
        let parsed: tokio_postgres::Config = url.parse().unwrap();
        let hosts = parsed.get_hosts();
        assert!(
            matches!(hosts.first(), Some(tokio_postgres::config::Host::Unix(p)) if p == Path::new("/var/run/postgresql")),
            "{url} should use the socket in /var/run/postgresql, got {hosts:?}"
        );
    }
    let socket_mount = |name| {
        container(pod, name)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "pgsocket" && m["mountPath"] == "/var/run/postgresql")
    };
    assert!(socket_mount("postgres") && socket_mount("pgchat") && socket_mount("postgrest"));

    // PostgREST serves the same schema with the same secret and anonymous role.
    let rest = env_of(container(pod, "postgrest"), secret);
    assert_eq!(rest["PGRST_JWT_SECRET"], env["JWT_SECRET"]);
    assert_eq!(rest["PGRST_DB_SCHEMAS"], "api");
    assert_eq!(rest["PGRST_DB_ANON_ROLE"], env["DB_ANON_ROLE"]);
    assert!(rest["PGRST_DB_URI"].starts_with("postgres://authenticator@"));
}

#[test]
fn probes_use_paths_the_server_serves() {
    let docs = documents();
    let pod = doc_of_kind(&docs, "Pod");
    let pgchat = container(pod, "pgchat");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(pgchat[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(pgchat[probe]["httpGet"]["port"], 3001, "{probe}");
    }
    // The routes are string literals in the server's source.
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = String::new();
    for entry in std::fs::read_dir(&src_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    for path in ["\"/readyz\"", "\"/healthz\""] {
        assert!(sources.contains(path), "no route {path} in src/*.rs");
    }
    for name in ["postgres", "postgrest"] {
        let c = container(pod, name);
        assert!(
            c["readinessProbe"].is_object() && c["livenessProbe"].is_object(),
            "{name} probes"
        );
    }
}

#[test]
fn pgchat_container_args_are_a_valid_command_line() {
    let docs = documents();
    let args: Vec<String> = container(doc_of_kind(&docs, "Pod"), "pgchat")["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, ["serve", "--migrate"]);
    let help = Command::new(env!("CARGO_BIN_EXE_pgchat"))
        .args(["serve", "--help"])
        .output()
        .expect("run pgchat serve --help");
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--migrate"));
}

#[test]
fn containerfile_is_multi_stage_small_and_non_root() {
    let text = repo_file("Containerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<_> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert!(
        froms.len() >= 3,
        "builder, frontend and runtime stages: {froms:?}"
    );
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[last_from..];
    assert!(
        runtime[0].contains("distroless") || runtime[0].contains("slim"),
        "small final image: {}",
        runtime[0]
    );
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap().trim();
    assert!(uid != "root" && uid != "0", "runs as non-root, not {user}");
    assert!(runtime.contains(&r#"ENTRYPOINT ["pgchat"]"#));
    assert!(runtime.contains(&r#"CMD ["serve"]"#));

    // ENV names in the image are names pgchat reads.
    let fields = config_fields();
    let mut seen = BTreeSet::new();
    for chunk in text.split("\nENV ").skip(1) {
        for line in chunk.lines() {
            let name = line.trim().split('=').next().unwrap().trim();
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    fields.contains_key(name),
                    "Containerfile sets unknown {name}"
                );
                seen.insert(name.to_string());
            }
            if !line.trim_end().ends_with('\\') {
                break;
            }
        }
    }
    assert!(
        seen.contains("STATIC_DIR"),
        "the image points STATIC_DIR at its frontend"
    );

    // Everything the build copies exists, and the context ignores local build output.
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "sql",
        "frontend/package.json",
        "frontend/package-lock.json",
    ] {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(path).exists(),
            "{path}"
        );
    }
    let ignore = repo_file(".containerignore");
    assert!(ignore.contains("target/") && ignore.contains("node_modules/"));
}
