//! `docker-compose.yml` and the `Dockerfile` cannot silently rot.
//!
//! No Docker engine runs where the tests run, so this test reads both files and checks them
//! against the emulator itself: every `IOTHUB_EMULATOR_*` variable and every flag they use must
//! exist on [`Cli`] (through clap's `CommandFactory`), and the emulator's configuration, resolved
//! exactly as the container would resolve it ([`Config::from_cli`], with the compose file's
//! inline config), must agree with the published ports, the exposed ports, the data volume, the
//! network alias, the health check, the binary paths and the seed apps' connection strings.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{CommandFactory, FromArgMatches};
use iothub_emulator::config::{Cli, Command, Config};
use iothub_emulator::credentials;
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE: &str = "docker-compose.yml";
const DOCKERFILE: &str = "Dockerfile";
const EMULATOR: &str = "emulator";
const DEVICE_APP: &str = "simulated-device";
const SERVICE_APP: &str = "send-cloud-to-device-message";
const DATA_VOLUME: &str = "emulator-data";
/// The ports the official SDKs use and cannot change (official-sdks.md 3).
const SDK_FIXED_PORTS: [u16; 3] = [443, 8883, 5671];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// --- the Dockerfile ----------------------------------------------------------------------------

/// One instruction: its keyword (upper case), its arguments, and the stage it belongs to.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    stage: Option<String>,
}

/// A Dockerfile as a list of instructions (continuation lines joined, comments dropped).
struct Dockerfile {
    instructions: Vec<Instruction>,
}

impl Dockerfile {
    fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        let mut stage = None;
        let instructions = logical
            .into_iter()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
                let keyword = keyword.to_ascii_uppercase();
                let args = args.trim().to_owned();
                if keyword == "FROM" {
                    let words: Vec<&str> = args.split_whitespace().collect();
                    stage = match words.as_slice() {
                        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
                            Some((*name).to_owned())
                        }
                        _ => None,
                    };
                }
                Instruction {
                    keyword,
                    args,
                    stage: stage.clone(),
                }
            })
            .collect();
        Dockerfile { instructions }
    }

    /// `(base image, stage name)` of every `FROM`, in order.
    fn stages(&self) -> Vec<(String, Option<String>)> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "FROM")
            .map(|i| {
                let base = i.args.split_whitespace().next().unwrap_or_default();
                (base.to_owned(), i.stage.clone())
            })
            .collect()
    }

    fn in_stage<'a>(&'a self, stage: &'a str, keyword: &'a str) -> impl Iterator<Item = &'a str> {
        self.instructions
            .iter()
            .filter(move |i| i.stage.as_deref() == Some(stage) && i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    fn one(&self, stage: &str, keyword: &str) -> String {
        let found: Vec<&str> = self.in_stage(stage, keyword).collect();
        assert_eq!(
            found.len(),
            1,
            "stage {stage} of the Dockerfile should have exactly one {keyword}: {found:?}"
        );
        found[0].to_owned()
    }

    /// Destinations of the stage's `COPY` instructions.
    fn copied_to(&self, stage: &str) -> BTreeSet<String> {
        self.in_stage(stage, "COPY")
            .filter_map(|args| args.split_whitespace().last().map(str::to_owned))
            .collect()
    }

    /// The stage's `ENV` variables (`ENV A=1 B=2` form).
    fn env(&self, stage: &str) -> BTreeMap<String, String> {
        self.in_stage(stage, "ENV")
            .flat_map(|args| args.split_whitespace())
            .map(|pair| {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV {pair}: use the KEY=VALUE form"));
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect()
    }
}

/// A JSON (exec form) argument list, e.g. `["/bin/x", "arg"]`.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{args:?} should be an exec-form JSON array of strings: {e}"))
}

// --- the compose file --------------------------------------------------------------------------

fn compose() -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(COMPOSE)).expect("docker-compose.yml is YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    match y {
        Yaml::Array(items) => items.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn service<'a>(doc: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &doc["services"][name];
    assert!(
        s.as_hash().is_some(),
        "docker-compose.yml has no service {name}"
    );
    s
}

/// A service's `environment`, in map or list form.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    let env = &service["environment"];
    if let Some(list) = env.as_vec() {
        return list
            .iter()
            .filter_map(scalar)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (item, String::new()),
            })
            .collect();
    }
    env.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default()
}

