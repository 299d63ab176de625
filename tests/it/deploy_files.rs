//! CI runs no container engine (scripts/pod-check plays the pod for real), so this reads
//! the deployment files and checks what can be checked without one: the pod's
//! containers, ports and limits; who holds which credentials; that each pgchat container
//! gets exactly the environment it reads (and that it validates) and a command line it
//! accepts; probes podman 4.3 and 5 can run; the secret's form; and the Containerfile.

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

fn pod() -> Value {
    documents()
        .into_iter()
        .find(|d| d["kind"] == "Pod")
        .expect("podman.yaml has a Pod")
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .expect("pod has containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("pod has no `{name}` container"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// What scripts/pod-secrets puts in the secret, for a given password and JWT secret:
/// its keys and value templates are read from the script itself.
fn secret_values(password: &str, jwt_secret: &str) -> BTreeMap<String, String> {
    let script = repo_file("scripts/pod-secrets");
    let format = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("printf '{"))
        .expect("pod-secrets prints a JSON object");
    let keys: Vec<&str> = format
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 4 == 1)
        .map(|(_, k)| k)
        .collect();
    let values: Vec<String> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"$(b64 \""))
        .map(|v| {
            v.split("\")\"")
                .next()
                .unwrap()
                .replace("$password", password)
                .replace("$jwt_secret", jwt_secret)
        })
        .collect();
    assert_eq!(keys.len(), values.len(), "{keys:?} / {values:?}");
    keys.into_iter().map(String::from).zip(values).collect()
}

const PASSWORD: &str = "0123456789abcdef0123456789abcdef";
const JWT_SECRET: &str = "a-jwt-secret-of-at-least-thirty-two-characters";

