//! Client options: trust, ports, token lifetime and timings, set on a
//! [`ServiceClientBuilder`]. The names and meanings are the device client's (see the crate
//! documentation's table).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use iothub_protocol::client::{self, TokenPolicy};
use iothub_protocol::connection_string::ServiceConnectionString;
use iothub_protocol::tls::Trust;

use crate::amqp::socket::AmqpTransport;
use crate::amqp::{AmqpHandle, AmqpSettings};
use crate::client::ServiceClient;
use crate::error::Error;
use crate::https::Https;
use crate::token::TokenSource;

/// The AMQP port of a real hub (AMQP over TLS).
pub const DEFAULT_AMQP_PORT: u16 = 5671;
/// The HTTPS port of a real hub.
pub const DEFAULT_HTTPS_PORT: u16 = 443;

/// Configures a [`ServiceClient`]; from [`ServiceClient::builder`].
///
/// Only the connection string is required. Nothing is connected by [`build`](Self::build): the
/// AMQP connection opens on the first send or feedback call, HTTPS connections on the first
/// registry call (see the crate documentation for why the device client differs).
///
/// ```no_run
/// use std::time::Duration;
/// use iothub_service::ServiceClient;
///
/// # fn run() -> Result<(), iothub_service::Error> {
/// let client = ServiceClient::builder("HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=...")?
///     .trust_ca_file("/etc/iothub-emulator/ca.pem")
///     .amqp_port(15671)
///     .token_lifetime(Duration::from_secs(15 * 60))
///     .request_timeout(Duration::from_secs(20))
///     .build()?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ServiceClientBuilder {
    connection_string: ServiceConnectionString,
    trust: Trust,
    amqp_transport: AmqpTransport,
    amqp_port: Option<u16>,
    https_port: Option<u16>,
    tokens: TokenPolicy,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl ServiceClientBuilder {
    /// A builder for this connection string
    /// (`HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`), with every option at its
    /// default. Fails if the string cannot be parsed.
    pub fn new(connection_string: &str) -> Result<Self, Error> {
        Ok(Self::from_parsed(ServiceConnectionString::from_str(
            connection_string,
        )?))
    }

    /// A builder for an already parsed connection string.
    pub fn from_parsed(connection_string: ServiceConnectionString) -> Self {
        ServiceClientBuilder {
            connection_string,
            trust: Trust::default(),
            amqp_transport: AmqpTransport::default(),
            amqp_port: None,
            https_port: None,
            tokens: TokenPolicy::default(),
            connect_timeout: client::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: client::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Also trusts the CA certificate(s) in this PEM text (for example the emulator's CA), on
    /// top of the platform's roots. The text is checked by [`build`](Self::build).
    pub fn trust_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.trust.add_ca_pem(pem.as_ref());
        self
    }

    /// Also trusts the CA certificate(s) in this PEM file, read by [`build`](Self::build).
    pub fn trust_ca_file(mut self, path: impl AsRef<Path>) -> Self {
        self.trust.add_ca_file(path.as_ref());
        self
    }

    /// Whether to trust the CA named by the environment variable [`CA_CERT_ENV`]
    /// (`IOTHUB_CA_CERT`: a PEM file path, or PEM text) when it is set (default `true`). A
    /// variable that is set but cannot be read is an error at [`build`](Self::build).
    ///
    /// [`CA_CERT_ENV`]: crate::CA_CERT_ENV
    pub fn trust_ca_from_env(mut self, read: bool) -> Self {
        self.trust.from_env(read);
        self
    }

    /// Whether to trust the platform's root certificates (default `true`), read with
    /// `rustls-native-certs` (so `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured). Turn it off
    /// to trust only the CAs given explicitly.
    pub fn platform_roots(mut self, trust: bool) -> Self {
        self.trust.platform_roots(trust);
        self
    }

    /// How C2D messages and feedback travel (default [`AmqpTransport::Tls`] on 5671;
    /// [`AmqpTransport::WebSocket`] on 443, path `/$iothub/websocket`, for networks that only
    /// let HTTPS through).
    pub fn amqp_transport(mut self, transport: AmqpTransport) -> Self {
        self.amqp_transport = transport;
        self
    }

    /// The AMQP port, for an emulator or a test server on another port than the transport's
    /// ([`DEFAULT_AMQP_PORT`], 5671, or 443 over WebSockets), where real hubs listen. A `:port`
    /// written in `HostName` is also honoured (as the Node service SDK does); this option
    /// overrides it.
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// The HTTPS port, for an emulator or a test server on another port than
    /// [`DEFAULT_HTTPS_PORT`] (443), where real hubs listen. A `:port` in `HostName` is the
    /// AMQP port, not this one.
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// Lifetime of the SAS tokens the client signs with the policy key (default one hour, at
    /// least [`MIN_TOKEN_LIFETIME`](crate::MIN_TOKEN_LIFETIME)).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.tokens.lifetime = lifetime;
        self
    }

    /// How long before a token expires the client replaces it (default two minutes, or half
    /// the lifetime if that is shorter). The new token is put on the open AMQP connection and
    /// used by the next HTTPS request. Must be shorter than
    /// [`token_lifetime`](Self::token_lifetime).
    pub fn token_renewal_margin(mut self, margin: Duration) -> Self {
        self.tokens.renewal_margin = Some(margin);
        self
    }

    /// Limit for opening a connection: TCP, TLS, and for AMQP the session, the CBS links and
    /// the first put-token; also for attaching a link (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit for one request, from the call until the hub's answer: a send until its outcome
    /// (including opening the connection it needs), a registry call (default 60 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Options that weaken security, for tests against servers you control. Never use them
    /// against a real hub.
    pub fn dangerous(self) -> DangerousServiceClientBuilder {
        DangerousServiceClientBuilder { inner: self }
    }

    /// Checks the options, loads the trusted roots and returns the client (not connected).
    ///
    /// Errors: [`Error::InvalidOption`] for a token lifetime below
    /// [`MIN_TOKEN_LIFETIME`](crate::MIN_TOKEN_LIFETIME) or a zero timeout, [`Error::Tls`]
    /// for unreadable or invalid CA certificates or no trusted roots at all.
    pub fn build(self) -> Result<ServiceClient, Error> {
        self.tokens.validate().map_err(Error::invalid_option)?;
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::invalid_option(format!("{name} must not be zero")));
            }
        }
        let roots = self.trust.load()?;
        let cs = self.connection_string;
        let (host, amqp_port) = client::endpoint(
            &cs.host_name,
            self.amqp_port,
            self.amqp_transport.default_port(),
        );
        let host = host.to_owned();
        let tokens = Arc::new(TokenSource::new(&cs, self.tokens));
        let amqp = AmqpHandle::new(AmqpSettings {
            host: host.clone(),
            port: amqp_port,
            transport: self.amqp_transport,
            tls: roots.client_config(&[])?,
            tokens: tokens.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
        });
        // hyper-rustls sets the ALPN protocols itself.
        let https = Https::new(
            &host,
            self.https_port.unwrap_or(DEFAULT_HTTPS_PORT),
            (*roots.client_config(&[])?).clone(),
            tokens,
            self.connect_timeout,
            self.request_timeout,
        );
        Ok(ServiceClient::new(cs, amqp, https, self.request_timeout))
    }
}

