//! Dialling the hub: TCP, the TLS handshake, and for MQTT over WebSockets the upgrade to
//! `wss://{host}:{port}/$iothub/websocket` with the `mqtt` subprotocol (iothub-protocol.md
//! 3.1). What comes back is a byte stream the connection reads and writes MQTT packets on.

use iothub_protocol::websocket::{self, UpgradeError};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::errors::connect_failed;
use super::params::Params;
use crate::config::Transport;
use crate::error::Error;

/// The WebSocket subprotocol MQTT over WebSockets uses (MQTT 3.1.1, 6.0).
const SUBPROTOCOL: &str = "mqtt";

/// A byte stream to the hub: TLS, or WebSocket messages over TLS.
pub(super) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Opens the byte stream `params` describe. The caller bounds how long it may take.
pub(super) async fn dial(params: &Params) -> Result<Box<dyn Stream>, Error> {
    let tcp = TcpStream::connect((params.host.as_str(), params.port))
        .await
        .map_err(|e| connect_failed(params, e))?;
    // Packets are batched into one write per burst already; waiting for more (Nagle) would
    // only delay the last packet of each burst.
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(params.host.clone()).map_err(|e| Error::ArgumentInvalid {
        message: format!("'{}' is not a host name TLS can verify: {e}", params.host),
    })?;
    let tls = TlsConnector::from(params.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| connect_failed(params, e))?;
    if params.transport != Transport::MqttWebSocket {
        return Ok(Box::new(tls));
    }
    match websocket::upgrade(tls, &params.url(), SUBPROTOCOL).await {
        Ok(ws) => Ok(Box::new(ws)),
        Err(UpgradeError::Handshake { source, .. }) => Err(connect_failed(params, source)),
        Err(e @ UpgradeError::Subprotocol { .. }) => Err(Error::Protocol {
            message: e.to_string(),
        }),
    }
}
