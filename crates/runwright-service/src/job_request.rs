//! What gitlab-runner checks and rewrites in a job request before it runs anything (runner commands/multi.go
//! `requestJob`: `UnsupportedOptions()` and `ValidateStepsJobRequest()`, common/spec/spec.go): executor options
//! the executors cannot honour, and CI Steps jobs (`run:`), which GitLab sends without script `steps`.
//!
//! runwright has no native steps integration (it does not advertise `native_steps_integration`), so a `run:` job
//! goes the way gitlab-runner sends it on an executor without native steps: through GitLab's step-runner shim,
//! the steps in a raw `STEPS` variable and `step-runner ci` as the job's script. It runs where the job's script
//! runs, so the image (docker) or the host (shell) must provide `step-runner`; without it the job fails with
//! the shell's "command not found" as its script failure — never a success that ran nothing.

use runwright_api::types::{JobResponse, JobVariable, Step};

/// runner common/trace.go `ExitCodeUnsupportedOptions`: the exit code of a job failed by these checks.
pub const EXIT_CODE_UNSUPPORTED_OPTIONS: i32 = 3;

/// The options each executor understands in `executor_opts` (runner spec.go `supportedExecutorOptions`).
const SUPPORTED_EXECUTOR_OPTIONS: &[(&str, &[&str])] =
    &[("docker", &["platform", "user"]), ("kubernetes", &["user"])];

/// A job request that passed the checks; `shimmed` when its `run:` steps were turned into the step-runner shim.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    pub shimmed: bool,
}

/// Checks `job` as gitlab-runner does and rewrites a CI Steps job into the step-runner shim. The error is the
/// text gitlab-runner writes to the trace (its errors joined by newlines); the job then fails with
/// `runner_system_failure` and exit code [`EXIT_CODE_UNSUPPORTED_OPTIONS`].
pub fn check(job: &mut JobResponse) -> Result<Checked, String> {
    let mut errors = Vec::new();
    if let Some(image) = &job.image {
        errors.extend(unsupported_options(image.executor_opts.as_ref()));
    }
    for service in &job.services {
        errors.extend(unsupported_options(service.executor_opts.as_ref()));
    }
    let shimmed = match validate_steps(job) {
        Ok(shimmed) => shimmed,
        Err(e) => {
            errors.push(e);
            false
        }
    };
    if errors.is_empty() {
        Ok(Checked { shimmed })
    } else {
        Err(errors.join("\n"))
    }
}

/// runner spec.go `UnsuportedExecutorOptionsError.Error`: `Unsupported "image" options [a b] for "docker
/// executor"; supported options are [platform user]` (the section is "image" for services too, as in runner).
fn unsupported_error(executor: &str, mut unsupported: Vec<String>, supported: &[&str]) -> String {
    unsupported.sort();
    let mut supported: Vec<&str> = supported.to_vec();
    supported.sort_unstable();
    format!(
        "Unsupported {:?} options [{}] for {executor:?}; supported options are [{}]",
        "image",
        unsupported.join(" "),
        supported.join(" ")
    )
}

/// runner spec.go `ImageExecutorOptions.UnmarshalJSON` / `UnsupportedOptions`: unknown executors, then unknown
/// keys of each known executor.
fn unsupported_options(opts: Option<&serde_json::Value>) -> Vec<String> {
    let Some(serde_json::Value::Object(opts)) = opts else {
        return Vec::new();
    };
    let executors: Vec<&str> = SUPPORTED_EXECUTOR_OPTIONS.iter().map(|(e, _)| *e).collect();
    let mut errors = Vec::new();
    let unknown: Vec<String> = opts
        .keys()
        .filter(|k| !executors.contains(&k.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        errors.push(unsupported_error("executor_opts", unknown, &executors));
    }
    for (executor, supported) in SUPPORTED_EXECUTOR_OPTIONS {
        if let Some(serde_json::Value::Object(inner)) = opts.get(*executor) {
            let unknown: Vec<String> = inner
                .keys()
                .filter(|k| !supported.contains(&k.as_str()))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                errors.push(unsupported_error(
                    &format!("{executor} executor"),
                    unknown,
                    supported,
                ));
            }
        }
    }
    errors
}

