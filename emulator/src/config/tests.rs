//! Tests of the whole configuration path: command line, TOML file, validation and exports.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory as _, Parser as _};

use super::exports::shell_quote;
use super::*;
use crate::credentials;
use crate::hub::{DeliveryCountRule, HubSettings};

fn parse(args: &[&str]) -> Cli {
    let mut argv = vec!["iothub-emulator"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap()
}

fn config(args: &[&str]) -> Result<Config, ConfigError> {
    Config::from_cli(&parse(args))
}

/// A unique temporary file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "iothub-emulator-config-{}-{n}.toml",
            std::process::id()
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

#[test]
fn defaults() {
    let c = config(&["--data-dir", "/tmp/x"]).unwrap();
    assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(c.hostname, "localhost");
    assert_eq!(c.hub_name(), "localhost");
    assert_eq!(c.ports, Ports::default());
    assert_eq!(
        (c.ports.https, c.ports.mqtt, c.ports.amqp, c.ports.http),
        (443, 8883, 5671, 8088)
    );
    assert_eq!(c.ports.mqtt_tcp, None);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.user_cert, None);
    assert!(c.extra_sans.is_empty());
    assert_eq!(
        c.hub,
        HubSettings {
            hub_name: "localhost".into(),
            ..HubSettings::default()
        }
    );
    assert_eq!(c.policies, credentials::well_known_policies());
    assert!(c.devices.is_empty());
    assert_eq!(c.log_level, "info");
    assert!(!c.virtual_clock);
    assert_eq!(c.mqtt_max_inflight, 16);
    assert_eq!(parse(&[]).command, None);
    assert_eq!(c.health_addr(), "127.0.0.1:8088".parse().unwrap());
}

#[test]
fn default_data_dir_is_per_user() {
    let c = config(&[]).unwrap();
    assert_eq!(c.data_dir, default_data_dir());
    assert!(c.data_dir.ends_with("iothub-emulator") || c.data_dir.ends_with(".iothub-emulator"));
}

#[test]
fn every_flag_has_an_env_var_named_after_it() {
    let cmd = Cli::command();
    let mut count = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" || long == "version" {
            continue;
        }
        let expected = format!(
            "IOTHUB_EMULATOR_{}",
            long.to_ascii_uppercase().replace('-', "_")
        );
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(expected.as_str()),
            "--{long}"
        );
        count += 1;
    }
    assert_eq!(count, 20);
    let mqtt = cmd
        .get_arguments()
        .find(|a| a.get_id() == "mqtt_port")
        .unwrap();
    assert_eq!(
        mqtt.get_env().and_then(|e| e.to_str()),
        Some("IOTHUB_EMULATOR_MQTT_PORT")
    );
    cmd.debug_assert();
}

#[test]
fn flags_are_parsed() {
    let cert = PathBuf::from("/c.pem");
    let key = PathBuf::from("/k.pem");
    let c = config(&[
        "--host",
        "0.0.0.0",
        "--hostname",
        "myhub.azure-devices.localhost",
        "--https-port",
        "8443",
        "--mqtt-port",
        "0",
        "--amqp-port",
        "0",
        "--http-port",
        "9000",
        "--mqtt-tcp-port",
        "1883",
        "--data-dir",
        "/d",
        "--cert",
        "/c.pem",
        "--key",
        "/k.pem",
        "--san",
        "a.example,10.0.0.1",
        "--san",
        "b.example",
        "--log-level",
        "debug",
        "--virtual-clock",
        "--mqtt-max-inflight",
        "4",
    ])
    .unwrap();
    assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(c.hub_name(), "myhub");
    assert_eq!(
        c.ports,
        Ports {
            https: 8443,
            mqtt: 0,
            amqp: 0,
            http: 9000,
            mqtt_tcp: Some(1883),
            eventhubs: 5672,
        }
    );
    assert_eq!(c.user_cert, Some(UserCert { cert, key }));
    assert_eq!(c.extra_sans, ["a.example", "10.0.0.1", "b.example"]);
    assert_eq!(
        c.tls_names(),
        [
            "myhub.azure-devices.localhost",
            "a.example",
            "10.0.0.1",
            "b.example"
        ]
    );
    assert_eq!(c.log_level, "debug");
    assert!(c.virtual_clock);
    assert_eq!(c.mqtt_max_inflight, 4);
    assert_eq!(c.health_addr(), "127.0.0.1:9000".parse().unwrap());
    assert_eq!(c.ca_path(), PathBuf::from("/d/tls/user-ca.pem"));

    let c = config(&["--hostname", "a.b.c", "--hub-name", "other"]).unwrap();
    assert_eq!(c.hub_name(), "other");
}

