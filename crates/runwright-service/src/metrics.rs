//! `listen_address`: the service's HTTP endpoint (issue 6) — `/metrics` in Prometheus' text format under
//! GitLab's runner metric names (`gitlab_runner_jobs`, `gitlab_runner_jobs_total`,
//! `gitlab_runner_failed_jobs_total`, `gitlab_runner_job_duration_seconds`, `gitlab_runner_concurrent`,
//! `gitlab_runner_limit`, `gitlab_runner_version_info`), so existing dashboards keep working, plus runwright's
//! per-project counters, queue latency, stage durations and cache restores; what `/health/ready` answers. The
//! listener that serves them is `crate::dashboard`.
//!
//! The text is written by hand: a few families of counters and histograms do not need a metrics framework, and
//! the names and labels must match GitLab's exactly. State owned: counters keyed by their label values, behind
//! one mutex that only the job tasks (at start and end) and a scrape take.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// GitLab's `gitlab_runner_job_duration_seconds` buckets (runner common/build.go `jobDurationBuckets`).
const JOB_DURATION_BUCKETS: &[f64] = &[
    30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 10800.0, 18000.0, 36000.0,
];
/// Queue latency buckets (seconds).
const QUEUE_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.len() != buckets.len() {
            self.counts = vec![0; buckets.len()];
        }
        for (c, b) in self.counts.iter_mut().zip(buckets) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct State {
    /// (runner, system_id) → running jobs.
    running: BTreeMap<(String, String), i64>,
    /// (runner, system_id) → jobs started.
    jobs_total: BTreeMap<(String, String), u64>,
    /// (runner, system_id, failure_reason) → failed jobs.
    failed_total: BTreeMap<(String, String, String), u64>,
    /// (runner, system_id) → job durations.
    durations: BTreeMap<(String, String), Histogram>,
    /// (runner, project, state) → finished jobs.
    project_jobs: BTreeMap<(String, String, String), u64>,
    /// runner → queue latency.
    queue: BTreeMap<String, Histogram>,
    /// (runner, stage) → (seconds, count).
    stages: BTreeMap<(String, String), (f64, u64)>,
    /// (runner, project, result) → cache restores (`hit`, `fallback_hit`, `miss`).
    cache_restores: BTreeMap<(String, String, String), u64>,
    /// runner → `limit`.
    limits: BTreeMap<String, u64>,
    concurrent: u64,
}

/// The service's metrics; one per process, in `Shared`.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
    ready: AtomicBool,
}

