//! Finding the Event Hubs-compatible endpoint from an IoT Hub connection string, as a real hub
//! requires (iothub-beyond-c2d.md 3.7): attach a receiver to `messages/events/...` on the hub
//! host and read the `amqp:link:redirect` the hub answers with.
//!
//! This is what the official Event Hubs samples do: TLS to the hub's AMQP port, SASL `PLAIN`
//! with the user `{policy}@sas.root.{hub}` and a hub-scoped SAS token as the password, a
//! receiver on `amqps://{host}/messages/events/ConsumerGroups/$Default/Partitions/0`. The
//! redirect's `info` holds `hostname`, `port` and `address`
//! (`amqps://{host}:{port}/{event hub name}/ConsumerGroups/...`); the consumer then connects
//! there with the same policy and key, signing the Event Hubs way.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::link::{LinkStateError, ReceiverAttachError, RecvError};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::{self, Fields};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Session};
use iothub_protocol::amqp::condition_name;
use iothub_protocol::client::TokenPolicy;
use iothub_protocol::connection_string::ServiceConnectionString;
use tokio::time::timeout;

use super::connection_string::EventHubCredential;
use super::link::Endpoint;
use super::link::event_hub_error;
use crate::Error;
use crate::amqp::socket::{self, AmqpTransport};
use crate::token::TokenSource;

/// The condition of a link redirect.
const REDIRECT: &str = "amqp:link:redirect";
/// How long closing the probe connection may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks the hub at `host:port` where its built-in endpoint is.
pub(crate) async fn resolve(
    cs: &ServiceConnectionString,
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    transport: AmqpTransport,
    tokens: TokenPolicy,
) -> Result<Endpoint, Error> {
    let token = TokenSource::new(cs, tokens).fresh()?;
    let stream = socket::dial(host, port, tls, transport, socket::IOTHUB_PATH).await?;
    let mut connection = Connection::builder()
        .container_id(format!("iothub-service-redirect-{}", uuid::Uuid::new_v4()))
        .hostname(host)
        .scheme("amqp")
        .sasl_profile(SaslProfile::Plain {
            username: format!("{}@sas.root.{}", cs.key_name, cs.hub_name()),
            password: token.value,
        })
        .open_with_stream(stream)
        .await
        .map_err(|e| {
            Error::connection(
                format!("cannot open an AMQP connection to {host}:{port}"),
                e,
            )
        })?;
    let result = async {
        let mut session = Session::begin(&mut connection)
            .await
            .map_err(|e| Error::connection("cannot begin an AMQP session", e))?;
        let attached = Receiver::builder()
            .name(format!("redirect-probe-{}", uuid::Uuid::new_v4().simple()))
            .source(format!(
                "amqps://{host}/messages/events/ConsumerGroups/$Default/Partitions/0"
            ))
            .target("redirect-probe")
            .attach(&mut session)
            .await;
        let error = match attached {
            Err(ReceiverAttachError::RemoteClosedWithError(e)) => e,
            Err(other) => {
                return Err(Error::connection(
                    "cannot attach a receiver on messages/events",
                    other,
                ));
            }
            Ok(mut receiver) => match receiver.recv::<Body<Value>>().await {
                Err(RecvError::LinkStateError(
                    LinkStateError::RemoteClosedWithError(e)
                    | LinkStateError::RemoteDetachedWithError(e),
                )) => e,
                Err(other) => {
                    return Err(Error::connection(
                        "the receiver on messages/events failed without a redirect",
                        other,
                    ));
                }
                Ok(_) => {
                    let _ = receiver.close().await;
                    return Err(Error::protocol(
                        "the hub delivered events on messages/events instead of redirecting to its Event Hubs-compatible endpoint",
                    ));
                }
            },
        };
        let _ = timeout(CLOSE_TIMEOUT, session.end()).await;
        let mut endpoint = endpoint_from_redirect(&error, cs)?;
        if transport == AmqpTransport::WebSocket {
            // The hub names its AMQP port; WebSockets go to the one the hub was reached on.
            endpoint.port = port;
        }
        Ok(endpoint)
    }
    .await;
    let _ = timeout(CLOSE_TIMEOUT, connection.close()).await;
    result
}