/// The container's environment, with secretKeyRef values as pod-secrets writes them.
fn env_of(container: &Value) -> BTreeMap<String, String> {
    let secret = secret_values(PASSWORD, JWT_SECRET);
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().expect("env name").to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str().expect("env values are strings").to_string()
        } else {
            let key_ref = &e["valueFrom"]["secretKeyRef"];
            assert_eq!(key_ref["name"], "pgchat-secrets", "{name}: unknown secret");
            let key = key_ref["key"].as_str().expect("secret key");
            secret
                .get(key)
                .unwrap_or_else(|| panic!("{name}: pod-secrets writes no `{key}`"))
                .clone()
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
    let src = repo_file("src/config/mod.rs");
    let body = src
        .split("pub struct Config {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("src/config/mod.rs defines `pub struct Config { … }`");
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

/// The environment reaches pgchat, which accepts it; every name is one pgchat reads.
fn pgchat_config(container: &Value) -> pgchat::config::Config {
    let env = env_of(container);
    let fields = config_fields();
    // RUST_LOG is read by the tracing filter (src/telemetry.rs), not by Config.
    let unknown: Vec<_> = env
        .keys()
        .filter(|k| !fields.contains_key(*k) && k.as_str() != "RUST_LOG")
        .collect();
    assert!(unknown.is_empty(), "pgchat does not read {unknown:?}");
    pgchat::config::Config::from_pairs(env).expect("pgchat accepts the container's env")
}

fn pgchat_help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pgchat"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run pgchat --help");
    assert!(out.status.success(), "pgchat {args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_pod_holds_postgres_migrate_postgrest_and_pgchat_on_pinned_images() {
    let pod = pod();
    let names: Vec<_> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["postgres", "migrate", "postgrest", "pgchat"]);
    let image = |name| container(&pod, name)["image"].as_str().unwrap().to_string();
    assert_pinned(&image("postgres"), "docker.io/library/postgres:15.");
    assert_pinned(&image("postgrest"), "docker.io/postgrest/postgrest:v12.");
    assert_eq!(image("migrate"), "localhost/pgchat:latest");
    assert_eq!(image("pgchat"), "localhost/pgchat:latest");
    // The ConfigMap's pg_hba.conf is the one PostgreSQL reads.
    let postgres = container(&pod, "postgres");
    let args = strings(&postgres["args"]);
    let hba_path = args
        .iter()
        .find_map(|a| a.strip_prefix("hba_file="))
        .expect("postgres is started with the pod's hba_file");
    let mount = postgres["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| hba_path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("hba_file lies in a mounted volume");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let config_map = documents()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == volume["configMap"]["name"])
        .expect("the hba volume is a ConfigMap of podman.yaml");
    assert!(config_map["data"][hba_path.rsplit('/').next().unwrap()].is_string());
}

/// `image` starts with `prefix` and is pinned: by digest, or by a tag whose version has
/// at least two numbers (`15.14-bookworm`, `v12.2.12`, `1.95.0-bookworm`).
fn assert_pinned(image: &str, prefix: &str) {
    assert!(image.starts_with(prefix), "{image} is not {prefix}…");
    let tag = image.rsplit(':').next().unwrap();
    let version = tag.trim_start_matches('v').split('-').next().unwrap();
    let numbers: Vec<&str> = version.split('.').collect();
    let pinned = image.contains("@sha256:")
        || (numbers.len() >= 2 && numbers.iter().all(|n| n.parse::<u32>().is_ok()));
    assert!(pinned, "{image} is not pinned by exact version or digest");
}

#[test]
fn ports_limits_and_restart_policy() {
    let pod = pod();
    let ports = |name| -> Vec<(u64, Option<u64>)> {
        container(&pod, name)["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p["containerPort"].as_u64().unwrap(), p["hostPort"].as_u64()))
            .collect()
    };
    assert_eq!(ports("pgchat"), [(3001, Some(3001))]);
    assert_eq!(ports("postgrest"), [(3000, Some(3000))]);
    // podman 4.3 publishes a containerPort on the host even without a hostPort.
    assert_eq!(ports("postgres"), [], "PostgreSQL stays inside the pod");
    assert_eq!(ports("migrate"), []);
    for c in pod["spec"]["containers"].as_array().unwrap() {
        let limits = &c["resources"]["limits"];
        assert!(
            limits["memory"].is_string() && limits["cpu"].is_string(),
            "{}: memory and cpu limits",
            c["name"]
        );
    }
    // Always restarts a crashed daemon, and a failing liveness check restarts on 4.3 too
    // (which only honours `always` there); migrate therefore stays up once done.
    assert_eq!(pod["spec"]["restartPolicy"], "Always");
    assert!(strings(&container(&pod, "migrate")["args"]).contains(&"--stay".to_string()));
}

#[test]
fn the_secret_is_a_podman_secret_in_the_form_podman_4_3_reads() {
    // A Secret document would be stored as YAML by `kube play` 4.3, which then fails on
    // it with "not valid JSON"; the secret comes from scripts/pod-secrets instead.
    assert!(
        documents().iter().all(|d| d["kind"] != "Secret"),
        "podman.yaml must not define the Secret"
    );
    let script = repo_file("scripts/pod-secrets");
    assert!(script.contains("podman secret create \"$name\" -"));
    let values = secret_values(PASSWORD, JWT_SECRET);
    let mut json = serde_json::Map::new();
    for (k, v) in &values {
        json.insert(
            k.clone(),
            base64::engine::general_purpose::STANDARD.encode(v).into(),
        );
    }
    // Podman decodes the JSON object's values as base64 (Go's []byte); so do we.
    for (k, v) in &json {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), values[k]);
    }
    // Every key the pod reads is written.
    for c in pod()["spec"]["containers"].as_array().unwrap() {
        env_of(c);
    }
}

