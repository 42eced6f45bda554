//! One engine for local and production runs (issue 3): the example pipeline run by `runwright exec` with its
//! in-process runner, and the same pipeline served by exec's embedded coordinator (`--serve`) to a separate
//! `runwright run` service — the production path — give the same job results and the same traces, modulo
//! times and temporary paths.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What legitimately differs between two runs: timestamps, section times, temporary directories, the runner
/// manager's system ID. Of a line's `FF_TIMESTAMPS` header only the time goes: its stream and continuation flag
/// must be the same in both runs.
fn normalise(trace: &str) -> String {
    let rules = [
        (
            r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z ([0-9a-f]{2}[OE][ +])",
            "STAMP $1",
        ),
        (r"section_(start|end):\d+:", "section_$1:T:"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "DATE"),
        // `ls -l` of a tarball: its size depends on the mtimes inside it.
        (
            r"(-[rwx-]{9} \d+ \S+ \S+ )\d+ \w{3} +\d+ \d\d:\d\d",
            "${1}SIZE DATE",
        ),
        (r"\S*runwright-exec-[A-Za-z0-9]+", "TMP"),
        // Each run has its own random runner token (issue 17): its short form names the runner and the
        // builds directory.
        (
            r"on (exec(?:-docker)?) [A-Za-z0-9_-]+,",
            "on $1 SHORT_TOKEN,",
        ),
        (r"TMP/builds/[A-Za-z0-9_-]+/", "TMP/builds/SHORT_TOKEN/"),
        // Each runner process has its own system ID (`.runner_system_id`), as two GitLab runner managers do.
        (r"system ID: s_[0-9a-f]{12}", "system ID: SYSTEM_ID"),
        // Job tokens are random per job (shown shortened).
        (r"token=[A-Za-z0-9_-]+", "token=JOB_TOKEN"),
        (r"\b[0-9]+(\.[0-9]+)? ?(ms|s)\b", "DURATION"),
        // In process, exec skips `git lfs pull` when the checkout has no Git LFS store (nothing to pull); the
        // service runs it as gitlab-runner does, and git-lfs says why it did nothing, then the runner's `echo`.
        (
            r"(?m)^STAMP 01O Skipping object checkout, Git LFS is not installed[^\n]*\n(STAMP 01O Consider installing[^\n]*\n)?STAMP 01O \n",
            "",
        ),
    ];
    let mut s = trace.to_string();
    for (re, with) in rules {
        s = regex::Regex::new(re)
            .expect("pattern")
            .replace_all(&s, with)
            .into_owned();
    }
    s
}

