//! The TLS data a job carries (runner common/spec/spec.go `Job.TLSData`, not on the wire): what the client that
//! received the job hands it for the job's own TLS connections to GitLab (`CI_SERVER_TLS_CA_FILE`,
//! `_CERT_FILE`, `_KEY_FILE`). runwright-client fills it (its `tls.rs`); the engine turns it into files.

use std::fmt;

/// What a job gets to reach GitLab over TLS itself (runner common/spec/spec.go `TLSData`): the CA chain and,
/// when a client certificate is configured, its certificate and key, each as file content. `Debug` never shows
/// the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsData {
    /// PEM certificates: `tls-ca-file`'s content, else the chain the server was verified through (leaf first,
    /// root last). Empty over plain HTTP.
    pub ca_chain: String,
    /// PEM client certificate (`tls-cert-file`), empty unless both it and the key were read.
    pub auth_cert: String,
    /// PEM private key (`tls-key-file`): a secret.
    pub auth_key: String,
}

impl fmt::Debug for TlsData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsData")
            .field("ca_chain_bytes", &self.ca_chain.len())
            .field("auth_cert_bytes", &self.auth_cert.len())
            .field(
                "auth_key",
                &if self.auth_key.is_empty() {
                    ""
                } else {
                    "[REDACTED]"
                },
            )
            .finish()
    }
}

impl TlsData {
    /// Whether jobs get a client certificate (runner common/build.go `GetCITLSVariables`: both halves).
    pub fn has_auth(&self) -> bool {
        !self.auth_cert.is_empty() && !self.auth_key.is_empty()
    }

    /// Pieces of the key to mask in the trace: each line of its body. GitLab's runner does not mask the key
    /// file; its content reaches the trace with `CI_DEBUG_TRACE` (the script writing the file is traced) or a
    /// `cat`, so runwright masks it. Line by line, so a partial print is masked too; armour lines and short
    /// tails (a few bytes of a key) are left, as a masked phrase that short would mask unrelated output.
    pub fn secret_phrases(&self) -> Vec<String> {
        if !self.has_auth() {
            return Vec::new();
        }
        self.auth_key
            .lines()
            .map(str::trim)
            .filter(|l| l.len() >= 8 && !l.starts_with("-----"))
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key_and_phrases_cover_its_body() {
        let data = TlsData {
            ca_chain: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----".into(),
            auth_cert: "cert".into(),
            auth_key: "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH\nSECRETLINE2abc\nZw==\n-----END PRIVATE KEY-----\n".into(),
        };
        let shown = format!("{data:?}");
        assert!(!shown.contains("SECRETLINE2"), "{shown}");
        assert_eq!(
            data.secret_phrases(),
            ["MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEH", "SECRETLINE2abc"]
        );
        let no_cert = TlsData {
            auth_cert: String::new(),
            ..data
        };
        assert!(no_cert.secret_phrases().is_empty());
    }
}
