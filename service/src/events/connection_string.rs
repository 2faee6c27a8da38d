//! The Event Hubs-compatible connection string (iothub-beyond-c2d.md 3.2):
//! `Endpoint=sb://<host>[:port]/;SharedAccessKeyName=<policy>;SharedAccessKey=<key>;EntityPath=<name>`,
//! optionally with `UseDevelopmentEmulator=true` (plain AMQP, port 5672 unless the endpoint
//! names one) or `SharedAccessSignature=<token>` instead of the key name and key.
//!
//! Key names compare without case, as the Python and JS clients build their clients; an
//! unknown key is ignored, as they do.

use std::fmt;
use std::str::FromStr;

use iothub_protocol::connection_string::ConnectionStringError;

const ENDPOINT: &str = "Endpoint";
const SHARED_ACCESS_KEY_NAME: &str = "SharedAccessKeyName";
const SHARED_ACCESS_KEY: &str = "SharedAccessKey";
const SHARED_ACCESS_SIGNATURE: &str = "SharedAccessSignature";
const ENTITY_PATH: &str = "EntityPath";
const USE_DEVELOPMENT_EMULATOR: &str = "UseDevelopmentEmulator";
const KEYS: &[&str] = &[
    ENDPOINT,
    SHARED_ACCESS_KEY_NAME,
    SHARED_ACCESS_KEY,
    SHARED_ACCESS_SIGNATURE,
    ENTITY_PATH,
    USE_DEVELOPMENT_EMULATOR,
];

/// How an Event Hubs connection string authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum EventHubCredential {
    /// A policy name and its key: the client signs (and renews) its own tokens.
    Key {
        /// `SharedAccessKeyName`.
        name: String,
        /// `SharedAccessKey`, used as the Event Hubs clients use it (its text is the HMAC key).
        key: String,
    },
    /// `SharedAccessSignature`: a ready token, used as is and never renewed.
    Signature(String),
}

/// Leaves out the key and the token.
impl fmt::Debug for EventHubCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventHubCredential::Key { name, .. } => f
                .debug_struct("Key")
                .field("name", name)
                .finish_non_exhaustive(),
            EventHubCredential::Signature(_) => f.write_str("Signature(..)"),
        }
    }
}

/// A parsed Event Hubs-compatible connection string.
///
/// ```
/// use iothub_service::events::EventHubConnectionString;
///
/// let cs: EventHubConnectionString =
///     "Endpoint=sb://localhost/;SharedAccessKeyName=service;SharedAccessKey=a2V5;EntityPath=myhub;UseDevelopmentEmulator=true"
///         .parse()?;
/// assert_eq!(cs.host, "localhost");
/// assert_eq!(cs.port(), 5672);
/// assert_eq!(cs.entity_path.as_deref(), Some("myhub"));
/// # Ok::<(), iothub_service::ConnectionStringError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventHubConnectionString {
    /// The endpoint's host (from `Endpoint`, without scheme and port).
    pub host: String,
    /// A port written in `Endpoint`, if any.
    pub explicit_port: Option<u16>,
    /// The credential.
    pub credential: EventHubCredential,
    /// `EntityPath`: the event hub name (for the built-in endpoint, the "Event Hub-compatible
    /// name"). Required to read, unless given another way.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: plain AMQP without TLS.
    pub use_development_emulator: bool,
}

impl EventHubConnectionString {
    /// The port to connect to: the one in `Endpoint`, else 5672 for the development form and
    /// 5671 (AMQP over TLS) otherwise.
    pub fn port(&self) -> u16 {
        self.explicit_port
            .unwrap_or(if self.use_development_emulator {
                super::DEFAULT_DEVELOPMENT_PORT
            } else {
                crate::DEFAULT_AMQP_PORT
            })
    }
}

impl FromStr for EventHubConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut values: [Option<&str>; 6] = [None; 6];
        for (i, part) in s.split(';').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (key, value) = part
                .split_once('=')
                .ok_or(ConnectionStringError::MissingEquals { position: i + 1 })?;
            let Some(k) = KEYS.iter().position(|k| k.eq_ignore_ascii_case(key.trim())) else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                return Err(ConnectionStringError::EmptyValue { key: KEYS[k] });
            }
            if values[k].replace(value).is_some() {
                return Err(ConnectionStringError::DuplicateKey { key: KEYS[k] });
            }
        }
        let [endpoint, key_name, key, signature, entity, development] = values;
        let endpoint = endpoint.ok_or(ConnectionStringError::MissingKey { key: ENDPOINT })?;
        let (host, explicit_port) = parse_endpoint(endpoint)?;
        let credential = match (key_name, key, signature) {
            (_, _, Some(token)) => EventHubCredential::Signature(token.to_owned()),
            (Some(name), Some(key), None) => EventHubCredential::Key {
                name: name.to_owned(),
                key: key.to_owned(),
            },
            (None, _, None) => {
                return Err(ConnectionStringError::MissingKey {
                    key: SHARED_ACCESS_KEY_NAME,
                });
            }
            (Some(_), None, None) => {
                return Err(ConnectionStringError::MissingKey {
                    key: SHARED_ACCESS_KEY,
                });
            }
        };
        let use_development_emulator = match development {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => {
                return Err(ConnectionStringError::InvalidValue {
                    key: USE_DEVELOPMENT_EMULATOR,
                    reason: "use true or false".to_owned(),
                });
            }
        };
        Ok(EventHubConnectionString {
            host,
            explicit_port,
            credential,
            entity_path: entity.map(|e| e.trim_matches('/').to_owned()),
            use_development_emulator,
        })
    }
}

