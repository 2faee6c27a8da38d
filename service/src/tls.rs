//! Which server certificates the client trusts, and the rustls configuration built from it.
//!
//! By default: the platform's roots (as `rustls-native-certs` finds them) plus, when the
//! environment variable [`CA_CERT_ENV`] is set, the CA it names (a PEM file path, or PEM text).
//! An extra CA can also be given in code. The crypto provider is always ring, passed
//! explicitly, so the client works whichever provider another crate installs as the
//! process default.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::Error;

/// The environment variable read for an extra CA to trust (the emulator prints it).
pub const CA_CERT_ENV: &str = "IOTHUB_CA_CERT";

/// Where an extra trusted CA comes from.
#[derive(Debug, Clone)]
pub(crate) enum CaSource {
    /// PEM text given in code.
    Pem(Vec<u8>),
    /// A PEM file.
    File(PathBuf),
}

/// The trust settings of a client.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    pub platform_roots: bool,
    pub ca_from_env: bool,
    pub extra: Vec<CaSource>,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            platform_roots: true,
            ca_from_env: true,
            extra: Vec::new(),
        }
    }
}

fn parse_pem(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::config(format!("{origin} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{origin} holds no certificate (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

fn load(source: &CaSource, origin: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    match source {
        CaSource::Pem(pem) => parse_pem(pem, origin),
        CaSource::File(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::config(format!(
                    "cannot read the CA certificate {} ({origin}): {e}",
                    path.display()
                ))
            })?;
            parse_pem(&pem, &format!("{} ({origin})", path.display()))
        }
    }
}

/// The CA named by [`CA_CERT_ENV`], if set: PEM text when it starts with `-----BEGIN`, a
/// file path otherwise.
fn env_source() -> Option<CaSource> {
    let value = std::env::var_os(CA_CERT_ENV)?;
    let text = value.to_string_lossy();
    let text = text.trim();
    if text.is_empty() {
        None
    } else if text.starts_with("-----BEGIN") {
        Some(CaSource::Pem(text.as_bytes().to_vec()))
    } else {
        Some(CaSource::File(PathBuf::from(text)))
    }
}

impl Trust {
    /// Builds the root store: platform roots (errors reading them are ignored, as a container
    /// may have none), then each extra CA (errors are reported).
    pub fn root_store(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        if self.platform_roots {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!("ignoring a platform root that cannot be loaded: {e}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!("trusting {added} platform roots ({ignored} unparsable)");
        }
        let mut extra: Vec<(CaSource, String)> = self
            .extra
            .iter()
            .map(|s| (s.clone(), "trusted CA".to_owned()))
            .collect();
        if self.ca_from_env
            && let Some(s) = env_source()
        {
            extra.push((s, format!("${CA_CERT_ENV}")));
        }
        for (source, origin) in &extra {
            for cert in load(source, origin)? {
                roots.add(cert).map_err(|e| {
                    Error::config(format!("{origin} is not a usable CA certificate: {e}"))
                })?;
            }
        }
        if roots.is_empty() {
            return Err(Error::config(format!(
                "no trusted root certificates: the platform has none and no CA was given; install ca-certificates, set {CA_CERT_ENV}, or call trust_ca_pem/trust_ca_file"
            )));
        }
        Ok(roots)
    }

    /// A rustls client configuration over ring with these roots and no ALPN.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, Error> {
        let roots = self.root_store()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_a_config_error_naming_its_origin() {
        let trust = Trust {
            platform_roots: false,
            ca_from_env: false,
            extra: vec![CaSource::Pem(b"not a certificate".to_vec())],
        };
        let err = trust.root_store().unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("trusted CA"), "{err}");
    }

    #[test]
    fn missing_file_is_a_config_error_naming_the_path() {
        let trust = Trust {
            platform_roots: false,
            ca_from_env: false,
            extra: vec![CaSource::File("/nonexistent/ca.pem".into())],
        };
        let err = trust.root_store().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn no_roots_at_all_is_explained() {
        let trust = Trust {
            platform_roots: false,
            ca_from_env: false,
            extra: vec![],
        };
        let err = trust.root_store().unwrap_err();
        assert!(err.to_string().contains(CA_CERT_ENV), "{err}");
    }
}
