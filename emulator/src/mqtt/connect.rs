//! CONNECT: who the client says it is, and the CONNACK code of every refusal.
//!
//! Reference: iothub-protocol.md 3.2. The client id is the device id; the user name is
//! `{host}/{deviceId}/?api-version=...&DeviceClientType=...` (also the old
//! `{host}/{deviceId}/api-version=...`, and `{host}/{deviceId}/` or `{host}/{deviceId}` without a
//! query); any host is accepted (gateways, `localhost`); the password is a SAS token. Device
//! ids may contain `?`, `=`, `%` and `#`, so the user name is matched against the client id
//! instead of being split at the first `?`. A client id `{deviceId}/{moduleId}` is a module.
//!
//! CONNACK codes are chosen in one place, [`Refusal::code`] (the SDKs' mapping: C and C# treat
//! 0x04/0x05 as bad credentials, 0x03 as "server unavailable / device disabled", 0x02 as a
//! non-retryable identifier error).

use iothub_protocol::HubError;
use iothub_protocol::property_bag::decode_value;
use rumqttc::mqttbytes::Protocol;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode};

/// A CONNECT that is well-formed for IoT Hub; the token is not checked yet.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The device id (the client id, or its part before `/` for a module).
    pub device_id: String,
    /// The module id, for a module client id `{deviceId}/{moduleId}`.
    pub module_id: Option<String>,
    /// The SAS token (the password). Never logged.
    pub token: String,
    /// Clean session flag.
    pub clean_session: bool,
    /// The client's keep-alive in seconds (0 = none).
    pub keep_alive: u16,
    /// What the user name says about the client.
    pub client: ClientInfo,
}

impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("device_id", &self.device_id)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// The parts of the user name besides the device id, for logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The host the client thinks it talks to (the hub or a gateway).
    pub host: String,
    /// `api-version`, if given.
    pub api_version: Option<String>,
    /// `DeviceClientType` (decoded), if given.
    pub client_type: Option<String>,
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not MQTT 3.1.1.
    #[error("only MQTT 3.1.1 (protocol level 4) is supported; IoT Hub's MQTT 5 preview is not")]
    ProtocolVersion,
    /// No client id.
    #[error("the client id is empty; it must be the device id")]
    EmptyClientId,
    /// A client id with a `/` that is not `{deviceId}/{moduleId}`.
    #[error("the client id '{client_id}' is neither a device id nor '{{deviceId}}/{{moduleId}}'")]
    Module {
        /// The client id that was sent.
        client_id: String,
    },
    /// Neither user name nor password.
    #[error(
        "no user name and password; send '{{host}}/{{deviceId}}/?api-version=2021-04-12' and a device SAS token"
    )]
    NoCredentials,
    /// The user name does not name the client id.
    #[error(
        "the user name does not match the client id '{client_id}'; expected '{{host}}/{client_id}/?api-version=2021-04-12'"
    )]
    UsernameMismatch {
        /// The client id that was sent.
        client_id: String,
    },
    /// No password (X.509 clients send none; only SAS tokens are supported).
    #[error(
        "no password; send a device SAS token (SharedAccessSignature sr=...) as the password (X.509 is not supported)"
    )]
    MissingPassword,
    /// The token was refused, or the device is unknown or disabled.
    #[error(transparent)]
    Hub(#[from] HubError),
}

impl Refusal {
    /// The CONNACK return code the client gets.
    pub fn code(&self) -> ConnectReturnCode {
        match self {
            Refusal::ProtocolVersion => ConnectReturnCode::RefusedProtocolVersion,
            Refusal::EmptyClientId | Refusal::Module { .. } | Refusal::UsernameMismatch { .. } => {
                ConnectReturnCode::BadClientId
            }
            Refusal::NoCredentials | Refusal::MissingPassword => {
                ConnectReturnCode::BadUserNamePassword
            }
            Refusal::Hub(e) => connack_code(e),
        }
    }
}

/// The CONNACK code for a hub error at CONNECT: a disabled device gets 0x03 (what the C SDK
/// reports as "device disabled" and the protocol gateway sends); a bad, expired or foreign
/// token and an unknown device get 0x05; anything else is the hub's fault: 0x03.
pub fn connack_code(e: &HubError) -> ConnectReturnCode {
    match e {
        HubError::DeviceDisabled { .. } => ConnectReturnCode::ServiceUnavailable,
        HubError::Unauthorized { .. } | HubError::DeviceNotFound { .. } => {
            ConnectReturnCode::NotAuthorized
        }
        _ => ConnectReturnCode::ServiceUnavailable,
    }
}

/// Checks the shape of a CONNECT: protocol level, client id, user name, password.
pub fn validate(connect: &Connect) -> Result<ConnectRequest, Refusal> {
    if connect.protocol != Protocol::V4 {
        return Err(Refusal::ProtocolVersion);
    }
    let client_id = connect.client_id.as_str();
    if client_id.is_empty() {
        return Err(Refusal::EmptyClientId);
    }
    let ids = super::module::split_client_id(client_id).map_err(|()| Refusal::Module {
        client_id: client_id.to_owned(),
    })?;
    let (device_id, module_id) = match ids {
        Some((d, m)) => (d.to_owned(), Some(m.to_owned())),
        None => (client_id.to_owned(), None),
    };
    let login = connect.login.as_ref().ok_or(Refusal::NoCredentials)?;
    let client =
        parse_username(&login.username, client_id).ok_or_else(|| Refusal::UsernameMismatch {
            client_id: client_id.to_owned(),
        })?;
    if login.password.is_empty() {
        return Err(Refusal::MissingPassword);
    }
    Ok(ConnectRequest {
        device_id,
        module_id,
        token: login.password.clone(),
        clean_session: connect.clean_session,
        keep_alive: connect.keep_alive,
        client,
    })
}