/// `sb://host[:port][/]` (or `amqps://`, `amqp://`, or a bare host) into host and port.
fn parse_endpoint(endpoint: &str) -> Result<(String, Option<u16>), ConnectionStringError> {
    let invalid = |reason: &'static str| ConnectionStringError::InvalidHostName {
        key: ENDPOINT,
        value: endpoint.to_owned(),
        reason,
    };
    let rest = match endpoint.split_once("://") {
        Some((_scheme, rest)) => rest,
        None => endpoint,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?;
            (host, Some(port))
        }
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(invalid("it names no host; write it as sb://<host>/"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '@' | '?' | '#'))
    {
        return Err(invalid("it is not a bare host name"));
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_endpoint_form() {
        let cs: EventHubConnectionString = "Endpoint=sb://ihsuprod.servicebus.windows.net/;SharedAccessKeyName=service;SharedAccessKey=abc=;EntityPath=myhub"
            .parse()
            .unwrap();
        assert_eq!(cs.host, "ihsuprod.servicebus.windows.net");
        assert_eq!(cs.port(), 5671);
        assert!(!cs.use_development_emulator);
        assert_eq!(
            cs.credential,
            EventHubCredential::Key {
                name: "service".into(),
                key: "abc=".into()
            }
        );
        assert!(!format!("{cs:?}").contains("abc="));
    }

    #[test]
    fn the_development_form_with_and_without_a_port() {
        let cs: EventHubConnectionString =
            "endpoint=sb://localhost;sharedaccesskeyname=k;sharedaccesskey=v;UseDevelopmentEmulator=true;"
                .parse()
                .unwrap();
        assert_eq!((cs.host.as_str(), cs.port()), ("localhost", 5672));
        assert_eq!(cs.entity_path, None);
        let cs: EventHubConnectionString =
            "Endpoint=sb://127.0.0.1:15672/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=h;UseDevelopmentEmulator=true"
                .parse()
                .unwrap();
        assert_eq!((cs.host.as_str(), cs.port()), ("127.0.0.1", 15672));
    }

    #[test]
    fn a_signature_replaces_the_key() {
        let cs: EventHubConnectionString =
            "Endpoint=sb://h/;SharedAccessSignature=SharedAccessSignature sr=x&sig=y&se=1;EntityPath=e"
                .parse()
                .unwrap();
        assert!(matches!(cs.credential, EventHubCredential::Signature(_)));
    }

    #[test]
    fn bad_strings_name_the_key_at_fault() {
        let err = |s: &str| s.parse::<EventHubConnectionString>().unwrap_err();
        assert_eq!(
            err("SharedAccessKeyName=k;SharedAccessKey=v"),
            ConnectionStringError::MissingKey { key: ENDPOINT }
        );
        assert_eq!(
            err("Endpoint=sb://h/;SharedAccessKeyName=k"),
            ConnectionStringError::MissingKey {
                key: SHARED_ACCESS_KEY
            }
        );
        assert!(matches!(
            err("Endpoint=sb://h:x/;SharedAccessKeyName=k;SharedAccessKey=v"),
            ConnectionStringError::InvalidHostName { .. }
        ));
        assert!(matches!(
            err("Endpoint=sb:///;SharedAccessKeyName=k;SharedAccessKey=v"),
            ConnectionStringError::InvalidHostName { .. }
        ));
        assert_eq!(
            err("Endpoint=sb://h/;Endpoint=sb://g/"),
            ConnectionStringError::DuplicateKey { key: ENDPOINT }
        );
        assert!(matches!(
            err(
                "Endpoint=sb://h/;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=yes"
            ),
            ConnectionStringError::InvalidValue { .. }
        ));
        assert_eq!(
            err("Endpoint=sb://h/;oops"),
            ConnectionStringError::MissingEquals { position: 2 }
        );
    }
}
