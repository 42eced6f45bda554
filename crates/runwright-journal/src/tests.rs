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

// The cap on one job's trace and the free-space floor (issue 17).

const MIB: u64 = 1024 * 1024;

/// Numbered lines of the job's output: `line 0000042 ...\n` (32 bytes each).
fn numbered(from: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((count * 32) as usize);
    for i in from..from + count {
        out.extend_from_slice(format!("line {i:07} ..................\n").as_bytes());
    }
    out
}

/// Bytes of a job's directory on disk (trace, segments, metadata).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn capped(tmp: &tempfile::TempDir, max_trace: u64) -> Journal {
    Journal::open(tmp.path(), Retention::default())
        .expect("open")
        .with_space_probe(
            TraceLimits {
                max_trace: Some(max_trace),
                min_free: Some(0),
            },
            std::sync::Arc::new(|_: &std::path::Path| {
                Ok(Space {
                    available: 1 << 40,
                    total: 1 << 41,
                })
            }),
        )
}

#[test]
fn a_trace_far_past_its_cap_keeps_the_head_a_note_and_the_tail_within_the_cap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cap = 2 * MIB;
    let j = capped(&tmp, cap);
    // output_limit 4096: GitLab got the first 4 KiB.
    let rec = j.begin(meta(1, now_ms()), "tok").expect("begin");
    assert_eq!(rec.meta().trace_cap, cap);
    let mut sink = rec.sink();
    const START: &[u8] = b"section_start:1:step_script\r\x1b[0K$ make\n";
    const MIDDLE: &[u8] =
        b"section_end:2:step_script\r\x1b[0Ksection_start:2:after_script\r\x1b[0K";
    const END: &[u8] = b"last words\nsection_end:3:after_script\r\x1b[0K";
    sink.write_all(START).expect("write");
    let lines: u64 = 1_000_000; // 32 MB, sixteen times the cap
    let mut max_on_disk = 0;
    let mut i = 0;
    while i < lines {
        let n = 20_000.min(lines - i);
        sink.write_all(&numbered(i, n)).expect("write");
        i += n;
        if i == 500_000 {
            sink.write_all(MIDDLE).expect("write");
        }
        max_on_disk = max_on_disk.max(dir_bytes(rec.dir()));
    }
    sink.write_all(END).expect("write");
    // While it runs: the cap, its note and at most one and a half tails of segments.
    assert!(
        max_on_disk <= cap + cap * 3 / 2 + 8 * 1024,
        "{max_on_disk} bytes on disk for a cap of {cap}"
    );
    let live = std::fs::read(rec.dir().join("trace.log")).expect("trace");
    assert!(String::from_utf8_lossy(&live).contains("passed 2097152 bytes, the journal's limit"));
    rec.finish(
        JobStatus::Failed,
        Some("script_failure".into()),
        Some(1),
        true,
    )
    .expect("finish");

    let e = j.find(1).expect("find").pop().expect("job");
    let trace = std::fs::read(e.trace_path()).expect("trace");
    assert!(trace.len() as u64 <= cap, "{} > {cap}", trace.len());
    assert!(
        trace.len() as u64 > cap - 64 * 1024,
        "the tail is kept whole: {}",
        trace.len()
    );
    // The head is what GitLab got, byte for byte.
    let mut whole = START.to_vec();
    whole.extend_from_slice(&numbered(0, 200));
    assert_eq!(&trace[..4096], &whole[..4096]);
    // The note says what was dropped and where, and the tail starts at a line.
    let text = String::from_utf8_lossy(&trace);
    let note_at = text.find("runwright journal: ").expect("the note");
    let note_line = text[note_at..].lines().next().expect("note line");
    assert!(
        !text[..note_at].contains("passed 2097152 bytes"),
        "the live note is gone"
    );
    let dropped = e.meta.trace_dropped;
    assert!(note_line.contains(&format!("{dropped} bytes of this job's output were dropped here (bytes 4096 to {} of its trace)", 4096 + dropped)), "{dropped}: {note_line}");
    let after_note = &text[note_at + note_line.len() + 1..];
    assert!(after_note.starts_with("line "), "{:?}", &after_note[..40]);
    assert!(text.ends_with("last words\nsection_end:3:after_script\r\x1b[0K"));
    // Every byte is accounted for: head + dropped + tail = what the job wrote.
    let total = (START.len() + MIDDLE.len() + END.len()) as u64 + lines * 32;
    let kept_tail = after_note.len() as u64;
    assert_eq!(
        4096 + dropped + kept_tail,
        total,
        "dropped {dropped}, tail {kept_tail}"
    );
    assert_eq!(e.meta.trace_bytes, trace.len() as u64);
    // Stage timings came from every byte, the dropped ones too.
    let names: Vec<&str> = e.meta.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["step_script", "after_script"]);
    assert!(e.meta.stages.iter().all(|s| s.finished_at_ms.is_some()));
    // Nothing but the trace and the metadata is left.
    let mut files: Vec<String> = std::fs::read_dir(&e.dir)
        .expect("dir")
        .map(|d| d.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["meta.json", "trace.log"]);
}

#[test]
fn a_trace_within_its_cap_is_kept_whole_without_a_note() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let j = capped(&tmp, 2 * MIB);
    let rec = j.begin(meta(2, now_ms()), "tok").expect("begin");
    let out = numbered(0, 60_000); // 1.9 MB
    rec.sink().write_all(&out).expect("write");
    rec.finish(JobStatus::Success, None, None, true)
        .expect("finish");
    let e = j.find(2).expect("find").pop().expect("job");
    assert_eq!(std::fs::read(e.trace_path()).expect("trace"), out);
    assert_eq!(e.meta.trace_dropped, 0);
}

