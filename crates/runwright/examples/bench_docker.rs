//! Docker executor benchmark: runwright's per-job overhead and time to the first script line of a job with a
//! service, each against plain `docker` CLI commands doing the same, measured round by round in one run. Run it
//! with `bench/docker` (which builds the release binary and this example); `bench/docker.md` says what is
//! measured and how.
//!
//! ```text
//! cargo run --release -p runwright --example bench_docker -- \
//!     --runwright target/release/runwright [--rounds 15] [--warmup 1] [--no-fetch] [--json out.json] \
//!     [--timeline] [--keep]
//! ```
//!
//! Every round runs each case once; the order of the cases is reversed every other round so that drift in the
//! machine's load hits runwright and the baselines alike. runwright figures come from the request log of the
//! bundled coordinator (handout = the `201` to `jobs/request` was ready; end = arrival of the final
//! `PUT /jobs/:id`), baselines are wall times of `docker` processes spawned from here. The "first line" moment
//! is stamped inside the container (mtime of a file created right after `echo first-line`, nanoseconds of the
//! kernel's coarse realtime clock) and compared with the host's clock.
//!
//! It shares only `support`'s series statistics with the other benches; everything it makes on the Docker
//! daemon carries the label `org.runwright.bench` or the runner's `com.gitlab.gitlab-runner.runner.id` and is
//! removed at the end, which it then checks.
// The workspace denies printing (libraries log or return errors); a bench: its output is its figures.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use runwright_testsupport as support;

