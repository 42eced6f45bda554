//! TLS toward GitLab: the trust roots and client certificate of a [`crate::Client`], and the TLS data it
//! hands to every job it receives ([`TlsData`]: `CI_SERVER_TLS_CA_FILE`, `_CERT_FILE`, `_KEY_FILE`).
//!
//! Follows runner network/client.go: `newClient` (`tls-*` files, else `<certs dir>/<host>.crt`, `.auth.crt`,
//! `.auth.key` via `findCertificate`), `addTLSCA` (system roots plus `tls-ca-file`), `addTLSAuth`,
//! `getResponseTLSData`/`buildCAChain` (the CA file's content, else the chain the server's certificate was
//! verified through) and network/gitlab.go `loadTLSData` (certificate and key read when a job arrives).
//!
//! State owned: the rustls client configuration both HTTP clients share, and per server name the last chain a
//! handshake was verified through.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use url::Url;

use runwright_api::TlsData;

use crate::error::ClientError;

/// The TLS files a client uses, after the certs directory filled what the entry left unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Each file the entry does not name is `<certs dir>/<host>.crt`, `<host>.auth.crt`, `<host>.auth.key` when
    /// that exists (runner network/client.go `newClient`, `findCertificate`; host without port).
    pub(crate) fn resolve(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
        certs_dir: Option<&Path>,
        base: &Url,
    ) -> TlsFiles {
        let find = |given: Option<&Path>, suffix: &str| -> Option<PathBuf> {
            if let Some(p) = given.filter(|p| !p.as_os_str().is_empty()) {
                return Some(p.to_path_buf());
            }
            let dir = certs_dir.filter(|d| !d.as_os_str().is_empty())?;
            let host = base.host_str()?;
            let path = dir.join(format!("{host}{suffix}"));
            path.exists().then_some(path)
        };
        TlsFiles {
            ca_file: find(ca_file, ".crt"),
            cert_file: find(cert_file, ".auth.crt"),
            key_file: find(key_file, ".auth.key"),
        }
    }
}

/// The TLS side of a client: one rustls configuration for both HTTP clients, and what jobs get.
pub(crate) struct ClientTls {
    pub(crate) config: rustls::ClientConfig,
    /// `tls-ca-file`'s content (runner `caData`): handed to jobs instead of the verified chain.
    ca_data: Option<String>,
    files: TlsFiles,
    verifier: Arc<RecordingVerifier>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads the CA file and the client certificate pair and builds the rustls configuration: the system's
    /// roots plus the CA file's certificates (runner `addTLSCA`: `SystemCertPool` + `AppendCertsFromPEM`), the
    /// client certificate when both halves are configured (`addTLSAuth`), TLS 1.2 at least, HTTP/1.1 (Go's
    /// transport does not negotiate HTTP/2 once it has its own TLS configuration).
    pub(crate) fn new(files: TlsFiles) -> Result<ClientTls, ClientError> {
        Self::with_system_roots(files, system_roots())
    }

    /// [`ClientTls::new`] with the system's roots given (tests stand in for the machine's store).
    fn with_system_roots(
        files: TlsFiles,
        system: Vec<CertificateDer<'static>>,
    ) -> Result<ClientTls, ClientError> {
        let mut extra_roots = Vec::new();
        let mut ca_data = None;
        if let Some(path) = &files.ca_file {
            let pem = read_file("tls-ca-file", path)?;
            extra_roots = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("tls-ca-file", path, e.to_string()))?;
            if extra_roots.is_empty() {
                return Err(invalid("tls-ca-file", path, "no PEM certificate found"));
            }
            ca_data = Some(String::from_utf8_lossy(&pem).into_owned());
        }

        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let verifier = Arc::new(RecordingVerifier::new(extra_roots, system, &provider));
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ClientError::Build {
                url: String::new(),
                reason: format!("TLS versions: {e}"),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());

