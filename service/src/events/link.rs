//! The AMQP side of the events consumer: one connection to the Event Hubs-compatible endpoint,
//! its CBS token and renewal, the `$management` request/reply pair, and partition receivers.
//!
//! It speaks what `azure-eventhub` (pyamqp) speaks, so a real hub's built-in endpoint accepts it
//! as it accepts that client: SASL `ANONYMOUS` (over TLS, or over plain TCP for a
//! `UseDevelopmentEmulator=true` string), then a CBS put-token for the audience
//! `sb://{host}/{entity}` with a token signed the Event Hubs way (the key's text is the HMAC key),
//! renewed on the same connection before it expires (iothub-beyond-c2d.md 3.3).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message as AmqpMessage, MessageId, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use iothub_protocol::EventPosition;
use iothub_protocol::client::TokenPolicy;
use iothub_protocol::outbox::BatchedStream;
use iothub_protocol::sas::build_token_with_key_text;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::connection_string::EventHubCredential;
use crate::Error;
use crate::amqp::cbs::{Cbs, simple_int};
use crate::amqp::errors::{from_amqp_error, receiver_attach_error, sender_attach_error};
use crate::amqp::socket::{self, AmqpTransport};
use fe2o3_amqp::link::ReceiverAttachError;
use fe2o3_amqp::types::definitions;

/// The filter-set key of the start position, and the descriptor `azure-eventhub` uses.
pub(crate) const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
/// The link property that carries an owner level.
const EPOCH: &str = "com.microsoft:epoch";
/// How long a graceful close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Event Hubs-compatible endpoint is and how to sign for it.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// Host to connect to and to check the certificate against.
    pub host: String,
    /// Port (5671 with TLS, 5672 for the development form).
    pub port: u16,
    /// TLS (false only for `UseDevelopmentEmulator=true`).
    pub tls: bool,
    /// The event hub name.
    pub entity: String,
    /// The credential.
    pub credential: EventHubCredential,
}

impl Endpoint {
    /// The CBS audience and token resource, as `azure-eventhub` writes it.
    pub fn audience(&self) -> String {
        format!("sb://{}/{}", self.host, self.entity)
    }

    /// A token for [`audience`](Self::audience) and when to replace it (`None`: never, for a
    /// given `SharedAccessSignature`).
    pub fn token(&self, policy: TokenPolicy) -> Result<(String, Option<Duration>), Error> {
        match &self.credential {
            EventHubCredential::Signature(token) => Ok((token.clone(), None)),
            EventHubCredential::Key { name, key } => {
                let schedule = policy.schedule(SystemTime::now());
                let token =
                    build_token_with_key_text(&self.audience(), key, Some(name), schedule.expiry)
                        .map_err(|e| {
                        Error::invalid_option(format!(
                            "SharedAccessKey cannot sign a SAS token: {e}"
                        ))
                    })?;
                Ok((token, Some(schedule.renew_after)))
            }
        }
    }
}

/// What opening connections and links needs besides the endpoint.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    /// TLS client configuration (ring, trusted roots); `None` for a plain development
    /// endpoint, where no roots are loaded.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS or a WebSocket over TLS (for a TLS endpoint).
    pub transport: AmqpTransport,
    /// Token lifetime and renewal.
    pub tokens: TokenPolicy,
    /// Limit for opening a connection (through the first put-token) and attaching a link.
    pub connect_timeout: Duration,
    /// Limit for one management request and one token renewal.
    pub request_timeout: Duration,
    /// Link credit kept open per partition.
    pub prefetch: u32,
    /// `com.microsoft:epoch`, when set.
    pub owner_level: Option<i64>,
}

/// One open connection: session, token renewal and (once used) the management links.
pub(crate) struct Conn {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    management: Option<Management>,
    renewal: tokio::task::JoinHandle<()>,
    token: Arc<std::sync::Mutex<String>>,
    pub id: u64,
}

