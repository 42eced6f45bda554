//! The journal cannot fill the disk (issue 17 item 2). The attacker is a job author whose job runs as another
//! local account and prints without end: before, the service (root) kept every byte in the journal past
//! `output_limit`, and retention never touches a running job — one job wrote 1 GB in 5 s while GitLab got
//! 4 MiB. Now one job's trace is capped (`[journal] max_trace_mb`: head GitLab got + note + tail), and below
//! `[journal] min_free_mb` free on its file system the journal stops writing traces; the jobs go on.

use crate::attackers::LocalUser;
use crate::harness::*;
use runwright_coordinator::{JobSpec, RunnerOptions};
use std::path::{Path, PathBuf};

const MIB: u64 = 1024 * 1024;

/// The job directories of the journal at `journal`, by job id.
fn job_dir(journal: &Path, id: i64) -> PathBuf {
    std::fs::read_dir(journal.join("jobs"))
        .expect("journal jobs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.split('-').nth(1) == Some(&id.to_string()))
        })
        .expect("the job's record")
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).expect("meta.json"))
        .expect("meta json")
}

/// A config whose one shell entry runs jobs as `user`, with `journal` as the `[journal]` table's body.
fn config_as(h: &Harness, user: &LocalUser, journal: &str, runner_extra: &str) {
    let builds = h.builds_for_any_user();
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.write_config(&format!(
        "concurrent = 2\ncheck_interval = 1\nuser = \"{}\"\n[journal]\n{journal}\n{}",
        user.name,
        h.runner_toml(
            "attacked",
            TOKEN,
            &format!("  builds_dir = \"{}\"\n{runner_extra}", builds.display())
        )
    ));
}

/// `count` numbered lines of 40 bytes: `flood line 000000001 of a runaway job.` + `\n`.
fn flood(count: u64) -> String {
    format!("seq -f 'flood line %09g of a runaway job.' 1 {count}")
}

#[tokio::test]
async fn a_job_printing_far_past_the_journal_cap_leaves_a_bounded_trace_with_its_head_tail_and_a_note(
) {
    let Some(user) = LocalUser::create_or_skip("rwjcap") else {
        return;
    };
    let mut h = Harness::new().await;
    // GitLab gets 64 KiB; the journal keeps at most 2 MiB of the job's ~16 MB.
    config_as(&h, &user, "  max_trace_mb = 2", "  output_limit = 64");
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "flood",
        &[
            &flood(400_000),
            "sleep 2",
            "echo \"the end of the failing job, as $(id -un)\"",
            "exit 3",
        ],
    ));
    // `runwright logs --follow` from while the job runs past its cap to its end.
    let live_note = "the journal's limit for one job's trace";
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let past_cap = std::fs::read_dir(h.path().join("journal/jobs"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path().join("trace.log")).ok())
            .any(|t| String::from_utf8_lossy(&t).contains(live_note));
        if past_cap {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never passed its cap"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut follow = h.command();
    follow
        .args(["logs", &id.to_string(), "--follow", "-c"])
        .arg(&h.config_path);
    let followed =
        tokio::task::spawn_blocking(move || follow.output().expect("runwright logs --follow"));
    let job = h.final_job(id).await;
    assert_eq!(job.state, "failed");
    let dir = job_dir(&h.path().join("journal"), id);
    let trace = std::fs::read(dir.join("trace.log")).expect("trace.log");
    let text = String::from_utf8_lossy(&trace);
    assert!(
        trace.len() as u64 <= 2 * MIB,
        "the journal's trace is {} bytes, over its 2 MiB cap",
        trace.len()
    );
    // The head is GitLab's copy, byte for byte (up to where GitLab's limit notice starts).
    let gitlab = &job.trace;
    let notice = b"\n\x1b[33;1mJob's log exceeded limit";
    let cut = gitlab
        .windows(notice.len())
        .position(|w| w == notice)
        .expect("GitLab's copy was cut at output_limit");
    assert_eq!(&trace[..cut], &gitlab[..cut]);
    // The note says what was dropped and where; the tail holds the end of the failing job.
    let m = meta(&dir);
    let dropped = m["trace_dropped"].as_u64().expect("trace_dropped");
    assert!(dropped > 12 * MIB, "dropped {dropped}");
    let note = format!(
        "runwright journal: {dropped} bytes of this job's output were dropped here (bytes 65536 to {} of its trace)",
        65536 + dropped
    );
    assert!(
        text.contains(&note),
        "no note {note:?} in the journal's trace"
    );
    assert!(text.contains("flood line 000400000 of a runaway job.\n"));
    assert!(
        text.contains(&format!("the end of the failing job, as {}", user.name)),
        "the tail"
    );
    assert!(
        text.contains("ERROR: Job failed: exit status 3"),
        "the tail: {:?}",
        &text[text.len().saturating_sub(600)..]
    );
    assert!(
        !text.contains("until then the rest is not shown here"),
        "the live note goes at the end"
    );
    // Stage timings came from every byte: the sections the dropped part closed and opened are all there.
    let stages: Vec<&str> = m["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| {
            s["finished_at_ms"].as_i64()?;
            s["name"].as_str()
        })
        .collect();
    for want in [
        "prepare_executor",
        "get_sources",
        "step_script",
        "cleanup_file_variables",
    ] {
        assert!(stages.contains(&want), "{want} missing from {stages:?}");
    }
    // Nothing is left beside the trace (no tail segments).
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("trace.") && n != "trace.log")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // `runwright logs` shows the note and the end.
    let out = h
        .command()
        .args(["logs", &id.to_string(), "-c"])
        .arg(&h.config_path)
        .output()
        .expect("runwright logs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("bytes of this job's output were dropped here"),
        "logs shows the note"
    );
    assert!(
        logs.contains("the end of the failing job"),
        "logs shows the tail"
    );
    // Following, one saw the note while the job ran, then the dropped bytes' note and the end.
    let followed = followed.await.expect("follower");
    assert!(followed.status.success());
    let followed = String::from_utf8_lossy(&followed.stdout);
    let (during, after) = followed.split_once(live_note).expect("the live note");
    assert!(during.contains("flood line 000000001 of a runaway job."));
    assert!(
        after.contains("bytes of this job's output were dropped here"),
        "{}",
        &after[..after.len().min(2000)]
    );
    assert!(after.contains("the end of the failing job"));
}

