//! How the binary ends (issue 18 item 4): exit 0 on success, 1 when a job or pipeline failed, 2 for a usage or
//! configuration error, the verbs gitlab-runner's scripts call keep its codes; every error rendered once as
//! `error:` with `hint:` lines; a closed stdout is not an error.

use crate::harness::*;
use std::process::{Output, Stdio};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `runwright args…` in `dir`.
fn run_in(h: &Harness, dir: &std::path::Path, args: &[&str]) -> Output {
    h.command()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runwright runs")
}

#[tokio::test]
async fn a_missing_or_broken_config_is_a_configuration_error_with_a_hint() {
    let h = Harness::new().await;
    let missing = h.path().join("nowhere/config.toml");
    let missing = missing.to_str().expect("utf-8 path");
    let o = run_in(&h, h.path(), &["cache", "list", "-c", missing]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err,
        format!("error: {missing}: config file not found\nhint: give its path with -c/--config\n")
    );

    // A config that does not parse: the same class, for every runwright verb that reads it.
    h.write_config("concurrent = \"two\"\n");
    let config = h.config_path.to_str().expect("utf-8 path");
    for args in [
        &["config", "check", "-c", config][..],
        &["history", "-c", config],
        &["cache", "list", "-c", config],
    ] {
        let o = run_in(&h, h.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("config.toml:1:14: concurrent"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn gitlab_runner_verbs_keep_its_exit_code_1() {
    let h = Harness::new().await;
    let missing = h.path().join("nowhere/config.toml");
    let missing = missing.to_str().expect("utf-8 path");
    // gitlab-runner ends these with logrus.Fatal: exit 1, whatever the cause; the hint is printed all the same.
    for args in [
        &["verify", "-c", missing][..],
        &["unregister", "-c", missing, "--all-runners"],
        &["reset-token", "-c", missing, "--all-runners"],
    ] {
        let verb = args[0];
        let o = run_in(&h, h.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{verb}: {err}");
        if err.contains("config file not found") {
            assert!(
                err.contains("\nhint: give its path with -c/--config\n"),
                "{verb}: {err}"
            );
        }
    }
    h.write_config("concurrent = \"two\"\n");
    let config = h.config_path.to_str().expect("utf-8 path");
    let o = run_in(&h, h.path(), &["list", "-c", config]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/usage",
        &[(".gitlab-ci.yml", "build:\n  script: [echo hi]\n")],
    );
    let dir = h.path().join("src/grp/usage");
    for args in [
        // clap's own.
        &["exec", "--view", "sideways"][..],
        &["no-such-verb"],
        // Values clap cannot check.
        &["exec", "-j", "0"],
        &["exec", "--variable", "NO_EQUALS_SIGN"],
        &["exec", "--pipeline-source", "nightly"],
        &["exec", "--list", "no-such-job"],
        &["volumes", "prune"],
    ] {
        let o = run_in(&h, &dir, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    let journal = h.path().join("journal");
    std::fs::create_dir_all(journal.join("jobs")).expect("journal dir");
    let journal = journal.to_str().expect("utf-8 path");
    let o = run_in(
        &h,
        &dir,
        &["history", "--journal", journal, "--since", "yesterday"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--since \"yesterday\": expected a duration"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_pipeline_exits_1_and_an_invalid_one_2() {
    let h = Harness::new().await;
    h.make_repo(
        "grp/fails",
        &[(".gitlab-ci.yml", "boom:\n  script: [exit 3]\n")],
    );
    let dir = h.path().join("src/grp/fails");
    let o = run_in(&h, &dir, &["exec", "--executor", "shell"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    assert!(out.contains("pipeline failed"), "{out}");
    assert!(
        !stderr(&o).contains("error:"),
        "a failed job is no error of runwright's: {}",
        stderr(&o)
    );

    std::fs::write(dir.join(".gitlab-ci.yml"), "boom:\n  scirpt: [exit 3]\n").expect("ci file");
    let o = run_in(&h, &dir, &["exec", "--executor", "shell"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: invalid CI configuration: "),
        "{err}"
    );
}

/// Runs `runwright args…` with its stdout a pipe whose reading end is already closed: what `| head` leaves
/// behind once it has its lines.
fn with_closed_stdout(h: &Harness, dir: &std::path::Path, args: &[&str]) -> Output {
    let mut child = h
        .command()
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runwright starts");
    drop(child.stdout.take());
    child.wait_with_output().expect("runwright ends")
}

#[tokio::test]
async fn a_closed_stdout_ends_quietly_with_0() {
    let h = Harness::new().await;
    // Enough output that no pipe buffer could take it all before the reader is gone.
    let jobs: String = (0..2000)
        .map(|i| format!("job-{i}:\n  script: [echo {i}]\n"))
        .collect();
    h.make_repo("grp/long", &[(".gitlab-ci.yml", &jobs)]);
    let dir = h.path().join("src/grp/long");
    let journal = h.path().join("journal");
    std::fs::create_dir_all(journal.join("jobs")).expect("journal dir");
    let journal = journal.to_str().expect("utf-8 path");
    for args in [
        &["lint"][..],
        &["exec", "--list"],
        &["history", "--journal", journal, "--json"],
    ] {
        let o = with_closed_stdout(&h, &dir, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("error") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