impl Conn {
    /// True once the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.connection.is_closed()
    }

    /// Closes the links, the session and the connection (best effort).
    pub async fn close(mut self) {
        self.renewal.abort();
        let _ = timeout(CLOSE_TIMEOUT, async {
            if let Some(m) = self.management.take() {
                let _ = m.sender.close().await;
                let _ = m.receiver.close().await;
            }
            let _ = self.session.end().await;
            let _ = self.connection.close().await;
        })
        .await;
    }

    /// Attaches a receiver on one partition of a consumer group, from `position`.
    pub async fn attach_partition(
        &mut self,
        endpoint: &Endpoint,
        settings: &LinkSettings,
        consumer_group: &str,
        partition_id: &str,
        position: &EventPosition,
    ) -> Result<Receiver, Error> {
        let address = format!(
            "{}/ConsumerGroups/{consumer_group}/Partitions/{partition_id}",
            endpoint.entity
        );
        let mut filter = OrderedMap::new();
        filter.insert(
            Symbol::from(SELECTOR_FILTER),
            Value::Described(Box::new(Described {
                descriptor: Descriptor::Name(Symbol::from(SELECTOR_FILTER)),
                value: Value::String(position.to_selector()),
            })),
        );
        let source = Source::builder().address(address).filter(filter).build();
        let mut builder = Receiver::builder()
            .name(format!(
                "events-{partition_id}-{}",
                uuid::Uuid::new_v4().simple()
            ))
            .source(source)
            .target(format!("events-receiver-{}", uuid::Uuid::new_v4().simple()))
            .credit_mode(CreditMode::Auto(settings.prefetch.max(1)))
            .auto_accept(true);
        if let Some(level) = settings.owner_level {
            let mut props = Fields::new();
            props.insert(Symbol::from(EPOCH), Value::Long(level));
            builder = builder.properties(props);
        }
        let what = format!("the receiver link on partition {partition_id}");
        let limit = settings.connect_timeout;
        match timeout(limit, builder.attach(&mut self.session)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(ReceiverAttachError::RemoteClosedWithError(e))) => Err(event_hub_error(&e)),
            Ok(Err(e)) => Err(receiver_attach_error(e, &what)),
            Err(_) => Err(Error::Timeout {
                operation: "attaching a partition receiver link",
                after: limit,
            }),
        }
    }

    /// Sends a `READ` request to `$management` and returns the reply's body map.
    pub async fn management(
        &mut self,
        endpoint: &Endpoint,
        settings: &LinkSettings,
        kind: &str,
        partition: Option<&str>,
    ) -> Result<OrderedMap<Value, Value>, Error> {
        if self.management.is_none() {
            let limit = settings.connect_timeout;
            let m = timeout(
                limit,
                Management::attach(&mut self.session, &endpoint.entity),
            )
            .await
            .map_err(|_| Error::Timeout {
                operation: "attaching the $management links",
                after: limit,
            })??;
            self.management = Some(m);
        }
        let Some(m) = self.management.as_mut() else {
            return Err(Error::protocol("no $management links after attaching them"));
        };
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let limit = settings.request_timeout;
        let result = timeout(limit, m.request(&endpoint.entity, kind, partition, &token))
            .await
            .map_err(|_| Error::Timeout {
                operation: "a $management request",
                after: limit,
            })
            .and_then(|r| r);
        if matches!(
            result,
            Err(Error::Connection { .. } | Error::Timeout { .. })
        ) {
            // The links may be half-way through a request: start afresh next time.
            if let Some(m) = self.management.take() {
                let _ = timeout(CLOSE_TIMEOUT, m.sender.close()).await;
            }
        }
        result
    }
}

/// Opens a connection to the endpoint: TCP, TLS unless the development form (and a WebSocket
/// over it when asked), SASL
/// `ANONYMOUS`, a session, CBS and the first put-token; starts the token renewal.
pub(crate) async fn open(
    endpoint: &Endpoint,
    settings: &LinkSettings,
    id: u64,
) -> Result<Conn, Error> {
    let host = endpoint.host.as_str();
    let port = endpoint.port;
    let builder = Connection::builder()
        .container_id(format!("iothub-service-events-{}", uuid::Uuid::new_v4()))
        .hostname(host)
        .scheme("amqp")
        .sasl_profile(SaslProfile::Anonymous);
    let opened = if endpoint.tls {
        let Some(tls) = settings.tls.clone() else {
            return Err(Error::protocol("no TLS configuration for a TLS endpoint"));
        };
        let stream =
            socket::dial(host, port, tls, settings.transport, socket::SERVICEBUS_PATH).await?;
        builder
            .open_with_stream(BatchedStream::new(stream, crate::amqp::WRITE_GRACE))
            .await
    } else {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| Error::connection(format!("cannot connect to {host}:{port}"), e))?;
        let _ = tcp.set_nodelay(true);
        builder
            .open_with_stream(BatchedStream::new(tcp, crate::amqp::WRITE_GRACE))
            .await
    };
    let mut connection = opened.map_err(|e| {
        Error::connection(
            format!("cannot open an AMQP connection to {host}:{port}"),
            e,
        )
    })?;
    let mut session = Session::begin(&mut connection)
        .await
        .map_err(|e| Error::connection("cannot begin an AMQP session", e))?;
    let mut cbs = Cbs::attach(&mut session, &format!("events-{id}")).await?;
    let audience = endpoint.audience();
    let (token, renew_after) = endpoint.token(settings.tokens)?;
    cbs.put_token(&audience, &token).await?;
    let current = Arc::new(std::sync::Mutex::new(token));
    let renewal = tokio::spawn(renew(
        cbs,
        endpoint.clone(),
        settings.clone(),
        renew_after,
        current.clone(),
        id,
    ));
    Ok(Conn {
        connection,
        session,
        management: None,
        renewal,
        token: current,
        id,
    })
}