#[test]
fn subcommands_accept_flags_before_or_after() {
    let cli = parse(&["env", "--data-dir", "/x"]);
    assert_eq!(cli.command, Some(Command::Env));
    assert_eq!(cli.data_dir, Some(PathBuf::from("/x")));
    let cli = parse(&["--http-port", "1234", "healthcheck"]);
    assert_eq!(cli.command, Some(Command::Healthcheck));
    assert_eq!(cli.http_port, 1234);
}

#[test]
fn toml_sets_every_field() {
    let file = TempFile::new(&format!(
        r#"
        [hub]
        queue_depth = 7
        default_ttl_secs = 120
        max_delivery_count = 3
        lock_duration_secs = 5
        delivery_count_rule = "every-release"
        feedback_window_ms = 250
        feedback_batch_size = 2
        feedback_ttl_secs = 600
        feedback_lock_duration_secs = 30
        feedback_max_delivery_count = 4
        d2c_retention = 0

        [policies.service]
        primary_key = "{KEY_A}"
        secondary_key = "{KEY_B}"

        [policies.iothubowner]
        secondary_key = "{KEY_A}"

        [[devices]]
        id = "d1"
        primary_key = "{KEY_A}"
        secondary_key = "{KEY_B}"

        [[devices]]
        id = "d2"
        status = "disabled"

        [[devices]]
        id = "d3"
        status = "enabled"
        "#
    ));
    let path = file.0.to_str().unwrap();
    let c = config(&["--config", path, "--hostname", "h.example"]).unwrap();
    let expected = HubSettings {
        hub_name: "h".into(),
        queue_depth: 7,
        default_ttl: Duration::from_secs(120),
        max_delivery_count: 3,
        lock_duration: Duration::from_secs(5),
        delivery_count_rule: DeliveryCountRule::EveryRelease,
        feedback_window: Duration::from_millis(250),
        feedback_batch_size: 2,
        feedback_ttl: Duration::from_secs(600),
        feedback_lock_duration: Duration::from_secs(30),
        feedback_max_delivery_count: 4,
        d2c_retention: 0,
        ..HubSettings::default()
    };
    assert_eq!(c.hub, expected);
    let service = c.policy("service").unwrap();
    assert_eq!(
        (service.primary_key.as_str(), service.secondary_key.as_str()),
        (KEY_A, KEY_B)
    );
    let wk = credentials::well_known_policies();
    let owner = c.policy("iothubowner").unwrap();
    assert_eq!(owner.primary_key, wk[0].primary_key);
    assert_eq!(owner.secondary_key, KEY_A);
    assert_eq!(c.policy("device"), wk.iter().find(|p| p.name == "device"));
    assert_eq!(
        c.devices,
        [
            SeedDevice::new("d1").with_keys(KEY_A, KEY_B),
            SeedDevice {
                enabled: false,
                ..SeedDevice::new("d2")
            },
            SeedDevice::new("d3"),
        ]
    );
    // "abandon-only" parses too.
    let mut c = Config::embedded("/x");
    c.apply_toml("[hub]\ndelivery_count_rule = \"abandon-only\"", "<inline>")
        .unwrap();
    assert_eq!(c.hub.delivery_count_rule, DeliveryCountRule::AbandonOnly);
}

#[test]
fn toml_typos_and_bad_types_are_errors() {
    for (text, needle) in [
        ("[hub]\nqueue_dept = 5", "queue_dept"),
        ("[hubb]\n", "hubb"),
        ("[hub]\nqueue_depth = -1", "queue_depth"),
        ("[hub]\ndelivery_count_rule = \"sometimes\"", "sometimes"),
        ("[[devices]]\nid = \"d\"\nstatus = \"off\"", "off"),
        ("[[devices]]\nid = \"d\"\nkey = \"x\"", "key"),
        ("[[devices]]\nprimary_key = \"x\"", "id"),
        ("[policies.service]\nprimary = \"x\"", "primary"),
    ] {
        let err = Config::embedded("/x")
            .apply_toml(text, "test.toml")
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::ParseFile { .. }),
            "{text}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("test.toml") && msg.contains(needle),
            "{text}: {msg}"
        );
    }
    let missing = std::env::temp_dir().join("iothub-emulator-no-such-config.toml");
    let err = config(&["--config", missing.to_str().unwrap()]).unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
    assert!(err.to_string().contains("--config"), "{err}");
}