use runwright_api::types::Image;
use runwright_coordinator::{
    fixtures, Coordinator, CoordinatorOptions, Endpoint, JobRecord, JobSpec, ProjectSpec,
    RequestLog, RunnerOptions,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BUSYBOX: &str = "127.0.0.1:5999/runwright-test/busybox:1";
const EXPOSED: &str = "127.0.0.1:5999/runwright-test/busybox-exposed:1";
const PROJECT: &str = "bench/docker";
/// The first script line, then a stamp of its moment from inside the container.
const FIRST_LINE: &str =
    "echo first-line; : > .first-line; stat -c 'first-line-at %Y %y' .first-line";
const WGET: &str = "wget -qO- http://web:8080/";
/// What `busybox-exposed` serves (scripts/test-images).
const SERVED: &str = "hello from service";

#[derive(Debug, Clone)]
/// `bench/docker` passes these through.
#[derive(clap::Parser)]
struct Args {
    /// The runwright binary to measure.
    #[arg(long)]
    runwright: PathBuf,
    /// Counted rounds.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Uncounted rounds first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Skip the job with a real git fetch.
    #[arg(long)]
    no_fetch: bool,
    /// Also write every sample here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print the last round's requests (and the service job's trace).
    #[arg(long)]
    timeline: bool,
    /// Keep the temporary directory.
    #[arg(long)]
    keep: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = <Args as clap::Parser>::parse();
    anyhow::ensure!(
        a.runwright.is_file(),
        "{} does not exist",
        a.runwright.display()
    );
    a.runwright = std::path::absolute(&a.runwright)?;
    anyhow::ensure!(a.rounds > 0, "--rounds must be positive");
    Ok(a)
}

// ------------------------------------------------------------------------------------------------------------
// Series of milliseconds.

#[derive(Debug, Clone, Default)]
struct Series {
    key: &'static str,
    label: String,
    ms: Vec<f64>,
}

impl Series {
    fn new(key: &'static str, label: &str) -> Series {
        Series {
            key,
            label: label.to_string(),
            ms: Vec::new(),
        }
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn median(&self) -> f64 {
        support::median(&self.sorted())
    }
    fn pct(&self, p: f64) -> f64 {
        support::percentile(&self.sorted(), p)
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Signed milliseconds between two wall-clock instants (`b - a`).
fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

// ------------------------------------------------------------------------------------------------------------
// The request log.

fn request_token(e: &RequestLog) -> Option<&str> {
    e.body_str("token")
        .or_else(|| e.request_header("runner-token"))
}

fn job_path(e: &RequestLog) -> &str {
    e.path.split('?').next().unwrap_or("")
}

fn refers_to(e: &RequestLog, id: i64) -> bool {
    let p = job_path(e);
    p == format!("/api/v4/jobs/{id}") || p.starts_with(&format!("/api/v4/jobs/{id}/"))
}

/// When the response of the `201` that handed `id` to `token` was ready (the runner works on one job at a time).
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

/// Arrival of the accepted final `PUT /jobs/:id`.
fn final_update(log: &[RequestLog], id: i64) -> Option<Duration> {
    log.iter()
        .find(|e| {
            e.endpoint == Endpoint::UpdateJob
                && job_path(e) == format!("/api/v4/jobs/{id}")
                && e.status == Some(200)
                && matches!(e.body_str("state"), Some("success" | "failed"))
        })
        .map(|e| e.at)
}

/// When the coordinator had stored the trace up to byte `end` (exclusive): the first accepted `PATCH …/trace`
/// whose `Content-Range` (`start-end`, inclusive end as GitLab's runner sends it) reaches it, at the moment its
/// response was ready.
fn trace_reached(log: &[RequestLog], id: i64, end: usize) -> Option<Duration> {
    log.iter()
        .filter(|e| {
            e.endpoint == Endpoint::PatchTrace
                && job_path(e) == format!("/api/v4/jobs/{id}/trace")
                && matches!(e.status, Some(200 | 202))
        })
        .find(|e| {
            let range = e.request_header("content-range").unwrap_or("");
            let (start, last) = range.split_once('-').unwrap_or(("", ""));
            match (start.trim().parse::<usize>(), last.trim().parse::<usize>()) {
                (Ok(_), Ok(last)) => last + 1 >= end,
                (Ok(start), Err(_)) => start + e.body_len >= end,
                _ => false,
            }
        })
        .map(|e| e.at + e.took)
}

fn print_timeline(log: &[RequestLog], id: i64, token: &str) {
    let (Some(h), Some(f)) = (handout(log, id, token), final_update(log, id)) else {
        return;
    };
    eprintln!("bench: timeline of job {id} (ms after the handout: arrival +took)");
    for e in log.iter().filter(|e| e.at + e.took >= h && e.at <= f) {
        if e.endpoint == Endpoint::RequestJob && request_token(e) != Some(token) {
            continue;
        }
        eprintln!(
            "  {:>8.1} +{:<6.1} {:<12} {} {} {:?} {} {}",
            ms(e.at) - ms(h),
            ms(e.took),
            e.endpoint.as_str(),
            e.method,
            e.path,
            e.status,
            e.body_str("state").unwrap_or(""),
            e.request_header("content-range").unwrap_or(""),
        );
    }
}

/// `first-line-at <epoch s> <date> <time.nanos> <zone>` printed by `stat` in the container (a line of its own;
/// the echoed command line contains the format, not the figures).
fn first_line_stamp(text: &str) -> Option<SystemTime> {
    text.lines().find_map(|l| {
        let mut parts = l.trim().strip_prefix("first-line-at ")?.split_whitespace();
        let secs: u64 = parts.next()?.parse().ok()?;
        let time = parts.nth(1)?;
        let frac = time.split_once('.').map_or("0", |(_, f)| f);
        let digits: String = frac
            .chars()
            .take_while(char::is_ascii_digit)
            .take(9)
            .collect();
        let nanos: u32 = format!("{digits:0<9}").parse().ok()?;
        Some(UNIX_EPOCH + Duration::new(secs, nanos))
    })
}

/// Byte offset just past the `first-line` output line (the echoed command is another line).
fn first_line_end(trace: &str) -> Option<usize> {
    let mut offset = 0;
    for line in trace.split_inclusive('\n') {
        offset += line.len();
        if line.trim_end_matches(['\n', '\r']) == "first-line" {
            return Some(offset);
        }
    }
    None
}

// ------------------------------------------------------------------------------------------------------------
// Processes.

/// The environment runwright and the docker CLI get: no user or system git configuration, an empty HOME.
fn common_env(cmd: &mut Command, home: &Path) {
    cmd.env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("HOME", home.join("home"))
        .stdin(Stdio::null());
}

struct Docker {
    home: PathBuf,
}

impl Docker {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(args);
        common_env(&mut cmd, &self.home);
        cmd
    }
    /// Runs `docker ARGS`, its output captured; an error carries stderr.
    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cmd(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
    /// Runs `docker ARGS` with its output discarded (as a user timing it in a terminal would not pay for
    /// capturing); an error says which command failed.
    fn quiet(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "docker {} failed ({status})",
            args.join(" ")
        );
        Ok(())
    }
    fn lines(&self, args: &[&str]) -> Vec<String> {
        self.run(args)
            .map(|s| {
                s.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Service {
    child: Child,
}

impl Service {
    /// SIGQUIT (graceful: finish running jobs, then exit), then SIGKILL after `grace`.
    fn stop(mut self, grace: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("bench: runwright did not stop in {grace:?}; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// The bench.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    BaseRun,
    BaseRunNet,
    RwNone,
    RwFetch,
    ShellNone,
    RwService,
    BaseService,
}

struct Bench {
    args: Args,
    coord: Coordinator,
    rt: tokio::runtime::Runtime,
    /// The coordinator's clock (`RequestLog::at`) starts at this wall-clock time (within `epoch_error`).
    epoch: SystemTime,
    docker: Docker,
    sha: String,
    docker_token: String,
    shell_token: String,
    /// `docker run` options of the plain baseline: none where the default bridge works, else `--network none`.
    base_net: Vec<&'static str>,
    label: String,
    series: Vec<Series>,
    failures: Vec<String>,
    /// `wget` retries of the baseline service sequence's client (counted rounds).
    wget_retries: usize,
}

impl Bench {
    fn series(&mut self, key: &'static str) -> &mut Series {
        self.series
            .iter_mut()
            .find(|s| s.key == key)
            .expect("known series")
    }

    fn record(&mut self, key: &'static str, counted: bool, v: Option<f64>) {
        if let (true, Some(v)) = (counted, v) {
            self.series(key).ms.push(v);
        }
    }

    fn job_spec(&self, name: &str, token: &str) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            script: vec!["true".to_string()],
            project: ProjectSpec::new(1, PROJECT),
            sha: self.sha.clone(),
            // As bench_overhead: a full fetch of a one-commit repository.
            depth: 0,
            runner_token: Some(token.to_string()),
            ..JobSpec::default()
        }
    }

    /// Enqueues `spec`, waits for its end; the record and the request log from before the enqueue.
    fn run_job(&mut self, spec: JobSpec) -> anyhow::Result<(JobRecord, Vec<RequestLog>)> {
        let from = self.coord.requests().len();
        let id = self.coord.enqueue(spec);
        let rec = self
            .rt
            .block_on(self.coord.wait_for_final(id, Duration::from_secs(300)))
            .map_err(|e| anyhow::anyhow!("job {id}: {e}"))?;
        // The final update is logged once answered; wait until it is in the log.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.coord.requests();
            if final_update(&log[from..], id).is_some() || Instant::now() > deadline {
                return Ok((rec, log[from..].to_vec()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Handout to final update of a job of `token`, `None` (and noted) unless it succeeded.
    fn job_overhead(
        &mut self,
        spec: JobSpec,
        token: &str,
    ) -> anyhow::Result<Option<(f64, JobRecord, Vec<RequestLog>)>> {
        let (rec, log) = self.run_job(spec)?;
        if rec.state != "success" {
            self.failures.push(format!(
                "job {} ({}) ended {}: {}",
                rec.id,
                rec.name,
                rec.state,
                rec.trace_text()
            ));
            return Ok(None);
        }
        let (Some(h), Some(f)) = (handout(&log, rec.id, token), final_update(&log, rec.id)) else {
            anyhow::bail!(
                "job {}: handout or final update not in the request log",
                rec.id
            );
        };
        Ok(Some((ms(f.saturating_sub(h)), rec, log)))
    }

    fn case(&mut self, case: Case, round: usize) -> anyhow::Result<()> {
        let counted = round >= self.args.warmup;
        let tag = format!("{}-{round}", std::process::id());
        match case {
            Case::BaseRun => {
                let mut a = vec!["run", "--rm", "--label", self.label.as_str()];
                a.extend(self.base_net.iter().copied());
                a.extend([BUSYBOX, "true"]);
                let t = Instant::now();
                self.docker.quiet(&a)?;
                self.record("base_run", counted, Some(ms(t.elapsed())));
            }
            Case::BaseRunNet => {
                let net = format!("bench-docker-net-{tag}");
                let t = Instant::now();
                self.docker
                    .quiet(&["network", "create", "--label", &self.label, &net])?;
                let run = self.docker.quiet(&[
                    "run",
                    "--rm",
                    "--label",
                    &self.label,
                    "--network",
                    &net,
                    BUSYBOX,
                    "true",
                ]);
                let rm = self.docker.quiet(&["network", "rm", &net]);
                let took = ms(t.elapsed());
                run?;
                rm?;
                self.record("base_run_net", counted, Some(took));
            }
            Case::RwNone | Case::RwFetch | Case::ShellNone => {
                let (token, key) = match case {
                    Case::RwNone => (self.docker_token.clone(), "rw_none"),
                    Case::RwFetch => (self.docker_token.clone(), "rw_fetch"),
                    _ => (self.shell_token.clone(), "shell_none"),
                };
                let mut spec = self.job_spec(&format!("{key}-{round}"), &token);
                if case != Case::RwFetch {
                    spec = spec.with_variable("GIT_STRATEGY", "none");
                }
                let got = self.job_overhead(spec, &token)?;
                if let (Some((_, rec, log)), true) = (
                    &got,
                    self.args.timeline && round + 1 == self.args.warmup + self.args.rounds,
                ) {
                    print_timeline(log, rec.id, &token);
                }
                self.record(key, counted, got.map(|g| g.0));
            }
            Case::RwService => {
                let token = self.docker_token.clone();
                let mut spec = self
                    .job_spec(&format!("service-{round}"), &token)
                    .with_variable("GIT_STRATEGY", "none");
                spec.script = vec![FIRST_LINE.to_string(), WGET.to_string()];
                spec.services = vec![Image {
                    name: EXPOSED.into(),
                    alias: "web".into(),
                    ..Default::default()
                }];
                let Some((total, rec, log)) = self.job_overhead(spec, &token)? else {
                    return Ok(());
                };
                let trace = rec.trace_text();
                anyhow::ensure!(
                    trace.contains(SERVED),
                    "job {}: the service's answer is not in the trace:\n{trace}",
                    rec.id
                );
                let h = handout(&log, rec.id, &token).expect("checked");
                let stamp = first_line_stamp(&trace).map(|s| ms_between(self.epoch + h, s));
                let seen = first_line_end(&trace)
                    .and_then(|end| trace_reached(&log, rec.id, end))
                    .map(|t| ms(t.saturating_sub(h)));
                if stamp.is_none() || seen.is_none() {
                    eprintln!(
                        "bench: job {}: no first-line stamp or trace patch found:\n{trace}",
                        rec.id
                    );
                }
                if self.args.timeline && round + 1 == self.args.warmup + self.args.rounds {
                    print_timeline(&log, rec.id, &token);
                    eprintln!("bench: trace of job {}:\n{trace}", rec.id);
                }
                self.record("rw_service_total", counted, Some(total));
                self.record("rw_service_first", counted, stamp);
                self.record("rw_service_seen", counted, seen);
            }
            Case::BaseService => {
                let net = format!("bench-docker-svc-{tag}");
                let web = format!("bench-docker-web-{tag}");
                let client =
                    format!("{FIRST_LINE}; until {WGET}; do echo wget-retry; sleep 0.05; done");
                let start = SystemTime::now();
                let t = Instant::now();
                let result = (|| -> anyhow::Result<String> {
                    self.docker
                        .quiet(&["network", "create", "--label", &self.label, &net])?;
                    self.docker.quiet(&[
                        "run",
                        "-d",
                        "--name",
                        &web,
                        "--label",
                        &self.label,
                        "--network",
                        &net,
                        "--network-alias",
                        "web",
                        EXPOSED,
                    ])?;
                    self.docker.run(&[
                        "run",
                        "--rm",
                        "--label",
                        &self.label,
                        "--network",
                        &net,
                        "-w",
                        "/",
                        BUSYBOX,
                        "sh",
                        "-c",
                        &client,
                    ])
                })();
                // Cleanup is part of the sequence (and runs whatever happened above).
                let rm = self.docker.quiet(&["rm", "-f", &web]);
                let rm_net = self.docker.quiet(&["network", "rm", &net]);
                let took = ms(t.elapsed());
                let out = result?;
                rm?;
                rm_net?;
                anyhow::ensure!(
                    out.contains(SERVED),
                    "baseline client did not get the service's answer:\n{out}"
                );
                if counted {
                    self.wget_retries += out.matches("wget-retry").count();
                }
                let stamp = first_line_stamp(&out).map(|s| ms_between(start, s));
                if stamp.is_none() {
                    eprintln!("bench: baseline service sequence printed no stamp:\n{out}");
                }
                self.record("base_service_total", counted, Some(took));
                self.record("base_service_first", counted, stamp);
            }
        }
        Ok(())
    }

    /// Removes everything this run made on the daemon; returns what could not be removed.
    fn cleanup(&self) -> Vec<String> {
        let d = &self.docker;
        let mut filters = vec![format!("label={}", self.label)];
        for t in [&self.docker_token, &self.shell_token] {
            filters.push(format!(
                "label=com.gitlab.gitlab-runner.runner.id={}",
                runwright_config::short_token(t)
            ));
        }
        for f in &filters {
            for c in d.lines(&["ps", "-aq", "--filter", f]) {
                let _ = d.quiet(&["rm", "-f", "-v", &c]);
            }
        }
        for f in &filters {
            for n in d.lines(&["network", "ls", "-q", "--filter", f]) {
                let _ = d.quiet(&["network", "rm", &n]);
            }
            for v in d.lines(&["volume", "ls", "-q", "--filter", f]) {
                let _ = d.quiet(&["volume", "rm", "-f", &v]);
            }
        }
        let mut left = Vec::new();
        for f in &filters {
            left.extend(d.lines(&[
                "ps",
                "-a",
                "--format",
                "container {{.Names}}",
                "--filter",
                f,
            ]));
            left.extend(d.lines(&[
                "network",
                "ls",
                "--format",
                "network {{.Name}}",
                "--filter",
                f,
            ]));
            left.extend(d.lines(&[
                "volume",
                "ls",
                "--format",
                "volume {{.Name}}",
                "--filter",
                f,
            ]));
        }
        left
    }
}

fn token(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mix = (nanos as u64)
        ^ ((std::process::id() as u64) << 32)
        ^ (prefix.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "glrt-{prefix}{:016x}",
        mix.wrapping_mul(0x2545_f491_4f6c_dd1d)
    )
}

fn fmt(v: f64, prec: usize) -> String {
    if v.is_finite() {
        format!("{v:.prec$}")
    } else {
        "-".to_string()
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::Builder::new()
        .prefix("runwright-bench-docker-")
        .tempdir()?;
    let home = tmp.path().to_path_buf();
    std::fs::create_dir_all(home.join("home"))?;
    std::fs::write(
        home.join("gitconfig"),
        "[user]\n\temail = bench@runwright.invalid\n\tname = runwright bench\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
    )?;
    let docker = Docker { home: home.clone() };
    for image in [BUSYBOX, EXPOSED] {
        docker
            .run(&["image", "inspect", "--format", "{{.Id}}", image])
            .map_err(|e| anyhow::anyhow!("{e} (build the test images with scripts/test-images)"))?;
    }
    let label = format!("org.runwright.bench=docker-{}", std::process::id());

    // The literal baseline `docker run --rm IMAGE true` needs the default bridge; where it is broken (no
    // `docker0`), `--network none` stands in and the table says so.
    let base_net: Vec<&'static str> = match docker
        .run(&["run", "--rm", "--label", &label, BUSYBOX, "true"])
    {
        Ok(_) => Vec::new(),
        Err(e) => {
            eprintln!("bench: `docker run --rm {BUSYBOX} true` fails here ({e}); the plain baseline uses --network none");
            vec!["--network", "none"]
        }
    };

    let git_root = home.join("git");
    let sha = fixtures::create_repo(
        &git_root,
        &format!("{PROJECT}.git"),
        &[
            (
                "README.md",
                "# bench\n\nA small project for runwright's docker benchmark.\n",
            ),
            ("src/main.sh", "#!/bin/sh\necho hello\n"),
            ("src/lib.sh", "greet() { echo \"hello $1\"; }\n"),
        ],
    )?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (epoch, i0) = (SystemTime::now(), Instant::now());
    // Git (and the helper's transfers) run in the job's helper container, to which 127.0.0.1 is itself: the
    // coordinator listens on the gateway of a network the bench makes (labelled, removed with the rest), an
    // address of this host that every container reaches.
    let reach_net = format!("runwright-bench-reach-{}", std::process::id());
    let gateway = rt.block_on(async {
        let d = runwright_docker::connect(None, None, false).await?;
        let (k, v) = label.split_once('=').unwrap_or((label.as_str(), ""));
        runwright_docker::reach::gateway(
            &d,
            &reach_net,
            std::collections::HashMap::from([(k.to_string(), v.to_string())]),
        )
        .await
    })?;
    let coord = rt.block_on(Coordinator::start(CoordinatorOptions {
        bind: std::net::SocketAddr::new(gateway, 0),
        git_root: Some(git_root),
        ..CoordinatorOptions::default()
    }))?;
    let epoch_error = i0.elapsed();

    let docker_token = token("bd");
    let shell_token = token("bs");
    for t in [&docker_token, &shell_token] {
        coord.add_runner(t, RunnerOptions::default());
    }
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\n\n\
             [[runners]]\n  name = \"bench-docker\"\n  url = \"{url}\"\n  token = \"{docker_token}\"\n  executor = \"docker\"\n  \
             [runners.docker]\n    image = \"{BUSYBOX}\"\n    pull_policy = [\"if-not-present\"]\n    wait_for_services_timeout = 30\n\n\
             [[runners]]\n  name = \"bench-shell\"\n  url = \"{url}\"\n  token = \"{shell_token}\"\n  executor = \"shell\"\n",
            url = coord.url()
        ),
    )?;
    let work = home.join("work");
    std::fs::create_dir_all(&work)?;
    let mut cmd = Command::new(&args.runwright);
    cmd.arg("run").arg("-c").arg(&config).arg("-d").arg(&work);
    common_env(&mut cmd, &home);
    cmd.stdout(std::fs::File::create(home.join("runwright.log"))?)
        .stderr(std::fs::File::create(home.join("runwright.err"))?);
    let service = Service {
        child: cmd.spawn()?,
    };

    let mut bench = Bench {
        args: args.clone(),
        coord: coord.clone(),
        rt,
        epoch,
        docker,
        sha,
        docker_token,
        shell_token,
        base_net: base_net.clone(),
        label,
        series: vec![
            Series::new(
                "base_run",
                if base_net.is_empty() {
                    "docker run --rm busybox true"
                } else {
                    "docker run --rm --network none busybox true"
                },
            ),
            Series::new(
                "base_run_net",
                "docker network create; run --rm --network; network rm",
            ),
            Series::new("rw_none", "runwright docker job, GIT_STRATEGY=none"),
            Series::new("rw_fetch", "runwright docker job, fetch"),
            Series::new("shell_none", "runwright shell job, GIT_STRATEGY=none"),
            Series::new(
                "rw_service_first",
                "runwright service job: first line (container clock)",
            ),
            Series::new(
                "rw_service_seen",
                "runwright service job: first line in coordinator's trace",
            ),
            Series::new(
                "rw_service_total",
                "runwright service job: handout to final update",
            ),
            Series::new(
                "base_service_first",
                "docker CLI service sequence: first line (container clock)",
            ),
            Series::new(
                "base_service_total",
                "docker CLI service sequence: wall, cleanup included",
            ),
        ],
        failures: Vec::new(),
        wget_retries: 0,
    };

    let mut cases = vec![Case::BaseRun, Case::RwNone, Case::BaseRunNet];
    if !args.no_fetch {
        cases.push(Case::RwFetch);
    }
    cases.extend([Case::ShellNone, Case::BaseService, Case::RwService]);

    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let started = Instant::now();
    let result = (|| -> anyhow::Result<()> {
        for round in 0..args.warmup + args.rounds {
            let mut order = cases.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for case in order {
                bench.case(case, round)?;
            }
            eprintln!(
                "bench: round {}/{}{} done ({:.0} s)",
                round + 1,
                args.warmup + args.rounds,
                if round < args.warmup {
                    " (warm-up)"
                } else {
                    ""
                },
                started.elapsed().as_secs_f64()
            );
        }
        Ok(())
    })();
    service.stop(Duration::from_secs(60));
    let left = bench.cleanup();
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let Bench {
        rt,
        series,
        failures,
        wget_retries,
        ..
    } = bench;
    rt.block_on(coord.shutdown());
    for f in &failures {
        eprintln!("bench: {f}");
    }
    if args.keep || result.is_err() {
        eprintln!("bench: work directory kept at {}", tmp.keep().display());
    }
    result?;
    anyhow::ensure!(failures.is_empty(), "{} job(s) failed", failures.len());

    // The table.
    let get = |k: &str| series.iter().find(|s| s.key == k).expect("series");
    println!();
    println!(
        "{:<62} {:>4} {:>9} {:>8} {:>8} {:>8}",
        "case", "n", "median ms", "p90 ms", "min", "max"
    );
    for s in &series {
        if s.ms.is_empty() {
            continue;
        }
        println!(
            "{:<62} {:>4} {:>9} {:>8} {:>8} {:>8}",
            s.label,
            s.ms.len(),
            fmt(s.median(), 1),
            fmt(s.pct(90.0), 1),
            fmt(s.min(), 1),
            fmt(s.max(), 1)
        );
    }
    let ratio = |a: &str, b: &str| get(a).median() / get(b).median();
    let mut ratios = vec![
        ("rw_none/base_run", ratio("rw_none", "base_run")),
        ("rw_none/base_run_net", ratio("rw_none", "base_run_net")),
        (
            "rw_service_first/base_service_first",
            ratio("rw_service_first", "base_service_first"),
        ),
        (
            "rw_service_total/base_service_total",
            ratio("rw_service_total", "base_service_total"),
        ),
    ];
    if !args.no_fetch {
        ratios.insert(2, ("rw_fetch/base_run", ratio("rw_fetch", "base_run")));
    }
    println!();
    println!("ratios of medians:");
    for (name, r) in &ratios {
        println!("  {name:<40} {}", fmt(*r, 2));
    }
    println!(
        "differences of medians: docker job - plain docker run {} ms; docker job - shell job {} ms; \
         service first line runwright - docker CLI {} ms (the CLI client's wget retried {} times in all)",
        fmt(get("rw_none").median() - get("base_run").median(), 1),
        fmt(get("rw_none").median() - get("shell_none").median(), 1),
        fmt(get("rw_service_first").median() - get("base_service_first").median(), 1),
        wget_retries,
    );
    println!(
        "{} rounds (+{} warm-up) in {:.0} s; coordinator clock vs wall clock within {:.2} ms; left on the daemon: {}",
        args.rounds,
        args.warmup,
        started.elapsed().as_secs_f64(),
        ms(epoch_error),
        if left.is_empty() { "nothing".to_string() } else { left.join(", ") }
    );

    if let Some(path) = &args.json {
        let rows: Vec<serde_json::Value> = series
            .iter()
            .map(|s| {
                serde_json::json!({
                    "key": s.key, "case": s.label, "n": s.ms.len(), "median_ms": s.median(),
                    "p90_ms": s.pct(90.0), "min_ms": s.min(), "max_ms": s.max(), "samples_ms": s.ms,
                })
            })
            .collect();
        let json = serde_json::json!({
            "rounds": args.rounds,
            "warmup": args.warmup,
            "plain_baseline_network": if base_net.is_empty() { "default bridge" } else { "none" },
            "series": rows,
            "ratios": ratios.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "load_before": load_before.trim(),
            "load_after": load_after.trim(),
            "base_service_wget_retries": wget_retries,
            "left_behind": left,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    anyhow::ensure!(
        left.is_empty(),
        "left on the docker daemon: {}",
        left.join(", ")
    );
    Ok(())
}
