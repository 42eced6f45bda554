//! The fault-injection soak (issue 7 item 3), shared by `examples/bench_soak.rs` (`bench/soak`, 100 jobs) and the
//! short version in the test suite (`tests/it/soak.rs`): a real `runwright run` (shell executor) works through
//! jobs of varied size — traces of a few lines to several MiB, some with artifacts (uploaded, then downloaded by
//! a later job), caches, sources fetched over git, masked variables, some failing on purpose — while the
//! bundled coordinator fails a share of the calls on every endpoint (500, 502, 429 with `Retry-After`, reset
//! connections, answers stalled past the client's timeout, 416 with a shorter `Range` on trace patches).
//!
//! Pass: every job reaches its right final state, and the part of every stored trace that the job's script
//! printed is byte-identical to the output computed here independently (the script's generator is an `awk`
//! program whose output this module reproduces, masked values as `[MASKED]`); the whole stored trace must also
//! equal the runner's own journal copy, and GitLab's checksum check of the final update must have passed.
//! Retries are counted from the coordinator's request log: a request repeating a faulted one (same method and
//! path; for git the same job).

use runwright_api::types::{Artifact, Cache};
use runwright_coordinator::{
    variable, Coordinator, CoordinatorOptions, Endpoint, Fault, JobRecord, JobSpec, ProjectSpec,
    RequestLog, RunnerOptions,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "glrt-t1_soakrunner00000001";
/// The project every job belongs to; some jobs fetch its repository.
const PROJECT: &str = "soak/app";
/// Filler the generator cuts its lines from (no character is special to the shell, awk or the masker).
const PAD: &str =
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCD";
/// Lines of a producer's artifact file.
const ARTIFACT_LINES: usize = 50;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `runwright` binary.
    pub runwright: PathBuf,
    /// Jobs in all (about a tenth of them download artifacts of earlier ones).
    pub jobs: usize,
    /// `concurrent` of the service.
    pub concurrent: usize,
    /// Share of calls failed on every endpoint (0..=1).
    pub faults: f64,
    /// Seeds the job mix and the fault generator.
    pub seed: u64,
    /// At most this many faults in a row on one resource: GitLab's runner gives up on an artifact transfer
    /// after 3 tries by design, so a longer streak would fail a job rightly.
    pub max_streak: u32,
    /// The client's timeout for an answer (`RUNWRIGHT_API_TIMEOUT_SECS`); stalled answers last one second more.
    pub api_timeout_secs: u64,
    /// Lines of the largest trace (~55 bytes each).
    pub max_lines: usize,
    /// Run the service with `RUNWRIGHT_FAST_RETRIES=1` (waits capped at 50 ms) instead of GitLab's waits.
    pub fast_retries: bool,
    /// Give up waiting for the jobs after this long.
    pub deadline: Duration,
}