/// Each validation error names the setting, as the user wrote it, and what is allowed.
#[test]
fn validation_errors_name_their_setting() {
    let toml_err = |text: &str| {
        let mut c = Config::embedded("/x");
        c.apply_toml(text, "t.toml").unwrap();
        c.validate().unwrap_err()
    };
    for (text, setting, allowed) in [
        ("[hub]\nqueue_depth = 0", "hub.queue_depth", "1 to 100000"),
        (
            "[hub]\ndefault_ttl_secs = 59",
            "hub.default_ttl_secs = 59",
            "1 minute to 2 days",
        ),
        (
            "[hub]\nmax_delivery_count = 101",
            "hub.max_delivery_count",
            "1 to 100",
        ),
        (
            "[hub]\nlock_duration_secs = 0",
            "hub.lock_duration_secs = 0",
            "1 second",
        ),
        (
            "[hub]\nfeedback_window_ms = 3600001",
            "hub.feedback_window_ms = 3600001",
            "0 to 1 hour",
        ),
        (
            "[hub]\nfeedback_batch_size = 0",
            "hub.feedback_batch_size",
            "1 to 1000",
        ),
        (
            "[hub]\nfeedback_ttl_secs = 1",
            "hub.feedback_ttl_secs = 1",
            "1 minute",
        ),
        (
            "[hub]\nfeedback_lock_duration_secs = 4",
            "hub.feedback_lock_duration_secs = 4",
            "5 to 300",
        ),
        (
            "[hub]\nfeedback_max_delivery_count = 0",
            "hub.feedback_max_delivery_count",
            "1 to 100",
        ),
        (
            "[hub]\nd2c_retention = 1000001",
            "hub.d2c_retention",
            "0 to 1000000",
        ),
    ] {
        let err = toml_err(text);
        assert!(
            matches!(err, ConfigError::OutOfRange { .. }),
            "{text}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(setting) && msg.contains(allowed),
            "{text}: {msg}"
        );
    }

    let err = toml_err("[policies.service]\nprimary_key = \"not base64!\"");
    assert!(
        matches!(&err, ConfigError::InvalidKey { setting, .. } if setting == "policies.service.primary_key")
    );
    let err = toml_err("[policies.device]\nsecondary_key = \"c2hvcnQ=\"");
    assert!(
        err.to_string().contains("policies.device.secondary_key"),
        "{err}"
    );
    assert!(err.to_string().contains("16 to 64 bytes"), "{err}");
    let err = toml_err("[[devices]]\nid = \"d1\"\nprimary_key = \"%%%\"");
    assert!(err.to_string().contains("devices[0].primary_key"), "{err}");
    let err = toml_err("[[devices]]\nid = \"ok\"\n[[devices]]\nid = \"bad/id\"");
    assert!(
        matches!(&err, ConfigError::InvalidDeviceId { setting, .. } if setting == "devices[1].id")
    );
    assert!(err.to_string().contains("bad/id"), "{err}");
    let err = toml_err("[[devices]]\nid = \"d\"\n[[devices]]\nid = \"d\"");
    assert!(matches!(&err, ConfigError::DuplicateDevice { id } if id == "d"));

    let err = Config::embedded("/x")
        .apply_toml("[policies.owner]\nprimary_key = \"x\"", "t.toml")
        .unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownPolicy { name, .. } if name == "owner"));
    assert!(err.to_string().contains("iothubowner"), "{err}");

    let err = config(&["--cert", "/c.pem"]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::IncompleteUserCert {
            given: "--cert",
            missing: "--key"
        }
    ));
    assert!(err.to_string().contains("--key"), "{err}");
    let err = config(&["--key", "/k.pem"]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::IncompleteUserCert { given: "--key", .. }
    ));

    let err = config(&["--mqtt-max-inflight", "0"]).unwrap_err();
    assert!(err.to_string().contains("--mqtt-max-inflight"), "{err}");
    let err = config(&["--http-port", "8883"]).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::PortClash {
            port: 8883,
            first: "--mqtt-port",
            second: "--http-port"
        }
    ));
    assert!(
        config(&["--https-port", "0", "--mqtt-port", "0"]).is_ok(),
        "0 never clashes"
    );
    let err = config(&["--san", "ok.example,bad name"]).unwrap_err();
    assert!(matches!(err, ConfigError::InvalidSan(_)), "{err:?}");
    assert!(
        err.to_string().contains("--san") && err.to_string().contains("bad name"),
        "{err}"
    );
    let err = config(&["--hostname", "localhost:8883"]).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidName {
                setting: "--hostname",
                ..
            }
        ),
        "{err:?}"
    );
    let err = config(&["--hub-name", "a.b"]).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidName {
                setting: "--hub-name",
                ..
            }
        ),
        "{err:?}"
    );
    let err = config(&["--hub-name", ""]).unwrap_err();
    assert!(err.to_string().contains("--hub-name"), "{err}");
}

