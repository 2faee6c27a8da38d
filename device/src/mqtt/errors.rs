//! MQTT failures as [`Error`]s: CONNACK refusals (iothub-protocol.md 3.2), connections that
//! could not be made or were lost, and settling on a connection that is gone.

use iothub_protocol::ErrorCode;
use iothub_protocol::client::display_chain;
use iothub_protocol::tls::describe_handshake_failure;
use rumqttc::mqttbytes::v4::ConnectReturnCode;

use super::connection::Lost;
use super::params::Params;
use crate::error::Error;

/// Maps a CONNACK refusal to the client's error.
pub(super) fn refused(code: ConnectReturnCode, params: &Params) -> Error {
    let unauthorized = |message: &str| Error::Unauthorized {
        message: message.to_owned(),
        code: ErrorCode::IotHubUnauthorizedAccess,
    };
    match code {
        ConnectReturnCode::BadUserNamePassword => {
            unauthorized("MQTT CONNACK 4, bad user name or password")
        }
        ConnectReturnCode::NotAuthorized => unauthorized("MQTT CONNACK 5, not authorized"),
        ConnectReturnCode::BadClientId => unauthorized(
            "MQTT CONNACK 2, identifier rejected: the client id and user name do not name the same device",
        ),
        ConnectReturnCode::ServiceUnavailable => Error::DeviceDisabled {
            device_id: params.client_id(),
        },
        other => Error::Connection {
            message: format!(
                "{} refused the MQTT connection: {other:?}",
                params.endpoint()
            ),
            source: None,
        },
    }
}

/// A connection that could not be made: a TLS failure says so (with the trust hint), anything
/// else names the endpoint.
pub(super) fn connect_failed(
    params: &Params,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    match describe_handshake_failure(&e, &params.host) {
        Some(tls) => Error::from(tls),
        None => Error::connection(format!("cannot connect to {}", params.endpoint()), e),
    }
}

/// Why a live connection ended, for the connection state.
pub(super) fn describe_lost(e: &Lost, params: &Params) -> String {
    match describe_handshake_failure(e, &params.host) {
        Some(tls) => display_chain(&Error::from(tls)),
        None => format!("{}: {}", params.endpoint(), display_chain(e)),
    }
}

/// The error for settling a message whose connection has closed.
pub(super) fn stale() -> Error {
    Error::lock_lost("the MQTT connection it arrived on has closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use crate::config::Transport;
    use iothub_protocol::tls::Trust;
    use std::time::Duration;

    #[test]
    fn connack_refusals_map_to_typed_errors() {
        let mut trust = Trust::default();
        trust
            .platform_roots(false)
            .from_env(false)
            .accept_any_certificate();
        let params = Params {
            device_id: "d1".into(),
            module_id: None,
            host_name: "h".into(),
            host: "h".into(),
            port: 8883,
            transport: Transport::Mqtt,
            tls: trust.load().unwrap().client_config(&[]).unwrap(),
            keep_alive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
        };
        let refuse = |c| refused(c, &params);
        assert!(matches!(
            refuse(ConnectReturnCode::NotAuthorized),
            Error::Unauthorized {
                code: ErrorCode::IotHubUnauthorizedAccess,
                ..
            }
        ));
        assert!(matches!(
            refuse(ConnectReturnCode::BadUserNamePassword),
            Error::Unauthorized { .. }
        ));
        assert!(matches!(
            refuse(ConnectReturnCode::BadClientId),
            Error::Unauthorized { .. }
        ));
        assert_eq!(
            refuse(ConnectReturnCode::ServiceUnavailable),
            Error::DeviceDisabled {
                device_id: "d1".into()
            }
        );
        assert!(matches!(
            refuse(ConnectReturnCode::RefusedProtocolVersion),
            Error::Connection { .. }
        ));
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = connect_failed(&params, io);
        assert!(
            matches!(e, Error::Connection { ref message, .. } if message.contains("h:8883")),
            "{e:?}"
        );
        assert!(display_chain(&e).contains("refused"), "{e}");
    }
}
