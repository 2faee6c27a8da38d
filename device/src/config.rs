//! Client options: the transport, trust, token lifetime, completion mode and timings, set on a
//! [`DeviceClientBuilder`]. The options both clients have carry the service client's names and
//! meanings (see the crate documentation's table).

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use iothub_protocol::client::{self, TokenPolicy};
use iothub_protocol::connection_string::{DeviceConnectionString, DeviceCredential};
use iothub_protocol::tls::Trust;

use crate::client::DeviceClient;
use crate::error::Error;

/// How the client talks to the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Transport {
    /// MQTT 3.1.1 over TLS on port 8883 (the default, as in the official SDKs). C2D messages
    /// are pushed by the hub; a message is completed by its PUBACK, and cannot be rejected or
    /// abandoned.
    #[default]
    Mqtt,
    /// MQTT over a TLS WebSocket on port 443, path `/$iothub/websocket`, subprotocol `mqtt`:
    /// for networks that only let HTTPS through. Behaves like [`Transport::Mqtt`].
    MqttWebSocket,
    /// HTTPS on port 443. C2D messages are fetched by polling (see
    /// [`DeviceClientBuilder::poll_interval`]); they can be completed, rejected and abandoned.
    Https,
}

impl Transport {
    /// The port real hubs serve this transport on.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Mqtt => 8883,
            Transport::MqttWebSocket | Transport::Https => 443,
        }
    }

    pub(crate) fn is_mqtt(self) -> bool {
        matches!(self, Transport::Mqtt | Transport::MqttWebSocket)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Mqtt => "MQTT",
            Transport::MqttWebSocket => "MQTT over WebSocket",
            Transport::Https => "HTTPS",
        })
    }
}

/// When a received C2D message is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CompletionMode {
    /// Completed as soon as the application takes it from [`DeviceClient::recv`] or
    /// [`DeviceClient::messages`] (MQTT: PUBACK; HTTPS: `DELETE`). This is what the Python and
    /// Node SDKs do. [`ReceivedMessage::complete`](crate::ReceivedMessage::complete) is then a
    /// no-op, and reject or abandon are refused.
    #[default]
    Automatic,
    /// Completed only when the application calls
    /// [`ReceivedMessage::complete`](crate::ReceivedMessage::complete) (as the C# SDK does), so a
    /// message the application crashes on is delivered again.
    Manual,
}

/// Default HTTPS polling interval while the application waits for a message: one second, as
/// the Node SDK.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default MQTT keep-alive.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Everything [`DeviceClientBuilder::connect`] needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub conn: DeviceConnectionString,
    pub transport: Transport,
    pub port: Option<u16>,
    pub trust: Trust,
    pub tokens: TokenPolicy,
    pub completion: CompletionMode,
    pub poll_interval: Duration,
    pub keep_alive: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Options {
    /// The host to open sockets and TLS to (`GatewayHostName` if set, else `HostName`),
    /// without a port, and the port: [`DeviceClientBuilder::port`], else a `:port` written in
    /// that host name, else the transport's standard port.
    pub fn endpoint(&self) -> (String, u16) {
        let (host, port) = client::endpoint(
            self.conn.connect_host(),
            self.port,
            self.transport.default_port(),
        );
        (host.to_owned(), port)
    }
}

/// Configures and connects a [`DeviceClient`].
///
/// Only the connection string is required; every option has the default the official SDKs
/// use. The same code works against a real hub and against the emulator: only the connection
/// string and trusting the emulator's CA change.
///
/// ```no_run
/// use std::time::Duration;
/// use iothub_device::{CompletionMode, DeviceClient, Transport};
///
/// # async fn run() -> Result<(), iothub_device::Error> {
/// let client = DeviceClient::builder("HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=...")?
///     .transport(Transport::MqttWebSocket)
///     .completion_mode(CompletionMode::Manual)
///     .token_lifetime(Duration::from_secs(15 * 60))
///     .trust_ca_file("/etc/iothub-emulator/ca.pem")
///     .connect()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until connect() is awaited"]
pub struct DeviceClientBuilder {
    options: Options,
}

impl DeviceClientBuilder {
    /// A builder for this connection string, with every option at its default.
    ///
    /// Fails if the string cannot be parsed.
    pub fn new(connection_string: &str) -> Result<Self, Error> {
        let conn = DeviceConnectionString::from_str(connection_string)?;
        Ok(Self::from_parsed(conn))
    }

    /// A builder for an already parsed connection string.
    pub fn from_parsed(conn: DeviceConnectionString) -> Self {
        DeviceClientBuilder {
            options: Options {
                conn,
                transport: Transport::default(),
                port: None,
                trust: Trust::default(),
                tokens: TokenPolicy::default(),
                completion: CompletionMode::default(),
                poll_interval: DEFAULT_POLL_INTERVAL,
                keep_alive: DEFAULT_KEEP_ALIVE,
                connect_timeout: client::DEFAULT_CONNECT_TIMEOUT,
                request_timeout: client::DEFAULT_REQUEST_TIMEOUT,
                backoff_initial: Duration::from_millis(500),
                backoff_max: Duration::from_secs(30),
            },
        }
    }