#[test]
fn embedded_is_valid_and_ephemeral() {
    let c = Config::embedded("/data").with_device(SeedDevice::new("d1").with_keys(KEY_A, KEY_B));
    c.validate().unwrap();
    assert_eq!(c.ports, Ports::ephemeral());
    assert_eq!(c.hub.feedback_window, Duration::ZERO);
    assert_eq!(c.data_dir, PathBuf::from("/data"));
    assert_eq!(c.ca_path(), PathBuf::from("/data/tls/ca.pem"));
    assert_eq!(
        c.device_connection_string(&c.devices[0]).unwrap(),
        format!("HostName=localhost;DeviceId=d1;SharedAccessKey={KEY_A}")
    );
}

#[test]
fn env_exports() {
    let c = Config::embedded("/data").with_device(SeedDevice::new("d1").with_keys(KEY_A, KEY_B));
    let out = c.env_exports(Path::new("/data/tls/ca.pem"));
    let owner = &credentials::well_known_policies()[0];
    assert!(out.contains(&format!(
        "export IOTHUB_CONNECTION_STRING='HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={}'\n",
        owner.primary_key
    )), "{out}");
    assert!(out.contains(&format!(
        "export IOTHUB_DEVICE_CONNECTION_STRING='HostName=localhost;DeviceId=d1;SharedAccessKey={KEY_A}'\n"
    )), "{out}");
    for var in [
        "IOTHUB_CA_CERT",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(
            out.contains(&format!("export {var}='/data/tls/ca.pem'\n")),
            "{out}"
        );
    }
    assert!(
        out.lines()
            .all(|l| l.starts_with("export ") || l.starts_with("# ")),
        "{out}"
    );

    let c = Config::embedded("/data").with_device(SeedDevice::new("d1"));
    let out = c.env_exports(Path::new("/data/tls/ca.pem"));
    assert!(!out.contains("IOTHUB_DEVICE_CONNECTION_STRING="), "{out}");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

#[test]
fn load_tls_uses_hostname_and_sans() {
    let dir =
        std::env::temp_dir().join(format!("iothub-emulator-config-tls-{}", std::process::id()));
    let mut c = Config::embedded(&dir);
    c.hostname = "myhub.azure-devices.localhost".into();
    c.extra_sans = vec!["10.9.8.7".into()];
    let material = c.load_tls().unwrap();
    assert_eq!(material.ca_path(), c.ca_path());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connection_limits_come_from_flags_and_the_file() {
    let c = config(&[]).unwrap();
    assert_eq!(c.connections, crate::accept::ConnectionLimits::default());
    let c = config(&["--max-connections", "500", "--pre-auth-timeout-secs", "5"]).unwrap();
    assert_eq!(c.connections.max, 500);
    assert_eq!(c.connections.pre_auth, Duration::from_secs(5));
    let mut c = config(&[]).unwrap();
    c.apply_toml(
        "[connections]\nmax = 7\npre_auth_timeout_secs = 9",
        "<inline>",
    )
    .unwrap();
    assert_eq!(c.connections.max, 7);
    assert_eq!(c.connections.pre_auth, Duration::from_secs(9));
    let err = config(&["--max-connections", "0"]).unwrap_err();
    assert!(err.to_string().contains("--max-connections"), "{err}");
}

#[test]
fn eventhubs_table_and_connection_strings() {
    let mut c = Config::embedded("/data");
    c.apply_toml(
        "[eventhubs]\npartition_count = 8\nretention_secs = 60\nmax_events_per_partition = 10\nmax_bytes_per_partition = 2097152\nconsumer_groups = [\"analytics\"]",
        "<inline>",
    )
    .unwrap();
    let log = &c.hub.event_log;
    assert_eq!(log.partition_count, 8);
    assert_eq!(log.retention, Duration::from_secs(60));
    assert_eq!(log.max_events_per_partition, 10);
    assert_eq!(log.max_bytes_per_partition, 2_097_152);
    assert_eq!(log.consumer_groups, ["analytics"]);
    assert!(
        c.apply_toml("[eventhubs]\npartitions = 2", "<inline>")
            .is_err()
    );

    c.ports.eventhubs = 5672;
    let service = c.policy("service").unwrap().primary_key.clone();
    let out = c.env_exports(Path::new("/data/tls/ca.pem"));
    assert!(out.contains(&format!(
        "export EVENTHUB_CONNECTION_STRING='Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey={service};EntityPath=localhost;UseDevelopmentEmulator=true'\n"
    )), "{out}");
    assert_eq!(
        c.eventhub_connection_string(None).unwrap(),
        format!(
            "Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey={service};EntityPath=localhost"
        )
    );
    assert!(
        c.eventhub_connection_string(Some(15672))
            .unwrap()
            .starts_with("Endpoint=sb://localhost:15672/;")
    );
}