        // Client identity only when both halves are configured (runner network/client.go `addTLSAuth`).
        let mut config = match (&files.cert_file, &files.key_file) {
            (Some(cert_path), Some(key_path)) => {
                let pair = "tls-cert-file/tls-key-file pair";
                let certs = CertificateDer::pem_slice_iter(&read_file("tls-cert-file", cert_path)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(pair, cert_path, e.to_string()))?;
                if certs.is_empty() {
                    return Err(invalid(pair, cert_path, "no PEM certificate found"));
                }
                let key = PrivateKeyDer::from_pem_slice(&read_file("tls-key-file", key_path)?)
                    .map_err(|e| invalid(pair, key_path, format!("no private key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| invalid(pair, cert_path, e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ClientTls {
            config,
            ca_data,
            files,
            verifier,
        })
    }

    /// What a job received from `base` gets (runner network/client.go `getResponseTLSData`, network/gitlab.go
    /// `loadTLSData`): the CA file's content or the chain `base`'s certificate was last verified through, and
    /// the client certificate and key as they are on disk now (unreadable ones are left out, as the runner
    /// does).
    pub(crate) fn job_data(&self, base: &Url) -> TlsData {
        let ca_chain = match &self.ca_data {
            Some(data) => data.clone(),
            None if base.scheme() == "https" => server_name_of(base)
                .and_then(|name| self.verifier.chain_for(&name))
                .unwrap_or_default(),
            None => String::new(),
        };
        let mut data = TlsData {
            ca_chain,
            ..TlsData::default()
        };
        if let (Some(cert), Some(key)) = (&self.files.cert_file, &self.files.key_file) {
            data.auth_cert = std::fs::read_to_string(cert).unwrap_or_default();
            data.auth_key = std::fs::read_to_string(key).unwrap_or_default();
        }
        data
    }
}

/// The system's trusted roots as Go's `x509.SystemCertPool` finds them on Linux: `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set, else the distribution's bundle (rustls-native-certs, what reqwest's platform
/// verifier used).
fn system_roots() -> Vec<CertificateDer<'static>> {
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "loading the system's CA certificates");
    }
    native.certs
}

