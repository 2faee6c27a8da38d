//! Which server certificates a client trusts, and the rustls client configuration built from
//! it (feature `tls`). The device and the service client both use this one copy.
//!
//! By default a client trusts the platform's roots (as `rustls-native-certs` finds them, so
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured) plus, when [`CA_CERT_ENV`]
//! (`IOTHUB_CA_CERT`) is set, the CA it names; more CAs can be added in code. A variable that
//! is set but cannot be read is an error, so a typo does not go unnoticed. The crypto provider
//! is always *ring*, passed explicitly, so a client works whichever provider another crate
//! installs as the process default, and aws-lc-rs is never built.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use crate::client::CA_CERT_ENV;
use crate::client::Cause;

/// Why trust could not be set up, or a TLS handshake failed. The message says what to do; the
/// underlying error (I/O, PEM, rustls) is the `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    message: String,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl TlsError {
    fn new(message: impl Into<String>) -> Self {
        TlsError {
            message: message.into(),
            source: None,
        }
    }

    fn caused_by(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        TlsError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What failed and what to do about it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message and the underlying error, to wrap in a client's own error type.
    pub fn into_parts(self) -> (String, Option<Cause>) {
        (self.message, self.source.map(Cause::from_boxed))
    }
}

/// Where an extra trusted CA comes from; `origin` names it in errors.
#[derive(Debug, Clone)]
enum CaSource {
    Pem { origin: String, pem: Vec<u8> },
    File(PathBuf),
}

/// The trust settings of a client: the builders' `platform_roots`, `trust_ca_from_env`,
/// `trust_ca_pem`, `trust_ca_file` and `dangerous().accept_any_server_certificate()`.
#[derive(Debug, Clone)]
pub struct Trust {
    platform_roots: bool,
    from_env: bool,
    extra: Vec<CaSource>,
    accept_any_certificate: bool,
}

impl Default for Trust {
    /// The platform's roots plus [`CA_CERT_ENV`].
    fn default() -> Self {
        Trust {
            platform_roots: true,
            from_env: true,
            extra: Vec::new(),
            accept_any_certificate: false,
        }
    }
}

impl Trust {
    /// Whether to trust the platform's root certificates.
    pub fn platform_roots(&mut self, on: bool) -> &mut Self {
        self.platform_roots = on;
        self
    }

    /// Whether to trust the CA named by [`CA_CERT_ENV`] when it is set.
    pub fn from_env(&mut self, on: bool) -> &mut Self {
        self.from_env = on;
        self
    }

    /// Also trusts the CA certificate(s) in this PEM text.
    pub fn add_ca_pem(&mut self, pem: &[u8]) -> &mut Self {
        let n = self
            .extra
            .iter()
            .filter(|s| matches!(s, CaSource::Pem { .. }))
            .count()
            + 1;
        self.extra.push(CaSource::Pem {
            origin: format!("PEM #{n} given to trust_ca_pem"),
            pem: pem.to_vec(),
        });
        self
    }

    /// Also trusts the CA certificate(s) in this PEM file, read by [`load`](Self::load).
    pub fn add_ca_file(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.extra.push(CaSource::File(path.into()));
        self
    }

    /// Accepts any server certificate (the clients' `dangerous()` option).
    pub fn accept_any_certificate(&mut self) -> &mut Self {
        self.accept_any_certificate = true;
        self
    }

    /// Reads every CA (files, the environment, the platform store) into a root store. This
    /// blocks on the file system; async code should run it off its workers.
    pub fn load(&self) -> Result<TrustedRoots, TlsError> {
        let mut pems: Vec<(String, Vec<u8>)> = Vec::new();
        for source in &self.extra {
            match source {
                CaSource::Pem { origin, pem } => pems.push((origin.clone(), pem.clone())),
                CaSource::File(path) => {
                    let bytes = std::fs::read(path).map_err(|e| {
                        TlsError::caused_by(
                            format!("cannot read the CA file '{}'", path.display()),
                            e,
                        )
                    })?;
                    pems.push((format!("'{}'", path.display()), bytes));
                }
            }
        }
        if self.from_env
            && let Some(value) = std::env::var_os(CA_CERT_ENV)
        {
            let value = value.to_string_lossy();
            if !value.trim().is_empty() {
                pems.push(pem_from_env(CA_CERT_ENV, &value)?);
            }
        }
        let mut roots = RootCertStore::empty();
        for (origin, pem) in &pems {
            for cert in parse_pem(origin, pem)? {
                roots.add(cert).map_err(|e| {
                    TlsError::caused_by(
                        format!("the certificate in {origin} cannot be used as a trust anchor"),
                        e,
                    )
                })?;
            }
        }
        if self.platform_roots {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "skipping part of the platform certificate store");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "platform root certificates");
        }
        if roots.is_empty() && !self.accept_any_certificate {
            return Err(TlsError::new(format!(
                "no trusted root certificate: the platform store is empty or disabled and no CA was given; use trust_ca_file/trust_ca_pem or set {CA_CERT_ENV}"
            )));
        }
        Ok(TrustedRoots {
            roots: Arc::new(roots),
            accept_any_certificate: self.accept_any_certificate,
        })
    }
}

