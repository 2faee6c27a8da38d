//! Device and service connection strings (iothub-protocol.md 7.5).
//!
//! A connection string is how a user points a client at a hub, so the same string has to work
//! with the emulator, the Rust clients and the official SDKs. It is `Key=value` parts joined by
//! `;`. Parsing follows what the SDKs accept:
//!
//! * each part is split at its **first** `=`, because base64 keys and SAS tokens contain `=`;
//! * key names match without ASCII case, whitespace around keys and values is trimmed, and
//!   empty parts (a trailing `;`) are skipped;
//! * **unknown keys are ignored**, as the Python and Node SDKs do (the C# SDK rejects them), so
//!   a string written for a newer SDK still works here;
//! * a known key given twice is an error, since it is unclear which value is meant.
//!
//! [`Display`](std::fmt::Display) writes the known keys in a fixed order, and parsing what it
//! wrote gives the same value back. No error message contains a key or a token.

use std::fmt;
use std::str::FromStr;

use crate::device_id::validate_device_id;
use crate::sas::{self, SasError, SasToken};

/// Why a connection string was rejected. Every variant that can name the key at fault does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// A required key is absent.
    #[error("the connection string has no {key}; add `{key}=...`")]
    MissingKey {
        /// The key's canonical name, e.g. `HostName`.
        key: &'static str,
    },
    /// A key is present with nothing after its `=`.
    #[error("{key} is empty in the connection string; give it a value or remove it")]
    EmptyValue {
        /// The key's canonical name.
        key: &'static str,
    },
    /// A key appears more than once (key names compare without case).
    #[error("{key} appears more than once in the connection string; keep one")]
    DuplicateKey {
        /// The key's canonical name.
        key: &'static str,
    },
    /// A part has no `=`. Only its position is given, since the text might be a secret.
    #[error(
        "part {position} of the connection string (counting `;`-separated parts from 1) has no `=`; every part must be `Key=value`"
    )]
    MissingEquals {
        /// 1-based position of the part among the `;`-separated parts.
        position: usize,
    },
    /// `SharedAccessKey` is not base64.
    #[error("{key} is not valid base64; copy the key exactly as the hub shows it")]
    InvalidBase64 {
        /// The key's canonical name (`SharedAccessKey`).
        key: &'static str,
    },
    /// `HostName` or `GatewayHostName` is not a bare host name with an optional port.
    #[error("{key} `{value}` is not a valid host name: {reason}")]
    InvalidHostName {
        /// `HostName` or `GatewayHostName`.
        key: &'static str,
        /// The value given (host names are not secret).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Any other value that breaks its key's rules.
    #[error("{key} is not valid: {reason}")]
    InvalidValue {
        /// The key's canonical name.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `SharedAccessSignature` is not a token that can be parsed.
    #[error("SharedAccessSignature is not a usable token: {0}")]
    InvalidSharedAccessSignature(#[source] SasError),
    /// A device connection string without any credential.
    #[error(
        "the device connection string has no credential; add SharedAccessKey, SharedAccessSignature or x509=true"
    )]
    MissingCredential,
    /// Two keys that exclude each other, such as two credentials.
    #[error(
        "{first} and {second} cannot be used together; a device connection string has exactly one credential"
    )]
    ConflictingKeys {
        /// The first key, in canonical order.
        first: &'static str,
        /// The second key.
        second: &'static str,
    },
}

const HOST_NAME: &str = "HostName";
const DEVICE_ID: &str = "DeviceId";
const MODULE_ID: &str = "ModuleId";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const X509: &str = "x509";
const GATEWAY_HOST_NAME: &str = "GatewayHostName";

/// Keys of a device connection string, in the order [`DeviceConnectionString`] writes them.
const DEVICE_KEYS: &[&str] = &[
    HOST_NAME,
    DEVICE_ID,
    MODULE_ID,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_SIGNATURE,
    X509,
    GATEWAY_HOST_NAME,
];