/// The endpoint a redirect error names, or the error the hub sent instead of a redirect.
fn endpoint_from_redirect(
    error: &definitions::Error,
    cs: &ServiceConnectionString,
) -> Result<Endpoint, Error> {
    if condition_name(&error.condition) != REDIRECT {
        return Err(event_hub_error(error));
    }
    let empty = Fields::new();
    let info: &Fields = error.info.as_deref().unwrap_or(&empty);
    let text = |key: &str| match info.get(&Symbol::from(key)) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Symbol(s)) => Some(s.0.clone()),
        _ => None,
    };
    let address = text("address")
        .ok_or_else(|| Error::protocol("the hub's redirect has no address in its info"))?;
    let (address_host, address_port, entity) = parse_address(&address).ok_or_else(|| {
        Error::protocol(format!(
            "the hub's redirect address '{address}' names no event hub"
        ))
    })?;
    let host = text("hostname")
        .or_else(|| text("network-host"))
        .unwrap_or(address_host);
    let port = match info.get(&Symbol::from("port")) {
        Some(Value::Int(p)) => u16::try_from(*p).ok(),
        Some(Value::Uint(p)) => u16::try_from(*p).ok(),
        Some(Value::Long(p)) => u16::try_from(*p).ok(),
        Some(Value::Ushort(p)) => Some(*p),
        _ => None,
    }
    .or(address_port)
    .unwrap_or(crate::DEFAULT_AMQP_PORT);
    Ok(Endpoint {
        host,
        port,
        tls: true,
        entity,
        credential: EventHubCredential::Key {
            name: cs.key_name.clone(),
            key: cs.key.clone(),
        },
    })
}

/// `amqps://host[:port]/{entity}/ConsumerGroups/...` (or `.../{entity}/$management`) into its
/// host, port and entity path.
fn parse_address(address: &str) -> Option<(String, Option<u16>, String)> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let (authority, path) = rest.split_once('/')?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()),
        None => (authority, None),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let end = segments
        .iter()
        .position(|s| {
            s.eq_ignore_ascii_case("ConsumerGroups") || s.eq_ignore_ascii_case("$management")
        })
        .unwrap_or(segments.len().min(1));
    if end == 0 || host.is_empty() {
        return None;
    }
    Some((host.to_owned(), port, segments[..end].join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::LinkError;

    fn cs() -> ServiceConnectionString {
        "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=c2VjcmV0"
            .parse()
            .unwrap()
    }

    #[test]
    fn addresses_of_both_sample_shapes() {
        assert_eq!(
            parse_address(
                "amqps://iothub-ns.servicebus.windows.net:5671/myhub-123/ConsumerGroups/$Default/Partitions/0"
            ),
            Some((
                "iothub-ns.servicebus.windows.net".into(),
                Some(5671),
                "myhub-123".into()
            ))
        );
        assert_eq!(
            parse_address("amqps://h:15671/hub/$management"),
            Some(("h".into(), Some(15671), "hub".into()))
        );
        assert_eq!(parse_address("amqps://h:1/"), None);
        assert_eq!(parse_address("nothing"), None);
    }

    #[test]
    fn a_redirect_becomes_an_endpoint_with_the_same_policy() {
        let mut info = Fields::new();
        info.insert(Symbol::from("hostname"), Value::String("localhost".into()));
        info.insert(Symbol::from("port"), Value::Int(15671));
        info.insert(
            Symbol::from("address"),
            Value::String(
                "amqps://localhost:15671/myhub/ConsumerGroups/$Default/Partitions/0".into(),
            ),
        );
        let error = definitions::Error::new(LinkError::Redirect, None, Some(info));
        let e = endpoint_from_redirect(&error, &cs()).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("localhost", 15671, true));
        assert_eq!(e.entity, "myhub");
        assert_eq!(e.audience(), "sb://localhost/myhub");
        assert!(
            matches!(e.credential, EventHubCredential::Key { ref name, .. } if name == "service")
        );

        let refused = definitions::Error::new(
            fe2o3_amqp::types::definitions::AmqpError::UnauthorizedAccess,
            Some("no".into()),
            None,
        );
        assert!(matches!(
            endpoint_from_redirect(&refused, &cs()),
            Err(Error::Unauthorized { .. })
        ));
    }
}