#[test]
fn pgchat_serves_as_authenticator_without_superuser_credentials_or_demo_page() {
    let pod = pod();
    let pgchat = container(&pod, "pgchat");
    assert_eq!(strings(&pgchat["args"]), ["serve"]);
    let env = env_of(pgchat);
    for name in ["ADMIN_DATABASE_URL", "STATIC_DIR"] {
        assert!(!env.contains_key(name), "pgchat must not get {name}");
    }
    assert!(
        env.values().all(|v| !v.contains(PASSWORD)),
        "the superuser's password reaches pgchat"
    );
    let required: Vec<_> = config_fields()
        .into_iter()
        .filter(|(name, has_default)| !has_default && !env.contains_key(name))
        .collect();
    assert!(required.is_empty(), "required and not set: {required:?}");
    for name in [
        "DATABASE_URL",
        "JWT_SECRET",
        "WS_PORT",
        "WS_HOST",
        "DB_ANON_ROLE",
        "LOG_FORMAT",
        "ALLOWED_ORIGINS",
    ] {
        assert!(env.contains_key(name), "{name} should be set explicitly");
    }
    let config = pgchat_config(pgchat);
    assert_eq!(config.ws_port, 3001);
    assert!(config.static_dir.is_none());
    let url: tokio_postgres::Config = config.database_url.parse().unwrap();
    assert_eq!(url.get_user(), Some("authenticator"));
    assert!(
        matches!(url.get_hosts().first(), Some(tokio_postgres::config::Host::Unix(p)) if p == Path::new("/var/run/postgresql")),
        "pgchat uses the pod's socket: {:?}",
        url.get_hosts()
    );
    // PostgREST: the same role, socket, secret and anonymous role.
    let rest = env_of(container(&pod, "postgrest"));
    assert_eq!(rest["PGRST_JWT_SECRET"], env["JWT_SECRET"]);
    assert_eq!(rest["PGRST_DB_SCHEMAS"], "api");
    assert_eq!(rest["PGRST_DB_ANON_ROLE"], env["DB_ANON_ROLE"]);
    assert!(rest["PGRST_DB_URI"].starts_with("postgres://authenticator@"));
    for name in ["postgres", "postgrest", "pgchat"] {
        let mounted = container(&pod, name)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "pgsocket" && m["mountPath"] == "/var/run/postgresql");
        assert!(mounted, "{name} shares the socket directory");
    }
    // The socket trusts `authenticator` alone; everyone else needs a password.
    let hba = documents()
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap()["data"]["pg_hba.conf"]
        .as_str()
        .unwrap()
        .to_string();
    let rules: Vec<Vec<&str>> = hba
        .lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .filter(|r| !r.is_empty())
        .collect();
    let trusted: Vec<_> = rules
        .iter()
        .filter(|r| r.last() == Some(&"trust"))
        .collect();
    assert_eq!(trusted, [&vec!["local", "all", "authenticator", "trust"]]);
    assert!(rules
        .iter()
        .all(|r| r.last() == Some(&"trust") || r.last() == Some(&"scram-sha-256")));
}

#[test]
fn migrate_holds_the_superuser_and_waits_for_postgres() {
    let pod = pod();
    let migrate = container(&pod, "migrate");
    let args = strings(&migrate["args"]);
    assert_eq!(args[0], "migrate");
    let help = pgchat_help(&["migrate"]);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag.as_str()),
            "`pgchat migrate` has no {flag}"
        );
    }
    let wait = args
        .iter()
        .position(|a| a == "--wait-secs")
        .and_then(|i| args[i + 1].parse::<u64>().ok())
        .expect("migrate waits for PostgreSQL");
    assert!(wait >= 30, "{wait} s is short for a first start");
    // Deprecated and a no-op: migrate itself tells PostgREST to reload when it changed
    // the schema.
    assert!(
        !args.contains(&"--reload-postgrest".to_string()),
        "{args:?}"
    );

    let config = pgchat_config(migrate);
    let admin: tokio_postgres::Config = config.admin_url().parse().unwrap();
    let postgres_env = env_of(container(&pod, "postgres"));
    assert_eq!(
        admin.get_user(),
        Some(postgres_env["POSTGRES_USER"].as_str())
    );
    assert_eq!(
        admin.get_dbname(),
        Some(postgres_env["POSTGRES_DB"].as_str())
    );
    assert_eq!(
        admin.get_password(),
        Some(postgres_env["POSTGRES_PASSWORD"].as_bytes())
    );
    // Over TCP: PostgreSQL's first-start server listens on the socket only, and the
    // database must not be migrated before that initialisation is over.
    assert!(
        matches!(admin.get_hosts().first(), Some(tokio_postgres::config::Host::Tcp(h)) if h == "127.0.0.1"),
        "{:?}",
        admin.get_hosts()
    );
    // Its job holds the key the SQL signs with, which must be PostgREST's.
    let rest = env_of(container(&pod, "postgrest"));
    assert_eq!(env_of(migrate)["JWT_SECRET"], rest["PGRST_JWT_SECRET"]);
}