/// `(source, target, read_only)` of a service's short-form volumes.
fn volumes(service: &Yaml) -> Vec<(String, String, bool)> {
    strings(&service["volumes"])
        .into_iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            match parts.as_slice() {
                [source, target] => ((*source).to_owned(), (*target).to_owned(), false),
                [source, target, mode] => (
                    (*source).to_owned(),
                    (*target).to_owned(),
                    mode.split(',').any(|m| m == "ro"),
                ),
                _ => panic!("volume {v:?}: use SOURCE:TARGET[:MODE]"),
            }
        })
        .collect()
}

fn mount_of(service: &Yaml, volume: &str) -> Option<(String, bool)> {
    volumes(service)
        .into_iter()
        .find(|(source, ..)| source == volume)
        .map(|(_, target, ro)| (target, ro))
}

/// `(host port, container port)` of each published port.
fn published_ports(service: &Yaml) -> Vec<(u16, u16)> {
    strings(&service["ports"])
        .into_iter()
        .map(|p| {
            let p = p.split('/').next().unwrap_or_default();
            let parts: Vec<&str> = p.split(':').collect();
            let (host, container) = match parts.as_slice() {
                [h, c] => (*h, *c),
                [_ip, h, c] => (*h, *c),
                _ => panic!("port {p:?}: use HOST:CONTAINER"),
            };
            (
                host.parse()
                    .unwrap_or_else(|_| panic!("host port {host:?}")),
                container
                    .parse()
                    .unwrap_or_else(|_| panic!("container port {container:?}")),
            )
        })
        .collect()
}

// --- the emulator's command line ---------------------------------------------------------------

/// Long flag (`--https-port`) of each environment variable (`IOTHUB_EMULATOR_HTTPS_PORT`), and
/// whether the flag takes a value.
fn env_to_flag() -> BTreeMap<String, (String, bool)> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            let long = format!("--{}", a.get_long()?);
            Some((env, (long, a.get_action().takes_values())))
        })
        .collect()
}

fn long_flags() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

fn truthy(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on" | "y"
    )
}

/// Parses an argument list with the emulator's own `Cli`, ignoring this process's environment.
fn parse_cli(args: &[String]) -> Cli {
    let command = Cli::command().mut_args(|a| a.env(None));
    let argv =
        std::iter::once(OsString::from("iothub-emulator")).chain(args.iter().map(OsString::from));
    let matches = command
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("the emulator rejects {args:?}: {e}"));
    Cli::from_arg_matches(&matches).expect("matches make a Cli")
}

/// The emulator service as the container runs it: the Dockerfile's `ENV` and `CMD`, overridden
/// by the compose file's `environment` and `command`, with environment variables turned into
/// the flags they stand for. Files the compose file mounts from `configs` are written to a
/// temporary directory so that `--config` can be read.
struct Resolved {
    config: Config,
    cli: Cli,
    env: BTreeMap<String, String>,
}

fn resolve_emulator(doc: &Yaml, docker: &Dockerfile, extra_args: &[&str]) -> Resolved {
    let emulator = service(doc, EMULATOR);
    let mut env = docker.env(EMULATOR);
    env.extend(environment(emulator));

    let mut args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
    let command = strings(&emulator["command"]);
    if command.is_empty() {
        args.extend(exec_form(&docker.one(EMULATOR, "CMD")));
    } else {
        args.extend(command);
    }
    let flags = env_to_flag();
    // One directory per call: the tests run in parallel threads of one process.
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let tmp = std::env::temp_dir().join(format!(
        "iothub-compose-test-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    for (var, value) in &env {
        let Some((flag, takes_value)) = flags.get(var) else {
            assert!(
                !var.starts_with("IOTHUB_EMULATOR_"),
                "{var} is not an environment variable of iothub-emulator (see --help)"
            );
            continue;
        };
        if args
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        {
            continue; // a flag on the command line wins over its variable
        }
        if !takes_value {
            if truthy(value) {
                args.push(flag.clone());
            }
            continue;
        }
        let mut value = value.clone();
        if flag == "--config" {
            value = materialize_config(doc, &value, &tmp).display().to_string();
        }
        args.push(flag.clone());
        args.push(value);
    }
    let cli = parse_cli(&args);
    let config = Config::from_cli(&cli)
        .unwrap_or_else(|e| panic!("the emulator rejects its compose settings {args:?}: {e}"));
    let _ = std::fs::remove_dir_all(&tmp);
    Resolved { config, cli, env }
}

/// Writes the inline `configs` entry mounted at `target` in the emulator service to `dir`.
fn materialize_config(doc: &Yaml, target: &str, dir: &Path) -> PathBuf {
    let emulator = service(doc, EMULATOR);
    let mounted = emulator["configs"]
        .as_vec()
        .into_iter()
        .flatten()
        .find(|c| c["target"].as_str() == Some(target));
    let source = mounted
        .and_then(|c| c["source"].as_str())
        .unwrap_or_else(|| panic!("IOTHUB_EMULATOR_CONFIG={target}, but no `configs` entry of the emulator service is mounted there"));
    let content = doc["configs"][source]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("top-level configs.{source} has no inline `content`"));
    let path = dir.join("config.toml");
    std::fs::write(&path, content).unwrap();
    path
}

