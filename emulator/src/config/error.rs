//! Why a configuration cannot be used.

use std::io;
use std::path::PathBuf;

use crate::tls::TlsError;

/// A configuration value that cannot be used. Each names the setting as the user spelled it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("could not read the config file {} (--config): {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {origin}: {source}")]
    ParseFile {
        /// The file, or `<inline>` for a string.
        origin: String,
        /// What the TOML parser reported, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is outside its allowed range.
    #[error("{setting} = {value} is out of range: allowed {allowed}")]
    OutOfRange {
        /// The setting: a flag (`--mqtt-max-inflight`) or a file key (`hub.default_ttl_secs`).
        setting: String,
        /// The value given.
        value: String,
        /// The allowed range, in words.
        allowed: String,
    },
    /// Only one of `--cert` and `--key` was given.
    #[error(
        "{given} was given without {missing}: pass both (PEM files) or neither (a development CA is generated)"
    )]
    IncompleteUserCert {
        /// The flag given.
        given: &'static str,
        /// The flag missing.
        missing: &'static str,
    },
    /// A key is not usable as an IoT Hub symmetric key.
    #[error("{setting} is not a valid key: {reason}")]
    InvalidKey {
        /// Where the key was given, e.g. `policies.service.primary_key`.
        setting: String,
        /// What is wrong.
        reason: String,
    },
    /// `[policies.<name>]` names a policy that does not exist.
    #[error("policies.{name}: there is no policy named {name:?}; the policies are {known}")]
    UnknownPolicy {
        /// The name given.
        name: String,
        /// The policies that exist.
        known: String,
    },
    /// A seeded device id breaks the registry's rules.
    #[error("{setting} = {id:?} is not a valid device id: {reason}")]
    InvalidDeviceId {
        /// Where, e.g. `devices[2].id`.
        setting: String,
        /// The id given.
        id: String,
        /// Why.
        reason: String,
    },
    /// Two seeded devices share an id.
    #[error("devices: the device id {id:?} appears more than once")]
    DuplicateDevice {
        /// The id.
        id: String,
    },
    /// A host name or hub name that clients could not use.
    #[error("{setting} = {value:?} is not valid: {reason}")]
    InvalidName {
        /// `--hostname` or `--hub-name`.
        setting: &'static str,
        /// The value given.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A `--san` value that cannot go into a certificate.
    #[error("--san: {0}")]
    InvalidSan(#[source] TlsError),
    /// Two listeners on the same port.
    #[error("{first} and {second} are both {port}: give each listener its own port")]
    PortClash {
        /// The port.
        port: u16,
        /// One flag.
        first: &'static str,
        /// The other flag.
        second: &'static str,
    },
}