/// Reads `{host}/{client_id}[/[?query | api-version=...]]`; `None` unless it names `client_id`.
pub fn parse_username(username: &str, client_id: &str) -> Option<ClientInfo> {
    let (host, rest) = username.split_once('/')?;
    if host.is_empty() {
        return None;
    }
    let tail = rest.strip_prefix(client_id)?;
    let query = match tail {
        "" | "/" => "",
        t => {
            let t = t.strip_prefix('/')?;
            match t.strip_prefix('?') {
                Some(q) => q,
                None if t.starts_with("api-version=") => t,
                None => return None,
            }
        }
    };
    let mut info = ClientInfo {
        host: host.to_owned(),
        ..ClientInfo::default()
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode_value(value).unwrap_or_else(|_| value.to_owned());
        match key {
            "api-version" => info.api_version = Some(value),
            "DeviceClientType" => info.client_type = Some(value),
            _ => {}
        }
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(client_id: &str, login: Option<(&str, &str)>) -> Connect {
        let mut c = Connect::new(client_id);
        c.clean_session = false;
        c.keep_alive = 60;
        if let Some((u, p)) = login {
            c.set_login(u, p);
        }
        c
    }

    #[test]
    fn usernames_the_sdks_send() {
        let py = "localhost/d1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%28x%29";
        let info = parse_username(py, "d1").unwrap();
        assert_eq!(info.host, "localhost");
        assert_eq!(info.api_version.as_deref(), Some("2019-10-01"));
        assert_eq!(
            info.client_type.as_deref(),
            Some("azure-iot-device-iothub-py/2.14.0(x)")
        );
        for u in [
            "myhub.azure-devices.net/d1/?api-version=2021-04-12&model-id=dtmi%3Ax%3B1",
            "h/d1/api-version=2016-11-14",
            "h/d1/",
            "h/d1",
            "gateway.local:8883/d1/?",
        ] {
            assert!(parse_username(u, "d1").is_some(), "{u}");
        }
        assert_eq!(
            parse_username("h/d1/api-version=2016-11-14", "d1")
                .unwrap()
                .api_version
                .as_deref(),
            Some("2016-11-14")
        );
    }

    #[test]
    fn ids_with_query_characters_match_whole() {
        let id = "a?b=c%d#e";
        let info = parse_username(&format!("h/{id}/?api-version=1"), id).unwrap();
        assert_eq!(info.api_version.as_deref(), Some("1"));
        assert!(parse_username("h/a?b=c%d#e/?api-version=1", "a").is_none());
        assert!(parse_username("h/a?b/?x=1", "a?b").is_some());
    }

    #[test]
    fn mismatches_are_rejected() {
        for u in [
            "h/d2/?api-version=1",
            "h/d10/?api-version=1",
            "h/d1/m1/?api-version=1",
            "h/d1?api-version=1",
            "/d1/?api-version=1",
            "d1",
            "",
            "h/d1/x",
        ] {
            assert!(parse_username(u, "d1").is_none(), "{u}");
        }
    }

    #[test]
    fn refusal_codes() {
        let ok = validate(&connect("d1", Some(("h/d1/?api-version=1", "tok")))).unwrap();
        assert_eq!(ok.device_id, "d1");
        assert_eq!(ok.token, "tok");
        assert!(!ok.clean_session);
        assert_eq!(ok.keep_alive, 60);
        assert!(!format!("{ok:?}").contains("tok"));

        let code = |c: Connect| validate(&c).unwrap_err().code();
        assert_eq!(
            code(connect("", Some(("h//", "t")))),
            ConnectReturnCode::BadClientId
        );
        assert_eq!(
            code(connect("d1/m1/x", Some(("h/d1/m1/x/?api-version=1", "t")))),
            ConnectReturnCode::BadClientId
        );
        assert_eq!(
            code(connect("d1", Some(("h/d2/", "t")))),
            ConnectReturnCode::BadClientId
        );
        assert_eq!(
            code(connect("d1", Some(("h/d1/", "")))),
            ConnectReturnCode::BadUserNamePassword
        );
        assert_eq!(
            code(connect("d1", None)),
            ConnectReturnCode::BadUserNamePassword
        );
        let mut v5 = connect("d1", Some(("h/d1/", "t")));
        v5.protocol = Protocol::V5;
        assert_eq!(code(v5), ConnectReturnCode::RefusedProtocolVersion);
    }

    #[test]
    fn hub_errors_map_to_connack_codes() {
        assert_eq!(
            connack_code(&HubError::unauthorized("bad sig")),
            ConnectReturnCode::NotAuthorized
        );
        assert_eq!(
            connack_code(&HubError::DeviceNotFound {
                device_id: "d".into()
            }),
            ConnectReturnCode::NotAuthorized
        );
        assert_eq!(
            connack_code(&HubError::DeviceDisabled {
                device_id: "d".into()
            }),
            ConnectReturnCode::ServiceUnavailable
        );
        assert_eq!(
            connack_code(&HubError::ServerError { detail: "x".into() }),
            ConnectReturnCode::ServiceUnavailable
        );
    }
}
