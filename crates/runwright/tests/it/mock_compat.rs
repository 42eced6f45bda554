//! The real `runwright` binary against `gitlab-runner-mock` (collabora/gitlab-runner-rs on crates.io): a GitLab
//! fake that runwright did not write, so its idea of the runner API is a second opinion on ours.
//!
//! What the mock checks on every call (and what these tests therefore check of runwright):
//! * jobs/request: the body decodes as `{token, system_id, info}`, `system_id` is `s_`/`r_` + 12 characters,
//!   `info.version/revision/platform/architecture` equal the expectations set in [`mock`], and
//!   `info.features.refspecs` is true (otherwise it never hands out a job);
//! * PUT /jobs/:id: the body decodes, its `token` is the job's, and only `running → running|success|failed`
//!   is accepted (403 with `Job-Status` once the job is no longer running, as GitLab does);
//! * PATCH /jobs/:id/trace: `JOB-TOKEN` and `Content-Type` present, `Content-Range: <start>-<end inclusive>`
//!   with `start` = stored length and `end = start + len - 1`.
//!
//! A failed check inside the mock panics in its responder, which drops the connection: runwright then never
//! gets its job or never finishes it, so every wait below names the state, the log and the service log.
//!
//! Deviations of the mock from GitLab, worked around here:
//! * it records neither `exit_code` nor `failure_reason` nor the checksum of the final update, so the exit
//!   status is only checked through the trace line `ERROR: Job failed: exit status N`, and the checksum and
//!   byte size through runwright's own log of the final update ([`assert_final_checksum`]);
//! * it hands out jobs only to runners that advertise `features.refspecs` (GitLab requires it only for
//!   merge-request refs, protocol.md §2.4); runwright advertises it, so nothing to do;
//! * its `cancel()` is GitLab's hard cancel (`canceled`): it has no `canceling` state although runwright
//!   advertises `cancel_gracefully` (GitLab would go through `canceling` and let after_script run, protocol.md
//!   §7.8); and it refuses every PATCH after the cancel, so the trace ends where the cancel found it.
//! * it ships its own masked default variables (`CI_JOB_TOKEN=tokn`, `CI_REGISTRY_PASSWORD=token`, ...), so
//!   every "token"/"tokn" in a trace turns into `[MASKED]`: the scripts below avoid these words.
//! * it reads `artifact_type`/`artifact_format` of an upload only from multipart fields, where GitLab's runner
//!   (and runwright) put them in the query string (protocol.md §5.1): uploads therefore arrive with no type,
//!   and its download endpoint, which serves only `archive` uploads, answers 404 for them — the artifact test
//!   below checks the upload side only;
//! * its `X-GitLab-Trace-Update-Interval` is 3 s (GitLab says 60 s, or 3 s while someone watches the log); the
//!   tests set 1 s to keep cancel detection quick.

use crate::harness::*;
use gitlab_runner_mock::{
    GitlabRunnerMock, MockJob, MockJobState, MockJobStepName, MockJobStepWhen,
};
use std::time::{Duration, Instant};

const CYAN: &str = "\x1b[36;1m";
const GREEN: &str = "\x1b[32;1m";
const RED: &str = "\x1b[31;1m";
const RESET: &str = "\x1b[0;m";

/// Go's GOARCH spelling of this machine, which runwright reports as `info.architecture`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A mock that insists on the metadata runwright must send.
async fn mock() -> GitlabRunnerMock {
    let m = GitlabRunnerMock::start().await;
    m.set_expected_metadata_version(env!("CARGO_PKG_VERSION"));
    m.set_expected_metadata_revision(runwright_service::identity::REVISION);
    m.set_expected_metadata_platform(std::env::consts::OS);
    m.set_expected_metadata_architecture(go_arch());
    m.set_update_interval(1);
    m
}

/// A harness whose `runwright run` polls the mock (the harness's own coordinator stays unused).
async fn start_against(m: &GitlabRunnerMock, concurrent: u32) -> Harness {
    let mut h = Harness::new().await;
    h.write_config(&format!(
        "concurrent = {concurrent}\ncheck_interval = 1\n\n[[runners]]\n  name = \"mock-runner\"\n  url = \"{}\"\n  token = \"{}\"\n  executor = \"shell\"\n",
        m.uri(),
        m.runner_token()
    ));
    h.start();
    h
}

