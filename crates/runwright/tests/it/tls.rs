//! TLS toward a private GitLab: the coordinator on HTTPS with a private CA (server chain: leaf + intermediate),
//! once demanding a client certificate; jobs get `CI_SERVER_TLS_*` and their git fetches with them.

use crate::harness::*;
use runwright_client::testing::TestPki;
use runwright_coordinator::{CoordinatorTls, JobSpec, ProjectSpec};
use std::path::PathBuf;
use std::process::Command;

/// A harness whose coordinator serves HTTPS with `pki`'s server chain; with `demand_client_cert`, only to
/// clients with a certificate `pki`'s root signed.
async fn https_harness(pki: &TestPki, demand_client_cert: bool) -> Harness {
    Harness::with_options(|o| {
        o.tls = Some(CoordinatorTls {
            cert_chain_pem: pki.server_chain_pem(),
            key_pem: pki.server_key_pem.clone(),
            client_ca_pem: demand_client_cert.then(|| pki.root_pem.clone()),
        })
    })
    .await
}

fn write(h: &Harness, name: &str, text: &str) -> PathBuf {
    let p = h.path().join(name);
    std::fs::write(&p, text).expect("write");
    p
}

/// The service's environment without this machine's CA settings: `GIT_SSL_CAINFO` would override the
/// `http.<server>.sslCAInfo` the job's git gets (and git's default trust is then what the test expects);
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` name the system store, set only where a test means it.
fn machine_neutral(cmd: &mut Command) {
    for var in [
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CURL_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
}

fn git_job(name: &str, sha: &str, script: &[&str]) -> JobSpec {
    JobSpec {
        name: name.into(),
        script: script.iter().map(|s| s.to_string()).collect(),
        project: ProjectSpec::new(7, "grp/app"),
        sha: sha.into(),
        ..Default::default()
    }
}

/// PEM blocks as the runner joins a chain (runner helpers/tls/ca_chain/builder.go: newline-separated, no
/// trailing newline).
fn chain(pems: &[&str]) -> String {
    pems.iter()
        .map(|p| p.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_shell_job_fetches_from_a_private_ca_and_gets_the_ca_file() {
    let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
    let mut h = https_harness(&pki, false).await;
    let ca = write(&h, "ca.pem", &pki.root_pem);
    h.single_runner("", &format!("  tls-ca-file = \"{}\"", ca.display()));
    let sha = h.make_repo("grp/app", &[("README.md", "fetched over https\n")]);
    h.start_with(machine_neutral);
    let server = h.coordinator.url().trim_end_matches('/').to_string();
    let id = h.coordinator.enqueue(git_job(
        "private-ca",
        &sha,
        &[
            "cat README.md",
            &format!(
                "cmp \"$CI_SERVER_TLS_CA_FILE\" {} && echo ca-file-is-tls-ca-file",
                ca.display()
            ),
            "test -z \"$CI_SERVER_TLS_CERT_FILE$CI_SERVER_TLS_KEY_FILE\" && echo no-client-cert",
            &format!("git config --get http.{server}.sslCAInfo"),
            // The job's own git reaches the server too, as the runner leaves the repository.
            "git fetch -q origin && echo own-fetch-ok",
        ],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("fetched over https\n"), "{t}");
    assert!(t.contains("ca-file-is-tls-ca-file\n"), "{t}");
    assert!(t.contains("no-client-cert\n"), "{t}");
    assert!(t.contains("/CI_SERVER_TLS_CA_FILE\n"), "{t}");
    assert!(t.contains("own-fetch-ok\n"), "{t}");
}

#[tokio::test]
async fn without_tls_ca_file_the_job_gets_the_chain_the_server_was_verified_through() {
    let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
    let mut h = https_harness(&pki, false).await;
    // The root is trusted through the system store (Go's SystemCertPool and runwright both read
    // SSL_CERT_FILE); the server presents leaf + intermediate.
    let system_store = write(&h, "system-roots.pem", &pki.root_pem);
    let expected = write(
        &h,
        "expected-chain.pem",
        &chain(&[&pki.server_cert_pem, &pki.intermediate_pem, &pki.root_pem]),
    );
    h.single_runner("", "");
    let sha = h.make_repo("grp/app", &[("README.md", "verified chain\n")]);
    h.start_with(|cmd| {
        machine_neutral(cmd);
        cmd.env("SSL_CERT_FILE", &system_store);
    });
    let id = h.coordinator.enqueue(git_job(
        "verified-chain",
        &sha,
        &[
            "cat README.md",
            &format!(
                "cmp \"$CI_SERVER_TLS_CA_FILE\" {} && echo ca-file-is-the-verified-chain",
                expected.display()
            ),
        ],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("verified chain\n"), "{t}");
    assert!(t.contains("ca-file-is-the-verified-chain\n"), "{t}");
}

#[tokio::test]
async fn a_server_demanding_a_client_certificate_gets_it_from_the_runner_and_from_git() {
    let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
    let mut h = https_harness(&pki, true).await;
    let ca = write(&h, "ca.pem", &pki.root_pem);
    let cert = write(&h, "client.pem", &pki.client_cert_pem);
    let key = write(&h, "client.key", &pki.client_key_pem);
    h.single_runner(
        "",
        &format!(
            "  tls-ca-file = \"{}\"\n  tls-cert-file = \"{}\"\n  tls-key-file = \"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let sha = h.make_repo("grp/app", &[("README.md", "mutual tls\n")]);
    h.start_with(machine_neutral);
    let id = h.coordinator.enqueue(
        git_job(
            "mtls",
            &sha,
            &[
                "cat README.md",
                &format!(
                    "cmp \"$CI_SERVER_TLS_CERT_FILE\" {} && echo cert-file-ok",
                    cert.display()
                ),
                &format!(
                    "cmp \"$CI_SERVER_TLS_KEY_FILE\" {} && echo key-file-ok",
                    key.display()
                ),
                // The key's content never reaches the trace, not even printed on purpose.
                "cat \"$CI_SERVER_TLS_KEY_FILE\"",
            ],
        )
        .with_variable("GIT_STRATEGY", "clone")
        .with_variable("CI_DEBUG_TRACE", "true"),
    );
    // Job request, fetch, trace patches and final update all went through the mutual TLS.
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("mutual tls\n"), "{t}");
    assert!(
        t.contains("cert-file-ok\n") && t.contains("key-file-ok\n"),
        "{t}"
    );
    for line in pki
        .client_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 8)
    {
        assert!(!t.contains(line), "key material in the trace: {t}");
        assert!(!h.log().contains(line), "key material in the service log");
    }
    assert!(t.contains("[MASKED]"), "{t}");
}

#[tokio::test]
async fn a_docker_job_gets_the_tls_files_in_its_container_and_its_sources_over_https() {
    if !crate::docker::docker_ready(&[crate::docker::BUSYBOX]) {
        return;
    }
    // git runs in the job's helper container: the coordinator listens where containers reach it, and its
    // certificate names that address too.
    let gateway = reach_address()
        .await
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let pki = TestPki::new(&["127.0.0.1", gateway.as_str()]).expect("pki");
    let mut h = Harness::docker_with_options(|o| {
        o.tls = Some(CoordinatorTls {
            cert_chain_pem: pki.server_chain_pem(),
            key_pem: pki.server_key_pem.clone(),
            client_ca_pem: Some(pki.root_pem.clone()),
        })
    })
    .await;
    let ca = write(&h, "ca.pem", &pki.root_pem);
    let cert = write(&h, "client.pem", &pki.client_cert_pem);
    let key = write(&h, "client.key", &pki.client_key_pem);
    let token = h.docker_runner(
        &format!(
            "  tls-ca-file = \"{}\"\n  tls-cert-file = \"{}\"\n  tls-key-file = \"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        ),
        "",
    );
    let sha = h.make_repo("grp/app", &[("README.md", "docker over https\n")]);
    h.start_with(machine_neutral);
    let expected_ca = pki
        .root_pem
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let id = h.coordinator.enqueue(git_job(
        "docker-tls",
        &sha,
        &[
            "cat README.md",
            "tail -n 1 \"$CI_SERVER_TLS_CA_FILE\"",
            "grep -c BEGIN \"$CI_SERVER_TLS_CERT_FILE\" \"$CI_SERVER_TLS_KEY_FILE\"",
            "echo \"in $(dirname \"$CI_SERVER_TLS_CA_FILE\")\"",
        ],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("docker over https\n"), "{t}");
    assert!(t.contains(&format!("{expected_ca}\n")), "{t}");
    assert!(t.contains("CI_SERVER_TLS_CERT_FILE:1\n"), "{t}");
    assert!(t.contains("CI_SERVER_TLS_KEY_FILE:1\n"), "{t}");
    assert!(t.contains("in /builds/grp/app.tmp\n"), "{t}");
    assert_eq!(crate::docker::leftovers(&token, id), Vec::<String>::new());
}

#[tokio::test]
async fn submodules_on_the_same_server_are_fetched_with_the_client_certificate() {
    let pki = TestPki::new(&["127.0.0.1"]).expect("pki");
    let mut h = https_harness(&pki, true).await;
    let ca = write(&h, "ca.pem", &pki.root_pem);
    let cert = write(&h, "client.pem", &pki.client_cert_pem);
    let key = write(&h, "client.key", &pki.client_key_pem);
    h.single_runner(
        "",
        &format!(
            "  tls-ca-file = \"{}\"\n  tls-cert-file = \"{}\"\n  tls-key-file = \"{}\"",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    h.make_repo("grp/lib", &[("lib.txt", "library over tls\n")]);
    h.make_repo("grp/app", &[("app.txt", "app\n")]);
    // Added from the bare repository on disk, then pointed at the URL relative to the job's remote.
    let app_src = h.path().join("src/grp/app");
    let lib_url = h
        .path()
        .join("git/grp/lib.git")
        .to_string_lossy()
        .to_string();
    h.git(
        &app_src,
        &[
            "-c",
            "protocol.allow=always",
            "submodule",
            "add",
            "-q",
            &lib_url,
            "lib",
        ],
    );
    h.git(
        &app_src,
        &[
            "config",
            "-f",
            ".gitmodules",
            "submodule.lib.url",
            "../lib.git",
        ],
    );
    let sha = h.commit("grp/app", &[], "add lib");
    h.start_with(machine_neutral);
    let mut spec = git_job("submodule", &sha, &["cat lib/lib.txt"])
        .with_variable("GIT_SUBMODULE_STRATEGY", "normal");
    spec.project.token_access = vec!["grp/lib".into()];
    let job = h.final_job(h.coordinator.enqueue(spec)).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("library over tls\n"), "{t}");
}
