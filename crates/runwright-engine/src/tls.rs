//! TLS toward GitLab inside the job: the `CI_SERVER_TLS_*` file variables (runner common/build.go
//! `GetCITLSVariables`) and git's `http.<server>.sslCAInfo` / `sslCert` / `sslKey` pointing at those files
//! (runner shells/abstract.go `writeGitSSLConfig`), from what the client received the job with
//! ([`runwright_client::TlsData`]).

use crate::script::{shell_escape, ScriptWriter};
use crate::sources::SourcesSettings;
use runwright_client::types::{JobResponse, JobVariable};

pub const CA_FILE: &str = "CI_SERVER_TLS_CA_FILE";
pub const CERT_FILE: &str = "CI_SERVER_TLS_CERT_FILE";
pub const KEY_FILE: &str = "CI_SERVER_TLS_KEY_FILE";

/// Git's external config for the repository, in the job's temp dir (runner shells/abstract.go
/// `externalGitConfigFile`), included from `.git/config`.
const EXTERNAL_GIT_CONFIG: &str = ".gitlab-runner.ext.conf";

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

/// `scheme://host[:port]` of the repository's remote (runner `getRemoteHost`, `OnlySchemeAndHost`): the URL
/// git matches `http.<url>.*` settings against.
fn remote_host(remote_url: &str) -> Option<String> {
    let url = url::Url::parse(remote_url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// The `http.<server>.ssl*` settings for the job's variables that exist, pointing at their files.
fn ssl_settings(job: &JobResponse, remote_url: &str) -> Vec<(String, &'static str)> {
    let Some(host) = remote_host(remote_url) else {
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

fn external_config(s: &SourcesSettings) -> String {
    format!("{}/{EXTERNAL_GIT_CONFIG}", s.tmp_dir)
}

/// Run in the project directory after `git init`, before the fetch: the repository's git uses the job's TLS
/// files for its server, for the fetch and for the job's own git commands later.
///
/// As GitLab's runner does for jobs sharing the machine (shell executor: `setupExternalGitConfig` writes them
/// into the external config that `.git/config` includes), for every executor here: runwright's docker
/// executor fetches on the host, where the runner's `git config --global` (meant for a throw-away helper
/// container) would change the service user's own git config. The include names a file of the job's temp
/// dir, removed when the job ends (`cleanup_file_variables`) and absent inside a build container, and git
/// ignores an include that is not there: nothing outlives the job, and a build container's git runs without
/// these settings, as with GitLab's runner.
pub(crate) fn write_git_ssl_config(w: &mut ScriptWriter, job: &JobResponse, s: &SourcesSettings) {
    let settings = ssl_settings(job, &s.remote_url);
    if settings.is_empty() {
        return;
    }
    let ext = external_config(s);
    for (key, var) in &settings {
        w.line(&format!(
            "git config -f {} {} \"${var}\"",
            shell_escape(&ext),
            shell_escape(key)
        ));
    }
    // runner `setupExistingRepoConfig`/`includeExternalGitConfig`: one include of the file, whatever earlier
    // jobs left.
    w.line(&format!(
        "git config --file .git/config --replace-all include.path {} {}",
        shell_escape(&ext),
        shell_escape(&format!("{}$", EXTERNAL_GIT_CONFIG.replace('.', "\\.")))
    ));
}

/// `-c include.path=<external config>` for the submodule commands, which do not read the superproject's
/// config (runner `writeSubmoduleUpdateCmd`, `withExplicitSubmoduleCreds`); empty without TLS settings.
pub(crate) fn submodule_config_args(job: &JobResponse, s: &SourcesSettings) -> String {
    if ssl_settings(job, &s.remote_url).is_empty() {
        return String::new();
    }
    format!(
        " -c {}",
        shell_escape(&format!("include.path={}", external_config(s)))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{GitStrategy, SubmoduleStrategy};
    use runwright_client::TlsData;

    fn job(tls: TlsData) -> JobResponse {
        JobResponse {
            tls_data: tls,
            ..Default::default()
        }
    }

    fn settings(remote: &str) -> SourcesSettings {
        SourcesSettings {
            strategy: GitStrategy::Fetch,
            submodules: SubmoduleStrategy::None,
            checkout: true,
            clean_flags: None,
            fetch_flags: String::new(),
            depth: 0,
            submodule_depth: None,
            submodule_paths: String::new(),
            submodule_update_flags: String::new(),
            remote_url: remote.into(),
            project_dir: "/b/p".into(),
            tmp_dir: "/b/p.tmp".into(),
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
        w2.line("git config --file .git/config --replace-all include.path /b/p.tmp/.gitlab-runner.ext.conf '\\.gitlab-runner\\.ext\\.conf$'");
        assert_eq!(w.finish("bash", false), w2.finish("bash", false));
        assert_eq!(
            submodule_config_args(&job(tls), &s),
            " -c include.path=/b/p.tmp/.gitlab-runner.ext.conf"
        );

        let mut none = ScriptWriter::new();
        write_git_ssl_config(&mut none, &job(TlsData::default()), &s);
        assert!(none.is_empty());
        assert_eq!(submodule_config_args(&job(TlsData::default()), &s), "");
        assert_eq!(
            remote_host("https://gitlab.example.com/g/a.git").as_deref(),
            Some("https://gitlab.example.com")
        );
    }
}