/// Keys of a service connection string, in the order [`ServiceConnectionString`] writes them.
const SERVICE_KEYS: &[&str] = &[HOST_NAME, SHARED_ACCESS_KEY_NAME, SHARED_ACCESS_KEY];

/// How a device proves who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceCredential {
    /// A symmetric key: the device's own (`key_name` absent) or a policy's with DeviceConnect
    /// (`SharedAccessKeyName` set). The client signs its own SAS tokens with it.
    SharedAccessKey {
        /// The key, base64 as the hub shows it.
        key: String,
        /// The policy name, when the key is a policy's rather than the device's.
        key_name: Option<String>,
    },
    /// A ready-made token; the client cannot renew it.
    SharedAccessSignature(SasToken),
    /// An X.509 client certificate, given to the client separately (`x509=true`).
    X509,
}

/// Leaves out the key and the token's signature.
impl fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceCredential::SharedAccessKey { key_name, .. } => f
                .debug_struct("SharedAccessKey")
                .field("key_name", key_name)
                .finish_non_exhaustive(),
            DeviceCredential::SharedAccessSignature(token) => {
                f.debug_tuple("SharedAccessSignature").field(token).finish()
            }
            DeviceCredential::X509 => f.write_str("X509"),
        }
    }
}

/// A device (or module) connection string:
/// `HostName=..;DeviceId=..;SharedAccessKey=..` and its variants.
///
/// The fields are plain data; [`validate`](Self::validate) checks one built by hand, and
/// parsing checks everything it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConnectionString {
    /// `HostName`: the hub's host name, optionally with `:port`. SAS tokens are scoped to it.
    pub host_name: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `ModuleId`, for a module identity.
    pub module_id: Option<String>,
    /// `GatewayHostName`: where to connect instead of `HostName` (IoT Edge, or the emulator
    /// behind a real hub name).
    pub gateway_host_name: Option<String>,
    /// The one credential: `SharedAccessKey` (with an optional `SharedAccessKeyName`),
    /// `SharedAccessSignature`, or `x509=true`.
    pub credential: DeviceCredential,
}

impl DeviceConnectionString {
    /// The hub name: `HostName` up to its first `.`, without a port.
    pub fn hub_name(&self) -> &str {
        hub_name(&self.host_name)
    }

    /// The host to open connections to: `GatewayHostName` if set, else `HostName`.
    pub fn connect_host(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }

    /// Checks the rules parsing enforces, for a value built by hand: host names, a valid
    /// device id, a base64 key, and no value that is empty, contains `;` or has surrounding
    /// whitespace (those would not survive a round trip through text).
    pub fn validate(&self) -> Result<(), ConnectionStringError> {
        validate_host(HOST_NAME, &self.host_name)?;
        check_value(DEVICE_ID, &self.device_id)?;
        validate_device_id(&self.device_id).map_err(|reason| {
            ConnectionStringError::InvalidValue {
                key: DEVICE_ID,
                reason,
            }
        })?;
        if let Some(module_id) = &self.module_id {
            check_value(MODULE_ID, module_id)?;
        }
        match &self.credential {
            DeviceCredential::SharedAccessKey { key, key_name } => {
                if let Some(name) = key_name {
                    check_value(SHARED_ACCESS_KEY_NAME, name)?;
                }
                validate_key(key)?;
            }
            DeviceCredential::SharedAccessSignature(token) => {
                check_value(SHARED_ACCESS_SIGNATURE, token.as_str())?;
            }
            DeviceCredential::X509 => {}
        }
        if let Some(gateway) = &self.gateway_host_name {
            validate_host(GATEWAY_HOST_NAME, gateway)?;
        }
        Ok(())
    }
}