/// Puts a fresh token on the connection before the current one expires, until the connection
/// ends or a renewal fails (then the links are detached by the hub in time and the streams
/// reconnect with a new token).
async fn renew(
    mut cbs: Cbs,
    endpoint: Endpoint,
    settings: LinkSettings,
    mut renew_after: Option<Duration>,
    current: Arc<std::sync::Mutex<String>>,
    id: u64,
) {
    while let Some(after) = renew_after {
        tokio::time::sleep(after).await;
        let result = async {
            let (token, next) = endpoint.token(settings.tokens)?;
            timeout(
                settings.request_timeout,
                cbs.put_token(&endpoint.audience(), &token),
            )
            .await
            .map_err(|_| Error::Timeout {
                operation: "renewing the SAS token",
                after: settings.request_timeout,
            })??;
            Ok::<_, Error>((token, next))
        }
        .await;
        match result {
            Ok((token, next)) => {
                tracing::debug!(connection = id, "event hub SAS token renewed");
                *current.lock().unwrap_or_else(|p| p.into_inner()) = token;
                renew_after = next;
            }
            Err(e) => {
                tracing::warn!(
                    connection = id,
                    "renewing the event hub SAS token failed: {e}"
                );
                break;
            }
        }
    }
    cbs.close().await;
}

/// The request and reply links of `{entity}/$management`.
struct Management {
    sender: Sender,
    receiver: Receiver,
    reply_to: String,
}

impl Management {
    async fn attach(session: &mut SessionHandle<()>, entity: &str) -> Result<Self, Error> {
        let node = format!("{entity}/$management");
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let reply_to = format!("management-replies-{suffix}");
        let sender = Sender::builder()
            .name(format!("management-sender-{suffix}"))
            .target(node.clone())
            .attach(session)
            .await
            .map_err(|e| sender_attach_error(e, "the $management sender link"))?;
        let receiver = Receiver::builder()
            .name(format!("management-receiver-{suffix}"))
            .source(node)
            .target(reply_to.clone())
            .attach(session)
            .await
            .map_err(|e| receiver_attach_error(e, "the $management receiver link"))?;
        Ok(Management {
            sender,
            receiver,
            reply_to,
        })
    }

    async fn request(
        &mut self,
        entity: &str,
        kind: &str,
        partition: Option<&str>,
        token: &str,
    ) -> Result<OrderedMap<Value, Value>, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut app = ApplicationProperties::builder()
            .insert("operation", "READ")
            .insert("type", kind)
            .insert("name", entity)
            .insert("security_token", token);
        if let Some(p) = partition {
            app = app.insert("partition", p);
        }
        let request = AmqpMessage::builder()
            .properties(Properties {
                message_id: Some(MessageId::String(id.clone())),
                reply_to: Some(self.reply_to.clone()),
                ..Properties::default()
            })
            .application_properties(app.build())
            .value(Value::List(Vec::new()))
            .build();
        self.sender
            .send(request)
            .await
            .map_err(|e| Error::connection("a $management request could not be sent", e))?;
        loop {
            let reply = self
                .receiver
                .recv::<Body<Value>>()
                .await
                .map_err(|e| Error::connection("no reply to a $management request", e))?;
            let _ = self.receiver.accept(&reply).await;
            let message = reply.into_message();
            let correlates = message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.as_ref())
                .is_none_or(|c| *c == MessageId::String(id.clone()));
            if !correlates {
                tracing::debug!("ignoring a $management reply for another request");
                continue;
            }
            return reply_body(message);
        }
    }
}

