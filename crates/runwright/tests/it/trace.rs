//! The trace on the wire: masking across patch boundaries, 416 resync, 202 on the final update, and transport
//! faults on every endpoint.

use crate::harness::*;
use runwright_coordinator::masked_variable as masked;
use runwright_coordinator::{Endpoint, Fault, JobSpec};
use std::time::Duration;

const SECRET: &str = "s3cr3t-VALUE-that-must-not-leak";

#[tokio::test]
async fn masked_secret_split_across_writes_and_patches_never_reaches_gitlab() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let mut spec = JobSpec::shell(
        "secret",
        &[
            // The secret is printed in two halves with a pause longer than the patch interval in between,
            // so the first half would go out in an earlier PATCH than the second.
            "printf 'start %s' \"${MY_SECRET:0:9}\"; sleep 4; printf '%s end\\n' \"${MY_SECRET:9}\"",
            "echo \"whole: $MY_SECRET\"",
            "echo \"token: glpat-abcdefghijklmnop1234\"",
        ],
    );
    spec.variables.push(masked("MY_SECRET", SECRET));
    let id = h.coordinator.enqueue(spec);
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(!t.contains(SECRET), "secret leaked: {t}");
    assert!(!t.contains(&SECRET[..9]), "first half leaked: {t}");
    assert!(t.contains("start [MASKED] end\n"), "{t}");
    assert!(t.contains("whole: [MASKED]\n"), "{t}");
    assert!(
        !t.contains("abcdefghijklmnop1234"),
        "glpat token leaked: {t}"
    );
    assert!(
        job.patches.len() >= 2,
        "expected several patches: {:?}",
        job.patches
    );
    // The job token is masked too, wherever it appears.
    assert!(!t.contains(&job.token));
}

#[tokio::test]
async fn range_mismatch_416_resyncs_and_the_trace_stays_byte_exact() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator
        .faults()
        .push_n(Endpoint::PatchTrace, Fault::RangeMismatch, 2);
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "resync",
        &["for i in $(seq 1 5); do echo tick-$i; sleep 0.4; done"],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(!job.range_truncations.is_empty(), "fault was not applied");
    for i in 1..=5 {
        assert_eq!(
            t.matches(&format!("tick-{i}\n")).count(),
            1,
            "tick-{i} in {t}"
        );
    }
    assert_eq!(job.final_checksum_ok, Some(true));
}

#[tokio::test]
async fn final_update_answered_202_is_retried_until_accepted() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.coordinator
        .faults()
        .push_n(Endpoint::UpdateJob, Fault::Accepted202, 3);
    h.start();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("accepted", &["echo hi"]));
    let job = h.final_job(id).await;
    assert_eq!(job.state, "success");
    assert_eq!(job.accepted_202, 3);
    assert_eq!(job.final_checksum_ok, Some(true));
}

#[tokio::test]
async fn server_errors_and_resets_on_every_endpoint_are_survived() {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    for ep in [
        Endpoint::RequestJob,
        Endpoint::UpdateJob,
        Endpoint::PatchTrace,
    ] {
        let faults = h.coordinator.faults();
        faults.push(ep, Fault::Status(500));
        faults.push(ep, Fault::Status(502));
        faults.push(ep, Fault::Reset);
        faults.push(ep, Fault::TooManyRequests { retry_after: 1 });
    }
    h.start();
    let faults = h.coordinator.faults();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "flaky",
        &["for i in $(seq 1 4); do echo part-$i; sleep 0.5; done"],
    ));
    let job = h.final_job(id).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}\n{}", h.log());
    for i in 1..=4 {
        assert_eq!(t.matches(&format!("part-{i}\n")).count(), 1, "{t}");
    }
    assert_eq!(job.final_checksum_ok, Some(true));
    for ep in [
        Endpoint::RequestJob,
        Endpoint::UpdateJob,
        Endpoint::PatchTrace,
    ] {
        assert_eq!(faults.pending(ep), 0, "not all faults on {ep:?} were hit");
    }
    // The service is still healthy: a second job runs.
    let id2 = h
        .coordinator
        .enqueue(JobSpec::shell("after", &["echo again"]));
    assert_eq!(h.final_job(id2).await.state, "success");
    let _ = Duration::ZERO;
}