/// The name a handshake with `base` verifies, as rustls spells it (IPv6 without brackets).
fn server_name_of(base: &Url) -> Option<String> {
    Some(match base.host()? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    })
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, reason: impl Into<String>) -> ClientError {
    ClientError::InvalidTlsFile {
        what,
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Verifies server certificates with rustls's own WebPKI verifier and, when one passes, records the chain it
/// was verified through: leaf, intermediates, trust anchor — Go's `tls.ConnectionState.VerifiedChains`, which
/// runner's `buildCAChain` turns into `CI_SERVER_TLS_CA_FILE`.
///
/// Why a verifier: reqwest's `tls_info` exposes only the leaf certificate, not the intermediates the server
/// sent nor the root they lead to, so the chain can only be seen during verification. The trust decision
/// stays rustls's (`WebPkiServerVerifier`, the verifier `rustls-platform-verifier` uses on Linux with the same
/// roots); webpki's path builder is asked afterwards only for the path it found, which rustls does not expose.
struct RecordingVerifier {
    /// `None` when there is no root at all (no system store, no CA file): every handshake then fails.
    inner: Option<Arc<WebPkiServerVerifier>>,
    anchors: Vec<TrustAnchor<'static>>,
    /// The certificate of each anchor, same index: the root ends the recorded chain.
    anchor_certs: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Server name → PEM chain of its last verified handshake.
    chains: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for RecordingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingVerifier")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

impl RecordingVerifier {
    fn new(
        extra_roots: Vec<CertificateDer<'static>>,
        system_roots: Vec<CertificateDer<'static>>,
        provider: &Arc<CryptoProvider>,
    ) -> Self {
        let mut anchors = Vec::new();
        let mut anchor_certs = Vec::new();
        // The CA file first: a certificate in both is then recorded as the file's.
        for der in extra_roots.into_iter().chain(system_roots) {
            match webpki::anchor_from_trusted_cert(&der) {
                Ok(anchor) => {
                    anchors.push(anchor.to_owned());
                    anchor_certs.push(der);
                }
                Err(error) => tracing::debug!(?error, "skipping an unusable CA certificate"),
            }
        }
        let inner = if anchors.is_empty() {
            None
        } else {
            let store = rustls::RootCertStore {
                roots: anchors.clone(),
            };
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
                .map_err(|e| tracing::warn!("TLS verifier: {e}"))
                .ok()
        };
        RecordingVerifier {
            inner,
            anchors,
            anchor_certs,
            algorithms: provider.signature_verification_algorithms,
            chains: Mutex::new(HashMap::new()),
        }
    }

    fn chain_for(&self, server_name: &str) -> Option<String> {
        self.chains
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server_name)
            .cloned()
    }

    /// The path webpki verifies `end_entity` through, as PEM (runner helpers/tls/ca_chain/builder.go: each
    /// certificate once, in chain order, no trailing newline).
    fn verified_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<String> {
        let cert = webpki::EndEntityCert::try_from(end_entity).ok()?;
        let path = cert
            .verify_for_usage(
                self.algorithms.all,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(|e| tracing::debug!(error = %e, "no verified path to record"))
            .ok()?;
        let mut chain: Vec<&[u8]> = vec![end_entity.as_ref()];
        let middle: Vec<CertificateDer<'_>> =
            path.intermediate_certificates().map(|c| c.der()).collect();
        chain.extend(middle.iter().map(|c| c.as_ref()));
        let anchor = path.anchor();
        if let Some(root) = self.anchors.iter().position(|a| {
            a.subject == anchor.subject
                && a.subject_public_key_info == anchor.subject_public_key_info
        }) {
            chain.push(self.anchor_certs[root].as_ref());
        }
        let mut seen = std::collections::HashSet::new();
        let blocks: Vec<String> = chain
            .into_iter()
            .filter(|der| seen.insert(*der))
            .map(pem_certificate)
            .collect();
        Some(blocks.join("\n"))
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Err(rustls::Error::General(
                "no trusted CA certificate: the system store is empty and no tls-ca-file is set"
                    .into(),
            ));
        };
        let verified =
            inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        if let Some(chain) = self.verified_chain(end_entity, intermediates, now) {
            self.chains
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(server_name.to_str().into_owned(), chain);
        }
        Ok(verified)
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

/// One `CERTIFICATE` PEM block as Go's `pem.Encode` writes it (64-column base64), without the final newline.
fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_wrap_at_64_columns_like_go() {
        let der: Vec<u8> = (0..100u8).collect();
        let pem = pem_certificate(&der);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(*lines.last().expect("end"), "-----END CERTIFICATE-----");
        let body: String = lines[1..lines.len() - 1].concat();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("base64"),
            der
        );
        assert!(!pem.ends_with('\n'));
    }

    #[test]
    fn certs_dir_fills_only_what_the_entry_leaves_unset() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["gitlab.example.com.crt", "gitlab.example.com.auth.crt"] {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        let base = Url::parse("https://gitlab.example.com:8443/api/v4/").expect("url");
        let given = Path::new("/etc/ssl/mine.pem");
        let files = TlsFiles::resolve(Some(given), None, None, Some(dir.path()), &base);
        assert_eq!(files.ca_file.as_deref(), Some(given));
        assert_eq!(
            files.cert_file,
            Some(dir.path().join("gitlab.example.com.auth.crt"))
        );
        // Not there: stays unset (runner `findCertificate` stats the file).
        assert_eq!(files.key_file, None);
        let files = TlsFiles::resolve(None, None, None, Some(dir.path()), &base);
        assert_eq!(
            files.ca_file,
            Some(dir.path().join("gitlab.example.com.crt"))
        );
        assert_eq!(
            TlsFiles::resolve(None, None, None, None, &base),
            TlsFiles::default()
        );
    }
}

/// Real handshakes against a loopback HTTPS server with a private PKI.
#[cfg(test)]
mod handshake_tests {
    use super::*;
    use crate::testing::TestPki;
    use crate::{Client, ClientOptions, RequestJobOutcome};
    use runwright_api::types::VersionInfo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `201` with a job to every request, over TLS with `pki`'s server chain (leaf + intermediate);
    /// with `demand_client_cert`, only to clients with a certificate the root signed.
    async fn https_gitlab(pki: &TestPki, demand_client_cert: bool) -> String {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let chain = CertificateDer::pem_slice_iter(pki.server_chain_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder();
        let builder = if demand_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pki.root_pem.as_bytes()) {
                roots.add(c.expect("root")).expect("add");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(chain, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then the body Content-Length announces.
                    loop {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break;
                            }
                        }
                    }
                    let body = r#"{"id":7,"token":"job-token-7"}"#;
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        format!("https://127.0.0.1:{port}/")
    }

    fn client(url: &str, files: TlsFiles, system: Vec<CertificateDer<'static>>) -> Client {
        std::env::set_var(runwright_static::env_vars::RUNWRIGHT_FAST_RETRIES, "1");
        let tls = ClientTls::with_system_roots(files, system).expect("tls");
        Client::with_tls(
            ClientOptions {
                url: url.into(),
                user_agent: "runwright-test".into(),
                ..Default::default()
            },
            tls,
        )
        .expect("client")
    }

    async fn request(client: &Client) -> RequestJobOutcome {
        client
            .request_job("glrt-token", "s_000000000000", &VersionInfo::default())
            .await
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn pem_of(text: &str) -> String {
        let der = CertificateDer::from_pem_slice(text.as_bytes()).expect("pem");
        pem_certificate(der.as_ref())
    }

    #[tokio::test]
    async fn a_job_gets_the_ca_files_content_when_tls_ca_file_is_set() {
        let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
        let url = https_gitlab(&pki, false).await;
        let dir = tempfile::tempdir().expect("tmp");
        let ca = write(dir.path(), "ca.pem", &pki.root_pem);
        let files = TlsFiles {
            ca_file: Some(ca),
            ..Default::default()
        };
        let c = client(&url, files, Vec::new());
        let RequestJobOutcome::Job(job) = request(&c).await else {
            panic!("no job over TLS with the CA file");
        };
        assert_eq!(job.tls_data.ca_chain, pki.root_pem);
        assert!(!job.tls_data.has_auth());
    }

    #[tokio::test]
    async fn without_a_ca_file_a_job_gets_the_chain_the_server_was_verified_through() {
        let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
        let url = https_gitlab(&pki, false).await;
        let root = CertificateDer::from_pem_slice(pki.root_pem.as_bytes()).expect("root");
        // The root is trusted through the system store; the server sends leaf + intermediate.
        let c = client(&url, TlsFiles::default(), vec![root]);
        assert_eq!(c.tls_data().ca_chain, "", "nothing verified yet");
        let RequestJobOutcome::Job(job) = request(&c).await else {
            panic!("no job over TLS with the root in the system store");
        };
        let want = [
            pem_of(&pki.server_cert_pem),
            pem_of(&pki.intermediate_pem),
            pem_of(&pki.root_pem),
        ]
        .join("\n");
        assert_eq!(job.tls_data.ca_chain, want);
    }

    #[tokio::test]
    async fn an_untrusted_server_gets_no_request_and_records_nothing() {
        let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
        let other = TestPki::new(&["127.0.0.1"]).expect("pki");
        let url = https_gitlab(&pki, false).await;
        let root = CertificateDer::from_pem_slice(other.root_pem.as_bytes()).expect("root");
        let c = client(&url, TlsFiles::default(), vec![root]);
        let outcome = request(&c).await;
        assert!(
            matches!(outcome, RequestJobOutcome::Failed(_)),
            "{outcome:?}"
        );
        assert_eq!(c.tls_data().ca_chain, "");
    }

    #[tokio::test]
    async fn a_server_demanding_a_client_certificate_gets_it_and_jobs_get_the_pair() {
        let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
        let url = https_gitlab(&pki, true).await;
        let dir = tempfile::tempdir().expect("tmp");
        let ca = write(dir.path(), "ca.pem", &pki.root_pem);
        let cert = write(dir.path(), "client.pem", &pki.client_cert_pem);
        let key = write(dir.path(), "client.key", &pki.client_key_pem);

        let without = client(
            &url,
            TlsFiles {
                ca_file: Some(ca.clone()),
                ..Default::default()
            },
            Vec::new(),
        );
        let outcome = request(&without).await;
        assert!(
            matches!(outcome, RequestJobOutcome::Failed(_)),
            "{outcome:?}"
        );

        let with = client(
            &url,
            TlsFiles {
                ca_file: Some(ca),
                cert_file: Some(cert),
                key_file: Some(key.clone()),
            },
            Vec::new(),
        );
        let RequestJobOutcome::Job(job) = request(&with).await else {
            panic!("no job with the client certificate");
        };
        assert_eq!(job.tls_data.auth_cert, pki.client_cert_pem);
        assert_eq!(job.tls_data.auth_key, pki.client_key_pem);
        assert!(!format!("{job:?}").contains(pki.client_key_pem.lines().nth(1).expect("line")));
        // Read when a job arrives (runner `loadTLSData`): a rotated key reaches the next job.
        std::fs::write(&key, "rotated").expect("rotate");
        assert_eq!(with.tls_data().auth_key, "rotated");
    }
}
