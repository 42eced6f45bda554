//! Round trips and retention on a real directory.

use crate::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn meta(job_id: i64, received: i64) -> JobMeta {
    JobMeta {
        runner: RunnerRef {
            name: "r1".into(),
            short_token: "t1_abcdef".into(),
            url: "https://gitlab.example".into(),
            system_id: "s_0123456789ab".into(),
        },
        project_id: 7,
        project_path: "grp/app".into(),
        git_ref: "main".into(),
        sha: "deadbeef".into(),
        job_id,
        job_name: "build".into(),
        received_at_ms: received,
        queued_at_ms: Some(received - 1500),
        output_limit: 4096,
        ..JobMeta::default()
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn round_trip_with_trace_stages_and_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path().join("journal"), Retention::default()).expect("open");
    assert_eq!(mode(j.dir()), 0o700);
    let rec = j.begin(meta(42, now_ms()), "glcbt-secret").expect("begin");
    assert_eq!(mode(rec.dir()), 0o700);
    let mut sink = rec.sink();
    sink.write_all(b"hello\nsection_start:1:get_sour")
        .expect("write");
    sink.write_all(b"ces\r\x1b[0Kfetch\nsection_end:2:get_sources\r\x1b[0K")
        .expect("write");
    sink.write_all(b"section_start:2:step_script\r\x1b[0K$ make\n")
        .expect("write");

    // Readable while running, token kept 0600.
    let entries = j.list().expect("list");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.meta.state, JobStatus::Running);
    assert_eq!(e.meta.stages.len(), 2);
    assert_eq!(e.meta.stages[0].name, "get_sources");
    assert!(e.meta.stages[0].finished_at_ms.is_some());
    assert!(e.meta.stages[1].finished_at_ms.is_none());
    assert_eq!(e.job_token().as_deref(), Some("glcbt-secret"));
    for f in ["meta.json", "trace.log", "job-token"] {
        assert_eq!(mode(&e.dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(j.unfinished().expect("unfinished").len(), 1);

    rec.finish(
        JobStatus::Failed,
        Some("script_failure".into()),
        Some(2),
        true,
    )
    .expect("finish");
    let e = j.find(42).expect("find").pop().expect("job 42");
    assert_eq!(e.meta.state, JobStatus::Failed);
    assert_eq!(e.meta.exit_code, Some(2));
    assert_eq!(e.meta.failure_reason.as_deref(), Some("script_failure"));
    assert!(e.meta.reported);
    assert!(e.meta.stages.iter().all(|s| s.finished_at_ms.is_some()));
    assert_eq!(e.job_token(), None, "token removed once reported");
    let trace = std::fs::read(e.trace_path()).expect("trace");
    assert!(trace.starts_with(b"hello\nsection_start:1:get_sources\r"));
    assert!(trace.ends_with(b"$ make\n"));
    assert_eq!(e.meta.trace_bytes, trace.len() as u64);
    assert_eq!(e.meta.queue_ms(), Some(1500));
    assert!(j.unfinished().expect("unfinished").is_empty());
    // Nothing secret in the metadata.
    let raw = std::fs::read_to_string(e.dir.join("meta.json")).expect("meta");
    assert!(!raw.contains("glcbt-secret"));
}

#[test]
fn local_jobs_keep_no_token_and_never_need_recovery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path(), Retention::default()).expect("open");
    let rec = j
        .begin(
            JobMeta {
                local: true,
                ..meta(1, now_ms())
            },
            "tok",
        )
        .expect("begin");
    assert!(!rec.dir().join("job-token").exists());
    assert!(j.unfinished().expect("unfinished").is_empty());
}

#[test]
fn same_job_id_twice_gets_two_records() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path(), Retention::default()).expect("open");
    let t = now_ms();
    let a = j.begin(meta(5, t), "").expect("a");
    let b = j.begin(meta(5, t), "").expect("b");
    assert_ne!(a.dir(), b.dir());
    assert_eq!(j.find(5).expect("find").len(), 2);
    // Each is found again by its own name; names that are no job's, or leave jobs/, find nothing.
    for entry in j.find(5).expect("find") {
        let again = j.get(&entry.name()).expect("get").expect("found by name");
        assert_eq!(again.dir, entry.dir);
    }
    for bad in ["", "..", "../jobs", "a/b", ".meta.json.tmp", "nope"] {
        assert!(j.get(bad).expect("get").is_none(), "{bad:?}");
    }
}

#[test]
fn lock_is_exclusive_and_released_on_drop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path(), Retention::default()).expect("open");
    let held = j.try_lock().expect("lock").expect("free");
    assert!(j.try_lock().expect("lock").is_none());
    drop(held);
    assert!(j.try_lock().expect("lock").is_some());
}