/// Every default prefix of gitlab-runner 19.4 (`tokensanitizer.DefaultTokenPrefixes(true)`), with a token after it.
const DEFAULT_PREFIX_TOKENS: &[(&str, &str)] = &[
    ("glpat-", "PatToken123"),
    ("gloas-", "OauthSecret45"),
    ("gldt-", "DeployToken67"),
    ("glrt-", "RunnerToken89"),
    ("glcbt-", "JobToken_0.1"),
    ("glrtr-", "RunnerReg23"),
    ("glptt-", "TriggerToken45"),
    ("glft-", "FeedToken67"),
    ("glimt-", "IncomingMail89"),
    ("glagent-", "AgentToken01"),
    ("glsoat-", "ServiceAcct23"),
    ("glffct-", "FeatureFlag45"),
    ("_gitlab_session=", "cookie67=x"),
    ("gltok-", "GenericTok89"),
];

/// A job that prints every default-prefixed token and one with the server's own prefix (`ghp_`), each on its
/// own line; the command line itself is built so it shows none of them.
fn token_job(name: &str) -> JobSpec {
    let mut lines = String::new();
    for (prefix, token) in DEFAULT_PREFIX_TOKENS
        .iter()
        .chain([&("ghp_", "ServerPrefixed01")])
    {
        lines.push_str(&format!("{prefix}%s{token}\\n"));
    }
    let mut spec = JobSpec::shell(
        name,
        &[&format!(
            "printf '{lines}' '' '' '' '' '' '' '' '' '' '' '' '' '' '' ''"
        )],
    );
    spec.payload_merge =
        Some(serde_json::json!({ "features": { "token_mask_prefixes": ["ghp_"] } }));
    spec
}

#[tokio::test]
async fn gitlab_runners_default_token_prefixes_are_masked_unless_ff_mask_all_default_tokens_is_false(
) {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let all = h.coordinator.enqueue(token_job("default-flag"));
    let off = h
        .coordinator
        .enqueue(token_job("flag-off").with_variable("FF_MASK_ALL_DEFAULT_TOKENS", "false"));

    // The runner's default (FF_MASK_ALL_DEFAULT_TOKENS on): the prefix stays, the token goes.
    let job = h.final_job(all).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    for (prefix, token) in DEFAULT_PREFIX_TOKENS {
        assert!(
            t.contains(&format!("\n{prefix}[MASKED]\n")),
            "{prefix} in {t}"
        );
        assert!(
            !t.contains(&format!("{prefix}{token}")),
            "{prefix}{token} leaked: {t}"
        );
    }
    assert!(t.contains("\nghp_[MASKED]\n"), "the server's prefix: {t}");

    // Off: `glpat-` and the server's prefixes only.
    let job = h.final_job(off).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(t.contains("\nglpat-[MASKED]\n"), "{t}");
    assert!(t.contains("\nghp_[MASKED]\n"), "{t}");
    for (prefix, token) in &DEFAULT_PREFIX_TOKENS[1..] {
        assert!(
            t.contains(&format!("\n{prefix}{token}\n")),
            "{prefix}{token} shown as is: {t}"
        );
    }
}