// --- the tests ---------------------------------------------------------------------------------

#[test]
fn every_emulator_variable_and_flag_exists() {
    let doc = compose();
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let flags = env_to_flag();
    let known = long_flags();
    let mut used = docker.env(EMULATOR);
    used.extend(environment(service(&doc, EMULATOR)));
    for var in used.keys() {
        assert!(
            flags.contains_key(var),
            "{var} is set for the emulator but is not one of its variables: {:?}",
            flags.keys().collect::<Vec<_>>()
        );
    }
    let mut args = exec_form(&docker.one(EMULATOR, "CMD"));
    args.extend(strings(&service(&doc, EMULATOR)["command"]));
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let name = flag.split('=').next().unwrap_or_default();
        assert!(
            known.contains(name),
            "{name} is not a flag of iothub-emulator"
        );
    }
    // The resolution itself validates every value (host, hostname, SANs, ports, config file).
    let r = resolve_emulator(&doc, &docker, &[]);
    assert!(
        r.cli.command.is_none(),
        "the emulator service runs the emulator, not a subcommand"
    );
}

#[test]
fn ports_are_published_exposed_and_the_emulators() {
    let doc = compose();
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let r = resolve_emulator(&doc, &docker, &[]);
    let ports = r.config.ports;
    let listening = BTreeSet::from([ports.https, ports.mqtt, ports.amqp, ports.http]);
    assert_eq!(
        BTreeSet::from([ports.https, ports.mqtt, ports.amqp]),
        BTreeSet::from(SDK_FIXED_PORTS),
        "HTTPS, MQTT and AMQP must listen on the ports the SDKs hard-code"
    );

    let published = published_ports(service(&doc, EMULATOR));
    let containers: BTreeSet<u16> = published.iter().map(|&(_, c)| c).collect();
    assert_eq!(
        containers, listening,
        "published container ports vs the emulator's ports"
    );
    for (host, container) in &published {
        if SDK_FIXED_PORTS.contains(container) {
            assert_eq!(
                host, container,
                "port {container} must be published unchanged: the SDKs cannot use another"
            );
        }
    }

    let exposed: BTreeSet<u16> = docker
        .one(EMULATOR, "EXPOSE")
        .split_whitespace()
        .map(|p| {
            p.split('/')
                .next()
                .unwrap_or_default()
                .parse()
                .expect("EXPOSE port")
        })
        .collect();
    assert_eq!(
        exposed, listening,
        "Dockerfile EXPOSE vs the emulator's ports"
    );
    assert!(
        r.config.bind.is_unspecified(),
        "in a container the emulator must listen on every interface, not {}",
        r.config.bind
    );
}