    /// The transport (default [`Transport::Mqtt`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.options.transport = transport;
        self
    }

    /// Connects to this port instead of the transport's standard one (8883 for MQTT, 443 for
    /// MQTT over WebSocket and HTTPS).
    ///
    /// Real hubs only listen on the standard ports; this exists for an emulator or a test
    /// server on another port. A `:port` written in `HostName`/`GatewayHostName` is also
    /// honoured (as in the Node SDK); this option overrides it.
    pub fn port(mut self, port: u16) -> Self {
        self.options.port = Some(port);
        self
    }

    /// Also trusts the CA certificate(s) in this PEM text, on top of the platform's roots.
    /// This is how a program trusts the emulator's generated CA.
    pub fn trust_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.options.trust.add_ca_pem(pem.as_ref());
        self
    }

    /// Also trusts the CA certificate(s) in this PEM file, on top of the platform's roots.
    /// The file is read by [`connect`](Self::connect).
    pub fn trust_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.options.trust.add_ca_file(path.as_ref());
        self
    }

    /// Whether to trust the CA named by the environment variable [`CA_CERT_ENV`]
    /// (`IOTHUB_CA_CERT`, what the emulator's `env` command exports: a path to a PEM file, or
    /// the PEM text itself) when it is set (default `true`). A variable that is set but cannot
    /// be read is an error at [`connect`](Self::connect), so a typo does not go unnoticed.
    ///
    /// [`CA_CERT_ENV`]: crate::CA_CERT_ENV
    pub fn trust_ca_from_env(mut self, read: bool) -> Self {
        self.options.trust.from_env(read);
        self
    }

    /// Whether to trust the platform's root certificates (default `true`), read with
    /// `rustls-native-certs` (so `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured). Turn it off
    /// to trust only the CAs given explicitly.
    pub fn platform_roots(mut self, trust: bool) -> Self {
        self.options.trust.platform_roots(trust);
        self
    }

    /// Lifetime of the SAS tokens the client signs with the device key (default one hour, at
    /// least [`MIN_TOKEN_LIFETIME`](crate::MIN_TOKEN_LIFETIME)). Ignored when the connection
    /// string carries a ready-made `SharedAccessSignature`.
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.options.tokens.lifetime = lifetime;
        self
    }

    /// How long before a token expires the client replaces it (default two minutes, or half
    /// the lifetime if that is shorter). Over MQTT the token is only read at CONNECT, so
    /// renewing means reconnecting, as the official SDKs do; over HTTPS the next request
    /// carries the new token. Must be shorter than [`token_lifetime`](Self::token_lifetime).
    pub fn token_renewal_margin(mut self, margin: Duration) -> Self {
        self.options.tokens.renewal_margin = Some(margin);
        self
    }

    /// When received messages are completed (default [`CompletionMode::Automatic`]).
    pub fn completion_mode(mut self, mode: CompletionMode) -> Self {
        self.options.completion = mode;
        self
    }

    /// How long to wait between HTTPS polls that found no message (default one second, as the
    /// Node SDK). Polling only happens while the application waits in
    /// [`DeviceClient::recv`] or on [`DeviceClient::messages`].
    ///
    /// Real hubs count every poll against a per-unit quota of C2D receives (1,000 per minute
    /// per S1 unit, shared by all devices) and recommend polling no more often than every 25
    /// minutes in production; use MQTT for prompt delivery.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.options.poll_interval = interval;
        self
    }

    /// MQTT keep-alive (default 60 s, whole seconds, at least 1 s). The hub closes a
    /// connection after 1.5 times this without traffic.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.options.keep_alive = keep_alive;
        self
    }

    /// Limit for opening a connection: TCP, TLS and (MQTT) CONNECT/CONNACK (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Limit for one HTTPS request, including reading the answer (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// Reconnection backoff: the first retry waits up to `initial`, each further one up to
    /// twice as long, never more than `max` (defaults 500 ms and 30 s). Each wait is drawn at
    /// random from the upper half of its range, so many devices dropped together do not come
    /// back together.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.options.backoff_initial = initial;
        self.options.backoff_max = max;
        self
    }

    /// Options that weaken security, for tests against servers you control. Never use them
    /// against a real hub.
    pub fn dangerous(self) -> DangerousDeviceClientBuilder {
        DangerousDeviceClientBuilder { inner: self }
    }

    /// Checks the options, connects, and returns the client.
    ///
    /// Over MQTT this returns once the hub accepted the CONNECT, so a wrong key fails here
    /// with [`Error::Unauthorized`]; it does not retry a first connection that fails. Over
    /// HTTPS it opens and verifies the TLS connection; the credentials are first checked by
    /// the first request.
    pub async fn connect(self) -> Result<DeviceClient, Error> {
        let options = self.validate()?;
        crate::client::start(options).await
    }

    fn validate(self) -> Result<Options, Error> {
        let o = self.options;
        if o.conn.module_id.is_some() && o.transport == Transport::Https {
            return Err(Error::Unsupported {
                what: "a module identity (ModuleId) over Transport::Https (the hub's HTTPS device API serves devices only); use Transport::Mqtt or Transport::MqttWebSocket",
            });
        }
        if matches!(o.conn.credential, DeviceCredential::X509) {
            return Err(Error::Unsupported {
                what: "X.509 authentication (x509=true)",
            });
        }
        let secs = |d: Duration| d.as_secs_f64();
        o.tokens.validate().map_err(Error::invalid_option)?;
        if o.keep_alive < Duration::from_secs(1) || o.keep_alive > Duration::from_secs(1177) {
            return Err(Error::invalid_option(format!(
                "keep_alive is {:.3} s; it must be between 1 s and 1177 s (the hub's largest useful value)",
                secs(o.keep_alive)
            )));
        }
        for (name, d) in [
            ("connect_timeout", o.connect_timeout),
            ("request_timeout", o.request_timeout),
            ("poll_interval", o.poll_interval),
            ("reconnect_backoff initial", o.backoff_initial),
        ] {
            if d.is_zero() {
                return Err(Error::invalid_option(format!("{name} must not be zero")));
            }
        }
        if o.backoff_max < o.backoff_initial {
            return Err(Error::invalid_option(
                "reconnect_backoff max must not be smaller than its initial delay",
            ));
        }
        Ok(o)
    }
}