impl FromStr for DeviceConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts = Parts::parse(s, DEVICE_KEYS)?;
        let host_name = parts.require(HOST_NAME)?;
        let device_id = parts.require(DEVICE_ID)?;

        let key_name = parts.get(SHARED_ACCESS_KEY_NAME);
        let key = parts.get(SHARED_ACCESS_KEY);
        let token = parts.get(SHARED_ACCESS_SIGNATURE);
        let x509 = parts.get(X509);
        if let Some(x509) = x509
            && !x509.eq_ignore_ascii_case("true")
        {
            return Err(ConnectionStringError::InvalidValue {
                key: X509,
                reason: "it must be `true`; remove it to use a key or a token".into(),
            });
        }

        let given: Vec<&'static str> = [
            (SHARED_ACCESS_KEY, key.is_some()),
            (SHARED_ACCESS_SIGNATURE, token.is_some()),
            (X509, x509.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        if let [first, second, ..] = given[..] {
            return Err(ConnectionStringError::ConflictingKeys { first, second });
        }
        if key_name.is_some() && key.is_none() {
            return Err(match given.first() {
                Some(&other) => ConnectionStringError::ConflictingKeys {
                    first: SHARED_ACCESS_KEY_NAME,
                    second: other,
                },
                None => ConnectionStringError::MissingKey {
                    key: SHARED_ACCESS_KEY,
                },
            });
        }

        let credential = if let Some(key) = key {
            DeviceCredential::SharedAccessKey {
                key: key.to_owned(),
                key_name: key_name.map(str::to_owned),
            }
        } else if let Some(token) = token {
            DeviceCredential::SharedAccessSignature(
                SasToken::parse(token)
                    .map_err(ConnectionStringError::InvalidSharedAccessSignature)?,
            )
        } else if x509.is_some() {
            DeviceCredential::X509
        } else {
            return Err(ConnectionStringError::MissingCredential);
        };

        let cs = DeviceConnectionString {
            host_name: host_name.to_owned(),
            device_id: device_id.to_owned(),
            module_id: parts.get(MODULE_ID).map(str::to_owned),
            gateway_host_name: parts.get(GATEWAY_HOST_NAME).map(str::to_owned),
            credential,
        };
        cs.validate()?;
        Ok(cs)
    }
}

impl fmt::Display for DeviceConnectionString {
    /// Writes `HostName;DeviceId;ModuleId;SharedAccessKeyName;SharedAccessKey |
    /// SharedAccessSignature | x509;GatewayHostName`, skipping absent keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HOST_NAME}={};{DEVICE_ID}={}",
            self.host_name, self.device_id
        )?;
        if let Some(module_id) = &self.module_id {
            write!(f, ";{MODULE_ID}={module_id}")?;
        }
        match &self.credential {
            DeviceCredential::SharedAccessKey { key, key_name } => {
                if let Some(name) = key_name {
                    write!(f, ";{SHARED_ACCESS_KEY_NAME}={name}")?;
                }
                write!(f, ";{SHARED_ACCESS_KEY}={key}")?;
            }
            DeviceCredential::SharedAccessSignature(token) => {
                write!(f, ";{SHARED_ACCESS_SIGNATURE}={token}")?;
            }
            DeviceCredential::X509 => write!(f, ";{X509}=true")?,
        }
        if let Some(gateway) = &self.gateway_host_name {
            write!(f, ";{GATEWAY_HOST_NAME}={gateway}")?;
        }
        Ok(())
    }
}

/// A service connection string: `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`, all
/// three required.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceConnectionString {
    /// `HostName`: the hub's host name, optionally with `:port`.
    pub host_name: String,
    /// `SharedAccessKeyName`: the policy, e.g. `iothubowner` or `service`.
    pub key_name: String,
    /// `SharedAccessKey`: the policy's key, base64.
    pub key: String,
}

impl ServiceConnectionString {
    /// The hub name: `HostName` up to its first `.`, without a port.
    pub fn hub_name(&self) -> &str {
        hub_name(&self.host_name)
    }

    /// Checks the rules parsing enforces, for a value built by hand.
    pub fn validate(&self) -> Result<(), ConnectionStringError> {
        validate_host(HOST_NAME, &self.host_name)?;
        check_value(SHARED_ACCESS_KEY_NAME, &self.key_name)?;
        validate_key(&self.key)
    }
}