/// Checks a management reply's status and returns its body map.
fn reply_body(message: AmqpMessage<Body<Value>>) -> Result<OrderedMap<Value, Value>, Error> {
    let props = message.application_properties.as_ref();
    let get = |names: &[&str]| -> Option<SimpleValue> {
        let p = props?;
        names.iter().find_map(|n| p.0.get(*n).cloned())
    };
    let status = get(&["status-code", "statusCode"])
        .as_ref()
        .and_then(simple_int);
    let description = match get(&["status-description", "statusDescription"]) {
        Some(SimpleValue::String(s)) => s,
        _ => String::new(),
    };
    match status {
        Some(200..=299) => {}
        Some(401 | 403) => {
            return Err(Error::Unauthorized {
                message: description,
                code: iothub_protocol::ErrorCode::IotHubUnauthorizedAccess,
            });
        }
        Some(400) => {
            return Err(Error::ArgumentInvalid {
                message: description,
            });
        }
        Some(code) => {
            return Err(Error::Hub {
                status: u16::try_from(code).ok(),
                code: None,
                condition: Some("$management".to_owned()),
                message: description,
            });
        }
        None => {
            return Err(Error::protocol("a $management reply has no status-code"));
        }
    }
    match message.body {
        Body::Value(v) => match v.0 {
            Value::Map(m) => Ok(m),
            other => Err(Error::protocol(format!(
                "a $management reply's body is {other:?}, not a map"
            ))),
        },
        _ => Err(Error::protocol(
            "a $management reply's body is not an amqp-value",
        )),
    }
}

/// The error for what the endpoint sent: as for the hub's other links, except that
/// `amqp:not-found` names a consumer group or event hub here, not a device, and
/// `amqp:resource-limit-exceeded` the readers of a partition, not a device queue.
pub(crate) fn event_hub_error(e: &definitions::Error) -> Error {
    match from_amqp_error(e) {
        Error::DeviceNotFound { message } => Error::Hub {
            status: None,
            code: None,
            condition: Some("amqp:not-found".to_owned()),
            message,
        },
        // Too many readers on one partition of a consumer group (five, as on Event Hubs).
        Error::DeviceMaximumQueueDepthExceeded { message } => Error::Hub {
            status: None,
            code: None,
            condition: Some("amqp:resource-limit-exceeded".to_owned()),
            message,
        },
        other => other,
    }
}

/// The error for a remote detach or other failure of a partition receiver.
pub(crate) fn recv_error(e: fe2o3_amqp::link::RecvError, partition_id: &str) -> Error {
    use fe2o3_amqp::link::{LinkStateError, RecvError};
    match e {
        RecvError::LinkStateError(
            LinkStateError::RemoteDetachedWithError(err)
            | LinkStateError::RemoteClosedWithError(err),
        ) => event_hub_error(&err),
        other => Error::connection(
            format!("the receiver link on partition {partition_id} failed"),
            other,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iothub_protocol::sas::SasToken;

    fn endpoint() -> Endpoint {
        Endpoint {
            host: "localhost".into(),
            port: 5672,
            tls: false,
            entity: "myhub".into(),
            credential: EventHubCredential::Key {
                name: "service".into(),
                key: "c2VjcmV0".into(),
            },
        }
    }

    #[test]
    fn tokens_are_signed_for_the_entity_the_event_hubs_way() {
        let (token, renew) = endpoint()
            .token(TokenPolicy::new(Duration::from_secs(3600)))
            .unwrap();
        let parsed = SasToken::parse(&token).unwrap();
        assert_eq!(parsed.resource(), "sb://localhost/myhub");
        assert_eq!(parsed.key_name(), Some("service"));
        assert_eq!(parsed.verify_signature_with_key_text("c2VjcmV0"), Ok(()));
        assert!(renew.is_some_and(|r| r < Duration::from_secs(3600)));
        let given = Endpoint {
            credential: EventHubCredential::Signature("SharedAccessSignature x".into()),
            ..endpoint()
        };
        assert_eq!(
            given.token(TokenPolicy::default()).unwrap(),
            ("SharedAccessSignature x".to_owned(), None)
        );
    }

    fn reply(status: i32, body: Value) -> AmqpMessage<Body<Value>> {
        AmqpMessage::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert("status-code", SimpleValue::Int(status))
                    .insert("status-description", "why")
                    .build(),
            )
            .body(Body::Value(fe2o3_amqp::types::messaging::AmqpValue(body)))
            .build()
    }

    #[test]
    fn management_replies_are_checked() {
        let mut map = OrderedMap::new();
        map.insert(Value::String("name".into()), Value::String("h".into()));
        assert!(reply_body(reply(200, Value::Map(map))).is_ok());
        assert!(matches!(
            reply_body(reply(200, Value::Null)),
            Err(Error::Protocol { .. })
        ));
        assert!(matches!(
            reply_body(reply(401, Value::Null)),
            Err(Error::Unauthorized { .. })
        ));
        assert!(matches!(
            reply_body(reply(400, Value::Null)),
            Err(Error::ArgumentInvalid { .. })
        ));
        assert!(matches!(
            reply_body(reply(404, Value::Null)),
            Err(Error::Hub {
                status: Some(404),
                ..
            })
        ));
    }
}
