//! Dialling an AMQP endpoint: TCP, the TLS handshake, and for AMQP over WebSockets the upgrade
//! to `wss://{host}:{port}{path}` with the `AMQPWSB10` subprotocol (the one the Azure SDKs and
//! the hub speak). What comes back is a byte stream fe2o3 opens its connection on.

use std::fmt;
use std::sync::Arc;

use iothub_protocol::websocket::{self, UpgradeError};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Error;

/// How the service client reaches the hub's AMQP endpoints (C2D, feedback, the Event
/// Hubs-compatible endpoint).
///
/// ```
/// use iothub_service::{AmqpTransport, ServiceClientBuilder};
///
/// let client = ServiceClientBuilder::new(
///     "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=AAAA",
/// )?
/// .amqp_transport(AmqpTransport::WebSocket)
/// .build()?;
/// # Ok::<(), iothub_service::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AmqpTransport {
    /// AMQP over TLS on port 5671 (the default, as in the official SDKs).
    #[default]
    Tls,
    /// AMQP over a TLS WebSocket on port 443, for networks that only let HTTPS through: path
    /// `/$iothub/websocket` on the hub, `/$servicebus/websocket` on the Event Hubs-compatible
    /// endpoint, subprotocol `AMQPWSB10`. Behaves like [`AmqpTransport::Tls`].
    WebSocket,
}

impl AmqpTransport {
    /// The port real hubs serve this transport on.
    pub fn default_port(self) -> u16 {
        match self {
            AmqpTransport::Tls => crate::DEFAULT_AMQP_PORT,
            AmqpTransport::WebSocket => crate::DEFAULT_HTTPS_PORT,
        }
    }
}

impl fmt::Display for AmqpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmqpTransport::Tls => "AMQP over TLS",
            AmqpTransport::WebSocket => "AMQP over WebSocket",
        })
    }
}

/// The hub's AMQP WebSocket path (the Node service SDK's `AmqpWs`).
pub(crate) const IOTHUB_PATH: &str = "/$iothub/websocket";
/// The Event Hubs endpoint's AMQP WebSocket path (the Event Hubs clients').
pub(crate) const SERVICEBUS_PATH: &str = "/$servicebus/websocket";
/// The WebSocket subprotocol of AMQP 1.0 (OASIS AMQP WebSocket Binding).
const SUBPROTOCOL: &str = "AMQPWSB10";

/// A byte stream to an AMQP endpoint: TLS, or WebSocket messages over TLS. (fe2o3 wants its
/// stream `Debug`.)
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + fmt::Debug> Stream for T {}

/// Opens a byte stream to `host:port` over `transport` (`path` is the WebSocket path). The
/// caller bounds how long it may take.
pub(crate) async fn dial(
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    transport: AmqpTransport,
    path: &str,
) -> Result<Box<dyn Stream>, Error> {
    let stream = super::tls_connect(host, port, tls).await?;
    if transport == AmqpTransport::Tls {
        return Ok(Box::new(stream));
    }
    let url = format!("wss://{host}:{port}{path}");
    match websocket::upgrade(stream, &url, SUBPROTOCOL).await {
        Ok(ws) => Ok(Box::new(ws)),
        Err(UpgradeError::Handshake { url, source }) => Err(Error::connection(
            format!("the WebSocket upgrade to {url} failed"),
            source,
        )),
        Err(e @ UpgradeError::Subprotocol { .. }) => Err(Error::protocol(e.to_string())),
    }
}
