//! One engine for local and production runs (issue 3): the example pipeline run by `runwright exec` with its
//! in-process runner, and the same pipeline served by exec's embedded coordinator (`--serve`) to a separate
//! `runwright run` service — the production path — give the same job results and the same traces, modulo
//! times and temporary paths.

use crate::harness::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What legitimately differs between two runs: timestamps, section times, temporary directories.
fn normalise(trace: &str) -> String {
    let rules = [
        (r"section_(start|end):\d+:", "section_$1:T:"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "DATE"),
        (r"\S*runwright-exec-[A-Za-z0-9]+", "TMP"),
        (r"\b[0-9]+(\.[0-9]+)? ?(ms|s)\b", "DURATION"),
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
    let mut lines = BufReader::new(exec.stdout.take().expect("stdout")).lines();
    let mut seen = String::new();
    let config: PathBuf = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("exec --serve ended before serving:\n{seen}"))
            .expect("a line");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("runwright run -c ").nth(1) {
            break PathBuf::from(rest.trim());
        }
    };
    let toml = std::fs::read_to_string(&config).expect("the served runner config");
    assert!(toml.contains("executor = \"shell\""), "{toml}");
    let service_log = std::fs::File::create(h.path().join("served-service.log")).expect("log");
    let mut service = h
        .command()
        .args(["run", "-c"])
        .arg(&config)
        .arg("-d")
        .arg(h.path().join("served-work"))
        .stdout(Stdio::null())
        .stderr(service_log)
        .spawn()
        .expect("runwright run starts");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = exec.wait().expect("exec ends");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(service.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = service.wait();
    seen.push_str(&rest.join("\n"));
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
