//! Overhead benchmark: runwright against the peer runner `gitlab-python-runner`, same coordinator, same jobs,
//! same run. Run it with `bench/run` (which builds the release binary and installs the peer into a venv);
//! `bench/README.md` says what is measured and how.
//!
//! ```text
//! cargo run --release -p runwright --example bench_overhead -- \
//!     --runwright target/release/runwright [--peer-python target/bench-venv/bin/python] \
//!     [--jobs 50] [--burst 200] [--concurrent 8] [--idle-secs 10] [--json out.json]
//! ```
//!
//! Figures, all read from the coordinator's request log ([`Coordinator::requests`]):
//! * per-job overhead of a trivial job (`true`): from the `201` answering `jobs/request` (arrival + handling
//!   time of that request) to the arrival of the `PUT /jobs/:id` with `state=success`; median and p90 over
//!   `--jobs` jobs run one after another (all queued up front, one job at a time);
//! * jobs/s: `--burst` jobs queued at once, `--concurrent` at a time, from the first handout to the last final
//!   update;
//! * idle RSS: `VmRSS` of the service after `--idle-secs` of polling an empty queue.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;

use runwright_coordinator::{
    fixtures, Coordinator, CoordinatorOptions, Endpoint, JobSpec, ProjectSpec, RequestLog,
    RunnerOptions,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROJECT: &str = "bench/app";

#[derive(Debug, Clone)]
struct Args {
    runwright: Option<PathBuf>,
    peer_python: Option<PathBuf>,
    jobs: usize,
    burst: usize,
    concurrent: usize,
    idle_secs: u64,
    build_host: PathBuf,
    json: Option<PathBuf>,
    keep: bool,
    timeline: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let root = support::workspace_root();
    let mut a = Args {
        runwright: None,
        peer_python: None,
        jobs: 50,
        burst: 200,
        concurrent: 8,
        idle_secs: 10,
        build_host: PathBuf::from("/work/shared/examples/build-host.toml"),
        json: None,
        keep: false,
        timeline: false,
    };
    if !a.build_host.is_file() {
        a.build_host = root.join("bench/build-host.toml");
    }
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--runwright" => a.runwright = Some(value()?.into()),
            "--peer-python" => a.peer_python = Some(value()?.into()),
            "--jobs" => a.jobs = value()?.parse()?,
            "--burst" => a.burst = value()?.parse()?,
            "--concurrent" => a.concurrent = value()?.parse()?,
            "--idle-secs" => a.idle_secs = value()?.parse()?,
            "--build-host" => a.build_host = value()?.into(),
            "--json" => a.json = Some(value()?.into()),
            "--keep" => a.keep = true,
            "--timeline" => a.timeline = true,
            "-h" | "--help" => {
                println!(
                    "bench_overhead [--runwright BIN] [--peer-python VENV_PYTHON] [--jobs N] [--burst N] \
                     [--concurrent N] [--idle-secs S] [--build-host TOML] [--json FILE] [--keep] [--timeline]"
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other} (try --help)"),
        }
    }
    // Children run in their own directories.
    if let Some(p) = &a.peer_python {
        a.peer_python = Some(std::path::absolute(p)?);
    }
    if let Some(p) = &a.runwright {
        a.runwright = Some(std::path::absolute(p)?);
    }
    anyhow::ensure!(
        a.jobs > 0 && a.burst > 0 && a.concurrent > 0,
        "counts must be positive"
    );
    Ok(a)
}

fn runwright_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(bin) = given {
        anyhow::ensure!(bin.is_file(), "{} does not exist", bin.display());
        return Ok(bin);
    }
    support::build_release_binary()
}

// ------------------------------------------------------------------------------------------------------------
// Statistics.

#[derive(Debug, Clone, Default)]
struct Overheads {
    /// Per job, milliseconds, sorted.
    ms: Vec<f64>,
    /// Jobs that did not end in `success`.
    failed: usize,
}

