//! TLS client configuration: rustls on the *ring* provider (never aws-lc-rs), the platform's
//! roots plus any CA the application or the environment adds.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{CA_ENV_VARS, TrustOptions};
use crate::error::Error;

/// The crypto provider every connection uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(detail: impl Into<String>) -> Error {
    Error::Tls {
        detail: detail.into(),
    }
}

/// Parses every `CERTIFICATE` block of `pem`; `origin` names it in errors.
fn parse_pem(origin: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("cannot read the CA certificate in {origin}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{origin} holds no `-----BEGIN CERTIFICATE-----` block; give the CA certificate in PEM form"
        )));
    }
    Ok(certs)
}

/// The PEM an environment variable names: its text if it is PEM, else the file it points to.
fn pem_from_env(var: &str, value: &str) -> Result<(String, Vec<u8>), Error> {
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok((format!("${var}"), value.as_bytes().to_vec()));
    }
    let bytes = std::fs::read(value).map_err(|e| {
        tls_error(format!(
            "${var} is set to '{value}', which cannot be read ({e}); point it at the CA's PEM file (the emulator prints it), or unset it"
        ))
    })?;
    Ok((format!("'{value}' (from ${var})"), bytes))
}

/// The root store the options describe.
pub(crate) fn root_store(trust: &TrustOptions) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    let mut extra: Vec<(String, Vec<u8>)> = trust.pems.clone();
    for path in &trust.files {
        let bytes = std::fs::read(path)
            .map_err(|e| tls_error(format!("cannot read the CA file '{}': {e}", path.display())))?;
        extra.push((format!("'{}'", path.display()), bytes));
    }
    if trust.from_env {
        for var in CA_ENV_VARS {
            if let Some(value) = std::env::var_os(var) {
                let value = value.to_string_lossy().into_owned();
                if !value.trim().is_empty() {
                    extra.push(pem_from_env(var, &value)?);
                }
            }
        }
    }
    for (origin, pem) in &extra {
        for cert in parse_pem(origin, pem)? {
            roots.add(cert).map_err(|e| {
                tls_error(format!(
                    "the certificate in {origin} cannot be used as a trust anchor: {e}"
                ))
            })?;
        }
    }
    if trust.platform_roots {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping part of the platform certificate store");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "platform root certificates");
    }
    if roots.is_empty() && !trust.accept_any_certificate {
        return Err(tls_error(
            "no trusted root certificate: the platform store is empty or disabled and no CA was given; use trust_ca_file/trust_ca_pem or set IOTHUB_CA_CERT",
        ));
    }
    Ok(roots)
}

/// A client configuration trusting `roots`, offering `alpn`.
pub(crate) fn client_config(
    roots: &RootCertStore,
    accept_any: bool,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(format!("cannot configure TLS versions: {e}")))?;
    let mut config = if accept_any {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A server name for SNI and certificate checks.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| tls_error(format!("'{host}' cannot be used as a TLS server name: {e}")))
}

/// Turns a TLS failure found anywhere in an error's source chain into [`Error::Tls`] with a
/// hint; `None` if the chain holds no rustls error.
pub(crate) fn describe_tls_failure(
    err: &(dyn std::error::Error + 'static),
    host: &str,
) -> Option<Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls_failure(tls, host));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls_failure(tls, host));
        }
        cur = e.source();
    }
    None
}

fn tls_failure(e: &rustls::Error, host: &str) -> Error {
    let hint = match e {
        rustls::Error::InvalidCertificate(_) => {
            "; if this is the emulator, trust its CA (trust_ca_file, trust_ca_pem, or IOTHUB_CA_CERT=<path to ca.pem>)"
        }
        _ => "",
    };
    tls_error(format!("handshake with '{host}' failed: {e}{hint}"))
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

    fn trust(pems: Vec<(String, Vec<u8>)>) -> TrustOptions {
        TrustOptions {
            platform_roots: false,
            from_env: false,
            pems,
            files: Vec::new(),
            accept_any_certificate: false,
        }
    }

    #[test]
    fn no_roots_at_all_is_an_actionable_error() {
        let err = root_store(&trust(Vec::new())).unwrap_err();
        assert!(err.to_string().contains("IOTHUB_CA_CERT"), "{err}");
    }

    #[test]
    fn pem_without_certificates_is_refused_naming_its_origin() {
        let err = root_store(&trust(vec![("my.pem".into(), b"hello".to_vec())])).unwrap_err();
        assert!(err.to_string().contains("my.pem"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let mut t = trust(Vec::new());
        t.files.push("/nonexistent/ca.pem".into());
        let err = root_store(&t).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn env_value_may_be_pem_text_or_a_path() {
        let (origin, bytes) = pem_from_env("X", "-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(origin, "$X");
        assert!(bytes.starts_with(b"-----BEGIN"));
        let err = pem_from_env("IOTHUB_CA_CERT", "/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("$IOTHUB_CA_CERT"), "{err}");
    }
}