/// Leaves out the key.
impl fmt::Debug for ServiceConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConnectionString")
            .field("host_name", &self.host_name)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl FromStr for ServiceConnectionString {
    type Err = ConnectionStringError;

    /// Parses a service connection string. Keys that only devices use (`DeviceId`, ...) are
    /// ignored like any unknown key.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts = Parts::parse(s, SERVICE_KEYS)?;
        let cs = ServiceConnectionString {
            host_name: parts.require(HOST_NAME)?.to_owned(),
            key_name: parts.require(SHARED_ACCESS_KEY_NAME)?.to_owned(),
            key: parts.require(SHARED_ACCESS_KEY)?.to_owned(),
        };
        cs.validate()?;
        Ok(cs)
    }
}

impl fmt::Display for ServiceConnectionString {
    /// Writes `HostName;SharedAccessKeyName;SharedAccessKey`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{HOST_NAME}={};{SHARED_ACCESS_KEY_NAME}={};{SHARED_ACCESS_KEY}={}",
            self.host_name, self.key_name, self.key
        )
    }
}

/// The hub name in a host name: the text before the first `.`, after dropping any `:port`
/// (the whole host when it has no dot, e.g. `localhost`).
pub fn hub_name(host_name: &str) -> &str {
    let host = host_name
        .split_once(':')
        .map_or(host_name, |(host, _)| host);
    host.split_once('.').map_or(host, |(hub, _)| hub)
}

/// The known keys of one kind of connection string and the value given for each.
struct Parts<'a> {
    keys: &'static [&'static str],
    values: Vec<Option<&'a str>>,
}