#[test]
fn healthchecks_run_the_emulator_binary() {
    let doc = compose();
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let entrypoint = exec_form(&docker.one(EMULATOR, "ENTRYPOINT"));
    let binary = entrypoint.first().expect("an ENTRYPOINT").clone();
    assert!(binary.ends_with("/iothub-emulator"), "ENTRYPOINT {binary}");
    assert!(
        docker.copied_to(EMULATOR).contains(&binary),
        "the emulator stage does not COPY the binary to {binary}"
    );
    assert!(
        Cli::command()
            .get_subcommands()
            .any(|s| s.get_name() == "healthcheck"),
        "iothub-emulator has no healthcheck subcommand"
    );

    let compose_test = strings(&service(&doc, EMULATOR)["healthcheck"]["test"]);
    assert_eq!(
        compose_test,
        ["CMD", binary.as_str(), "healthcheck"],
        "compose healthcheck"
    );

    let docker_hc = docker.one(EMULATOR, "HEALTHCHECK");
    let cmd = docker_hc
        .split_once("CMD ")
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("HEALTHCHECK {docker_hc}: use the CMD [..] form"));
    assert_eq!(
        exec_form(cmd),
        [binary.as_str(), "healthcheck"],
        "Dockerfile HEALTHCHECK"
    );

    // The health check runs with the container's environment: it must probe the plain port the
    // emulator serves, on loopback.
    let r = resolve_emulator(&doc, &docker, &["healthcheck"]);
    assert_eq!(r.cli.command, Some(Command::Healthcheck));
    let probe = r.config.health_addr();
    assert!(probe.ip().is_loopback(), "healthcheck probes {probe}");
    let served = resolve_emulator(&doc, &docker, &[]).config.ports.http;
    assert_eq!(
        probe.port(),
        served,
        "healthcheck probes a port the emulator does not serve"
    );
}

#[test]
fn network_alias_is_the_hostname_and_in_the_certificate() {
    let doc = compose();
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let r = resolve_emulator(&doc, &docker, &[]);
    let aliases = strings(&service(&doc, EMULATOR)["networks"]["default"]["aliases"]);
    let hub_like: Vec<&String> = aliases
        .iter()
        .filter(|a| a.ends_with(".azure-devices.net"))
        .collect();
    assert_eq!(
        hub_like.len(),
        1,
        "one <hub>.azure-devices.net alias: {aliases:?}"
    );
    let alias = hub_like[0];
    assert_eq!(
        &r.config.hostname, alias,
        "--hostname (connection strings) vs the alias"
    );
    assert!(
        r.config.tls_names().contains(alias),
        "the certificate's names {:?} lack {alias}",
        r.config.tls_names()
    );
    assert_eq!(r.config.hub_name(), alias.split('.').next().unwrap());
    assert!(
        r.env.contains_key("IOTHUB_EMULATOR_SAN") || r.cli.san.iter().any(|s| s == alias),
        "put the alias in the SANs explicitly too (IOTHUB_EMULATOR_SAN)"
    );
}

#[test]
fn data_dir_is_the_volume() {
    let doc = compose();
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let r = resolve_emulator(&doc, &docker, &[]);
    let data_dir = r.config.data_dir.display().to_string();
    let declared = docker.one(EMULATOR, "VOLUME");
    let declared = if declared.starts_with('[') {
        exec_form(&declared)
    } else {
        declared.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(
        declared,
        [data_dir.as_str()],
        "Dockerfile VOLUME vs the data dir"
    );
    let (target, ro) = mount_of(service(&doc, EMULATOR), DATA_VOLUME)
        .unwrap_or_else(|| panic!("the emulator does not mount {DATA_VOLUME}"));
    assert_eq!(
        target, data_dir,
        "compose mounts {DATA_VOLUME} elsewhere than the data dir"
    );
    assert!(!ro, "the emulator writes its data dir");
    assert!(
        doc["volumes"]
            .as_hash()
            .is_some_and(|h| h.contains_key(&Yaml::String(DATA_VOLUME.into()))),
        "top-level volumes lacks {DATA_VOLUME}"
    );
}

#[test]
fn dockerfile_builds_with_the_workspace_toolchain() {
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let stages = docker.stages();
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("workspace rust-version");
    let (build_base, _) = &stages[0];
    assert!(
        build_base.starts_with(&format!("rust:{rust_version}")),
        "build stage {build_base} vs rust-version {rust_version}"
    );
    for (base, name) in &stages[1..] {
        assert!(
            base.contains("distroless") || base.contains("slim"),
            "runtime stage {name:?} on {base}: use a slim or distroless base"
        );
    }
    assert_eq!(
        stages.last().and_then(|(_, n)| n.as_deref()),
        Some(EMULATOR),
        "the emulator must be the last (default) stage"
    );
    let runs: String = docker
        .in_stage("build", "RUN")
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "-p iothub-emulator",
        "--locked",
        "--example simulated_device",
        "--example send_cloud_to_device_message",
    ] {
        assert!(
            runs.contains(needle),
            "the build stage does not run `{needle}`"
        );
    }
    for example in [
        "device/examples/simulated_device.rs",
        "service/examples/send_cloud_to_device_message.rs",
    ] {
        assert!(repo_root().join(example).is_file(), "{example} is missing");
    }
    let ignore = read(".dockerignore");
    for entry in ["target", "**/node_modules", "tests/sdk-compat/.work"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            ".dockerignore lacks {entry}"
        );
    }
}