/// What came out.
#[derive(Debug, Default)]
pub struct Report {
    pub jobs: usize,
    pub right_state: usize,
    pub traces_identical: usize,
    pub journal_identical: usize,
    /// Producers whose archive reached the coordinator / producers.
    pub artifacts: (usize, usize),
    /// Injected faults by kind (`500`, `502`, `429`, `reset`, `hang`, `416`), from the request log.
    pub faults: BTreeMap<String, u64>,
    /// Injected faults by endpoint, then kind.
    pub faults_by_endpoint: BTreeMap<String, BTreeMap<String, u64>>,
    pub requests: usize,
    pub retries: u64,
    /// Bytes of all stored traces.
    pub trace_bytes: u64,
    pub wall: Duration,
    /// Everything that went wrong, one line each (empty: passed).
    pub problems: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// `patch_trace 50 (416 1, 500 9, …); …`
    pub fn by_endpoint(&self) -> String {
        self.faults_by_endpoint
            .iter()
            .map(|(endpoint, kinds)| {
                let total: u64 = kinds.values().sum();
                let kinds = kinds
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{endpoint} {total} ({kinds})")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Markdown table header (see [`Report::row`]).
    pub fn header() -> String {
        "| faults | jobs | right final state | traces identical | = journal copy | artifacts stored | injected: 500 / 502 / 429 / reset / hang / 416 | requests | retries | trace MiB | wall s |\n\
         |---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
            .to_string()
    }

    /// One markdown table row.
    pub fn row(&self, share: f64) -> String {
        let kinds = ["500", "502", "429", "reset", "hang", "416"]
            .iter()
            .map(|k| self.faults.get(*k).copied().unwrap_or(0).to_string())
            .collect::<Vec<_>>()
            .join(" / ");
        let total: u64 = self.faults.values().sum();
        format!(
            "| {:.0}% | {} | {} | {} | {} | {}/{} | {total}: {kinds} | {} | {} | {:.1} | {:.1} |",
            share * 100.0,
            self.jobs,
            self.right_state,
            self.traces_identical,
            self.journal_identical,
            self.artifacts.0,
            self.artifacts.1,
            self.requests,
            self.retries,
            self.trace_bytes as f64 / 1048576.0,
            self.wall.as_secs_f64()
        )
    }
}

/// splitmix64: a tiny seeded generator, so the job mix needs no dependency and replays from `--seed`.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// `true` with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One planned job and what it must come to.
#[derive(Debug, Clone)]
struct Planned {
    /// Index in the plan (printed in its lines, so traces of different jobs never look alike).
    n: usize,
    lines: usize,
    secret: Option<String>,
    fail: bool,
    producer: bool,
    cache: bool,
    git: bool,
    /// Downloads the artifacts of this planned job (by index).
    consumes: Option<usize>,
}

fn plan(opts: &Options) -> Vec<Planned> {
    let mut mix = Mix(opts.seed);
    let consumers = opts.jobs / 10;
    let mut out: Vec<Planned> = Vec::new();
    for n in 0..opts.jobs - consumers {
        let lines = match mix.range(0, 9) {
            0..=5 => mix.range(3, 200),
            6..=8 => mix.range(200, (opts.max_lines / 5).max(201)),
            _ => mix.range(opts.max_lines / 2, opts.max_lines.max(1)),
        };
        let fail = mix.chance(0.15);
        let secret = mix
            .chance(0.3)
            .then(|| format!("SoakSecret{}x{n}z", opts.seed));
        let producer = !fail && mix.chance(0.25);
        let cache = mix.chance(0.2);
        let git = mix.chance(0.1);
        out.push(Planned {
            n,
            lines,
            secret,
            fail,
            producer,
            cache,
            git,
            consumes: None,
        });
    }
    let producers: Vec<usize> = out.iter().filter(|p| p.producer).map(|p| p.n).collect();
    for k in 0..consumers {
        let n = out.len();
        let consumes = (!producers.is_empty()).then(|| producers[k % producers.len()]);
        out.push(Planned {
            n,
            lines: mix.range(3, 50),
            secret: None,
            fail: false,
            producer: false,
            cache: false,
            git: false,
            consumes,
        });
    }
    out
}

/// The lines the generator prints, as the trace must show them (`[MASKED]` for the secret).
fn expected_lines(p: &Planned) -> String {
    let mut out = String::new();
    for k in 0..p.lines {
        if p.secret.is_some() && k % 7 == 3 {
            let _ = writeln!(out, "{} {k} secret=[MASKED] done", p.n);
        } else {
            let cut = (k * 31 + p.n) % 90;
            let _ = writeln!(out, "{} {k} {}", p.n, &PAD[..cut]);
        }
    }
    out
}

/// The awk program printing [`expected_lines`] (with the secret itself, from the environment).
fn generator(p: &Planned) -> String {
    format!(
        "awk -v n={} -v id={} -v pad={PAD} 'BEGIN {{ s = ENVIRON[\"SOAK_SECRET\"]; for (k = 0; k < n; k++) {{ if (s != \"\" && k % 7 == 3) printf \"%d %d secret=%s done\\n\", id, k, s; else printf \"%d %d %s\\n\", id, k, substr(pad, 1, (k * 31 + id) % 90) }} }}'",
        p.lines, p.n
    )
}

fn artifact_content(n: usize) -> String {
    (0..ARTIFACT_LINES)
        .map(|k| format!("artifact {n} line {k}\n"))
        .collect()
}

/// The marked part of a job's output: everything between its begin and end lines. Both markers are printed with
/// `printf '%s'` so that the echoed command line never contains them.
fn marked(n: usize, body: &str) -> String {
    format!("printf 'SOAK-%s %s\\n' BEGIN {n}; {body}; printf 'SOAK-%s %s\\n' END {n}")
}

fn extract(trace: &[u8], n: usize) -> Option<&[u8]> {
    let begin = format!("SOAK-BEGIN {n}\n");
    let end = format!("SOAK-END {n}\n");
    let start = find(trace, begin.as_bytes())? + begin.len();
    let stop = start + find(&trace[start..], end.as_bytes())?;
    Some(&trace[start..stop])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct Expect {
    body: String,
    fail: bool,
}

fn spec(p: &Planned, sha: &str) -> (JobSpec, Expect) {
    let mut script = Vec::new();
    let mut variables = vec![variable(
        "GIT_STRATEGY",
        if p.git { "fetch" } else { "none" },
    )];
    let mut expected = expected_lines(p);
    let body = match p.consumes {
        Some(src) => {
            expected = artifact_content(src);
            format!("cat out/{src}/a.txt")
        }
        None if p.git => {
            // The checkout's commit, then the generated lines.
            expected = format!("{sha}\n{expected}");
            format!("git log -1 --format=%H; {}", generator(p))
        }
        None => generator(p),
    };
    script.push(marked(p.n, &body));
    if p.git {
        // GitLab's runner retries a whole fetch this many times (1–10); faults hit single requests of it.
        variables.push(variable("GET_SOURCES_ATTEMPTS", "10"));
    }
    if let Some(secret) = &p.secret {
        variables.push(runwright_coordinator::masked_variable(
            "SOAK_SECRET",
            secret,
        ));
    }
    let mut artifacts = Vec::new();
    if p.producer {
        script.push(format!(
            "mkdir -p out/{n} && awk -v id={n} 'BEGIN {{ for (k = 0; k < {ARTIFACT_LINES}; k++) printf \"artifact %d line %d\\n\", id, k }}' > out/{n}/a.txt",
            n = p.n
        ));
        artifacts.push(Artifact {
            paths: vec![format!("out/{}/", p.n)],
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Artifact::default()
        });
    }
    let mut cache = Vec::new();
    if p.cache {
        script.push(format!("mkdir -p cache && echo {} >> cache/seen.txt", p.n));
        cache.push(Cache {
            key: format!("soak-{}", p.n % 4),
            paths: vec!["cache/".into()],
            policy: "pull-push".into(),
            when: "on_success".into(),
            ..Cache::default()
        });
    }
    if p.fail {
        script.push("exit 3".into());
    }
    let spec = JobSpec {
        name: format!("soak-{}", p.n),
        script,
        variables,
        project: ProjectSpec::new(1, PROJECT),
        sha: sha.to_string(),
        artifacts,
        cache,
        ..JobSpec::default()
    };
    (
        spec,
        Expect {
            body: expected,
            fail: p.fail,
        },
    )
}

fn git(dir: &Path, gitconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", gitconfig)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `<git root>/soak/app.git` with one commit; returns its sha.
fn make_repo(root: &Path, gitconfig: &Path) -> anyhow::Result<String> {
    let src = root.join("src");
    std::fs::create_dir_all(&src)?;
    git(&src, gitconfig, &["init", "-q", "-b", "main"])?;
    std::fs::write(src.join("README"), "soak\n")?;
    git(&src, gitconfig, &["add", "-A"])?;
    git(&src, gitconfig, &["commit", "-q", "-m", "soak"])?;
    let bare = root.join("git").join(format!("{PROJECT}.git"));
    std::fs::create_dir_all(&bare)?;
    git(&bare, gitconfig, &["init", "-q", "--bare"])?;
    let bare_s = bare.to_string_lossy().to_string();
    git(
        &src,
        gitconfig,
        &["push", "-q", &bare_s, "HEAD:refs/heads/main"],
    )?;
    git(&src, gitconfig, &["rev-parse", "HEAD"])
}

/// The job id in a journal directory name (`<received ms>-<job id>-<runner short token>`).
fn journal_traces(dir: &Path) -> HashMap<i64, PathBuf> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(dir.join("jobs")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(id) = name.split('-').nth(1).and_then(|s| s.parse().ok()) {
            out.insert(id, e.path().join("trace.log"));
        }
    }
    out
}

/// Injected faults by kind label, by endpoint, and the retries: requests repeating a faulted one.
#[allow(clippy::type_complexity)] // three plain tallies
fn from_log(
    log: &[RequestLog],
) -> (
    BTreeMap<String, u64>,
    BTreeMap<String, BTreeMap<String, u64>>,
    u64,
) {
    let mut kinds = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    let mut faulted: HashSet<String> = HashSet::new();
    let mut retries = 0;
    for r in log {
        let path = r.path.split('?').next().unwrap_or("");
        let key = if r.endpoint == Endpoint::Git {
            format!("git {}", r.request_header("authorization").unwrap_or(""))
        } else {
            format!("{} {path}", r.method)
        };
        if faulted.remove(&key) {
            retries += 1;
        }
        if let Some(f) = &r.fault {
            let label = match f {
                Fault::Status(code) => code.to_string(),
                other => other.kind().as_str().to_string(),
            };
            *endpoints
                .entry(r.endpoint.as_str().to_string())
                .or_insert_with(BTreeMap::new)
                .entry(label.clone())
                .or_default() += 1;
            *kinds.entry(label).or_default() += 1;
            faulted.insert(key);
        }
    }
    (kinds, endpoints, retries)
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the soak in a fresh temp dir (the journal lives there too). `Err` only when it could not run at all;
/// failed checks are in [`Report::problems`]. With `keep`, the service's log is kept as `<keep>/service.log` and
/// the stored trace of every job that failed a check as `<keep>/job-<id>.trace`.
pub async fn run(opts: &Options, keep: Option<&Path>) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.jobs >= 1, "--jobs must be at least 1");
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let gitconfig = root.join("gitconfig");
    std::fs::write(
        &gitconfig,
        "[user]\n\temail = soak@runwright.invalid\n\tname = soak\n[init]\n\tdefaultBranch = main\n",
    )?;
    let sha = make_repo(root, &gitconfig)?;
    let coordinator = Coordinator::start(CoordinatorOptions {
        trace_update_interval: 1,
        git_root: Some(root.join("git")),
        ..CoordinatorOptions::default()
    })
    .await?;
    coordinator.add_runner(TOKEN, RunnerOptions::default());
    let config = root.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = {}\ncheck_interval = 1\n[journal]\n  enabled = true\n  dir = \"{}\"\n[[runners]]\n  name = \"soak\"\n  url = \"{}\"\n  token = \"{TOKEN}\"\n  executor = \"shell\"\n  output_limit = 65536\n  cache_dir = \"{}\"\n",
            opts.concurrent,
            root.join("journal").display(),
            coordinator.url(),
            root.join("cache").display()
        ),
    )?;
    for d in ["work", "home", "cache"] {
        std::fs::create_dir_all(root.join(d))?;
    }

    let planned = plan(opts);
    let mut expect: HashMap<i64, (usize, Expect)> = HashMap::new();
    let mut ids: HashMap<usize, i64> = HashMap::new();
    let mut waiting: Vec<&Planned> = Vec::new();
    for p in &planned {
        if p.consumes.is_some() {
            waiting.push(p);
            continue;
        }
        let (spec, e) = spec(p, &sha);
        let id = coordinator.enqueue(spec);
        ids.insert(p.n, id);
        expect.insert(id, (p.n, e));
    }

    let hang = Duration::from_secs(opts.api_timeout_secs + 1);
    coordinator.faults().set_random(
        opts.faults,
        &[
            Fault::Status(500),
            Fault::Status(502),
            Fault::TooManyRequests { retry_after: 1 },
            Fault::Reset,
            Fault::Hang(hang),
            Fault::RangeMismatch,
        ],
        opts.seed,
    );
    coordinator.faults().set_max_streak(opts.max_streak);

    let log = match keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            Stdio::from(std::fs::File::create(dir.join("service.log"))?)
        }
        None => Stdio::null(),
    };
    let started = Instant::now();
    let mut cmd = Command::new(&opts.runwright);
    cmd.args(["run", "-c"])
        .arg(&config)
        .arg("-d")
        .arg(root.join("work"))
        .env("HOME", root.join("home"))
        .env("GIT_CONFIG_GLOBAL", &gitconfig)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "RUNWRIGHT_API_TIMEOUT_SECS",
            opts.api_timeout_secs.to_string(),
        )
        .env("RUNWRIGHT_KILL_GRACE_SECONDS", "2")
        .env_remove("RUNWRIGHT_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if opts.fast_retries {
        cmd.env("RUNWRIGHT_FAST_RETRIES", "1");
    } else {
        cmd.env_remove("RUNWRIGHT_FAST_RETRIES");
    }
    let service = Service(cmd.spawn()?);

    let mut report = Report {
        jobs: planned.len(),
        ..Report::default()
    };
    // Consumers are enqueued once their producer is final (GitLab's `needs`).
    loop {
        waiting.retain(|p| {
            let Some(src) = p.consumes.and_then(|s| ids.get(&s).copied()) else {
                return true;
            };
            if !coordinator.job(src).is_some_and(|j| j.is_final()) {
                return true;
            }
            let (mut spec, e) = spec(p, &sha);
            spec.artifact_dependencies = vec![src];
            let id = coordinator.enqueue(spec);
            ids.insert(p.n, id);
            expect.insert(id, (p.n, e));
            false
        });
        let open = coordinator.jobs().iter().filter(|j| !j.is_final()).count();
        if waiting.is_empty() && open == 0 {
            break;
        }
        if started.elapsed() > opts.deadline {
            for j in coordinator.jobs().iter().filter(|j| !j.is_final()) {
                report.problems.push(format!(
                    "job {} ({}) still {} after {:?}",
                    j.id, j.name, j.state, opts.deadline
                ));
            }
            if !waiting.is_empty() {
                report.problems.push(format!(
                    "{} consumer jobs never enqueued (producers not final)",
                    waiting.len()
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.wall = started.elapsed();
    drop(service);

    let journal = journal_traces(&root.join("journal"));
    let mut producers = 0;
    for rec in coordinator.jobs() {
        let Some((n, e)) = expect.get(&rec.id) else {
            report
                .problems
                .push(format!("job {} was not planned", rec.id));
            continue;
        };
        report.trace_bytes += rec.trace.len() as u64;
        let before = report.problems.len();
        check(&rec, *n, e, &planned[*n], &journal, &mut report);
        if let (Some(dir), true) = (keep, report.problems.len() > before) {
            // The evidence: the stored trace of every job that failed a check.
            std::fs::write(dir.join(format!("job-{}.trace", rec.id)), &rec.trace)?;
        }
        if planned[*n].producer {
            producers += 1;
            if coordinator
                .artifact(rec.id, "archive")
                .is_some_and(|a| a.size > 0)
            {
                report.artifacts.0 += 1;
            } else {
                report
                    .problems
                    .push(format!("job {} (soak-{n}): no archive stored", rec.id));
            }
        }
    }
    report.artifacts.1 = producers;
    let log = coordinator.requests();
    report.requests = log.len();
    let (kinds, endpoints, retries) = from_log(&log);
    report.faults = kinds;
    report.faults_by_endpoint = endpoints;
    report.retries = retries;
    let injected: u64 = report.faults.values().sum();
    if injected != coordinator.faults().injected_total() {
        report.problems.push(format!(
            "request log shows {injected} faults, the plan counted {}",
            coordinator.faults().injected_total()
        ));
    }
    coordinator.shutdown().await;
    Ok(report)
}

fn check(
    rec: &JobRecord,
    n: usize,
    e: &Expect,
    p: &Planned,
    journal: &HashMap<i64, PathBuf>,
    report: &mut Report,
) {
    let who = format!("job {} (soak-{n})", rec.id);
    let state_ok = if e.fail {
        rec.state == "failed"
            && rec.failure_reason.as_deref() == Some("script_failure")
            && rec.exit_code == Some(3)
    } else {
        rec.state == "success"
    };
    if state_ok {
        report.right_state += 1;
    } else {
        report.problems.push(format!(
            "{who}: state {} ({:?}, exit {:?}), expected {}",
            rec.state,
            rec.failure_reason,
            rec.exit_code,
            if e.fail { "failed (exit 3)" } else { "success" }
        ));
    }
    // The printed part as GitLab's viewer reads it (the per-line timestamps of FF_TIMESTAMPS dropped).
    let shown = runwright_trace::timestamp::strip(&rec.trace);
    match extract(&shown, n) {
        Some(body) if body == e.body.as_bytes() => report.traces_identical += 1,
        Some(body) => report.problems.push(format!(
            "{who}: printed part differs: {} bytes stored, {} expected; first difference at byte {}",
            body.len(),
            e.body.len(),
            body.iter()
                .zip(e.body.as_bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(body.len().min(e.body.len()))
        )),
        None => report.problems.push(format!(
            "{who}: markers not found in the stored trace ({} bytes)",
            rec.trace.len()
        )),
    }
    if let Some(secret) = &p.secret {
        if find(&rec.trace, secret.as_bytes()).is_some() {
            report
                .problems
                .push(format!("{who}: the masked value is in the trace"));
        }
    }
    if rec.final_checksum_ok != Some(true) {
        report.problems.push(format!(
            "{who}: final update checksum check {:?}",
            rec.final_checksum_ok
        ));
    }
    match journal.get(&rec.id).map(std::fs::read) {
        Some(Ok(copy)) if copy == rec.trace => report.journal_identical += 1,
        Some(Ok(copy)) => report.problems.push(format!(
            "{who}: stored trace ({} bytes) differs from the journal's copy ({} bytes)",
            rec.trace.len(),
            copy.len()
        )),
        _ => report
            .problems
            .push(format!("{who}: no journal copy of the trace")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_lines_mask_the_secret_lines() {
        let p = Planned {
            n: 2,
            lines: 5,
            secret: Some("s3cretvalue".into()),
            fail: false,
            producer: false,
            cache: false,
            git: false,
            consumes: None,
        };
        assert_eq!(
            expected_lines(&p),
            "2 0 ab\n2 1 abcdefghijklmnopqrstuvwxyzABCDEFG\n2 2 abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\n2 3 secret=[MASKED] done\n2 4 abcdefghijklmnopqrstuvwxyzABCDEFGHIJ\n"
        );
    }
}
