//! Dialling the hub: TCP, the TLS handshake, and for MQTT over WebSockets the upgrade to
//! `wss://{host}:{port}/$iothub/websocket` with the `mqtt` subprotocol (iothub-protocol.md
//! 3.1). What comes back is a byte stream the connection reads and writes MQTT packets on.

use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use ws_stream_tungstenite::WsStream;

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
    let mut request = params
        .url()
        .into_client_request()
        .map_err(|e| connect_failed(params, e))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let (ws, response) = async_tungstenite::tokio::client_async(request, tls)
        .await
        .map_err(|e| connect_failed(params, e))?;
    let agreed = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(SUBPROTOCOL.as_bytes()));
    if !agreed {
        return Err(Error::Protocol {
            message: format!(
                "{} did not accept the '{SUBPROTOCOL}' WebSocket subprotocol",
                params.endpoint()
            ),
        });
    }
    Ok(Box::new(WsStream::new(ws)))
}