/// What a finished job adds to the metrics.
pub struct JobEnd<'a> {
    pub runner: &'a str,
    pub system_id: &'a str,
    pub project: &'a str,
    pub state: &'a str,
    pub failure_reason: Option<&'a str>,
    pub duration_s: f64,
    /// (stage, seconds)
    pub stages: Vec<(String, f64)>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters stay meaningful after a panic elsewhere.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The service polls for jobs (`/health/ready` answers 200) or no longer does (503).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn set_config(&self, concurrent: usize, limits: &[(String, usize)]) {
        let mut st = self.lock();
        st.concurrent = concurrent as u64;
        st.limits = limits.iter().map(|(r, l)| (r.clone(), *l as u64)).collect();
    }

    pub fn job_started(&self, runner: &str, system_id: &str, queue_s: Option<f64>) {
        let mut st = self.lock();
        let key = (runner.to_string(), system_id.to_string());
        *st.running.entry(key.clone()).or_default() += 1;
        *st.jobs_total.entry(key).or_default() += 1;
        if let Some(q) = queue_s {
            st.queue
                .entry(runner.to_string())
                .or_default()
                .observe(QUEUE_BUCKETS, q);
        }
    }

    pub fn job_finished(&self, end: JobEnd<'_>) {
        let mut st = self.lock();
        let key = (end.runner.to_string(), end.system_id.to_string());
        if let Some(n) = st.running.get_mut(&key) {
            *n = (*n - 1).max(0);
        }
        st.durations
            .entry(key)
            .or_default()
            .observe(JOB_DURATION_BUCKETS, end.duration_s);
        if let Some(reason) = end.failure_reason {
            *st.failed_total
                .entry((
                    end.runner.to_string(),
                    end.system_id.to_string(),
                    reason.to_string(),
                ))
                .or_default() += 1;
        }
        *st.project_jobs
            .entry((
                end.runner.to_string(),
                end.project.to_string(),
                end.state.to_string(),
            ))
            .or_default() += 1;
        for (stage, secs) in end.stages {
            let e = st
                .stages
                .entry((end.runner.to_string(), stage))
                .or_default();
            e.0 += secs;
            e.1 += 1;
        }
    }

    /// One cache entry's restore in a job of `project` on `runner` ended with `result`.
    pub fn cache_restore(&self, runner: &str, project: &str, result: &str) {
        *self
            .lock()
            .cache_restores
            .entry((runner.to_string(), project.to_string(), result.to_string()))
            .or_default() += 1;
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        self.render_as(false)
    }

    /// [`Metrics::render`] for a scrape that is not trusted (off loopback without the dashboard's token; issue 17
    /// item 4): GitLab's families as they are, runwright's own without their `project` label (its counts summed
    /// over projects), so no project path leaves the host.
    pub fn render_public(&self) -> String {
        self.render_as(true)
    }

    fn render_as(&self, public: bool) -> String {
        let st = self.lock();
        let mut o = String::new();
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut o,
            "gitlab_runner_version_info",
            "gauge",
            "A metric with a constant '1' value labeled by different build stats fields.",
        );
        let _ = writeln!(
            o,
            "gitlab_runner_version_info{{architecture=\"{}\",name=\"runwright\",os=\"{}\",revision=\"{}\",version=\"{}\"}} 1",
            esc(crate::identity::architecture()),
            esc(std::env::consts::OS),
            esc(crate::identity::REVISION),
            esc(crate::identity::VERSION)
        );
        family(
            &mut o,
            "gitlab_runner_concurrent",
            "gauge",
            "The current value of concurrent setting",
        );
        let _ = writeln!(o, "gitlab_runner_concurrent {}", st.concurrent);
        family(
            &mut o,
            "gitlab_runner_limit",
            "gauge",
            "The current value of limit setting",
        );
        for (r, l) in &st.limits {
            let _ = writeln!(o, "gitlab_runner_limit{{runner=\"{}\"}} {l}", esc(r));
        }
        family(
            &mut o,
            "gitlab_runner_jobs",
            "gauge",
            "The current number of running builds.",
        );
        for ((r, s), n) in &st.running {
            let _ = writeln!(
                o,
                "gitlab_runner_jobs{{runner=\"{}\",state=\"running\",system_id=\"{}\"}} {n}",
                esc(r),
                esc(s)
            );
        }
        family(
            &mut o,
            "gitlab_runner_jobs_total",
            "counter",
            "Total number of handled jobs",
        );
        for ((r, s), n) in &st.jobs_total {
            let _ = writeln!(
                o,
                "gitlab_runner_jobs_total{{runner=\"{}\",system_id=\"{}\"}} {n}",
                esc(r),
                esc(s)
            );
        }
        family(
            &mut o,
            "gitlab_runner_failed_jobs_total",
            "counter",
            "Total number of failed jobs",
        );
        for ((r, s, reason), n) in &st.failed_total {
            let _ = writeln!(
                o,
                "gitlab_runner_failed_jobs_total{{failure_reason=\"{}\",runner=\"{}\",system_id=\"{}\"}} {n}",
                esc(reason),
                esc(r),
                esc(s)
            );
        }
        family(
            &mut o,
            "gitlab_runner_job_duration_seconds",
            "histogram",
            "Histogram of job durations",
        );
        for ((r, s), h) in &st.durations {
            let labels = format!("runner=\"{}\",system_id=\"{}\"", esc(r), esc(s));
            histogram(
                &mut o,
                "gitlab_runner_job_duration_seconds",
                &labels,
                JOB_DURATION_BUCKETS,
                h,
            );
        }
        family(
            &mut o,
            "runwright_job_queue_duration_seconds",
            "histogram",
            "Time jobs waited in GitLab's queue before this runner took them",
        );
        for (r, h) in &st.queue {
            let labels = format!("runner=\"{}\"", esc(r));
            histogram(
                &mut o,
                "runwright_job_queue_duration_seconds",
                &labels,
                QUEUE_BUCKETS,
                h,
            );
        }
        family(
            &mut o,
            "runwright_project_jobs_total",
            "counter",
            "Finished jobs by runner, project and final state",
        );
        if public {
            for ((r, s), n) in &without_project(&st.project_jobs) {
                let _ = writeln!(
                    o,
                    "runwright_project_jobs_total{{runner=\"{}\",state=\"{}\"}} {n}",
                    esc(r),
                    esc(s)
                );
            }
        } else {
            for ((r, p, s), n) in &st.project_jobs {
                let _ = writeln!(
                    o,
                    "runwright_project_jobs_total{{project=\"{}\",runner=\"{}\",state=\"{}\"}} {n}",
                    esc(p),
                    esc(r),
                    esc(s)
                );
            }
        }
        family(
            &mut o,
            "runwright_cache_restores_total",
            "counter",
            "Cache entries restored by jobs, by result: hit (primary key), fallback_hit (a fallback key), miss",
        );
        if public {
            for ((r, result), n) in &without_project(&st.cache_restores) {
                let _ = writeln!(
                    o,
                    "runwright_cache_restores_total{{result=\"{}\",runner=\"{}\"}} {n}",
                    esc(result),
                    esc(r)
                );
            }
        } else {
            for ((r, p, result), n) in &st.cache_restores {
                let _ = writeln!(
                    o,
                    "runwright_cache_restores_total{{project=\"{}\",result=\"{}\",runner=\"{}\"}} {n}",
                    esc(p),
                    esc(result),
                    esc(r)
                );
            }
        }
        family(
            &mut o,
            "runwright_job_stage_duration_seconds",
            "summary",
            "Time spent in each stage of finished jobs",
        );
        for ((r, stage), (sum, count)) in &st.stages {
            let labels = format!("runner=\"{}\",stage=\"{}\"", esc(r), esc(stage));
            let _ = writeln!(
                o,
                "runwright_job_stage_duration_seconds_sum{{{labels}}} {sum}\nrunwright_job_stage_duration_seconds_count{{{labels}}} {count}"
            );
        }
        o
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// (runner, project, x) counters summed over projects.
fn without_project(
    counts: &BTreeMap<(String, String, String), u64>,
) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for ((r, _, x), n) in counts {
        *out.entry((r.clone(), x.clone())).or_default() += n;
    }
    out
}

