//! Test support (feature `testing`): a private PKI made on the fly, for tests of TLS toward GitLab in this
//! crate, the coordinator's HTTPS mode and the binary's end-to-end tests.
//!
//! A root CA signs an intermediate CA, which signs the server's certificate (so a server presents leaf +
//! intermediate, as public CAs do); the root also signs a client certificate for servers that demand one.
//! Keys are ECDSA P-256; certificates are valid from a day ago for a week.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM texts of a private PKI.
#[derive(Clone)]
pub struct TestPki {
    /// The root CA certificate: what a runner's `tls-ca-file` holds.
    pub root_pem: String,
    /// The intermediate CA certificate that signed the server's.
    pub intermediate_pem: String,
    /// The server's certificate alone.
    pub server_cert_pem: String,
    /// The server's private key (PKCS#8).
    pub server_key_pem: String,
    /// A client certificate signed by the root (`tls-cert-file`).
    pub client_cert_pem: String,
    /// Its private key (`tls-key-file`).
    pub client_key_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

fn params(names: &[&str], common_name: &str, ca: bool) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "runwright tests");
    p.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(7);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    Ok(p)
}

impl TestPki {
    /// A PKI whose server certificate is valid for `server_names` (DNS names or IP addresses, e.g.
    /// `127.0.0.1`).
    pub fn new(server_names: &[&str]) -> Result<TestPki, String> {
        Self::build(server_names).map_err(|e| format!("making the test PKI: {e}"))
    }

    fn build(server_names: &[&str]) -> Result<TestPki, rcgen::Error> {
        let root = CertifiedIssuer::self_signed(
            params(&[], "runwright test root CA", true)?,
            KeyPair::generate()?,
        )?;
        let intermediate = CertifiedIssuer::signed_by(
            params(&[], "runwright test intermediate CA", true)?,
            KeyPair::generate()?,
            &root,
        )?;
        let server_key = KeyPair::generate()?;
        let mut server = params(server_names, "runwright test server", false)?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &intermediate)?;
        let client_key = KeyPair::generate()?;
        let mut client = params(&[], "runwright test runner", false)?;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &root)?;
        Ok(TestPki {
            root_pem: root.pem(),
            intermediate_pem: intermediate.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }

    /// What the server presents: its certificate, then the intermediate.
    pub fn server_chain_pem(&self) -> String {
        format!("{}{}", self.server_cert_pem, self.intermediate_pem)
    }
}