/// Options that weaken security; see [`ServiceClientBuilder::dangerous`].
#[derive(Debug, Clone)]
#[must_use = "call a method, then continue with the builder it returns"]
pub struct DangerousServiceClientBuilder {
    inner: ServiceClientBuilder,
}

impl DangerousServiceClientBuilder {
    /// Accepts any server certificate, without checking who issued it or whom it names.
    /// Anyone on the network path can then read and change the traffic, including the SAS
    /// token. Prefer [`ServiceClientBuilder::trust_ca_pem`] with the emulator's CA.
    pub fn accept_any_server_certificate(mut self) -> ServiceClientBuilder {
        self.inner.trust.accept_any_certificate();
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: &str = "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn builder() -> ServiceClientBuilder {
        ServiceClientBuilder::new(CS)
            .unwrap()
            .platform_roots(false)
            .trust_ca_from_env(false)
    }

    #[test]
    fn bad_connection_strings_are_typed() {
        let e = ServiceClientBuilder::new("HostName=h;SharedAccessKey=AA==").unwrap_err();
        assert!(matches!(e, Error::InvalidConnectionString(_)), "{e:?}");
    }

    #[test]
    fn a_client_needs_roots_and_a_sane_lifetime() {
        let e = builder().build().unwrap_err();
        assert!(matches!(e, Error::Tls { .. }), "{e:?}");
        let e = builder()
            .trust_ca_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::Tls { .. }), "{e:?}");
        let e = ServiceClientBuilder::new(CS)
            .unwrap()
            .token_lifetime(Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(matches!(e, Error::InvalidOption { .. }), "{e:?}");
        assert!(e.to_string().contains("too short"), "{e}");
        let e = builder()
            .dangerous()
            .accept_any_server_certificate()
            .request_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("request_timeout"), "{e}");
    }

    #[test]
    fn no_roots_is_fine_when_any_certificate_is_accepted() {
        let client = builder()
            .dangerous()
            .accept_any_server_certificate()
            .build();
        assert!(client.is_ok(), "{client:?}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let b = builder();
        let debug = format!("{b:?}");
        assert!(
            !debug.contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
            "{debug}"
        );
    }
}