/// Options that weaken security; see [`DeviceClientBuilder::dangerous`].
#[derive(Debug, Clone)]
#[must_use = "call a method, then continue with the builder it returns"]
pub struct DangerousDeviceClientBuilder {
    inner: DeviceClientBuilder,
}

impl DangerousDeviceClientBuilder {
    /// Accepts any server certificate, without checking who issued it or whom it names.
    /// Anyone on the network path can then read and change the traffic, including the SAS
    /// token. Prefer [`DeviceClientBuilder::trust_ca_pem`] with the emulator's CA.
    pub fn accept_any_server_certificate(mut self) -> DeviceClientBuilder {
        self.inner.options.trust.accept_any_certificate();
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "HostName=h.example.net;DeviceId=d1;SharedAccessKey=a2V5";

    fn opts(b: DeviceClientBuilder) -> Result<Options, Error> {
        b.validate()
    }

    #[test]
    fn endpoint_uses_the_gateway_the_written_port_and_the_override() {
        let o = opts(DeviceClientBuilder::new(CS).unwrap()).unwrap();
        assert_eq!(o.endpoint(), ("h.example.net".to_owned(), 8883));
        let o = opts(
            DeviceClientBuilder::new(CS)
                .unwrap()
                .transport(Transport::Https),
        )
        .unwrap();
        assert_eq!(o.endpoint(), ("h.example.net".to_owned(), 443));

        let gw = format!("{CS};GatewayHostName=edge.local:9999");
        let o = opts(DeviceClientBuilder::new(&gw).unwrap()).unwrap();
        assert_eq!(o.endpoint(), ("edge.local".to_owned(), 9999));
        let o = opts(DeviceClientBuilder::new(&gw).unwrap().port(1234)).unwrap();
        assert_eq!(o.endpoint(), ("edge.local".to_owned(), 1234));
    }

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        let b = || DeviceClientBuilder::new(CS).unwrap();
        let err = opts(b().token_lifetime(Duration::from_millis(10))).unwrap_err();
        assert!(
            matches!(err, Error::InvalidOption { ref message } if message.contains("token_lifetime"))
        );
        let err = opts(
            b().token_lifetime(Duration::from_secs(10))
                .token_renewal_margin(Duration::from_secs(10)),
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::InvalidOption { ref message } if message.contains("token_renewal_margin"))
        );
        assert!(opts(b().keep_alive(Duration::ZERO)).is_err());
        // A short lifetime alone is fine: the default margin shrinks to half of it.
        assert!(opts(b().token_lifetime(Duration::from_secs(3))).is_ok());
        assert!(opts(b().poll_interval(Duration::ZERO)).is_err());
        assert!(
            opts(b().reconnect_backoff(Duration::from_secs(2), Duration::from_secs(1))).is_err()
        );
    }

    #[test]
    fn modules_need_mqtt_and_x509_is_unsupported() {
        let m = || DeviceClientBuilder::new(&format!("{CS};ModuleId=m")).unwrap();
        assert!(opts(m()).is_ok());
        assert!(opts(m().transport(Transport::MqttWebSocket)).is_ok());
        let err = opts(m().transport(Transport::Https)).unwrap_err();
        assert!(
            matches!(err, Error::Unsupported { what } if what.contains("Transport::Mqtt")),
            "{err}"
        );
        let x = DeviceClientBuilder::new("HostName=h.example.net;DeviceId=d1;x509=true").unwrap();
        assert!(matches!(opts(x), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn a_bad_connection_string_is_a_typed_error() {
        assert!(matches!(
            DeviceClientBuilder::new("HostName=h;SharedAccessKey=a2V5"),
            Err(Error::InvalidConnectionString(_))
        ));
    }
}
