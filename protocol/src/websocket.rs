//! The client side of a WebSocket upgrade over a stream that is already open (TLS to the hub),
//! shared by both clients: the device client's MQTT over WebSockets (subprotocol `mqtt`) and
//! the service client's AMQP over WebSockets (`AMQPWSB10`). What comes back reads and writes
//! the protocol's bytes, carried in binary WebSocket messages.

use async_tungstenite::tokio::TokioAdapter;
use async_tungstenite::tungstenite;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::http::HeaderValue;
use tokio::io::{AsyncRead, AsyncWrite};
use ws_stream_tungstenite::WsStream;

/// A byte stream over WebSocket messages on `S`.
pub type ByteStream<S> = WsStream<TokioAdapter<S>>;

/// Why a WebSocket upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The request could not be made, or the server did not switch protocols (an HTTP error
    /// status, a closed connection, a malformed answer).
    #[error("the WebSocket upgrade to {url} failed")]
    Handshake {
        /// The URL asked for.
        url: String,
        /// What tungstenite reported.
        #[source]
        source: tungstenite::Error,
    },
    /// The server upgraded without agreeing to the subprotocol.
    #[error("{url} did not accept the '{subprotocol}' WebSocket subprotocol")]
    Subprotocol {
        /// The URL asked for.
        url: String,
        /// The subprotocol asked for.
        subprotocol: &'static str,
    },
}

/// Upgrades `stream` with a `GET` of `url` (`wss://{host}:{port}{path}`) asking for
/// `subprotocol`, and checks that the server agreed to it. The caller bounds how long it may
/// take.
pub async fn upgrade<S>(
    stream: S,
    url: &str,
    subprotocol: &'static str,
) -> Result<ByteStream<S>, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let handshake = |source| UpgradeError::Handshake {
        url: url.to_owned(),
        source,
    };
    let mut request = url.into_client_request().map_err(handshake)?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(subprotocol),
    );
    let (ws, _) = async_tungstenite::tokio::client_async(request, stream)
        .await
        .map_err(|e| match e {
            // tungstenite checks the answer against the subprotocol asked for (none, or another
            // one, fails the handshake), so an upgrade that succeeds agreed to it.
            tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
                UpgradeError::Subprotocol {
                    url: url.to_owned(),
                    subprotocol,
                }
            }
            other => handshake(other),
        })?;
    Ok(WsStream::new(ws))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on the other end of an in-memory pipe that answers the upgrade, naming
    /// `subprotocol` when given, then echoes one binary message.
    // The answer callback's error type is tungstenite's (an HTTP response), not ours.
    #[allow(clippy::result_large_err)]
    async fn server(io: tokio::io::DuplexStream, subprotocol: Option<&'static str>) {
        let answer = move |_: &Request, mut response: Response| {
            if let Some(p) = subprotocol {
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
            }
            Ok(response)
        };
        let Ok(ws) = async_tungstenite::tokio::accept_hdr_async(io, answer).await else {
            return;
        };
        let mut bytes = WsStream::new(ws);
        let mut buf = [0u8; 5];
        if bytes.read_exact(&mut buf).await.is_ok() {
            let _ = bytes.write_all(&buf).await;
            let _ = bytes.flush().await;
        }
    }

    #[tokio::test]
    async fn an_agreed_subprotocol_gives_a_byte_stream() {
        let (client, far) = tokio::io::duplex(4096);
        tokio::spawn(server(far, Some("AMQPWSB10")));
        let mut ws = upgrade(
            client,
            "wss://hub.example/$servicebus/websocket",
            "AMQPWSB10",
        )
        .await
        .unwrap();
        ws.write_all(b"AMQP\0").await.unwrap();
        ws.flush().await.unwrap();
        let mut back = [0u8; 5];
        ws.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"AMQP\0");
    }

    #[tokio::test]
    async fn a_server_without_the_subprotocol_is_refused() {
        let (client, far) = tokio::io::duplex(4096);
        tokio::spawn(server(far, None));
        let e = upgrade(client, "wss://hub.example/$iothub/websocket", "mqtt")
            .await
            .unwrap_err();
        assert!(
            matches!(
                &e,
                UpgradeError::Subprotocol {
                    subprotocol: "mqtt",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "wss://hub.example/$iothub/websocket did not accept the 'mqtt' WebSocket subprotocol"
        );
    }

    #[tokio::test]
    async fn a_server_naming_another_subprotocol_is_refused() {
        let (client, far) = tokio::io::duplex(4096);
        tokio::spawn(server(far, Some("mqtt")));
        let e = upgrade(
            client,
            "wss://hub.example/$servicebus/websocket",
            "AMQPWSB10",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &e,
                UpgradeError::Subprotocol {
                    subprotocol: "AMQPWSB10",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_http_fails_the_handshake() {
        let (client, mut far) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = far.read(&mut buf).await;
            let _ = far.write_all(b"\x10\x02\x00\x00not http").await;
        });
        let e = upgrade(client, "wss://hub.example/$iothub/websocket", "mqtt")
            .await
            .unwrap_err();
        assert!(matches!(&e, UpgradeError::Handshake { .. }), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