/// A tmpfs of a known size mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: PathBuf, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(&path).expect("mount point");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output()
            .expect("mount runs");
        if !out.status.success() {
            eprintln!(
                "skipped: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { path })
    }

    fn available(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[tokio::test]
async fn below_the_free_space_floor_the_journal_stops_recording_jobs_go_on_and_the_floor_holds() {
    let Some(user) = LocalUser::create_or_skip("rwjfloor") else {
        return;
    };
    let mut h = Harness::new().await;
    // The journal on a 24 MiB file system that must keep 16 MiB free: room for ~8 MiB of traces.
    let Some(fs) = Tmpfs::mount(h.path().join("journal-fs"), 24) else {
        return;
    };
    config_as(
        &h,
        &user,
        &format!(
            "  dir = \"{}\"\n  min_free_mb = 16\n  max_trace_mb = 64",
            fs.path.display()
        ),
        "",
    );
    h.start();
    // ~16 MB of output: twice what the floor leaves.
    let a = h.coordinator.enqueue(JobSpec::shell(
        "flood",
        &[&flood(400_000), "echo 'flood done'"],
    ));
    let job = h.final_job(a).await;
    assert_eq!(
        job.state,
        "success",
        "the job goes on: {}",
        job.trace_text()
    );
    // The floor held (give or take the MiB between two looks and the metadata).
    let free = fs.available();
    assert!(
        free >= 14 * MIB,
        "the journal left {} MiB free on its file system, under its 16 MiB floor",
        free / MIB
    );
    let dir = job_dir(&fs.path, a);
    let text =
        String::from_utf8_lossy(&std::fs::read(dir.join("trace.log")).expect("trace")).into_owned();
    let note = "the journal stopped recording this job's output here: its file system has";
    assert!(text.contains(note), "no floor note in the trace");
    assert!(text.contains("below [journal] min_free_mb = 16 MiB"));
    assert!(
        !text.contains("flood done"),
        "nothing is recorded past the floor"
    );
    assert!(meta(&dir)["trace_error"]
        .as_str()
        .is_some_and(|e| e.contains("min_free_mb")));
    // A second job while the file system is still low: it runs, its trace is only the note.
    let b = h
        .coordinator
        .enqueue(JobSpec::shell("small", &["echo 'b ran'"]));
    let job = h.final_job(b).await;
    assert_eq!(job.state, "success");
    assert!(
        job.trace_text().contains("b ran"),
        "GitLab gets the whole log"
    );
    let tb = std::fs::read_to_string(job_dir(&fs.path, b).join("trace.log")).expect("trace");
    assert!(tb.contains(note) && !tb.contains("b ran"), "{tb}");
    // The service said so once.
    let log = h.log();
    assert_eq!(
        log.matches("below [journal] min_free_mb = 16 MiB: job traces are not recorded")
            .count(),
        1,
        "{log}"
    );
    h.signal(nix::sys::signal::Signal::SIGTERM);
    h.wait_exit(WAIT).await;
}