#[test]
fn probes_are_commands_podman_can_run() {
    let pod = pod();
    for c in pod["spec"]["containers"].as_array().unwrap() {
        // podman turns liveness and startup probes into health checks run inside the
        // container: httpGet would need curl, tcpSocket nc.
        for probe in ["livenessProbe", "startupProbe"] {
            if c[probe].is_object() {
                assert!(
                    c[probe]["exec"]["command"].is_array(),
                    "{} {probe} is not exec",
                    c["name"]
                );
            }
        }
    }
    let pgchat = container(&pod, "pgchat");
    assert_eq!(
        strings(&pgchat["livenessProbe"]["exec"]["command"]),
        ["pgchat", "health"]
    );
    assert_eq!(
        strings(&pgchat["readinessProbe"]["exec"]["command"]),
        ["pgchat", "health", "--ready"]
    );
    assert!(pgchat_help(&["health"]).contains("--ready"));
    // The probe's own deadline fits in the probe's timeout.
    for probe in ["livenessProbe", "readinessProbe"] {
        let timeout = pgchat[probe]["timeoutSeconds"]
            .as_u64()
            .expect("timeoutSeconds");
        assert!(
            pgchat::health_check::PROBE_TIMEOUT.as_secs() < timeout,
            "{probe}"
        );
    }
    let postgres = container(&pod, "postgres");
    assert!(postgres["livenessProbe"].is_object() && postgres["readinessProbe"].is_object());
    // PostgREST's image (v12) has no shell, curl or health command: no liveness probe.
    assert!(container(&pod, "postgrest")["livenessProbe"].is_null());
}

#[test]
fn containerfile_is_pinned_multi_stage_small_and_non_root() {
    let text = repo_file("Containerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        froms.len(),
        3,
        "builder, frontend and runtime stages: {froms:?}"
    );
    for image in &froms {
        assert_pinned(image, "docker.io/library/");
    }
    // A slim base with /bin/sh: podman 4.3 runs exec liveness probes through it.
    assert!(
        froms[2].contains("debian") && froms[2].contains("slim"),
        "{}",
        froms[2]
    );
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let runtime = &lines[last_from..];
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap().trim();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "numeric non-root USER, not {user}"
    );
    assert!(runtime.contains(&r#"ENTRYPOINT ["pgchat"]"#));
    assert!(runtime.contains(&r#"CMD ["serve"]"#));

    // ENV names in the image are names pgchat reads, and STATIC_DIR is not one of them.
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
    assert!(seen.contains("WS_PORT"));
    assert!(
        !seen.contains("STATIC_DIR"),
        "the image must not serve the demo page by default"
    );

    // The builder copies the whole context, so the workspace's crates/ come along; the
    // context leaves out build output, local installs and VCS data, and nothing else.
    assert!(lines.contains(&"COPY . ."));
    let ignore_file = repo_file(".containerignore");
    let ignore: Vec<&str> = ignore_file
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        ignore,
        ["target/", "**/target/", "**/node_modules/", ".git"]
    );
    for path in ["frontend/package.json", "frontend/package-lock.json"] {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(path).exists(),
            "{path}"
        );
    }
}

#[test]
fn docs_spell_the_command_as_podman_documents_it() {
    for file in ["README.md", "podman.yaml", "docs/deploy.md"] {
        let text = repo_file(file);
        assert!(
            !text.contains("podman play kube"),
            "{file} says `podman play kube`"
        );
        assert!(
            text.contains("podman kube play"),
            "{file} never says `podman kube play`"
        );
    }
}

#[test]
fn pod_scripts_are_executable_shell() {
    use std::os::unix::fs::PermissionsExt;
    for script in [
        "scripts/pod-check",
        "scripts/pod-secrets",
        "scripts/pod-standins",
        "scripts/standin/postgres-entrypoint",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{script} is not executable");
        let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
        assert!(
            check.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}