impl<'a> Parts<'a> {
    /// Splits `s` into parts, keeping the values of `keys` and skipping unknown keys.
    fn parse(s: &'a str, keys: &'static [&'static str]) -> Result<Self, ConnectionStringError> {
        let mut values = vec![None; keys.len()];
        for (index, part) in s.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, value) =
                part.split_once('=')
                    .ok_or(ConnectionStringError::MissingEquals {
                        position: index + 1,
                    })?;
            let name = name.trim();
            let Some(slot) = keys.iter().position(|k| k.eq_ignore_ascii_case(name)) else {
                continue;
            };
            let key = keys[slot];
            if values[slot].is_some() {
                return Err(ConnectionStringError::DuplicateKey { key });
            }
            let value = value.trim();
            if value.is_empty() {
                return Err(ConnectionStringError::EmptyValue { key });
            }
            values[slot] = Some(value);
        }
        Ok(Parts { keys, values })
    }

    /// The value of `key`, if given.
    fn get(&self, key: &'static str) -> Option<&'a str> {
        self.keys
            .iter()
            .position(|k| *k == key)
            .and_then(|slot| self.values.get(slot).copied().flatten())
    }

    /// The value of `key`, which must be given.
    fn require(&self, key: &'static str) -> Result<&'a str, ConnectionStringError> {
        self.get(key)
            .ok_or(ConnectionStringError::MissingKey { key })
    }
}

/// A value must be non-empty, without `;` and without surrounding whitespace to survive being
/// written and parsed again.
fn check_value(key: &'static str, value: &str) -> Result<(), ConnectionStringError> {
    if value.is_empty() {
        return Err(ConnectionStringError::EmptyValue { key });
    }
    if value.contains(';') {
        return Err(ConnectionStringError::InvalidValue {
            key,
            reason: "it contains `;`, which separates the parts of a connection string".into(),
        });
    }
    if value.trim() != value {
        return Err(ConnectionStringError::InvalidValue {
            key,
            reason: "it starts or ends with whitespace".into(),
        });
    }
    Ok(())
}

/// `SharedAccessKey` must be base64 of a non-empty key.
fn validate_key(key: &str) -> Result<(), ConnectionStringError> {
    check_value(SHARED_ACCESS_KEY, key)?;
    sas::decode_key(key)
        .map(|_| ())
        .map_err(|_| ConnectionStringError::InvalidBase64 {
            key: SHARED_ACCESS_KEY,
        })
}

/// A host name is ASCII letters, digits, `_`, `.` and `-`, optionally followed by `:port`;
/// no scheme and no path. (The C# SDK allows the same characters.)
fn validate_host(key: &'static str, value: &str) -> Result<(), ConnectionStringError> {
    if value.is_empty() {
        return Err(ConnectionStringError::EmptyValue { key });
    }
    let invalid = |reason| ConnectionStringError::InvalidHostName {
        key,
        value: value.to_owned(),
        reason,
    };
    if value.contains("://") {
        return Err(invalid(
            "it has a scheme; give the host name only, e.g. myhub.azure-devices.net",
        ));
    }
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    if host.is_empty() {
        return Err(invalid("the part before `:` is empty"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(invalid(
            "only ASCII letters, digits, `_`, `.` and `-` are allowed, with an optional `:port`",
        ));
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || !matches!(port.parse::<u16>(), Ok(1..)))
    {
        return Err(invalid(
            "the port after `:` is not a number from 1 to 65535",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use proptest::prelude::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const TOKEN: &str = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1\
                         &sig=9P9k7cepgTkOaGmNEjd4wFkh7fOk6kxqmqAk7lhd9T8%3D&se=1700000000";

    fn device(s: &str) -> Result<DeviceConnectionString, ConnectionStringError> {
        s.parse()
    }

    fn service(s: &str) -> Result<ServiceConnectionString, ConnectionStringError> {
        s.parse()
    }

    #[test]
    fn parses_a_device_key_string() {
        let cs = device(&format!(
            "HostName=myhub.azure-devices.net;DeviceId=dev-1;SharedAccessKey={KEY}"
        ))
        .unwrap();
        assert_eq!(cs.host_name, "myhub.azure-devices.net");
        assert_eq!(cs.device_id, "dev-1");
        assert_eq!(cs.module_id, None);
        assert_eq!(
            cs.credential,
            DeviceCredential::SharedAccessKey {
                key: KEY.into(),
                key_name: None
            }
        );
        assert_eq!(cs.hub_name(), "myhub");
        assert_eq!(cs.connect_host(), "myhub.azure-devices.net");
    }

    #[test]
    fn parses_every_device_variant() {
        let cs = device(&format!(
            "HostName=h.example;DeviceId=d;ModuleId=m;SharedAccessKeyName=device;SharedAccessKey={KEY};GatewayHostName=localhost:8883"
        ))
        .unwrap();
        assert_eq!(cs.module_id.as_deref(), Some("m"));
        assert_eq!(cs.connect_host(), "localhost:8883");
        assert_eq!(
            cs.credential,
            DeviceCredential::SharedAccessKey {
                key: KEY.into(),
                key_name: Some("device".into())
            }
        );

        let cs = device(&format!(
            "HostName=h.example;DeviceId=d;SharedAccessSignature={TOKEN}"
        ))
        .unwrap();
        let DeviceCredential::SharedAccessSignature(token) = &cs.credential else {
            panic!("expected a token, got {:?}", cs.credential);
        };
        assert_eq!(token.as_str(), TOKEN);
        assert_eq!(token.verify_signature(KEY), Ok(()));

        let cs = device("HostName=h.example;DeviceId=d;x509=TRUE").unwrap();
        assert_eq!(cs.credential, DeviceCredential::X509);
        assert_eq!(cs.to_string(), "HostName=h.example;DeviceId=d;x509=true");
    }

    #[test]
    fn keys_ignore_case_and_whitespace_and_values_keep_their_equals_signs() {
        let cs = device(&format!(
            " hostname = h.example ; DEVICEID=a=b ;sharedaccesskey= {KEY} ;;"
        ))
        .unwrap();
        assert_eq!(cs.host_name, "h.example");
        assert_eq!(cs.device_id, "a=b");
        assert_eq!(
            cs.credential,
            DeviceCredential::SharedAccessKey {
                key: KEY.into(),
                key_name: None
            }
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let cs = device(&format!(
            "HostName=h.example;DeviceId=d;SharedAccessKey={KEY};Future=1;Future=2;Empty="
        ))
        .unwrap();
        assert_eq!(
            cs.to_string(),
            format!("HostName=h.example;DeviceId=d;SharedAccessKey={KEY}")
        );
    }

    #[test]
    fn missing_keys_are_named() {
        assert_eq!(
            device(&format!("DeviceId=d;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::MissingKey { key: "HostName" })
        );
        assert_eq!(
            device(&format!("HostName=h;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::MissingKey { key: "DeviceId" })
        );
        assert_eq!(
            device("HostName=h;DeviceId=d"),
            Err(ConnectionStringError::MissingCredential)
        );
        assert_eq!(
            device("HostName=h;DeviceId=d;SharedAccessKeyName=device"),
            Err(ConnectionStringError::MissingKey {
                key: "SharedAccessKey"
            })
        );
        assert_eq!(
            service(&format!("HostName=h;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::MissingKey {
                key: "SharedAccessKeyName"
            })
        );
        assert_eq!(
            service("HostName=h;SharedAccessKeyName=service"),
            Err(ConnectionStringError::MissingKey {
                key: "SharedAccessKey"
            })
        );
        assert_eq!(
            service(&format!("SharedAccessKeyName=s;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::MissingKey { key: "HostName" })
        );
    }

    #[test]
    fn empty_values_are_named() {
        assert_eq!(
            device(&format!("HostName=h;DeviceId= ;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::EmptyValue { key: "DeviceId" })
        );
        assert_eq!(
            service("HostName=h;SharedAccessKeyName=s;SharedAccessKey="),
            Err(ConnectionStringError::EmptyValue {
                key: "SharedAccessKey"
            })
        );
    }

    #[test]
    fn duplicate_keys_are_named() {
        assert_eq!(
            device(&format!(
                "HostName=h;DeviceId=d;deviceid=d;SharedAccessKey={KEY}"
            )),
            Err(ConnectionStringError::DuplicateKey { key: "DeviceId" })
        );
        assert_eq!(
            service(&format!(
                "HostName=h;SharedAccessKeyName=s;SharedAccessKey={KEY};SHAREDACCESSKEY={KEY}"
            )),
            Err(ConnectionStringError::DuplicateKey {
                key: "SharedAccessKey"
            })
        );
    }

    #[test]
    fn a_part_without_equals_is_located_not_quoted() {
        assert_eq!(
            device(&format!("HostName=h;DeviceId=d;x509;SharedAccessKey={KEY}")),
            Err(ConnectionStringError::MissingEquals { position: 3 })
        );
        // base64 without its `=` padding looks like nothing; the message must not quote it.
        let err = device("HostName=h;DeviceId=d;AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8")
            .unwrap_err();
        assert!(!err.to_string().contains("AAECAw"), "{err}");
    }

    #[test]
    fn a_key_that_is_not_base64_is_named() {
        assert_eq!(
            device("HostName=h;DeviceId=d;SharedAccessKey=not base64!"),
            Err(ConnectionStringError::InvalidBase64 {
                key: "SharedAccessKey"
            })
        );
        assert_eq!(
            service("HostName=h;SharedAccessKeyName=s;SharedAccessKey=AAECAw"),
            Err(ConnectionStringError::InvalidBase64 {
                key: "SharedAccessKey"
            })
        );
    }

    #[test]
    fn bad_host_names_are_named() {
        for (host, key) in [
            ("https://h.example", "HostName"),
            ("h.example/path", "HostName"),
            ("h example", "HostName"),
            ("h.example:", "HostName"),
            ("h.example:0", "HostName"),
            ("h.example:65536", "HostName"),
            ("h.example:+1", "HostName"),
            (":443", "HostName"),
            ("h:1:2", "HostName"),
            ("hé.example", "HostName"),
        ] {
            let err = device(&format!("HostName={host};DeviceId=d;x509=true")).unwrap_err();
            assert!(
                matches!(&err, ConnectionStringError::InvalidHostName { key: k, value, .. } if *k == key && value == host),
                "{host}: {err:?}"
            );
        }
        let err = device("HostName=h;DeviceId=d;x509=true;GatewayHostName=tcp://x").unwrap_err();
        assert!(matches!(
            err,
            ConnectionStringError::InvalidHostName {
                key: "GatewayHostName",
                ..
            }
        ));
        for host in [
            "localhost",
            "localhost:18443",
            "My_Hub-1.azure-devices.net:65535",
        ] {
            assert!(
                device(&format!("HostName={host};DeviceId=d;x509=true")).is_ok(),
                "{host}"
            );
        }
    }

    #[test]
    fn credentials_exclude_each_other() {
        assert_eq!(
            device(&format!(
                "HostName=h;DeviceId=d;SharedAccessKey={KEY};SharedAccessSignature={TOKEN}"
            )),
            Err(ConnectionStringError::ConflictingKeys {
                first: "SharedAccessKey",
                second: "SharedAccessSignature"
            })
        );
        assert_eq!(
            device(&format!(
                "HostName=h;DeviceId=d;x509=true;SharedAccessKey={KEY}"
            )),
            Err(ConnectionStringError::ConflictingKeys {
                first: "SharedAccessKey",
                second: "x509"
            })
        );
        assert_eq!(
            device("HostName=h;DeviceId=d;x509=true;SharedAccessKeyName=p"),
            Err(ConnectionStringError::ConflictingKeys {
                first: "SharedAccessKeyName",
                second: "x509"
            })
        );
    }

    #[test]
    fn x509_must_be_true() {
        assert!(matches!(
            device("HostName=h;DeviceId=d;x509=false"),
            Err(ConnectionStringError::InvalidValue { key: "x509", .. })
        ));
    }

    #[test]
    fn device_ids_follow_the_registry_rules() {
        assert!(matches!(
            device("HostName=h;DeviceId=a b;x509=true"),
            Err(ConnectionStringError::InvalidValue {
                key: "DeviceId",
                ..
            })
        ));
    }

    #[test]
    fn a_token_that_does_not_parse_is_rejected_with_its_reason() {
        assert_eq!(
            device("HostName=h;DeviceId=d;SharedAccessSignature=SharedAccessSignature sr=h&se=1"),
            Err(ConnectionStringError::InvalidSharedAccessSignature(
                SasError::MissingField("sig")
            ))
        );
    }

    #[test]
    fn parses_a_service_string() {
        let cs = service(&format!(
            "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY};DeviceId=ignored"
        ))
        .unwrap();
        assert_eq!(cs.host_name, "localhost");
        assert_eq!(cs.key_name, "iothubowner");
        assert_eq!(cs.key, KEY);
        assert_eq!(cs.hub_name(), "localhost");
        assert_eq!(
            cs.to_string(),
            format!("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")
        );
    }

    #[test]
    fn hub_name_is_the_first_label_without_port() {
        assert_eq!(hub_name("myhub.azure-devices.net"), "myhub");
        assert_eq!(hub_name("myhub.azure-devices.net:443"), "myhub");
        assert_eq!(hub_name("localhost"), "localhost");
        assert_eq!(hub_name("localhost:18443"), "localhost");
    }

    #[test]
    fn validate_catches_values_that_would_not_round_trip() {
        let mut cs = device("HostName=h;DeviceId=d;x509=true").unwrap();
        cs.module_id = Some("m;x".into());
        assert!(matches!(
            cs.validate(),
            Err(ConnectionStringError::InvalidValue {
                key: "ModuleId",
                ..
            })
        ));
        cs.module_id = Some(" m".into());
        assert!(cs.validate().is_err());
        let cs = ServiceConnectionString {
            host_name: "h".into(),
            key_name: String::new(),
            key: KEY.into(),
        };
        assert_eq!(
            cs.validate(),
            Err(ConnectionStringError::EmptyValue {
                key: "SharedAccessKeyName"
            })
        );
    }

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let cs = device(&format!(
            "HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey={KEY}"
        ))
        .unwrap();
        assert!(!format!("{cs:?}").contains(KEY));
        let cs = service(&format!(
            "HostName=h;SharedAccessKeyName=p;SharedAccessKey={KEY}"
        ))
        .unwrap();
        assert!(!format!("{cs:?}").contains(KEY));
        let cs = device(&format!(
            "HostName=h;DeviceId=d;SharedAccessSignature={TOKEN}"
        ))
        .unwrap();
        assert!(!format!("{cs:?}").contains("9P9k7cep"));
    }

    fn host_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,12}(\\.[A-Za-z0-9_-]{1,12}){0,3}(:[1-9][0-9]{0,3})?"
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(|k| STANDARD.encode(k))
    }

    fn credential_strategy() -> impl Strategy<Value = DeviceCredential> {
        prop_oneof![
            (key_strategy(), proptest::option::of("[A-Za-z0-9_-]{1,12}"))
                .prop_map(|(key, key_name)| DeviceCredential::SharedAccessKey { key, key_name }),
            (host_strategy(), key_strategy(), any::<u64>()).prop_map(|(host, key, se)| {
                let token = sas::build_token(&host, &key, None, se).unwrap();
                DeviceCredential::SharedAccessSignature(SasToken::parse(&token).unwrap())
            }),
            Just(DeviceCredential::X509),
        ]
    }

    fn device_strategy() -> impl Strategy<Value = DeviceConnectionString> {
        (
            host_strategy(),
            "[A-Za-z0-9.+%_#*?!(),=@$':-]{1,20}",
            proptest::option::of("[A-Za-z0-9_-]{1,12}"),
            proptest::option::of(host_strategy()),
            credential_strategy(),
        )
            .prop_map(
                |(host_name, device_id, module_id, gateway_host_name, credential)| {
                    DeviceConnectionString {
                        host_name,
                        device_id,
                        module_id,
                        gateway_host_name,
                        credential,
                    }
                },
            )
    }

    /// Re-cases the key of every `Key=value` part.
    fn recase(parts: Vec<String>, upper: Vec<bool>) -> Vec<String> {
        parts
            .into_iter()
            .zip(upper)
            .map(|(part, upper)| {
                let (key, value) = part.split_once('=').unwrap();
                let key = if upper {
                    key.to_ascii_uppercase()
                } else {
                    key.to_ascii_lowercase()
                };
                format!(" {key} ={value}")
            })
            .collect()
    }

    proptest! {
        #[test]
        fn device_strings_round_trip(cs in device_strategy()) {
            prop_assert_eq!(cs.validate(), Ok(()));
            let text = cs.to_string();
            prop_assert_eq!(text.parse::<DeviceConnectionString>(), Ok(cs.clone()));
            prop_assert_eq!(cs.hub_name(), hub_name(&cs.host_name));
        }

        #[test]
        fn service_strings_round_trip(
            host_name in host_strategy(),
            key_name in "[A-Za-z0-9_-]{1,12}",
            key in key_strategy(),
        ) {
            let cs = ServiceConnectionString { host_name, key_name, key };
            prop_assert_eq!(cs.to_string().parse::<ServiceConnectionString>(), Ok(cs.clone()));
        }

        #[test]
        fn order_case_and_spacing_of_keys_do_not_matter(
            (cs, parts) in device_strategy().prop_flat_map(|cs| {
                let parts: Vec<String> = cs.to_string().split(';').map(str::to_owned).collect();
                (Just(cs), Just(parts).prop_shuffle())
            }),
            upper in proptest::collection::vec(any::<bool>(), 8),
        ) {
            let text = format!("{};", recase(parts, upper).join(";"));
            prop_assert_eq!(text.parse::<DeviceConnectionString>(), Ok(cs));
        }
    }
}