#[test]
#[allow(clippy::print_stderr)] // a skipped case must say so
fn a_planted_lock_file_is_refused_not_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path(), Retention::default()).expect("open");
    let lock = tmp.path().join("service.lock");
    // A symbolic link (to a file the service would otherwise create or clobber) is refused and not followed.
    let target = tmp.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, &lock).expect("symlink");
    let err = j.try_lock().expect_err("symlink refused").to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!target.exists(), "the link was followed");
    // A lock file others may write to is refused too.
    std::fs::remove_file(&lock).expect("rm");
    std::fs::write(&lock, "").expect("lock file");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let err = j
        .try_lock()
        .expect_err("world-writable refused")
        .to_string();
    assert!(
        err.contains("service.lock") && err.contains("chmod go-w"),
        "{err}"
    );
    // Another user's lock file (only root can make one here): refused.
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        nix::unistd::chown(&lock, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        let err = j.try_lock().expect_err("foreign owner refused").to_string();
        assert!(err.contains("belongs to uid 65534"), "{err}");
    } else {
        eprintln!("skipped the foreign-owner case: it needs root to chown");
    }
}

#[test]
#[allow(clippy::print_stderr)] // a skipped case must say so
fn a_journal_directory_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: a directory of another user needs root to make");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("journal");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let err = Journal::open(&dir, Retention::default())
        .expect_err("refused")
        .to_string();
    assert!(err.contains("belongs to uid 65534"), "{err}");
}

#[test]
fn existing_journal_is_tightened_to_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("j");
    std::fs::create_dir_all(dir.join("jobs")).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    Journal::open(&dir, Retention::default()).expect("open");
    assert_eq!(mode(&dir), 0o700);
}

fn finished(j: &Journal, id: i64, received: i64, bytes: usize, reported: bool) {
    let rec = j.begin(meta(id, received), "tok").expect("begin");
    rec.sink().write_all(&vec![b'x'; bytes]).expect("write");
    rec.update(false, |m| m.finished_at_ms = Some(received))
        .expect("update");
    rec.finish(JobStatus::Success, None, None, reported)
        .expect("finish");
    // `finish` stamps the end time now; put it back for age tests.
    rec.update(false, |m| m.finished_at_ms = Some(received))
        .expect("update");
}

fn ids(j: &Journal) -> Vec<i64> {
    j.list()
        .expect("list")
        .iter()
        .map(|e| e.meta.job_id)
        .collect()
}

#[test]
fn retention_by_count_keeps_the_newest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(
        tmp.path(),
        Retention {
            max_jobs: 2,
            ..Retention::default()
        },
    )
    .expect("open");
    let t = now_ms();
    for id in 1..=4 {
        finished(&j, id, t + id, 10, true);
    }
    let r = j.enforce_retention().expect("retention");
    assert_eq!(r.removed, 2);
    assert_eq!(ids(&j), vec![3, 4]);
}

#[test]
fn retention_by_age() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(
        tmp.path(),
        Retention {
            max_age: Duration::from_secs(3600),
            ..Retention::default()
        },
    )
    .expect("open");
    let t = now_ms();
    finished(&j, 1, t - 7_200_000, 10, true);
    finished(&j, 2, t - 60_000, 10, true);
    j.enforce_retention_at(t).expect("retention");
    assert_eq!(ids(&j), vec![2]);
}

#[test]
fn retention_by_size_spares_running_and_unreported_jobs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(
        tmp.path(),
        Retention {
            max_size: 10_000, // four jobs of ~1 KiB metadata each, plus their traces
            ..Retention::default()
        },
    )
    .expect("open");
    let t = now_ms();
    finished(&j, 1, t + 1, 3000, false); // not reported yet: a restart must still finalise it
    finished(&j, 2, t + 2, 3000, true);
    let running = j.begin(meta(3, t + 3), "tok").expect("begin");
    running.sink().write_all(&[b'y'; 3000]).expect("write");
    finished(&j, 4, t + 4, 100, true);
    let r = j.enforce_retention().expect("retention");
    assert_eq!(r.removed, 1);
    assert!(r.freed_bytes >= 3000);
    assert_eq!(ids(&j), vec![1, 3, 4]);
}

#[test]
fn a_failing_trace_write_is_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path(), Retention::default()).expect("open");
    let rec = j.begin(meta(9, now_ms()), "").expect("begin");
    rec.sink().write_all(b"kept\n").expect("write");
    rec.finish(JobStatus::Success, None, None, true)
        .expect("finish");
    // After finish the trace is closed: later bytes are ignored, not an error.
    rec.sink().write_all(b"late\n").expect("ignored");
    let e = j.find(9).expect("find").pop().expect("job");
    assert_eq!(std::fs::read(e.trace_path()).expect("trace"), b"kept\n");
}

#[test]
fn retention_every_skips_a_scan_made_recently_by_anyone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(tmp.path(), Retention::default()).expect("open");
    let every = std::time::Duration::from_secs(60);
    assert!(j.enforce_retention_every(every).expect("first").is_some());
    assert_eq!(mode(&tmp.path().join(".retention")), 0o600);
    // Another handle on the same directory (another process) sees the stamp too.
    let other = Journal::open(tmp.path(), Retention::default()).expect("open");
    assert!(other
        .enforce_retention_every(every)
        .expect("second")
        .is_none());
    assert!(other
        .enforce_retention_every(std::time::Duration::ZERO)
        .expect("due")
        .is_some());
}