#[tokio::test]
async fn every_trace_line_carries_gitlab_runners_timestamp_header_unless_ff_timestamps_is_false() {
    use runwright_trace::timestamp::{header, StreamType};
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let before = time::OffsetDateTime::now_utc();
    let on = h.coordinator.enqueue(JobSpec::shell(
        "stamped",
        &[
            "echo out-line",
            "echo err-line >&2",
            "printf 'partial'; sleep 1.5; printf ' line\\n'",
        ],
    ));
    let off = h.coordinator.enqueue(
        JobSpec::shell("plain", &["echo out-line"]).with_variable("FF_TIMESTAMPS", "false"),
    );

    let job = h.final_job(on).await;
    let after = time::OffsetDateTime::now_utc();
    let raw = job.trace.clone();
    assert_eq!(job.state, "success", "{}", job.raw_trace_text());
    assert_eq!(
        job.final_checksum_ok,
        Some(true),
        "the headers are part of the checksummed log"
    );
    let lines: Vec<&[u8]> = raw.split_inclusive(|b| *b == b'\n').collect();
    let mut streams = std::collections::BTreeSet::new();
    let mut continued = 0;
    for line in &lines {
        let h = header(line)
            .unwrap_or_else(|| panic!("no header: {:?}", String::from_utf8_lossy(line)));
        let at =
            time::OffsetDateTime::parse(h.time, &time::format_description::well_known::Rfc3339)
                .expect("RFC 3339");
        assert!(
            at >= before - time::Duration::SECOND && at <= after,
            "{} outside the job",
            h.time
        );
        streams.insert((h.stream, h.stream_type == StreamType::Stdout));
        continued += usize::from(h.continues);
        assert_eq!(line.last(), Some(&b'\n'));
    }
    // The runner's own lines on 00O, the job's on 01O (stdout and stderr share one pipe on the shell executor).
    assert_eq!(
        streams.into_iter().collect::<Vec<_>>(),
        [(0, true), (1, true)]
    );
    // Each section marker is written alone and ends with `\r`: the line after it continues it.
    assert!(continued > 0, "{}", job.raw_trace_text());
    let raw_text = job.raw_trace_text();
    assert!(raw_text.contains(" 01O out-line\n"), "{raw_text}");
    assert!(raw_text.contains(" 01O err-line\n"), "{raw_text}");
    // The outcome comes from a logger of its own (`setTraceStatus`): a line of its own, not a continuation.
    assert!(
        raw_text.ends_with(" 00O \x1b[32;1mJob succeeded\x1b[0;m\n"),
        "{raw_text}"
    );
    // A line written in pieces waits for its end and goes out whole, stamped when it began.
    assert!(raw_text.contains(" 01O partial line\n"), "{raw_text}");
    // As GitLab's viewer reads it: headers gone, continuations joined, the partial line whole.
    let t = job.trace_text();
    assert!(
        t.contains("\nout-line\n") && t.contains("\nerr-line\n"),
        "{t}"
    );
    assert!(t.contains("\npartial line\n"), "{t}");
    assert!(
        t.contains("section_start:") && t.contains("Job succeeded"),
        "{t}"
    );

    let job = h.final_job(off).await;
    assert_eq!(job.state, "success");
    assert!(
        job.raw_trace_text()
            .lines()
            .all(|l| header(l.as_bytes()).is_none()),
        "{}",
        job.raw_trace_text()
    );
    assert!(job.raw_trace_text().contains("\nout-line\n"));
}

#[tokio::test]
async fn ci_debug_trace_and_ci_debug_services_mark_every_trace_patch_and_gitlab_records_a_debug_log(
) {
    let mut h = Harness::new().await;
    h.single_runner("", "");
    h.start();
    let debug = h
        .coordinator
        .enqueue(JobSpec::shell("debug", &["echo hi"]).with_variable("CI_DEBUG_TRACE", "true"));
    let services = h
        .coordinator
        .enqueue(JobSpec::shell("services", &["echo hi"]).with_variable("CI_DEBUG_SERVICES", "1"));
    let plain = h.coordinator.enqueue(JobSpec::shell("plain", &["echo hi"]));
    let patches = |id: i64| -> Vec<String> {
        h.coordinator
            .requests()
            .into_iter()
            .filter(|r| {
                r.endpoint == Endpoint::PatchTrace && r.path.contains(&format!("/jobs/{id}/"))
            })
            .map(|r| r.path)
            .collect()
    };
    for (id, on) in [(debug, true), (services, true), (plain, false)] {
        let job = h.final_job(id).await;
        assert_eq!(job.state, "success", "{}", job.trace_text());
        assert_eq!(job.debug_trace, on, "job {}", job.name);
        let paths = patches(id);
        assert!(!paths.is_empty());
        let want = format!("debug_trace={on}");
        assert!(paths.iter().all(|p| p.ends_with(&want)), "{paths:?}");
    }

    // `debug_trace_disabled`: refused, with gitlab-runner's warning, and GitLab is not told.
    let mut h = Harness::new().await;
    h.single_runner("", "  debug_trace_disabled = true");
    h.start();
    let refused = h
        .coordinator
        .enqueue(JobSpec::shell("refused", &["echo hi"]).with_variable("CI_DEBUG_TRACE", "true"));
    let job = h.final_job(refused).await;
    let t = job.trace_text();
    assert_eq!(job.state, "success", "{t}");
    assert!(!job.debug_trace);
    assert!(
        t.contains("WARNING: CI_DEBUG_TRACE: usage is disabled on this Runner"),
        "{t}"
    );
}