/// runner spec.go `ValidateStepsJobRequest(executorSupportsNativeSteps = false)`.
fn validate_steps(job: &mut JobResponse) -> Result<bool, String> {
    if job.run.is_empty() {
        return Ok(false);
    }
    if job.steps.iter().any(|s| !s.script.is_empty()) {
        return Err("the `run` and `script` keywords cannot be used together".to_string());
    }
    if job
        .variables
        .iter()
        .rev()
        .find(|v| v.key == "STEPS")
        .is_some_and(|v| !v.value.is_empty())
    {
        return Err(
            "the `run` keyword requires the exclusive use of the variable STEPS".to_string(),
        );
    }
    job.variables.push(JobVariable {
        key: "STEPS".to_string(),
        value: job.run.to_json(),
        raw: true,
        ..JobVariable::default()
    });
    job.steps = vec![Step {
        name: "script".to_string(),
        script: vec!["step-runner ci".to_string()],
        timeout: 3600,
        when: "on_success".to_string(),
        allow_failure: false,
    }];
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runwright_api::types::{Image, RunSteps};
    use serde_json::json;

    fn run_job() -> JobResponse {
        JobResponse {
            run: RunSteps(vec![json!({"name": "hello", "script": "echo hello"})]),
            ..JobResponse::default()
        }
    }

    #[test]
    fn a_run_job_becomes_the_step_runner_shim() {
        let mut job = run_job();
        assert_eq!(check(&mut job), Ok(Checked { shimmed: true }));
        assert_eq!(job.steps.len(), 1);
        assert_eq!(job.steps[0].script, vec!["step-runner ci"]);
        assert_eq!(job.steps[0].name, "script");
        let steps = job.variables.last().expect("STEPS");
        assert_eq!((steps.key.as_str(), steps.raw), ("STEPS", true));
        assert_eq!(steps.value, r#"[{"name":"hello","script":"echo hello"}]"#);
    }

    #[test]
    fn run_with_script_or_a_steps_variable_is_refused_with_runners_words() {
        let mut job = run_job();
        job.steps = vec![Step {
            name: "script".into(),
            script: vec!["make".into()],
            ..Step::default()
        }];
        assert_eq!(
            check(&mut job),
            Err("the `run` and `script` keywords cannot be used together".into())
        );
        let mut job = run_job();
        job.variables.push(JobVariable {
            key: "STEPS".into(),
            value: "[]".into(),
            ..JobVariable::default()
        });
        assert_eq!(
            check(&mut job),
            Err("the `run` keyword requires the exclusive use of the variable STEPS".into())
        );
    }

    #[test]
    fn a_job_without_run_is_left_alone() {
        let mut job = JobResponse {
            steps: vec![Step {
                name: "script".into(),
                script: vec!["make".into()],
                ..Step::default()
            }],
            ..JobResponse::default()
        };
        let before = job.clone();
        assert_eq!(check(&mut job), Ok(Checked { shimmed: false }));
        assert_eq!(job, before);
    }

    #[test]
    fn unsupported_executor_options_read_as_runners_errors() {
        let mut job = JobResponse {
            image: Some(Image {
                name: "ruby".into(),
                executor_opts: Some(
                    json!({"docker": {"platform": "amd64", "memory": "1g", "cpus": 2}}),
                ),
                ..Image::default()
            }),
            services: vec![Image {
                name: "pg".into(),
                executor_opts: Some(json!({"podman": {}})),
                ..Image::default()
            }],
            ..JobResponse::default()
        };
        assert_eq!(
            check(&mut job),
            Err("Unsupported \"image\" options [cpus memory] for \"docker executor\"; supported options are [platform user]\n\
                 Unsupported \"image\" options [podman] for \"executor_opts\"; supported options are [docker kubernetes]"
                .into())
        );
    }
}
