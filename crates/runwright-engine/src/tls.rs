//! TLS toward GitLab inside the job: the `CI_SERVER_TLS_*` file variables (runner common/build.go
//! `GetCITLSVariables`) and git's `http.<server>.sslCAInfo` / `sslCert` / `sslKey` pointing at those files
//! (runner shells/abstract.go `writeGitSSLConfig`), from what the client received the job with
//! ([`runwright_api::TlsData`]).

use crate::script::{shell_escape, ScriptWriter};
use crate::sources::SourcesSettings;
use runwright_api::types::{JobResponse, JobVariable};

pub const CA_FILE: &str = "CI_SERVER_TLS_CA_FILE";
pub const CERT_FILE: &str = "CI_SERVER_TLS_CERT_FILE";
pub const KEY_FILE: &str = "CI_SERVER_TLS_KEY_FILE";

/// The variables, in the runner's order, each only when it has content: the CA chain; the certificate and
/// key together. File variables, internal; the key is not public.
pub(crate) fn variables(job: &JobResponse) -> Vec<JobVariable> {
    let tls = &job.tls_data;
    let file = |key: &str, value: &str, public: bool| JobVariable {
        key: key.to_string(),
        value: value.to_string(),
        public,
        file: true,
        internal: true,
        ..Default::default()
    };
    let mut out = Vec::new();
    if !tls.ca_chain.is_empty() {
        out.push(file(CA_FILE, &tls.ca_chain, true));
    }
    if tls.has_auth() {
        out.push(file(CERT_FILE, &tls.auth_cert, true));
        out.push(file(KEY_FILE, &tls.auth_key, false));
    }
    out
}

/// The `http.<server>.ssl*` settings for the job's variables that exist, pointing at their files; `<server>` is
/// `scheme://host[:port]` of the remote (runner `getRemoteHost`, `OnlySchemeAndHost`).
fn ssl_settings(job: &JobResponse, s: &SourcesSettings) -> Vec<(String, &'static str)> {
    let Some(host) = s.auth.remote_host() else {
        return Vec::new();
    };
    variables(job)
        .iter()
        .map(|v| {
            let (setting, var) = match v.key.as_str() {
                CA_FILE => ("sslCAInfo", CA_FILE),
                CERT_FILE => ("sslCert", CERT_FILE),
                _ => ("sslKey", KEY_FILE),
            };
            (format!("http.{host}.{setting}"), var)
        })
        .collect()
}

/// Run after the external config is written and before the fetch: the settings go into that file, which
/// `.git/config` includes and the submodule commands get with `-c include.path` (`sources.rs`), so the fetch,
/// the submodules and the job's own git commands use the job's TLS files for its server.
///
/// As GitLab's runner does for jobs sharing the machine (shell executor: `setupExternalGitConfig` writes them
/// into the external config), for every executor here: runwright's docker executor fetches on the host, where
/// the runner's `git config --global` (meant for a throw-away helper container) would change the service
/// user's own git config. The file is in the job's temp dir, removed when the job ends, and git ignores an
/// include that is not there: nothing outlives the job.
pub(crate) fn write_git_ssl_config(w: &mut ScriptWriter, job: &JobResponse, s: &SourcesSettings) {
    let ext = format!("{}/{}", s.tmp_dir, crate::sources::EXT_GIT_CONFIG);
    for (key, var) in ssl_settings(job, s) {
        w.line(&format!(
            "git config -f {} {} \"${var}\"",
            shell_escape(&ext),
            shell_escape(&key)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{GitAuth, GitAuthInput, GitStrategy, SshServer, SubmoduleStrategy};
    use runwright_api::TlsData;

    fn job(tls: TlsData) -> JobResponse {
        JobResponse {
            tls_data: tls,
            ..Default::default()
        }
    }

    fn settings(remote: &str) -> SourcesSettings {
        let mut j = JobResponse {
            token: "tok".into(),
            ..Default::default()
        };
        j.git_info.repo_url = remote.into();
        SourcesSettings {
            strategy: GitStrategy::Fetch,
            submodules: Some(SubmoduleStrategy::None),
            checkout: true,
            clean_flags: Vec::new(),
            fetch_flags: Vec::new(),
            depth: 0,
            submodule_depth: 0,
            submodule_paths: Vec::new(),
            submodule_update_flags: Vec::new(),
            lfs_skip_smudge: false,
            without_lfs_objects: false,
            object_format: String::new(),
            auth: GitAuth::new(&GitAuthInput {
                job: &j,
                clone_url: None,
                credentials_url: remote,
                project_path: "grp/app",
                force_https: false,
                server: SshServer::default(),
            }),
            clean_git_config: false,
            safe_directory: false,
            bundle_uris: false,
            proactive_auth: false,
            user_agent: String::new(),
            project_dir: "/b/p".into(),
            tmp_dir: "/b/p.tmp".into(),
            job_tmp_dir: "/b/p.tmp".into(),
        }
    }

    #[test]
    fn variables_exist_only_with_content_and_the_key_is_not_public() {
        assert!(variables(&job(TlsData::default())).is_empty());
        let ca_only = variables(&job(TlsData {
            ca_chain: "CHAIN".into(),
            auth_cert: "CERT".into(),
            ..Default::default()
        }));
        assert_eq!(
            ca_only.len(),
            1,
            "a certificate without its key is not given"
        );
        let all = variables(&job(TlsData {
            ca_chain: "CHAIN".into(),
            auth_cert: "CERT".into(),
            auth_key: "KEY".into(),
        }));
        let keys: Vec<_> = all.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(keys, [CA_FILE, CERT_FILE, KEY_FILE]);
        assert!(all.iter().all(|v| v.file && v.internal && !v.masked));
        assert_eq!(
            all.iter().map(|v| v.public).collect::<Vec<_>>(),
            [true, true, false]
        );
    }

    #[test]
    fn git_settings_name_the_remotes_scheme_host_and_port() {
        let tls = TlsData {
            ca_chain: "CHAIN".into(),
            auth_cert: "CERT".into(),
            auth_key: "KEY".into(),
        };
        let s = settings("https://gitlab-ci-token:tok@gitlab.example.com:8443/grp/app.git");
        let mut w = ScriptWriter::new();
        write_git_ssl_config(&mut w, &job(tls.clone()), &s);
        let mut w2 = ScriptWriter::new();
        w2.line("git config -f /b/p.tmp/.gitlab-runner.ext.conf http.https://gitlab.example.com:8443.sslCAInfo \"$CI_SERVER_TLS_CA_FILE\"");
        w2.line("git config -f /b/p.tmp/.gitlab-runner.ext.conf http.https://gitlab.example.com:8443.sslCert \"$CI_SERVER_TLS_CERT_FILE\"");
        w2.line("git config -f /b/p.tmp/.gitlab-runner.ext.conf http.https://gitlab.example.com:8443.sslKey \"$CI_SERVER_TLS_KEY_FILE\"");
        assert_eq!(w.finish("bash", false), w2.finish("bash", false));

        let mut none = ScriptWriter::new();
        write_git_ssl_config(&mut none, &job(TlsData::default()), &s);
        assert!(none.is_empty());
    }
}
