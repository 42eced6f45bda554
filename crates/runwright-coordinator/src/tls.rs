//! HTTPS for the coordinator: a private GitLab behind a certificate of its own CA, optionally demanding a
//! client certificate (GitLab behind a TLS-terminating proxy with `ssl_verify_client on`). The API, artifact
//! and git endpoints are the same as over HTTP; TLS ends before the router.

use crate::error::CoordinatorError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The coordinator's TLS identity. `Debug` hides the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CoordinatorTls {
    /// PEM: the server's certificate, then the intermediates it presents.
    pub cert_chain_pem: String,
    /// PEM private key of the certificate.
    pub key_pem: String,
    /// PEM CA certificates: when set, a connection must present a client certificate one of them signed.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for CoordinatorTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorTls")
            .field("demands_client_cert", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, reason: impl std::fmt::Display) -> CoordinatorError {
    CoordinatorError::Tls(format!("{what}: {reason}"))
}

fn certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, CoordinatorError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, e))?;
    if certs.is_empty() {
        return Err(invalid(what, "no PEM certificate"));
    }
    Ok(certs)
}

impl CoordinatorTls {
    /// The acceptor for every connection (TLS 1.2 and 1.3, HTTP/1.1).
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, CoordinatorError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS versions", e))?;
        let builder = match &self.client_ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs("client CA", pem)? {
                    roots.add(cert).map_err(|e| invalid("client CA", e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| invalid("client CA", e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| invalid("server key", e))?;
        let mut config = builder
            .with_single_cert(certs("server certificate", &self.cert_chain_pem)?, key)
            .map_err(|e| invalid("server certificate", e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