/// Parses every `CERTIFICATE` block of `pem`.
fn parse_pem(origin: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::caused_by(format!("cannot read the CA certificate in {origin}"), e)
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(format!(
            "{origin} holds no `-----BEGIN CERTIFICATE-----` block; give the CA certificate in PEM form"
        )));
    }
    Ok(certs)
}

/// The PEM an environment variable names: its text if it is PEM, else the file it points to.
fn pem_from_env(var: &str, value: &str) -> Result<(String, Vec<u8>), TlsError> {
    let value = value.trim();
    if value.starts_with("-----BEGIN") {
        return Ok((format!("${var}"), value.as_bytes().to_vec()));
    }
    let bytes = std::fs::read(value).map_err(|e| {
        TlsError::caused_by(
            format!(
                "${var} is set to '{value}', which cannot be read; point it at the CA's PEM file (the emulator prints it), or unset it"
            ),
            e,
        )
    })?;
    Ok((format!("'{value}' (from ${var})"), bytes))
}

/// The loaded roots of a [`Trust`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct TrustedRoots {
    roots: Arc<RootCertStore>,
    accept_any_certificate: bool,
}

impl TrustedRoots {
    /// A client configuration over *ring* trusting these roots and offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::caused_by("cannot configure the TLS versions", e))?;
        let mut config = if self.accept_any_certificate {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// A server name for SNI and certificate checks.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        TlsError::caused_by(format!("'{host}' cannot be used as a TLS server name"), e)
    })
}

/// The rustls error anywhere in an error's source chain (also inside an `io::Error`), if any:
/// the sign that a connection failed in the TLS handshake.
pub fn find_rustls_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cur = e.source();
    }
    None
}

/// The error for a TLS handshake with `host` that failed with `error`, with a hint when the
/// server's certificate was not trusted.
pub fn handshake_failed(error: &rustls::Error, host: &str) -> TlsError {
    let hint = match error {
        rustls::Error::InvalidCertificate(_) => {
            "; if this is the emulator, trust its CA (trust_ca_file, trust_ca_pem, or IOTHUB_CA_CERT=<path to ca.pem>)"
        }
        _ => "",
    };
    TlsError::caused_by(
        format!("the TLS handshake with '{host}' failed{hint}"),
        error.clone(),
    )
}

/// The TLS failure in `error`'s chain as a [`TlsError`] for `host`; `None` if the chain holds
/// no rustls error.
pub fn describe_handshake_failure(
    error: &(dyn StdError + 'static),
    host: &str,
) -> Option<TlsError> {
    find_rustls_error(error).map(|e| handshake_failed(e, host))
}

/// Accepts every server certificate but still checks handshake signatures, so the session
/// keys are at least bound to the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit_only() -> Trust {
        let mut t = Trust::default();
        t.platform_roots(false).from_env(false);
        t
    }

    #[test]
    fn no_roots_at_all_is_an_actionable_error() {
        let err = explicit_only().load().unwrap_err();
        assert!(err.to_string().contains("IOTHUB_CA_CERT"), "{err}");
        let mut any = explicit_only();
        any.accept_any_certificate();
        let roots = any.load().unwrap();
        assert!(roots.client_config(&[b"http/1.1"]).is_ok());
    }

    #[test]
    fn pem_without_certificates_is_refused_naming_its_origin() {
        let mut t = explicit_only();
        t.add_ca_pem(b"hello");
        let err = t.load().unwrap_err();
        assert!(
            err.to_string().contains("PEM #1 given to trust_ca_pem"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_named_and_its_cause_kept() {
        let mut t = explicit_only();
        t.add_ca_file("/nonexistent/ca.pem");
        let err = t.load().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }

    #[test]
    fn env_value_may_be_pem_text_or_a_path() {
        let (origin, bytes) = pem_from_env("X", " -----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(origin, "$X");
        assert!(bytes.starts_with(b"-----BEGIN"));
        let err = pem_from_env("IOTHUB_CA_CERT", "/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("$IOTHUB_CA_CERT"), "{err}");
    }

    #[test]
    fn handshake_failures_are_found_in_the_chain_with_a_hint() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, bad);
        let err = describe_handshake_failure(&io, "localhost").unwrap();
        assert!(err.to_string().contains("trust its CA"), "{err}");
        assert!(err.source().is_some());
        let plain = std::io::Error::other("refused");
        assert!(describe_handshake_failure(&plain, "h").is_none());
        assert!(server_name("not a host!").is_err());
    }
}