#[test]
fn seed_apps_point_at_the_emulator() {
    let doc = compose();
    let docker = Dockerfile::parse(&read(DOCKERFILE));
    let r = resolve_emulator(&doc, &docker, &[]);
    let config = &r.config;
    let seed_stage_binaries = docker.copied_to("seed-apps");
    let relative_ca = config
        .ca_path()
        .strip_prefix(&config.data_dir)
        .expect("the CA lives in the data dir")
        .to_path_buf();

    for (name, binary, example) in [
        (
            DEVICE_APP,
            "simulated_device",
            "device/examples/simulated_device.rs",
        ),
        (
            SERVICE_APP,
            "send_cloud_to_device_message",
            "service/examples/send_cloud_to_device_message.rs",
        ),
    ] {
        let app = service(&doc, name);
        assert_eq!(
            app["build"]["target"].as_str(),
            Some("seed-apps"),
            "{name} build target"
        );
        let entrypoint = strings(&app["entrypoint"]);
        let path = entrypoint
            .first()
            .unwrap_or_else(|| panic!("{name} has no entrypoint"));
        assert!(path.ends_with(&format!("/{binary}")), "{name} runs {path}");
        assert!(
            seed_stage_binaries.contains(path),
            "the seed-apps stage has no {path}"
        );
        assert_eq!(
            app["depends_on"][EMULATOR]["condition"].as_str(),
            Some("service_healthy"),
            "{name} must wait for the emulator to be healthy"
        );
        let (target, ro) = mount_of(app, DATA_VOLUME)
            .unwrap_or_else(|| panic!("{name} does not mount {DATA_VOLUME} (for the CA)"));
        assert!(ro, "{name} should mount {DATA_VOLUME} read-only");
        let env = environment(app);
        let expected_ca = Path::new(&target).join(&relative_ca).display().to_string();
        assert_eq!(
            env.get("IOTHUB_CA_CERT"),
            Some(&expected_ca),
            "{name} IOTHUB_CA_CERT"
        );
        let source = read(example);
        for var in env.keys().filter(|v| *v != "IOTHUB_CA_CERT") {
            assert!(
                source.contains(var.as_str()),
                "{example} does not read {var}"
            );
        }
    }
    for krate in ["device/src", "service/src"] {
        let mentions = std::fs::read_dir(repo_root().join(krate))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .any(|text| text.contains("IOTHUB_CA_CERT"));
        assert!(mentions, "{krate} no longer reads IOTHUB_CA_CERT");
    }

    // The device app's connection string is the seeded device's, on the alias host name.
    let device_env = environment(service(&doc, DEVICE_APP));
    let device_cs = device_env
        .get("IOTHUB_DEVICE_CONNECTION_STRING")
        .expect("IOTHUB_DEVICE_CONNECTION_STRING");
    let seeded: Vec<String> = config
        .devices
        .iter()
        .filter_map(|d| config.device_connection_string(d))
        .collect();
    assert!(
        seeded.contains(device_cs),
        "{DEVICE_APP}'s connection string is not one of the seeded devices': {seeded:?}"
    );

    // The service app uses the `service` policy on the same host, and sends to that device.
    let service_env = environment(service(&doc, SERVICE_APP));
    let policy = config.policy(credentials::SERVICE).expect("service policy");
    assert_eq!(
        service_env.get("IOTHUB_CONNECTION_STRING"),
        Some(&credentials::service_connection_string(
            &config.hostname,
            policy
        )),
        "{SERVICE_APP}'s connection string"
    );
    let device_id = service_env
        .get("IOTHUB_DEVICE_ID")
        .expect("IOTHUB_DEVICE_ID");
    assert!(
        config.devices.iter().any(|d| &d.id == device_id)
            && device_cs.contains(&format!(";DeviceId={device_id};")),
        "{SERVICE_APP} sends to {device_id}, which is not the seeded device the device app runs as"
    );
    assert_eq!(
        service(&doc, SERVICE_APP)["depends_on"][DEVICE_APP]["condition"].as_str(),
        Some("service_started"),
        "{SERVICE_APP} should start after {DEVICE_APP}"
    );
}