/// Enqueues a job with `script` (and an `after_script` when not empty); `GIT_STRATEGY=none` because the mock
/// serves no repository.
fn enqueue(
    m: &GitlabRunnerMock,
    name: &str,
    script: &[&str],
    after_script: &[&str],
    vars: &[(&str, &str, bool)],
) -> MockJob {
    let mut b = m.job_builder(name.to_string());
    b.add_variable("GIT_STRATEGY".into(), "none".into(), true, false);
    for (key, value, masked) in vars {
        b.add_variable(key.to_string(), value.to_string(), !masked, *masked);
    }
    let lines = |s: &[&str]| s.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    b.add_step(
        MockJobStepName::Script,
        lines(script),
        3600,
        MockJobStepWhen::OnSuccess,
        false,
    );
    if !after_script.is_empty() {
        b.add_step(
            MockJobStepName::AfterScript,
            lines(after_script),
            3600,
            MockJobStepWhen::Always,
            true,
        );
    }
    let job = b.build();
    m.enqueue_job(job.clone());
    job
}

/// The job's log as GitLab's viewer reads it (the `FF_TIMESTAMPS` headers dropped).
fn log_of(job: &MockJob) -> String {
    plain_trace(&job.log())
}

/// IEEE CRC32, GitLab's trace checksum (`crc32:%08x`).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The mock keeps neither the checksum nor the byte size of the final update: take them from runwright's own
/// log line (`Updating job... job=<id> state=<final> checksum="crc32:…" bytesize=<n>`) and hold them against
/// the bytes the mock stored, so the trace arrived byte-exact.
fn assert_final_checksum(h: &Harness, job: &MockJob, state: &str) {
    let service_log = h.log();
    let line = service_log
        .lines()
        .find(|l| {
            l.contains("Updating job...")
                && l.contains(&format!(" job={} ", job.id()))
                && l.contains(&format!(" state={state} "))
        })
        .unwrap_or_else(|| panic!("no final update of job {} in:\n{service_log}", job.id()));
    let field = |key: &str| -> String {
        let rest = &line[line
            .find(key)
            .unwrap_or_else(|| panic!("{key} missing: {line}"))
            + key.len()..];
        rest.split(|c: char| c == '"' || c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let stored = job.log();
    assert_eq!(
        field("checksum=\"crc32:"),
        format!("{:08x}", crc32(&stored)),
        "{line}"
    );
    assert_eq!(field("bytesize="), stored.len().to_string(), "{line}");
}

/// Waits until `done(job)` holds; panics after [`WAIT`] with the job's state, its log and the service log.
async fn wait_for(h: &Harness, job: &MockJob, what: &str, done: impl Fn(&MockJob) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(job) {
        // A job still `Pending` usually means the mock refused runwright's job request: its responder
        // panics (printed above) when a check fails, and runwright only sees the connection drop.
        assert!(
            Instant::now() < deadline,
            "job {} never {what}: state {:?}, {} patches, log:\n{}\nservice log:\n{}",
            job.id(),
            job.state(),
            job.log_patches(),
            log_of(job),
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the final update (`success` or `failed`) and returns the job's log.
async fn finished(h: &Harness, job: &MockJob) -> String {
    wait_for(h, job, "finished", MockJob::finished).await;
    log_of(job)
}

#[tokio::test]
async fn mock_successful_multi_command_job() {
    let m = mock().await;
    let h = start_against(&m, 1).await;
    let job = enqueue(
        &m,
        "hello",
        &[
            "echo first-line",
            "echo second-line",
            "echo job-id=$CI_JOB_ID",
        ],
        &[],
        &[],
    );
    let log = finished(&h, &job).await;
    assert_eq!(job.state(), MockJobState::Success, "{log}\n{}", h.log());
    assert!(
        log.starts_with(&format!(
            "{CYAN}Running with runwright {} (",
            env!("CARGO_PKG_VERSION")
        )),
        "{log}"
    );
    let commands = format!(
        "{GREEN}$ echo first-line{RESET}\nfirst-line\n\
         {GREEN}$ echo second-line{RESET}\nsecond-line\n\
         {GREEN}$ echo job-id=$CI_JOB_ID{RESET}\njob-id={}\n\
         section_end:",
        job.id()
    );
    assert!(log.contains(&commands), "missing {commands:?} in:\n{log}");
    assert!(log.contains(":step_script\r\x1b[0K"), "{log}");
    assert!(
        log.ends_with(&format!("{GREEN}Job succeeded{RESET}\n")),
        "{log}"
    );
    assert!(job.log_patches() >= 1);
    assert_final_checksum(&h, &job, "success");
    // The mock counts state changes: taken by the request, the two-phase-commit `running` acknowledgment, the
    // final `success` — one each, no repeated final update.
    assert_eq!(job.state_updates(), 3, "{}", h.log());
}

#[tokio::test]
async fn mock_failing_job_reports_failed_with_exit_status() {
    let m = mock().await;
    let h = start_against(&m, 1).await;
    let job = enqueue(
        &m,
        "fails",
        &["echo before", "exit 3", "echo never-printed"],
        &[],
        &[],
    );
    let log = finished(&h, &job).await;
    assert_eq!(job.state(), MockJobState::Failed, "{log}");
    assert!(log.contains("\nbefore\n"), "{log}");
    assert!(!log.contains("never-printed\n"), "{log}");
    assert!(
        log.contains(&format!("{GREEN}$ exit 3{RESET}\nsection_end:")),
        "{log}"
    );
    assert!(
        log.ends_with(&format!("{RED}ERROR: Job failed: exit status 3{RESET}\n")),
        "{log}"
    );
    assert!(!log.contains("Job succeeded"), "{log}");
    assert_final_checksum(&h, &job, "failed");
}

#[tokio::test]
async fn mock_after_script_sees_ci_job_status() {
    let m = mock().await;
    let h = start_against(&m, 1).await;
    let after = ["echo after status=$CI_JOB_STATUS"];
    let ok = enqueue(&m, "ok", &["true"], &after, &[]);
    let bad = enqueue(&m, "bad", &["false"], &after, &[]);
    let ok_log = finished(&h, &ok).await;
    let bad_log = finished(&h, &bad).await;
    assert_eq!(ok.state(), MockJobState::Success, "{ok_log}");
    let echoed = |status: &str| {
        format!("{GREEN}$ echo after status=$CI_JOB_STATUS{RESET}\nafter status={status}\n")
    };
    assert!(ok_log.contains("Running after script..."), "{ok_log}");
    assert!(ok_log.contains(&echoed("success")), "{ok_log}");
    assert!(
        ok_log.ends_with(&format!("{GREEN}Job succeeded{RESET}\n")),
        "{ok_log}"
    );
    assert_eq!(bad.state(), MockJobState::Failed, "{bad_log}");
    assert!(bad_log.contains("Running after script..."), "{bad_log}");
    assert!(bad_log.contains(&echoed("failed")), "{bad_log}");
    assert!(
        bad_log.ends_with(&format!("{RED}ERROR: Job failed: exit status 1{RESET}\n")),
        "{bad_log}"
    );
}

#[tokio::test]
async fn mock_masked_variable_never_reaches_the_log() {
    const SECRET: &str = "Sup3r-s3cret-v4lue-xyz";
    let m = mock().await;
    let h = start_against(&m, 1).await;
    let job = enqueue(
        &m,
        "secret",
        &[
            "echo \"whole: $MY_SECRET\"",
            // Split across two writes with a pause longer than the patch interval.
            "printf 'split %s' \"${MY_SECRET:0:9}\"; sleep 1.5; printf '%s end\\n' \"${MY_SECRET:9}\"",
            "echo \"length: ${#MY_SECRET}\"",
            // The mock's job token is `job-token-<id>` (its CI_JOB_TOKEN variable says `tokn`, unlike GitLab,
            // where both are the same): runwright masks the job token whether or not a variable carries it.
            "echo \"jt: job-token-$CI_JOB_ID\"",
            // One of the mock's own masked default variables.
            "echo \"registry: $CI_REGISTRY_PASSWORD\"",
        ],
        &[],
        &[("MY_SECRET", SECRET, true)],
    );
    let log = finished(&h, &job).await;
    assert_eq!(job.state(), MockJobState::Success, "{log}");
    assert!(!log.contains(SECRET), "secret leaked:\n{log}");
    assert!(!log.contains(&SECRET[..9]), "first half leaked:\n{log}");
    assert!(log.contains("\nwhole: [MASKED]\n"), "{log}");
    assert!(log.contains("\nsplit [MASKED] end\n"), "{log}");
    assert!(
        log.contains(&format!("\nlength: {}\n", SECRET.len())),
        "{log}"
    );
    assert!(!log.contains(job.token()), "{log}");
    assert!(log.contains("\njt: [MASKED]\n"), "{log}");
    assert!(log.contains("\nregistry: [MASKED]\n"), "{log}");
}

#[tokio::test]
async fn mock_several_jobs_in_a_row_on_one_service() {
    let m = mock().await;
    let h = start_against(&m, 1).await;
    let jobs: Vec<MockJob> = (1..=3)
        .map(|i| {
            enqueue(
                &m,
                &format!("row-{i}"),
                &[&format!("echo marker-{i} id=$CI_JOB_ID")],
                &[],
                &[],
            )
        })
        .collect();
    for (i, job) in jobs.iter().enumerate() {
        let i = i + 1;
        let log = finished(&h, job).await;
        assert_eq!(job.state(), MockJobState::Success, "{log}");
        assert!(
            log.contains(&format!("\nmarker-{i} id={}\n", job.id())),
            "{log}"
        );
        for other in (1..=3).filter(|o| *o != i) {
            assert!(
                !log.contains(&format!("marker-{other} ")),
                "job {i} has job {other}'s output:\n{log}"
            );
        }
    }
    // The service is still polling: one more job after the queue ran dry.
    let late = enqueue(&m, "late", &["echo late-one"], &[], &[]);
    let log = finished(&h, &late).await;
    assert_eq!(late.state(), MockJobState::Success, "{log}");
    assert!(log.contains("\nlate-one\n"), "{log}");
}

#[tokio::test]
async fn mock_two_jobs_at_once_with_concurrent_2() {
    let m = mock().await;
    let h = start_against(&m, 2).await;
    let dir = h.path().display().to_string();
    // Each job marks its start, then waits for the other's mark: both succeed only if they overlap.
    let script = |me: &str, other: &str| {
        format!(
            "touch {dir}/{me}.started; for i in $(seq 1 200); do test -f {dir}/{other}.started && break; sleep 0.1; done; test -f {dir}/{other}.started && echo {me} saw {other}"
        )
    };
    let a = enqueue(&m, "a", &[&script("a", "b")], &[], &[]);
    let b = enqueue(&m, "b", &[&script("b", "a")], &[], &[]);
    let a_log = finished(&h, &a).await;
    let b_log = finished(&h, &b).await;
    assert_eq!(a.state(), MockJobState::Success, "{a_log}\n{}", h.log());
    assert_eq!(b.state(), MockJobState::Success, "{b_log}\n{}", h.log());
    assert!(a_log.contains("\na saw b\n"), "{a_log}");
    assert!(b_log.contains("\nb saw a\n"), "{b_log}");
}

#[tokio::test]
async fn mock_cancel_stops_the_job_and_the_service_takes_the_next_one() {
    let m = mock().await;
    // One slot: the follow-up job can only start once the canceled one has let go of it.
    let h = start_against(&m, 1).await;
    let pidfile = h.path().join("loop.pid");
    let after_mark = h.path().join("after.ran");
    let job = enqueue(
        &m,
        "cancel-me",
        &[&format!(
            "echo $$ > {}; echo loop-started; while true; do echo tick; sleep 0.2; done",
            pidfile.display()
        )],
        // The mock's cancel is a hard one (`canceled`): after_script must not run (protocol.md §7.8).
        &[&format!("touch {}", after_mark.display())],
        &[],
    );
    wait_for(&h, &job, "printed a tick", |j| {
        log_of(j).contains("\ntick\n")
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(pid));
    job.cancel();

    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "script {pid} still running after the cancel; log:\n{}\nservice log:\n{}",
            log_of(&job),
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(job.state(), MockJobState::Cancelled);

    // The service stays up and its only slot is free again.
    let next = enqueue(&m, "after-cancel", &["echo next-one"], &[], &[]);
    let log = finished(&h, &next).await;
    assert_eq!(next.state(), MockJobState::Success, "{log}");
    assert!(log.contains("\nnext-one\n"), "{log}");
    assert_eq!(job.state(), MockJobState::Cancelled, "the cancel stays");
    assert!(!after_mark.exists(), "after_script ran after a hard cancel");
    let canceled_log = log_of(&job);
    assert!(canceled_log.contains("\nloop-started\n"), "{canceled_log}");
    assert!(!canceled_log.contains("Job succeeded"), "{canceled_log}");
}

/// An `artifacts: paths:` job: the mock receives one multipart upload named `artifacts.zip` (no `artifacts:name`:
/// gitlab-runner's script passes no `--name` and its uploader defaults to `artifacts`) whose bytes are a zip that
/// Info-ZIP accepts and that holds the job's files.
#[tokio::test]
async fn mock_receives_the_artifacts_archive() {
    let m = mock().await;
    let h = start_against(&m, 1).await;
    let mut b = m.job_builder("artifacts".to_string());
    b.add_variable("GIT_STRATEGY".into(), "none".into(), true, false);
    b.add_step(
        MockJobStepName::Script,
        vec!["mkdir -p out/sub && echo payload > out/sub/a.txt".to_string()],
        3600,
        MockJobStepWhen::OnSuccess,
        false,
    );
    b.add_artifact_paths(vec!["out/".to_string()]);
    let job = b.build();
    m.enqueue_job(job.clone());
    let log = finished(&h, &job).await;
    assert_eq!(job.state(), MockJobState::Success, "{log}\n{}", h.log());
    let uploads: Vec<_> = job.uploaded_artifacts().collect();
    assert_eq!(uploads.len(), 1, "{log}");
    assert_eq!(uploads[0].filename.as_deref(), Some("artifacts.zip"));
    let zip = h.path().join("from-mock.zip");
    std::fs::write(&zip, uploads[0].data.as_slice()).expect("write zip");
    let out = std::process::Command::new("unzip")
        .arg("-l")
        .arg(&zip)
        .output()
        .expect("unzip runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(listing.contains("out/sub/a.txt"), "{listing}");
}