impl Overheads {
    fn pct(&self, p: f64) -> f64 {
        support::percentile(&self.ms, p)
    }
    fn median(&self) -> f64 {
        support::median(&self.ms)
    }
}

#[derive(Debug, Clone, Default)]
struct Row {
    runner: String,
    seq: Overheads,
    burst_jobs: usize,
    burst_failed: usize,
    burst_wall: Option<Duration>,
    idle_rss_kib: Option<u64>,
    idle_polls: usize,
    note: String,
}

impl Row {
    fn jobs_per_sec(&self) -> Option<f64> {
        self.burst_wall
            .map(|w| self.burst_jobs as f64 / w.as_secs_f64().max(1e-9))
    }
}

/// The runner token a `jobs/request` carried (body, or the `RUNNER-TOKEN` header non-strict coordinators
/// accept).
fn request_token(e: &RequestLog) -> Option<&str> {
    e.body_str("token")
        .or_else(|| e.request_header("runner-token"))
}

/// `PUT /api/v4/jobs/<id>` (not `/trace`).
fn is_update_of(e: &RequestLog, id: i64) -> bool {
    e.endpoint == Endpoint::UpdateJob
        && e.path.split('?').next() == Some(&format!("/api/v4/jobs/{id}"))
}

/// Any request about job `id`: its update or trace patches.
fn refers_to(e: &RequestLog, id: i64) -> bool {
    let path = e.path.split('?').next().unwrap_or("");
    path == format!("/api/v4/jobs/{id}") || path.starts_with(&format!("/api/v4/jobs/{id}/"))
}

/// When the coordinator handed `id` out: the end of the last `201` to the job's runner token before the first
/// request about the job. Unambiguous when the runner works on one job at a time.
fn handout(log: &[RequestLog], id: i64, token: &str) -> Option<Duration> {
    let first = log.iter().position(|e| refers_to(e, id))?;
    log[..first]
        .iter()
        .rev()
        .find(|e| {
            e.endpoint == Endpoint::RequestJob
                && e.status == Some(201)
                && request_token(e) == Some(token)
        })
        .map(|e| e.at + e.took)
}

/// Arrival of the final update (`state` success or failed) the coordinator accepted.
fn final_update(log: &[RequestLog], id: i64) -> Option<Duration> {
    log.iter()
        .find(|e| {
            is_update_of(e, id)
                && matches!(e.status, Some(200))
                && matches!(e.body_str("state"), Some("success" | "failed"))
        })
        .map(|e| e.at)
}

// ------------------------------------------------------------------------------------------------------------
// Processes.

struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Signal, then wait up to `grace`, then SIGKILL.
    fn stop(mut self, sig: nix::sys::signal::Signal, grace: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, sig);
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("bench: {} did not stop in {grace:?}; killing it", self.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Children (direct) of a process, from `/proc/<pid>/task/*/children`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

/// The environment both runners get: no user or system git configuration, no prompts.
fn common_env(cmd: &mut Command, home: &Path) {
    cmd.env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", home.join("home"))
        .stdin(Stdio::null());
}

// ------------------------------------------------------------------------------------------------------------
// The harness.

struct Bench {
    args: Args,
    coord: Coordinator,
    home: PathBuf,
    sha: String,
    rt: tokio::runtime::Handle,
}

impl Bench {
    fn job(&self, name: &str, token: Option<&str>) -> JobSpec {
        let mut spec = JobSpec {
            name: name.to_string(),
            script: vec!["true".to_string()],
            project: ProjectSpec::new(1, PROJECT),
            sha: self.sha.clone(),
            // A full clone/fetch: gitlab-python-runner turns a depth into `git clone --depth N --branch
            // <first refspec>`, which git rejects for GitLab's refspecs.
            depth: 0,
            ..JobSpec::default()
        };
        spec.runner_token = token.map(str::to_string);
        spec
    }

    fn enqueue(&self, n: usize, prefix: &str, token: Option<&str>) -> Vec<i64> {
        self.enqueue_with(n, prefix, token, &[])
    }

    fn enqueue_with(
        &self,
        n: usize,
        prefix: &str,
        token: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Vec<i64> {
        (0..n)
            .map(|i| {
                let mut spec = self.job(&format!("{prefix}-{i}"), token);
                for (k, v) in vars {
                    spec = spec.with_variable(k, v);
                }
                self.coord.enqueue(spec)
            })
            .collect()
    }

    /// `--jobs` jobs one after another through a runwright service with `concurrent = 1`.
    fn runwright_sequential(
        &self,
        bin: &Path,
        name: &str,
        vars: &[(&str, &str)],
    ) -> anyhow::Result<Overheads> {
        let token = format!("glrt-bench-{name}");
        self.coord.add_runner(&token, RunnerOptions::default());
        let config = self.runwright_config(name, &token, 1)?;
        let from = self.coord.requests().len();
        let ids = self.enqueue_with(self.args.jobs, name, Some(&token), vars);
        let svc = self.spawn_runwright(bin, &config, name)?;
        let failed = self.wait_all(&ids, Duration::from_secs(600));
        svc.stop(nix::sys::signal::Signal::SIGQUIT, Duration::from_secs(30));
        failed?;
        let log = self.coord.requests();
        let o = self.overheads(&log[from..], &ids, &token)?;
        eprintln!(
            "bench: runwright sequential ({name}): median {:.1} ms over {} jobs",
            o.median(),
            o.ms.len()
        );
        Ok(o)
    }

    fn wait_all(&self, ids: &[i64], timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut failed = 0;
        for &id in ids {
            let left = deadline.saturating_duration_since(Instant::now());
            let rec = self
                .rt
                .block_on(self.coord.wait_for_final(id, left))
                .map_err(|e| anyhow::anyhow!("job {id}: {e}"))?;
            if rec.state != "success" {
                failed += 1;
                if failed == 1 {
                    eprintln!(
                        "bench: job {id} ended {} ({:?}); trace:\n{}",
                        rec.state,
                        rec.failure_reason,
                        rec.trace_text()
                    );
                }
            }
        }
        Ok(failed)
    }

    fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.home.join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Per-job overheads of `ids`, all handed to `token`, from `log`.
    fn overheads(&self, log: &[RequestLog], ids: &[i64], token: &str) -> anyhow::Result<Overheads> {
        let mut o = Overheads::default();
        for &id in ids {
            let rec = self.coord.job(id).expect("job exists");
            if rec.state != "success" {
                o.failed += 1;
                continue;
            }
            let taker = rec.runner_token.as_deref().unwrap_or(token);
            let (Some(h), Some(f)) = (handout(log, id, taker), final_update(log, id)) else {
                anyhow::bail!("job {id}: handout or final update not found in the request log");
            };
            o.ms.push(f.saturating_sub(h).as_secs_f64() * 1000.0);
        }
        o.ms.sort_by(f64::total_cmp);
        if self.args.timeline {
            if let Some(&id) = ids.get(ids.len() / 2) {
                print_timeline(log, id, token);
                if let Some(rec) = self.coord.job(id) {
                    eprintln!("bench: trace of job {id}:\n{}", rec.trace_text());
                }
            }
        }
        Ok(o)
    }

    /// First handout to last final update of `ids`, from `log`.
    fn wall(&self, log: &[RequestLog], ids: &[i64]) -> Option<Duration> {
        let tokens: std::collections::HashSet<String> = ids
            .iter()
            .filter_map(|&id| self.coord.job(id)?.runner_token)
            .collect();
        let first = log
            .iter()
            .filter(|e| {
                e.endpoint == Endpoint::RequestJob
                    && e.status == Some(201)
                    && request_token(e).is_some_and(|t| tokens.contains(t))
            })
            .map(|e| e.at + e.took)
            .min()?;
        let last = ids
            .iter()
            .map(|&id| final_update(log, id))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()?;
        Some(last.saturating_sub(first))
    }

    fn idle_polls(&self, from: usize, tokens: &[String]) -> usize {
        self.coord.requests()[from..]
            .iter()
            .filter(|e| {
                e.endpoint == Endpoint::RequestJob
                    && request_token(e).is_some_and(|t| tokens.iter().any(|x| x == t))
            })
            .count()
    }

    // --- runwright ------------------------------------------------------------------------------------

    fn spawn_runwright(&self, bin: &Path, config: &Path, name: &str) -> anyhow::Result<Proc> {
        let work = self.dir(&format!("{name}-work"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("-c").arg(config).arg("-d").arg(&work);
        self.spawn_logged(cmd, name)
    }

    /// Starts `cmd` with the bench environment, its output in `<name>.log` / `<name>.err` under the bench home.
    fn spawn_logged(&self, mut cmd: Command, name: &str) -> anyhow::Result<Proc> {
        common_env(&mut cmd, &self.home);
        cmd.stdout(std::fs::File::create(
            self.home.join(format!("{name}.log")),
        )?)
        .stderr(std::fs::File::create(
            self.home.join(format!("{name}.err")),
        )?);
        Ok(Proc {
            name: name.to_string(),
            child: cmd.spawn()?,
        })
    }

    fn runwright_config(
        &self,
        name: &str,
        token: &str,
        concurrent: usize,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.dir(name)?;
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!(
                "concurrent = {concurrent}\ncheck_interval = 1\n\n[[runners]]\n  name = \"{name}\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"shell\"\n",
                self.coord.url()
            ),
        )?;
        Ok(path)
    }

    fn run_runwright(&self, bin: &Path) -> anyhow::Result<Vec<Row>> {
        let mut row = Row {
            runner: format!("runwright {}", version_of(bin)),
            ..Row::default()
        };
        let quit = nix::sys::signal::Signal::SIGQUIT;

        // 1. sequential, with a real fetch (as the peer does)
        row.seq = self.runwright_sequential(bin, "rw-seq", &[])?;
        // The same without sources: what runwright adds beyond git.
        let mut none = Row {
            runner: "  same, GIT_STRATEGY=none".to_string(),
            note: "runwright only: the peer ignores GIT_STRATEGY".to_string(),
            ..Row::default()
        };
        none.seq = self.runwright_sequential(bin, "rw-none", &[("GIT_STRATEGY", "none")])?;

        // 2. concurrent burst
        let token = "glrt-bench-runwright-burst";
        self.coord.add_runner(token, RunnerOptions::default());
        let config = self.runwright_config("rw-burst", token, self.args.concurrent)?;
        let from = self.coord.requests().len();
        let ids = self.enqueue(self.args.burst, "rw-burst", Some(token));
        let svc = self.spawn_runwright(bin, &config, "rw-burst")?;
        let failed = self.wait_all(&ids, Duration::from_secs(900));
        svc.stop(quit, Duration::from_secs(30));
        row.burst_failed = failed?;
        row.burst_jobs = ids.len();
        let log = self.coord.requests();
        row.burst_wall = self.wall(&log[from..], &ids);

        // 3. idle: the build host's config pointed at the coordinator
        let (config, tokens) = self.build_host_config()?;
        let svc = self.spawn_runwright(bin, &config, "rw-idle")?;
        let from = self.coord.requests().len();
        std::thread::sleep(Duration::from_secs(self.args.idle_secs));
        row.idle_rss_kib = support::proc_status_kib(svc.pid() as u32, "VmRSS");
        let kids = children(svc.pid());
        row.idle_polls = self.idle_polls(from, &tokens);
        let log = self.coord.requests();
        let polling: std::collections::BTreeSet<&str> = log[from..]
            .iter()
            .filter(|e| e.endpoint == Endpoint::RequestJob)
            .filter_map(request_token)
            .collect();
        svc.stop(quit, Duration::from_secs(30));
        row.note = format!(
            "idle: {} of {} [[runners]] entries polled ({} requests in {} s), {} child processes",
            polling.len(),
            tokens.len(),
            row.idle_polls,
            self.args.idle_secs,
            kids.len()
        );
        Ok(vec![row, none])
    }

    /// `build-host.toml` with every `url` rewritten to the coordinator, every token registered there.
    fn build_host_config(&self) -> anyhow::Result<(PathBuf, Vec<String>)> {
        let text = std::fs::read_to_string(&self.args.build_host)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.args.build_host.display()))?;
        let mut out = String::new();
        let mut tokens = Vec::new();
        for line in text.lines() {
            let key = line.split('=').next().unwrap_or("").trim();
            if key == "url" {
                let indent = &line[..line.len() - line.trim_start().len()];
                out.push_str(&format!("{indent}url = \"{}\"\n", self.coord.url()));
                continue;
            }
            if key == "token" {
                if let Some(tok) = line.split('"').nth(1) {
                    tokens.push(tok.to_string());
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        for t in &tokens {
            self.coord.add_runner(t, RunnerOptions::default());
        }
        let dir = self.dir("rw-idle")?;
        let path = dir.join("config.toml");
        std::fs::write(&path, out)?;
        Ok((path, tokens))
    }

    // --- gitlab-python-runner -------------------------------------------------------------------------

    fn spawn_peer(&self, python: &Path, token: &str, name: &str) -> anyhow::Result<Proc> {
        let dir = self.dir(name)?;
        let config = dir.join("gitlab-runner.yml");
        // The python runner's own config format (GitlabPyRunner/common.py `parse_config`): it appends
        // `/api/v4` to `server`, so no trailing slash.
        std::fs::write(
            &config,
            format!(
                "server: {}\ntoken: {token}\nexecutor: shell\nshell: /bin/sh\ndir: {}\n",
                self.coord.url().trim_end_matches('/'),
                dir.display()
            ),
        )?;
        let mut cmd = Command::new(python);
        cmd.args(["-m", "GitlabPyRunner", "--start"]).arg(&config);
        cmd.current_dir(&dir);
        self.spawn_logged(cmd, name)
    }

    fn run_peer(&self, python: &Path) -> anyhow::Result<Row> {
        let mut row = Row {
            runner: format!("gitlab-python-runner {}", peer_version(python)),
            ..Row::default()
        };
        // No signal handler: SIGTERM ends it at once (it is only stopped with an empty queue).
        let term = nix::sys::signal::Signal::SIGTERM;

        // 1. sequential: it runs one job at a time by design.
        let token = "glrt-bench-peer-seq";
        self.coord.add_runner(token, RunnerOptions::default());
        let from = self.coord.requests().len();
        let ids = self.enqueue(self.args.jobs, "peer-seq", Some(token));
        let p = self.spawn_peer(python, token, "peer-seq")?;
        let failed = self.wait_all(&ids, Duration::from_secs(1800));
        p.stop(term, Duration::from_secs(10));
        failed?;
        let log = self.coord.requests();
        row.seq = self.overheads(&log[from..], &ids, token)?;
        eprintln!(
            "bench: gitlab-python-runner sequential: median {:.1} ms over {} jobs",
            row.seq.median(),
            row.seq.ms.len()
        );

        // 2. burst: it has no `concurrent`; N processes with the same token are its equivalent.
        let token = "glrt-bench-peer-burst";
        self.coord.add_runner(token, RunnerOptions::default());
        let from = self.coord.requests().len();
        let ids = self.enqueue(self.args.burst, "peer-burst", Some(token));
        let procs = (0..self.args.concurrent)
            .map(|i| self.spawn_peer(python, token, &format!("peer-burst-{i}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let failed = self.wait_all(&ids, Duration::from_secs(1800));
        for p in procs {
            p.stop(term, Duration::from_secs(10));
        }
        row.burst_failed = failed?;
        row.burst_jobs = ids.len();
        let log = self.coord.requests();
        row.burst_wall = self.wall(&log[from..], &ids);

        // 3. idle: one process (= one shell runner) polling an empty queue.
        let token = "glrt-bench-peer-idle";
        self.coord.add_runner(token, RunnerOptions::default());
        let from = self.coord.requests().len();
        let p = self.spawn_peer(python, token, "peer-idle")?;
        std::thread::sleep(Duration::from_secs(self.args.idle_secs));
        row.idle_rss_kib = support::proc_status_kib(p.pid() as u32, "VmRSS");
        row.idle_polls = self.idle_polls(from, &[token.to_string()]);
        let kids = children(p.pid());
        p.stop(term, Duration::from_secs(10));
        row.note = format!(
            "idle: one process, one shell runner ({} requests in {} s; it sleeps 40 s after an empty poll), {} child processes; burst: {} processes",
            row.idle_polls,
            self.args.idle_secs,
            kids.len(),
            self.args.concurrent
        );
        Ok(row)
    }
}

/// The requests of one job, from its handout to its final update, relative to the handout.
fn print_timeline(log: &[RequestLog], id: i64, token: &str) {
    let (Some(h), Some(f)) = (handout(log, id, token), final_update(log, id)) else {
        return;
    };
    eprintln!("bench: timeline of job {id} (ms after the handout: arrival +took)");
    for e in log.iter().filter(|e| e.at + e.took >= h && e.at <= f) {
        let state = e.body_str("state").unwrap_or("");
        eprintln!(
            "  {:>8.1} +{:<6.1} {:<12} {} {} {:?} {state}",
            (e.at.as_secs_f64() - h.as_secs_f64()) * 1000.0,
            e.took.as_secs_f64() * 1000.0,
            e.endpoint.as_str(),
            e.method,
            e.path,
            e.status,
        );
    }
}

fn version_of(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .and_then(|s| s.split_whitespace().last().map(str::to_string))
        .unwrap_or_default()
}

fn peer_version(python: &Path) -> String {
    Command::new(python)
        .args([
            "-c",
            "from GitlabPyRunner import consts; print(consts.VERSION)",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("-".to_string(), |v| format!("{v:.prec$}"))
}

fn print_table(args: &Args, rows: &[Row]) {
    println!();
    println!(
        "{:<30} {:>5} {:>10} {:>8} {:>18} {:>13}",
        "runner",
        "jobs",
        "median ms",
        "p90 ms",
        format!("jobs/s (c={})", args.concurrent),
        "idle RSS MiB"
    );
    for r in rows {
        println!(
            "{:<30} {:>5} {:>10} {:>8} {:>18} {:>13}",
            r.runner,
            r.seq.ms.len(),
            fmt_opt(Some(r.seq.median()), 1),
            fmt_opt(Some(r.seq.pct(90.0)), 1),
            fmt_opt(r.jobs_per_sec(), 1),
            fmt_opt(r.idle_rss_kib.map(|k| k as f64 / 1024.0), 1),
        );
    }
    println!();
    for r in rows {
        let burst = if r.burst_jobs > 0 {
            format!(
                "; burst {} jobs in {} s ({} failed)",
                r.burst_jobs,
                fmt_opt(r.burst_wall.map(|w| w.as_secs_f64()), 2),
                r.burst_failed
            )
        } else {
            String::new()
        };
        println!(
            "{}: per-job min {} / max {} ms{burst}; {}",
            r.runner.trim(),
            fmt_opt(r.seq.ms.first().copied(), 1),
            fmt_opt(r.seq.ms.last().copied(), 1),
            r.note
        );
    }
    if let (Some(rw), Some(peer)) = (
        rows.first(),
        rows.iter()
            .find(|r| r.runner.starts_with("gitlab-python-runner")),
    ) {
        let ratio = rw.seq.median() / peer.seq.median();
        println!();
        println!(
            "ratio runwright/peer, median per-job overhead: {} (aim: <= 0.10)",
            fmt_opt(Some(ratio), 3)
        );
        if let Some(none) = rows.get(1).filter(|r| r.burst_jobs == 0) {
            println!(
                "ratio runwright (GIT_STRATEGY=none)/peer (always clones): {}",
                fmt_opt(Some(none.seq.median() / peer.seq.median()), 3)
            );
        }
        if let (Some(a), Some(b)) = (rw.jobs_per_sec(), peer.jobs_per_sec()) {
            println!("ratio runwright/peer, jobs/s: {:.1}x", a / b);
        }
    }
}

fn write_json(path: &Path, args: &Args, rows: &[Row]) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "runner": r.runner,
                "jobs": r.seq.ms.len(),
                "failed": r.seq.failed,
                "median_ms": r.seq.median(),
                "p90_ms": r.seq.pct(90.0),
                "min_ms": r.seq.ms.first(),
                "max_ms": r.seq.ms.last(),
                "burst_jobs": r.burst_jobs,
                "burst_failed": r.burst_failed,
                "burst_wall_s": r.burst_wall.map(|w| w.as_secs_f64()),
                "jobs_per_s": r.jobs_per_sec(),
                "concurrent": args.concurrent,
                "idle_rss_kib": r.idle_rss_kib,
                "idle_polls": r.idle_polls,
                "note": r.note,
            })
        })
        .collect();
    std::fs::write(path, serde_json::to_string_pretty(&rows)?)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let bin = runwright_binary(args.runwright.clone())?;
    let tmp = tempfile::Builder::new()
        .prefix("runwright-bench-")
        .tempdir()?;
    let home = tmp.path().to_path_buf();
    std::fs::create_dir_all(home.join("home"))?;
    std::fs::write(
        home.join("gitconfig"),
        "[user]\n\temail = bench@runwright.invalid\n\tname = runwright bench\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
    )?;

    // A small real repository, cloned/fetched by every job of both runners.
    let git_root = home.join("git");
    let sha = fixtures::create_repo(
        &git_root,
        &format!("{PROJECT}.git"),
        &[
            (
                "README.md",
                "# bench\n\nA small project for runwright's overhead benchmark.\n",
            ),
            ("src/main.sh", "#!/bin/sh\necho hello\n"),
            ("src/lib.sh", "greet() { echo \"hello $1\"; }\n"),
        ],
    )?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let coord = rt.block_on(Coordinator::start(CoordinatorOptions {
        git_root: Some(git_root),
        // gitlab-python-runner sends no system_id: GitLab accepts that, the strict mode does not.
        strict: false,
        ..CoordinatorOptions::default()
    }))?;
    let bench = Bench {
        args: args.clone(),
        coord: coord.clone(),
        home: home.clone(),
        sha,
        rt: rt.handle().clone(),
    };

    let result = (|| -> anyhow::Result<Vec<Row>> {
        let mut rows = bench.run_runwright(&bin)?;
        match &args.peer_python {
            Some(python) => match bench.run_peer(python) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("bench: gitlab-python-runner failed: {e:#}"),
            },
            None => eprintln!("bench: no --peer-python: runwright only"),
        }
        Ok(rows)
    })();
    drop(bench);
    rt.block_on(coord.shutdown());

    let keep = args.keep || result.is_err();
    if keep {
        let path = tmp.keep();
        eprintln!("bench: work directory kept at {}", path.display());
    }
    let rows = result?;
    print_table(&args, &rows);
    if let Some(path) = &args.json {
        write_json(path, &args, &rows)?;
    }
    Ok(())
}