#[test]
fn the_cap_never_cuts_into_the_head_gitlab_got() {
    assert_eq!(trace_cap(None, 4 * MIB), 16 * MIB);
    assert_eq!(trace_cap(None, 100 * MIB), 400 * MIB);
    assert_eq!(trace_cap(None, 4096), MIN_DEFAULT_TRACE_CAP);
    // A cap below output_limit keeps GitLab's copy and a MiB of the end.
    assert!(trace_cap(Some(MIB), 8 * MIB) > 9 * MIB);
    assert_eq!(trace_cap(Some(64 * MIB), 4 * MIB), 64 * MIB);
}

#[test]
fn a_job_reopened_past_its_cap_after_a_crash_goes_on_in_the_tail_and_is_rebuilt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cap = 2 * MIB;
    let j = capped(&tmp, cap);
    let rec = j.begin(meta(3, now_ms()), "tok").expect("begin");
    rec.sink().write_all(&numbered(0, 200_000)).expect("write");
    // The service dies here: no finish. The next one reopens the record.
    drop(rec);
    let e = j.find(3).expect("find").pop().expect("job");
    let again = e.reopen(&j).expect("reopen");
    again
        .sink()
        .write_all(b"\nERROR: Job failed (system failure)\n")
        .expect("write");
    again
        .finish(
            JobStatus::Failed,
            Some("runner_system_failure".into()),
            None,
            false,
        )
        .expect("finish");
    let e = j.find(3).expect("find").pop().expect("job");
    let trace = std::fs::read(e.trace_path()).expect("trace");
    assert!(trace.len() as u64 <= cap);
    assert_eq!(&trace[..4096], &numbered(0, 128)[..]);
    let text = String::from_utf8_lossy(&trace);
    assert!(text.contains("were dropped here (bytes 4096 to "), "note");
    assert!(
        text.ends_with("line 0199999 ..................\n\nERROR: Job failed (system failure)\n")
    );
    let tail = text.len() - text.find("follow.").expect("note end") - "follow.\x1b[0;m\n".len();
    let written = 200_000 * 32 + "\nERROR: Job failed (system failure)\n".len();
    assert_eq!(4096 + e.meta.trace_dropped + tail as u64, written as u64);
}

/// A free-space source the test turns down and up.
fn probe(free: &std::sync::Arc<std::sync::atomic::AtomicU64>) -> space::Probe {
    let free = free.clone();
    std::sync::Arc::new(move |_: &std::path::Path| {
        Ok(Space {
            available: free.load(std::sync::atomic::Ordering::SeqCst),
            total: 1 << 40,
        })
    })
}

#[test]
fn below_the_floor_traces_stop_with_a_note_jobs_go_on_and_retention_runs() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().expect("tempdir");
    let free = std::sync::Arc::new(AtomicU64::new(10 * 1024 * MIB));
    let j = Journal::open(
        tmp.path(),
        Retention {
            max_jobs: 3,
            ..Retention::default()
        },
    )
    .expect("open")
    .with_space_probe(
        TraceLimits {
            max_trace: None,
            min_free: Some(512 * MIB),
        },
        probe(&free),
    );
    let t = now_ms();
    // Three finished jobs: at the limit, nothing for retention yet.
    for id in 1..=3 {
        finished(&j, id, t - 1000 + id, 10, true);
    }
    let a = j.begin(meta(10, t), "tok").expect("begin");
    let b = j.begin(meta(11, t), "tok").expect("begin");
    a.sink().write_all(b"a before\n").expect("write");
    b.sink().write_all(b"b before\n").expect("write");
    free.store(100 * MIB, Ordering::SeqCst);
    // The next MiB of `a` finds the floor: its trace stops with the note, the write still succeeds.
    a.sink()
        .write_all(&numbered(0, 40_000))
        .expect("the job goes on");
    a.sink().write_all(b"a after\n").expect("the job goes on");
    // `b` stops at its next write: the floor is the journal's, not one job's.
    b.sink().write_all(b"b after\n").expect("the job goes on");
    let ta = String::from_utf8(std::fs::read(a.dir().join("trace.log")).expect("a")).expect("utf8");
    let tb = String::from_utf8(std::fs::read(b.dir().join("trace.log")).expect("b")).expect("utf8");
    for t in [&ta, &tb] {
        assert!(t.contains("the journal stopped recording this job's output here: its file system has 100 MiB free, below [journal] min_free_mb = 512 MiB"), "{t}");
        assert!(t.len() < 1024, "nothing more is written: {}", t.len());
    }
    assert!(!ta.contains("a after") && !tb.contains("b after"));
    assert!(a
        .meta()
        .trace_error
        .is_some_and(|e| e.contains("min_free_mb")));
    // Retention ran on its own thread: a fourth job (the new one) put the journal over max_jobs = 3.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ids(&j).contains(&1) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !ids(&j).contains(&1),
        "retention removed the oldest: {:?}",
        ids(&j)
    );
    a.finish(JobStatus::Success, None, Some(0), true)
        .expect("finish");
    // Space is back: a new job's trace is recorded again.
    free.store(10 * 1024 * MIB, Ordering::SeqCst);
    let c = j.begin(meta(12, t), "tok").expect("begin");
    c.sink().write_all(b"c is recorded\n").expect("write");
    assert_eq!(
        std::fs::read(c.dir().join("trace.log")).expect("c"),
        b"c is recorded\n"
    );
}