/// name → (status, exit code, allowed failure) from a run's summary.json.
fn results(run: &Path) -> Vec<(String, String, Option<i64>, bool)> {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).expect("summary.json"))
            .expect("summary is JSON");
    summary["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or_default().to_string(),
                j["status"].as_str().unwrap_or_default().to_string(),
                j["exit_code"].as_i64(),
                j["allowed_failure"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

fn log(run: &Path, job: &str) -> Option<String> {
    std::fs::read_to_string(run.join(format!("{job}.log"))).ok()
}

#[tokio::test]
async fn the_example_gives_the_same_results_in_process_and_served_to_the_service() {
    let h = Harness::new().await;
    let dir = h.example_checkout("example");
    let state = h.path().join("state");

    // 1. In process: exec's own runner entries.
    let cache_a = h.path().join("cache-a");
    let out = h
        .command()
        .args(["exec", "-j", "1", "--view", "lines", "--cache-dir"])
        .arg(&cache_a)
        .current_dir(&dir)
        .output()
        .expect("runwright exec runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");

    // 2. Served: the same coordinator code, the jobs run by `runwright run` in its own process.
    let cache_b = h.path().join("cache-b");
    let mut exec = h
        .command()
        .args([
            "exec",
            "-j",
            "1",
            "--view",
            "lines",
            "--serve",
            "--cache-dir",
        ])
        .arg(&cache_b)
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runwright exec --serve starts");
    // exec's output is read by a thread: the runner config's path first, then everything until exec ends.
    let stdout = exec.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (path_tx, path_rx) = std::sync::mpsc::channel::<PathBuf>();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("runwright run -c ").nth(1) {
                    let _ = path_tx.send(PathBuf::from(rest.trim()));
                }
                if let Ok(mut s) = seen.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        })
    };
    let shown = |seen: &std::sync::Arc<std::sync::Mutex<String>>| {
        seen.lock().map(|s| s.clone()).unwrap_or_default()
    };
    let config = path_rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("exec --serve did not serve:\n{}", shown(&seen)));
    let toml = std::fs::read_to_string(&config).expect("the served runner config");
    assert!(toml.contains("executor = \"shell\""), "{toml}");
    let work = h.path().join("served-work");
    std::fs::create_dir_all(&work).expect("work dir");
    let service_log_path = h.path().join("served-service.log");
    let service_log = std::fs::File::create(&service_log_path).expect("log");
    let mut service = h
        .command()
        .args(["run", "-c"])
        .arg(&config)
        .arg("-d")
        .arg(&work)
        .stdout(Stdio::null())
        .stderr(service_log)
        .spawn()
        .expect("runwright run starts");
    // exec ends when the pipeline has; a service that dies first would leave it waiting, so watch both.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = exec.try_wait().expect("exec status") {
            break status;
        }
        if let Some(st) = service.try_wait().expect("service status") {
            let _ = exec.kill();
            panic!(
                "runwright run ended ({st}) before the pipeline did:\n{}\n{}",
                std::fs::read_to_string(&service_log_path).unwrap_or_default(),
                shown(&seen)
            );
        }
        if Instant::now() > deadline {
            let _ = exec.kill();
            let _ = service.kill();
            panic!(
                "the served pipeline did not end in 300 s:\n{}",
                shown(&seen)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(service.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = service.wait();
    let _ = reader.join();
    let seen = shown(&seen);
    assert_eq!(status.code(), Some(0), "{seen}");
    assert!(seen.contains("pipeline passed"), "{seen}");

    let (a, b) = (state.join("1"), state.join("2"));
    let (ra, rb) = (results(&a), results(&b));
    assert_eq!(ra, rb, "job results differ");
    // The example covers success, an allowed failure, a rule-skipped or manual job, artifacts and a cache.
    assert!(
        ra.iter().any(|r| r.1 == "failed" && r.3),
        "an allowed failure: {ra:?}"
    );
    let mut compared = 0;
    for (name, ..) in &ra {
        match (log(&a, name), log(&b, name)) {
            (Some(la), Some(lb)) => {
                // Each run has its own fresh cache directory, so both start with a cache miss.
                let la = la.replace(&cache_a.display().to_string(), "CACHE_DIR");
                let lb = lb.replace(&cache_b.display().to_string(), "CACHE_DIR");
                let (na, nb) = (normalise(&la), normalise(&lb));
                if na != nb {
                    let first = na
                        .lines()
                        .zip(nb.lines())
                        .find(|(x, y)| x != y)
                        .map(|(x, y)| format!("in process: {x:?}\nserved:     {y:?}"))
                        .unwrap_or_else(|| "one trace is a prefix of the other".into());
                    panic!("the traces of {name} differ; first difference:\n{first}\n\nin process:\n{na}\n\nserved:\n{nb}");
                }
                assert!(
                    la.contains("Job succeeded") || la.contains("ERROR: Job failed"),
                    "{la}"
                );
                // Both runs stamp their lines (FF_TIMESTAMPS is on by default).
                assert!(
                    na.starts_with("STAMP 00O ") && nb.starts_with("STAMP 00O "),
                    "{na}"
                );
                compared += 1;
            }
            (None, None) => {}
            (x, y) => panic!(
                "{name}: a log in one run only (in process: {}, served: {})",
                x.is_some(),
                y.is_some()
            ),
        }
    }
    assert!(compared >= 3, "traces compared: {compared} ({ra:?})");
}