fn histogram(o: &mut String, name: &str, labels: &str, buckets: &[f64], h: &Histogram) {
    for (i, b) in buckets.iter().enumerate() {
        let c = h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
    }
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(o, "{name}_count{{{labels}}} {}", h.count);
}

/// Label values escape `\`, `"` and newlines.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gitlab_names_and_histograms() {
        let m = Metrics::default();
        m.set_config(4, &[("r\"1".into(), 2)]);
        m.job_started("r\"1", "s_1", Some(2.0));
        m.job_finished(JobEnd {
            runner: "r\"1",
            system_id: "s_1",
            project: "grp/app",
            state: "failed",
            failure_reason: Some("script_failure"),
            duration_s: 45.0,
            stages: vec![("step_script".into(), 40.0)],
        });
        m.cache_restore("r\"1", "grp/app", "fallback_hit");
        m.cache_restore("r\"1", "grp/app", "fallback_hit");
        let text = m.render();
        assert!(text.contains("runwright_cache_restores_total{project=\"grp/app\",result=\"fallback_hit\",runner=\"r\\\"1\"} 2\n"), "{text}");
        assert!(text.contains("gitlab_runner_concurrent 4\n"), "{text}");
        assert!(
            text.contains("gitlab_runner_limit{runner=\"r\\\"1\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("gitlab_runner_jobs_total{runner=\"r\\\"1\",system_id=\"s_1\"} 1\n"));
        assert!(text.contains(
            "gitlab_runner_jobs{runner=\"r\\\"1\",state=\"running\",system_id=\"s_1\"} 0\n"
        ));
        assert!(text.contains(
            "gitlab_runner_failed_jobs_total{failure_reason=\"script_failure\",runner=\"r\\\"1\",system_id=\"s_1\"} 1\n"
        ));
        assert!(text.contains("gitlab_runner_job_duration_seconds_bucket{runner=\"r\\\"1\",system_id=\"s_1\",le=\"30\"} 0\n"), "{text}");
        assert!(text.contains("gitlab_runner_job_duration_seconds_bucket{runner=\"r\\\"1\",system_id=\"s_1\",le=\"60\"} 1\n"));
        assert!(text.contains("runwright_job_queue_duration_seconds_count{runner=\"r\\\"1\"} 1\n"));
        assert!(text.contains("runwright_job_stage_duration_seconds_sum{runner=\"r\\\"1\",stage=\"step_script\"} 40\n"));
    }

    #[test]
    fn the_public_form_sums_over_projects_and_names_none() {
        let m = Metrics::default();
        for (project, state) in [
            ("grp/secret-app", "success"),
            ("other/thing", "success"),
            ("grp/secret-app", "failed"),
        ] {
            m.job_started("r1", "s_1", None);
            m.job_finished(JobEnd {
                runner: "r1",
                system_id: "s_1",
                project,
                state,
                failure_reason: None,
                duration_s: 1.0,
                stages: vec![],
            });
            m.cache_restore("r1", project, "hit");
        }
        let full = m.render();
        assert!(full.contains("project=\"grp/secret-app\""), "{full}");
        let public = m.render_public();
        assert!(
            !public.contains("project=") && !public.contains("secret-app"),
            "{public}"
        );
        assert!(
            public.contains("runwright_project_jobs_total{runner=\"r1\",state=\"success\"} 2\n"),
            "{public}"
        );
        assert!(
            public.contains("runwright_cache_restores_total{result=\"hit\",runner=\"r1\"} 3\n"),
            "{public}"
        );
        // GitLab's families are the same in both.
        let gitlab = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("gitlab_runner_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(gitlab(&full), gitlab(&public));
    }
}
