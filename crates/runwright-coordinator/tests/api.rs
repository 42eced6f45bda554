//! The coordinator's endpoints driven with reqwest: documented codes and headers, long polling, the trace
//! range protocol, fault plans and git over HTTP (with the real `git` CLI).

use reqwest::{Client, Method, Response, StatusCode};
use runwright_coordinator::{
    fixtures, Coordinator, CoordinatorOptions, Endpoint, Fault, FaultKind, JobSpec, ProjectSpec,
    RunnerOptions,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const RUNNER: &str = "glrt-runner-one";
const SYSTEM_ID: &str = "s_0123456789ab";

async fn start() -> Coordinator {
    start_with(CoordinatorOptions::default()).await
}

async fn start_with(opts: CoordinatorOptions) -> Coordinator {
    let c = Coordinator::start(opts).await.expect("coordinator starts");
    c.add_runner(RUNNER, RunnerOptions::default());
    c
}

fn client() -> Client {
    Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn features(two_phase: bool, graceful: bool) -> Value {
    json!({"variables": true, "cancelable": true, "two_phase_job_commit": two_phase,
           "cancel_gracefully": graceful, "trace_checksum": true, "refspecs": true})
}

fn request_body(token: &str, last_update: Option<&str>, feats: Value) -> Value {
    let mut body = json!({"token": token, "system_id": SYSTEM_ID,
        "info": {"name": "runwright", "version": "0.1.0", "executor": "shell", "features": feats}});
    if let Some(lu) = last_update {
        body["last_update"] = json!(lu);
    }
    body
}

async fn request_job(c: &Coordinator, body: &Value) -> Response {
    client()
        .post(format!("{}api/v4/jobs/request", c.url()))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn take_job(c: &Coordinator, feats: Value) -> Value {
    let resp = request_job(c, &request_body(RUNNER, None, feats)).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    assert!(
        header(&resp, "x-gitlab-last-update").is_none(),
        "201 has no last update"
    );
    resp.json().await.expect("job json")
}

async fn update(c: &Coordinator, id: i64, token: &str, body: Value) -> Response {
    client()
        .put(format!("{}api/v4/jobs/{id}", c.url()))
        .header("JOB-TOKEN", token)
        .json(&body)
        .send()
        .await
        .expect("update sent")
}

async fn patch(c: &Coordinator, id: i64, token: &str, start: usize, data: &[u8]) -> Response {
    let end = (start + data.len()).saturating_sub(1);
    client()
        .patch(format!(
            "{}api/v4/jobs/{id}/trace?debug_trace=false",
            c.url()
        ))
        .header("JOB-TOKEN", token)
        .header("Content-Range", format!("{start}-{end}"))
        .header("Content-Type", "text/plain")
        .body(data.to_vec())
        .send()
        .await
        .expect("patch sent")
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn var<'a>(job: &'a Value, key: &str) -> Option<&'a Value> {
    job["variables"]
        .as_array()?
        .iter()
        .find(|v| v["key"] == key)
}

fn crc(data: &[u8]) -> String {
    format!("crc32:{:08x}", crc32fast::hash(data))
}

// ------------------------------------------------------------------------------------------------------
// jobs/request

#[tokio::test]
async fn request_job_authentication_and_validation() {
    let c = start().await;
    // Unknown token → 403.
    let resp = request_job(&c, &request_body("glrt-nope", None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Missing token → 400 (Grape `requires :token`), even with the header.
    let resp = client()
        .post(format!("{}api/v4/jobs/request", c.url()))
        .header("RUNNER-TOKEN", RUNNER)
        .json(&json!({"info": {}, "system_id": SYSTEM_ID}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["error"],
        "token is missing"
    );
    // Strict: info and system_id are required, system_id has GitLab runner's format.
    let resp = request_job(&c, &json!({"token": RUNNER})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err = resp.json::<Value>().await.expect("json")["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("info is missing") && err.contains("system_id is missing"),
        "{err}"
    );
    let mut bad = request_body(RUNNER, None, features(false, false));
    bad["system_id"] = json!("machine-1");
    assert_eq!(
        request_job(&c, &bad).await.status(),
        StatusCode::BAD_REQUEST
    );
    bad["system_id"] = json!(SYSTEM_ID);
    bad["info"] = json!("not a hash");
    assert_eq!(
        request_job(&c, &bad).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Not JSON at all.
    let resp = client()
        .post(format!("{}api/v4/jobs/request", c.url()))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Still alive and answering.
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    c.shutdown().await;
}

#[tokio::test]
async fn lenient_mode_accepts_header_token_without_system_id() {
    let c = start_with(CoordinatorOptions {
        strict: false,
        ..CoordinatorOptions::default()
    })
    .await;
    let resp = client()
        .post(format!("{}api/v4/jobs/request", c.url()))
        .header("RUNNER-TOKEN", RUNNER)
        .json(&json!({"info": {"name": "gitlab-python-runner"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(header(&resp, "x-gitlab-last-update").is_some());
    c.shutdown().await;
}

#[tokio::test]
async fn queue_value_caching_and_handout() {
    let c = start().await;
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let v1 = header(&resp, "x-gitlab-last-update").expect("last update");
    assert_eq!(Some(v1.clone()), c.queue_value(RUNNER));
    // Same value → cached 204 echoing it.
    let resp = request_job(&c, &request_body(RUNNER, Some(&v1), features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "x-gitlab-last-update"), Some(v1.clone()));
    assert!(
        header(&resp, "gitlab-ci-builds-polling").is_none(),
        "no workhorse long polling"
    );

    // A job for another runner does not change this runner's queue.
    c.add_runner("glrt-other", RunnerOptions::default());
    c.enqueue(JobSpec::shell("elsewhere", &["true"]).for_runner("glrt-other"));
    assert_eq!(c.queue_value(RUNNER), Some(v1.clone()));

    let id = c.enqueue(JobSpec::shell("build", &["echo hi"]));
    let v2 = c.queue_value(RUNNER).expect("value");
    assert_ne!(v1, v2, "enqueue ticks the queue");
    let resp = request_job(&c, &request_body(RUNNER, Some(&v1), features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let job: Value = resp.json().await.expect("json");
    assert_eq!(job["id"], id);
    // Legacy runner (no two_phase_job_commit): running at once.
    let rec = c.job(id).expect("job");
    assert_eq!(rec.state, "running");
    assert!(!rec.waiting_for_ack);
    assert_eq!(rec.runner_token.as_deref(), Some(RUNNER));
    assert_eq!(rec.system_id.as_deref(), Some(SYSTEM_ID));
    // Nothing left → 204 with the current value.
    let resp = request_job(&c, &request_body(RUNNER, Some(&v1), features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "x-gitlab-last-update"), Some(v2));
    c.shutdown().await;
}

#[tokio::test]
async fn paused_runner_gets_204_with_last_update() {
    let c = start().await;
    c.add_runner(
        RUNNER,
        RunnerOptions {
            paused: true,
            ..RunnerOptions::default()
        },
    );
    c.enqueue(JobSpec::shell("build", &["true"]));
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "x-gitlab-last-update"), c.queue_value(RUNNER));
    c.set_paused(RUNNER, false);
    let job = take_job(&c, features(false, false)).await;
    assert_eq!(job["job_info"]["name"], "build");
    c.shutdown().await;
}

#[tokio::test]
async fn payload_is_shaped_like_gitlab() {
    let c = start().await;
    let mut spec = JobSpec::shell("unit tests", &["make test"]);
    spec.before_script = vec!["echo before".into()];
    spec.after_script = vec!["echo after".into()];
    spec.timeout = 600;
    spec.project = ProjectSpec::new(42, "grp/sub/app");
    spec.git_ref = "feature/x".into();
    spec.variables
        .push(runwright_coordinator::variable("MY_VAR", "1"));
    let id = c.enqueue(spec);
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token");
    assert!(token.starts_with("glcbt-"));
    assert_eq!(c.job(id).expect("job").token, token);
    assert_eq!(job["job_info"]["project_id"], 42);
    assert_eq!(job["job_info"]["project_name"], "app");
    assert_eq!(
        job["job_info"]["project_jobs_running_on_instance_runners_count"],
        "+Inf"
    );
    assert_eq!(job["runner_info"]["timeout"], 600);
    let steps = job["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[0],
        json!({"name": "script", "script": ["echo before", "make test"], "timeout": 600,
        "when": "on_success", "allow_failure": false})
    );
    assert_eq!(steps[1]["when"], "always");
    assert_eq!(steps[1]["allow_failure"], true);
    let host = c
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert_eq!(
        job["git_info"]["repo_url"],
        format!("http://gitlab-ci-token:{token}@{host}/grp/sub/app.git")
    );
    let pipeline = job["job_info"]["pipeline_id"]
        .as_i64()
        .expect("pipeline id");
    assert_eq!(
        job["git_info"]["refspecs"],
        json!([
            format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}"),
            "+refs/heads/feature/x:refs/remotes/origin/feature/x"
        ])
    );
    assert_eq!(job["git_info"]["ref_type"], "branch");
    assert_eq!(job["git_info"]["depth"], 20);
    assert_eq!(job["features"]["trace_sections"], true);
    let reasons = job["features"]["failure_reasons"]
        .as_array()
        .expect("reasons");
    assert!(
        reasons.contains(&json!("script_failure"))
            && reasons.contains(&json!("runner_system_failure"))
    );
    assert_eq!(job["image"], Value::Null);
    // Predefined variables, then the job's own; file/raw absent when false; masked always present.
    let job_token = var(&job, "CI_JOB_TOKEN").expect("CI_JOB_TOKEN");
    assert_eq!(
        job_token,
        &json!({"key": "CI_JOB_TOKEN", "value": token, "public": false, "masked": true})
    );
    assert_eq!(
        var(&job, "CI_PROJECT_PATH").expect("path")["value"],
        "grp/sub/app"
    );
    assert_eq!(
        var(&job, "CI_PROJECT_NAMESPACE").expect("ns")["value"],
        "grp/sub"
    );
    assert_eq!(
        var(&job, "CI_COMMIT_REF_SLUG").expect("slug")["value"],
        "feature-x"
    );
    assert_eq!(
        var(&job, "CI_SERVER_URL").expect("url")["value"],
        format!("http://{host}")
    );
    assert_eq!(
        var(&job, "CI_RUNNER_ID").expect("runner")["value"],
        c.runner_id(RUNNER).expect("id").to_string()
    );
    let keys: Vec<&str> = job["variables"]
        .as_array()
        .expect("vars")
        .iter()
        .filter_map(|v| v["key"].as_str())
        .collect();
    assert_eq!(keys.last(), Some(&"MY_VAR"));
    assert!(
        keys.iter().position(|k| *k == "CI_JOB_ID")
            < keys.iter().position(|k| *k == "GIT_STRATEGY")
    );
    c.shutdown().await;
}

/// Every attribute GitLab's entities expose is present, `null` when unset (issue 16): the runner under test sees
/// what GitLab sends, not friendlier JSON.
#[tokio::test]
async fn payload_has_every_entity_attribute_with_gitlabs_nulls() {
    let c = start().await;
    let mut spec = JobSpec::shell("dind", &["docker info"]);
    spec.image = Some(runwright_api::types::Image {
        name: "docker:24".into(),
        ..Default::default()
    });
    spec.services = vec![runwright_api::types::Image {
        name: "docker:24-dind".into(),
        ..Default::default()
    }];
    c.enqueue(spec);
    let job = take_job(&c, features(true, true)).await;
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&job),
        [
            "allow_git_fetch",
            "artifacts",
            "cache",
            "credentials",
            "dependencies",
            "features",
            "git_info",
            "hooks",
            "id",
            "image",
            "job_info",
            "runner_info",
            "services",
            "steps",
            "token",
            "variables"
        ]
    );
    assert_eq!(
        job["services"][0],
        json!({"name": "docker:24-dind", "entrypoint": null, "ports": [], "executor_opts": {},
               "pull_policy": null, "alias": null, "command": null, "variables": null})
    );
    assert_eq!(
        job["image"],
        json!({"name": "docker:24", "entrypoint": null, "ports": [], "executor_opts": {}, "pull_policy": null})
    );
    assert_eq!(
        job["artifacts"],
        Value::Null,
        "presenter: nil without artifacts:"
    );
    assert_eq!(job["runner_info"]["runner_session_url"], Value::Null);
    assert_eq!(job["job_info"]["scoped_user_id"], Value::Null);
    assert_eq!(job["git_info"]["repo_object_format"], "sha1");
    assert_eq!(job["git_info"]["protected"], false);
    // Handed out under two-phase commit, the job has not started: `started_at&.iso8601` is nil.
    assert_eq!(
        var(&job, "CI_JOB_STARTED_AT").expect("CI_JOB_STARTED_AT")["value"],
        Value::Null
    );
    // The runner's own decoder reads it.
    let decoded = runwright_api::decode_job_response(job.to_string().as_bytes()).expect("decodes");
    assert_eq!(decoded.services[0].alias, "");

    // A CI Steps job: `run` as a JSON string, no `steps`; a pending job's timeouts are null.
    let mut spec = JobSpec::shell("steps", &[]);
    spec.run = Some(vec![json!({"name": "hello", "script": "echo hello"})]);
    spec.null_timeouts = true;
    c.enqueue(spec);
    let job = take_job(&c, features(true, true)).await;
    assert!(job.get("steps").is_none(), "{job}");
    assert_eq!(
        job["run"],
        json!(r#"[{"name":"hello","script":"echo hello"}]"#)
    );
    assert_eq!(job["runner_info"]["timeout"], Value::Null);
    c.shutdown().await;
}

#[tokio::test]
async fn raw_and_merged_payloads() {
    let c = start().await;
    let id = c.enqueue(JobSpec::raw(
        "broken",
        r#"{"id":{{JOB_ID}},"token":"{{JOB_TOKEN}}","steps":"#,
    ));
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let text = resp.text().await.expect("body");
    let token = c.job(id).expect("job").token;
    assert_eq!(text, format!(r#"{{"id":{id},"token":"{token}","steps":"#));

    let mut spec = JobSpec::shell("tweaked", &["true"]);
    spec.payload_merge = Some(
        json!({"image": {"name": "alpine", "executor_opts": {"docker": {"bogus": 1}}},
                                     "git_info": {"depth": null}}),
    );
    c.enqueue(spec);
    let job = take_job(&c, features(false, false)).await;
    assert_eq!(job["image"]["executor_opts"]["docker"]["bogus"], 1);
    assert!(job["git_info"].get("depth").is_none());
    c.shutdown().await;
}

#[tokio::test]
async fn unsupported_features_drop_the_job() {
    let c = start().await;
    let mut spec = JobSpec::shell("needs", &["true"]);
    spec.required_features = vec!["return_exit_code".into()];
    let id = c.enqueue(spec);
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let rec = c.job(id).expect("job");
    assert_eq!(rec.state, "failed");
    assert_eq!(rec.failure_reason.as_deref(), Some("runner_unsupported"));
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------------------
// Workhorse long polling

#[tokio::test]
async fn long_poll_returns_bare_204_on_change_and_on_timeout() {
    let c = start().await;
    c.add_runner(
        RUNNER,
        RunnerOptions {
            long_poll: Some(Duration::from_millis(1500)),
            ..RunnerOptions::default()
        },
    );
    // No last_update: Workhorse proxies straight to Rails (still marks the response).
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&resp, "gitlab-ci-builds-polling").as_deref(),
        Some("yes")
    );
    let v1 = header(&resp, "x-gitlab-last-update").expect("rails header");

    // Timeout: bare 204 after the polling duration.
    let t = Instant::now();
    let resp = request_job(&c, &request_body(RUNNER, Some(&v1), features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    assert!(header(&resp, "x-gitlab-last-update").is_none());

    // Change while watching: bare 204 right away, then the next request is forwarded and gets the job.
    let c2 = c.clone();
    let enqueue = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c2.enqueue(JobSpec::shell("late", &["true"]))
    });
    let t = Instant::now();
    let resp = request_job(&c, &request_body(RUNNER, Some(&v1), features(false, false))).await;
    let id = enqueue.await.expect("enqueued");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert!(header(&resp, "x-gitlab-last-update").is_none());
    let resp = request_job(&c, &request_body(RUNNER, Some(&v1), features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.json::<Value>().await.expect("json")["id"], id);
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------------------
// PUT /jobs/:id

#[tokio::test]
async fn two_phase_commit_and_final_update() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    let job = take_job(&c, features(true, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    let rec = c.job(id).expect("job");
    assert_eq!(rec.state, "pending");
    assert!(rec.waiting_for_ack);

    // Trace may be patched while waiting (AuthJobFinder accepts jobs waiting for the ack).
    let resp = patch(&c, id, &token, 0, b"preparing\n").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("pending"));

    // Keep-alive.
    let resp = update(&c, id, &token, json!({"token": token, "state": "pending"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("pending"));
    // Final state before the ack → 400.
    let resp = update(&c, id, &token, json!({"token": token, "state": "success"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Ack.
    let resp = update(&c, id, &token, json!({"token": token, "state": "running"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));
    assert_eq!(resp.text().await.expect("body"), "200");
    assert_eq!(c.job(id).expect("job").state, "running");

    let trace = b"preparing\n$ true\nJob succeeded\n";
    let resp = patch(&c, id, &token, 10, &trace[10..]).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range"), Some(format!("0-{}", trace.len())));
    assert_eq!(
        header(&resp, "x-gitlab-trace-update-interval").as_deref(),
        Some("3")
    );

    let resp = update(
        &c,
        id,
        &token,
        json!({"token": token, "state": "success", "exit_code": 0,
               "output": {"checksum": crc(trace), "bytesize": trace.len()}}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("success"));
    let rec = c
        .wait_for_final(id, Duration::from_secs(1))
        .await
        .expect("final");
    assert_eq!(rec.state, "success");
    assert_eq!(rec.final_checksum_ok, Some(true));
    assert_eq!(rec.trace, trace.to_vec());
    assert_eq!(rec.patches, vec![(0, 10), (10, trace.len() - 10)]);
    assert_eq!(
        rec.updates.len(),
        4,
        "every authenticated update is recorded"
    );

    // After the end: 403 with the final status.
    let resp = update(&c, id, &token, json!({"token": token, "state": "success"})).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("success"));
    c.shutdown().await;
}

#[tokio::test]
async fn update_authentication_and_failure_reasons() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["false"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();

    // Wrong token: 403 without Job-Status (plain `forbidden!`).
    let resp = update(
        &c,
        id,
        "glcbt-wrong",
        json!({"token": "glcbt-wrong", "state": "running"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(header(&resp, "job-status").is_none());
    // Unknown job.
    assert_eq!(
        update(&c, id + 100, &token, json!({"token": token}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // Missing body token → 400; malformed id → 400; wrong types → 400.
    assert_eq!(
        update(&c, id, &token, json!({"state": "running"}))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let resp = client()
        .put(format!("{}api/v4/jobs/abc", c.url()))
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let bad = json!({"token": token, "state": "failed", "exit_code": "two"});
    assert_eq!(
        update(&c, id, &token, bad).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Unknown state → 400 with Job-Status.
    let resp = update(&c, id, &token, json!({"token": token, "state": "exploded"})).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));

    let trace = b"boom\n";
    assert_eq!(
        patch(&c, id, &token, 0, trace).await.status(),
        StatusCode::ACCEPTED
    );
    let resp = update(
        &c,
        id,
        &token,
        json!({"token": token, "state": "failed", "failure_reason": "no_such_reason", "exit_code": 2,
               "checksum": "crc32:00000000", "output": {"checksum": "crc32:00000000", "bytesize": 5}}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("failed"));
    let rec = c.job(id).expect("job");
    assert_eq!(rec.failure_reason.as_deref(), Some("unknown_failure"));
    assert_eq!(rec.exit_code, Some(2));
    assert_eq!(rec.final_checksum_ok, Some(false));
    c.shutdown().await;
}

#[tokio::test]
async fn cancel_graceful_and_forced() {
    let c = start().await;
    // Runner advertising cancel_gracefully → canceling, then final update → canceled.
    let id = c.enqueue(JobSpec::shell("a", &["sleep 100"]));
    let job = take_job(&c, features(false, true)).await;
    let token = job["token"].as_str().expect("token").to_string();
    c.cancel(id);
    assert_eq!(c.job(id).expect("job").state, "canceling");
    let resp = patch(&c, id, &token, 0, b"x").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceling"));
    let resp = update(&c, id, &token, json!({"token": token, "state": "running"})).await;
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceling"));
    let resp = update(
        &c,
        id,
        &token,
        json!({"token": token, "state": "failed", "failure_reason": "unknown_failure"}),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceled"));
    assert_eq!(
        c.wait_for_final(id, Duration::from_secs(1))
            .await
            .expect("final")
            .state,
        "canceled"
    );

    // Without cancel_gracefully → canceled at once; the next patch is refused with Job-Status.
    let id = c.enqueue(JobSpec::shell("b", &["sleep 100"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    c.cancel(id);
    assert_eq!(c.job(id).expect("job").state, "canceled");
    let resp = patch(&c, id, &token, 0, b"x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(header(&resp, "job-status").as_deref(), Some("canceled"));

    // force_cancel on a canceling job.
    let id = c.enqueue(JobSpec::shell("c", &["sleep 100"]));
    take_job(&c, features(false, true)).await;
    c.cancel(id);
    c.force_cancel(id);
    assert_eq!(c.job(id).expect("job").state, "canceled");
    // A queued job is simply canceled and never handed out.
    let id = c.enqueue(JobSpec::shell("d", &["true"]));
    c.cancel(id);
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    c.shutdown().await;
}

#[tokio::test]
async fn accepted_202_before_final_update() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    c.faults()
        .push_n(Endpoint::UpdateJob, Fault::Accepted202, 2);
    // A running keep-alive does not consume it.
    let resp = update(&c, id, &token, json!({"token": token, "state": "running"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json!({"token": token, "state": "success", "output": {"checksum": crc(b""), "bytesize": 0}});
    for _ in 0..2 {
        let resp = update(&c, id, &token, body.clone()).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_eq!(
            header(&resp, "x-gitlab-trace-update-interval").as_deref(),
            Some("1")
        );
        assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));
    }
    let resp = update(&c, id, &token, body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let rec = c.job(id).expect("job");
    assert_eq!(
        (rec.state.as_str(), rec.accepted_202, rec.final_checksum_ok),
        ("success", 2, Some(true))
    );
    assert_eq!(c.faults().injected(FaultKind::Accepted202), 2);
    c.shutdown().await;
}

#[tokio::test]
async fn a_trace_is_read_by_offset() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    assert_eq!(
        patch(&c, id, &token, 0, b"hello ").await.status(),
        StatusCode::ACCEPTED
    );
    let chunk = c.trace_from(id, 0).expect("job");
    assert_eq!(
        (chunk.bytes.as_slice(), chunk.state.as_str()),
        (&b"hello "[..], "running")
    );
    assert!(c.trace_from(id, 6).expect("job").bytes.is_empty());
    // An offset past the end (a truncated trace) reads nothing rather than failing.
    assert!(c.trace_from(id, 60).expect("job").bytes.is_empty());
    assert!(c.trace_from(id + 1000, 0).is_none());
    // Nothing new: the wait runs out with an empty chunk of a job that is not final.
    let waited = c
        .wait_for_trace(id, 6, Duration::from_millis(50))
        .await
        .expect("job");
    assert!(waited.bytes.is_empty() && !waited.is_final());
    // New bytes end the wait at once.
    let wait = c.wait_for_trace(id, 6, Duration::from_secs(10));
    let (chunk, _) = tokio::join!(wait, patch(&c, id, &token, 6, b"world"));
    assert_eq!(chunk.expect("job").bytes, b"world");
    c.force_cancel(id);
    let chunk = c
        .wait_for_trace(id, 11, Duration::from_secs(10))
        .await
        .expect("job");
    assert!(chunk.bytes.is_empty() && chunk.is_final());
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------------------
// PATCH /jobs/:id/trace

#[tokio::test]
async fn trace_range_protocol() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    let url = format!("{}api/v4/jobs/{id}/trace", c.url());

    // No Content-Range → 400 (after authentication).
    let resp = client()
        .patch(&url)
        .header("JOB-TOKEN", &token)
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Wrong token → 403; token in the query string works.
    let resp = client()
        .patch(&url)
        .header("JOB-TOKEN", "glcbt-bad")
        .header("Content-Range", "0-0")
        .body("x")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = client()
        .patch(format!("{url}?token={token}"))
        .header("Content-Range", "0-5")
        .body("hello ")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-6"));
    assert_eq!(header(&resp, "job-status").as_deref(), Some("running"));

    // Start beyond or before the stored length → 416 with the stored length, nothing appended.
    for start in [3usize, 10] {
        let resp = patch(&c, id, &token, start, b"zzz").await;
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(header(&resp, "range").as_deref(), Some("0-6"));
    }
    // Only the start is parsed, as Ruby's to_i: "bytes 6-…" parses as 0 → 416.
    let resp = client()
        .patch(&url)
        .header("JOB-TOKEN", &token)
        .header("Content-Range", "bytes 6-10")
        .body("world")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    // An exclusive end (gitlab-python-runner) is fine: the end is ignored.
    let resp = client()
        .patch(&url)
        .header("JOB-TOKEN", &token)
        .header("Content-Range", "6-11")
        .body("world")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-11"));

    // RangeMismatch: claims half the stored length and truncates; resending from there stays consistent.
    c.faults().push(Endpoint::PatchTrace, Fault::RangeMismatch);
    let resp = patch(&c, id, &token, 11, b"!\n").await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-5"));
    let resp = patch(&c, id, &token, 5, b" world!\n").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let rec = c.job(id).expect("job");
    assert_eq!(rec.trace_text(), "hello world!\n");
    assert_eq!(rec.range_truncations, vec![5]);
    assert_eq!(c.faults().injected(FaultKind::RangeMismatch), 1);
    c.shutdown().await;
}

#[tokio::test]
async fn a_debug_trace_patch_at_offset_zero_marks_the_log_as_debug_like_gitlab() {
    let c = start().await;
    let patch_with =
        |id: i64, token: String, start: usize, data: &'static [u8], debug: &'static str| {
            let url = format!("{}api/v4/jobs/{id}/trace?debug_trace={debug}", c.url());
            async move {
                let end = (start + data.len()).saturating_sub(1);
                client()
                    .patch(url)
                    .header("JOB-TOKEN", token)
                    .header("Content-Range", format!("{start}-{end}"))
                    .body(data)
                    .send()
                    .await
                    .expect("patch sent")
            }
        };
    // GitLab's `first_debug_chunk?`: only the chunk at offset 0 counts.
    let id = c.enqueue(JobSpec::shell("debug", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    assert!(!c.job(id).expect("job").debug_trace);
    let resp = patch_with(id, token.clone(), 0, b"hello ", "true").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(c.job(id).expect("job").debug_trace);

    let id = c.enqueue(JobSpec::shell("late", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    patch_with(id, token.clone(), 0, b"hello ", "false").await;
    let resp = patch_with(id, token.clone(), 6, b"world", "true").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(
        !c.job(id).expect("job").debug_trace,
        "a later chunk does not"
    );
    let rec = c.job(id).expect("job");
    assert!(c.requests().iter().any(|r| r
        .path
        .ends_with(&format!("/jobs/{}/trace?debug_trace=true", rec.id))));
    c.shutdown().await;
}

#[tokio::test]
async fn trace_size_limit_drops_the_job() {
    let c = start_with(CoordinatorOptions {
        trace_size_limit_mb: Some(1),
        ..CoordinatorOptions::default()
    })
    .await;
    let id = c.enqueue(JobSpec::shell("noisy", &["yes"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    let resp = patch(&c, id, &token, 0, &vec![b'y'; 1024 * 1024]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let rec = c.job(id).expect("job");
    assert_eq!(
        (rec.state.as_str(), rec.failure_reason.as_deref()),
        ("failed", Some("trace_size_exceeded"))
    );
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn scripted_transport_faults() {
    let c = start().await;
    let f = c.faults();
    f.push(Endpoint::RequestJob, Fault::Status(503));
    f.push(
        Endpoint::RequestJob,
        Fault::TooManyRequests { retry_after: 7 },
    );
    f.push(Endpoint::RequestJob, Fault::Reset);
    f.push(
        Endpoint::RequestJob,
        Fault::Stall(Duration::from_millis(300)),
    );
    let body = request_body(RUNNER, None, features(false, false));
    assert_eq!(
        request_job(&c, &body).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let resp = request_job(&c, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("7"));
    let err = client()
        .post(format!("{}api/v4/jobs/request", c.url()))
        .json(&body)
        .send()
        .await
        .expect_err("connection reset");
    assert!(!err.is_status(), "{err:?}");
    let t = Instant::now();
    assert_eq!(
        request_job(&c, &body).await.status(),
        StatusCode::NO_CONTENT
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        request_job(&c, &body).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(f.injected_total(), 4);
    assert_eq!(f.injected_on(Endpoint::RequestJob, FaultKind::Reset), 1);

    let log = c.requests();
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![Some(503), Some(429), None, Some(204), Some(204)]
    );
    assert_eq!(log[0].fault, Some(Fault::Status(503)));
    assert_eq!(log[0].body_str("token"), Some(RUNNER));
    assert_eq!(
        log[3].response_header("x-gitlab-last-update"),
        c.queue_value(RUNNER).as_deref()
    );
    c.shutdown().await;
}

#[tokio::test]
async fn reset_after_processing_loses_the_response_only() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    c.faults()
        .push(Endpoint::PatchTrace, Fault::ResetAfterProcessing);
    let err = client()
        .patch(format!("{}api/v4/jobs/{id}/trace", c.url()))
        .header("JOB-TOKEN", &token)
        .header("Content-Range", "0-2")
        .body("abc")
        .send()
        .await
        .expect_err("response lost");
    assert!(!err.is_status());
    // The patch was stored: resending it gets 416 with the new length.
    let resp = patch(&c, id, &token, 0, b"abc").await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-3"));
    c.shutdown().await;
}

#[tokio::test]
async fn hang_holds_the_request_then_drops_it_unprocessed() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    c.faults().push(
        Endpoint::PatchTrace,
        Fault::Hang(Duration::from_millis(400)),
    );
    let t = Instant::now();
    let err = client()
        .patch(format!("{}api/v4/jobs/{id}/trace", c.url()))
        .header("JOB-TOKEN", &token)
        .header("Content-Range", "0-2")
        .body("abc")
        .send()
        .await
        .expect_err("no answer");
    assert!(!err.is_status());
    assert!(t.elapsed() >= Duration::from_millis(400));
    // Nothing was stored: the same patch is taken at offset 0.
    let resp = patch(&c, id, &token, 0, b"abc").await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(c.faults().injected(FaultKind::Hang), 1);
    let hung = c
        .requests()
        .into_iter()
        .find(|r| r.fault.is_some())
        .expect("logged");
    assert_eq!(hung.status, None);
    c.shutdown().await;
}

#[tokio::test]
async fn random_faults_are_seeded_and_counted() {
    let c = start().await;
    c.faults()
        .set_random(0.5, &[Fault::Status(502), Fault::Status(500)], 42);
    let body = request_body(RUNNER, None, features(false, false));
    let mut failures = 0;
    for _ in 0..40 {
        let status = request_job(&c, &body).await.status();
        if status.is_server_error() {
            failures += 1;
        } else {
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
    }
    assert!((8..=32).contains(&failures), "{failures}");
    assert_eq!(c.faults().injected(FaultKind::Status), failures);
    c.faults().clear();
    assert_eq!(
        request_job(&c, &body).await.status(),
        StatusCode::NO_CONTENT
    );
    c.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_never_kill_the_server() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("build", &["true"]));
    take_job(&c, features(false, false)).await;
    let cases: Vec<(Method, String, Vec<u8>)> = vec![
        (
            Method::PUT,
            format!("api/v4/jobs/{id}"),
            b"\xff\xfe".to_vec(),
        ),
        (
            Method::PUT,
            "api/v4/jobs/99999999999999999999999".into(),
            b"{}".to_vec(),
        ),
        (
            Method::PUT,
            format!("api/v4/jobs/{id}"),
            br#"{"token":[1],"output":"x"}"#.to_vec(),
        ),
        (Method::PATCH, "api/v4/jobs/-1/trace".into(), b"x".to_vec()),
        (
            Method::PATCH,
            format!("api/v4/jobs/{id}/trace"),
            b"x".to_vec(),
        ),
        (Method::POST, "api/v4/jobs/request".into(), b"[]".to_vec()),
        (
            Method::POST,
            "api/v4/jobs/request".into(),
            br#"{"token":{"a":1}}"#.to_vec(),
        ),
        (Method::GET, "api/v4/jobs/request".into(), Vec::new()),
        (Method::GET, "grp/app.git/info/refs".into(), Vec::new()),
        (Method::GET, "nothing/here".into(), Vec::new()),
    ];
    for (method, path, body) in cases {
        let resp = client()
            .request(method.clone(), format!("{}{path}", c.url()))
            .header("Content-Type", "application/json")
            .header("JOB-TOKEN", "glcbt-not-it")
            .body(body)
            .send()
            .await;
        let status = resp.expect("the server answers").status();
        assert!(status.is_client_error(), "{method} {path}: {status}");
    }
    let resp = request_job(&c, &request_body(RUNNER, None, features(false, false))).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    c.shutdown().await;
}

#[tokio::test]
async fn wait_for_final_times_out_with_state() {
    let c = start().await;
    let id = c.enqueue(JobSpec::shell("never", &["true"]));
    let err = c
        .wait_for_final(id, Duration::from_millis(100))
        .await
        .expect_err("times out");
    assert!(err.to_string().contains("pending"), "{err}");
    assert!(c
        .wait_for_final(999, Duration::from_millis(10))
        .await
        .is_err());
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------------------
// Git over HTTP

fn git(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Would override `http.sslCAInfo` (some machines set it for every program).
        .env_remove("GIT_SSL_CAINFO")
        .env_remove("GIT_SSL_CAPATH")
        .output()
        .expect("git runs")
}

#[tokio::test]
async fn git_clone_through_http_backend_with_job_token() {
    let root = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let lib_sha = fixtures::create_repo(root.path(), "grp/lib.git", &[("lib.txt", "library\n")])
        .expect("lib");
    assert_eq!(lib_sha.len(), 40);
    fixtures::create_repo(
        root.path(),
        "grp/app.git",
        &[("README.md", "hello\n"), ("src/main.sh", "echo hi\n")],
    )
    .expect("app");
    let sha = fixtures::add_submodule(root.path(), "grp/app.git", "../lib.git", "lib")
        .expect("submodule");
    assert_eq!(
        fixtures::rev_parse(root.path(), "grp/app.git", "main").expect("rev"),
        sha
    );

    let c = start_with(CoordinatorOptions {
        git_root: Some(root.path().to_path_buf()),
        ..CoordinatorOptions::default()
    })
    .await;
    let mut spec = JobSpec::shell("clone", &["true"]);
    spec.sha = sha.clone();
    spec.project.token_access = vec!["grp/lib".into()];
    let id = c.enqueue(spec);
    let job = take_job(&c, features(false, false)).await;
    let repo_url = job["git_info"]["repo_url"]
        .as_str()
        .expect("url")
        .to_string();
    let pipeline = job["job_info"]["pipeline_id"].as_i64().expect("pipeline");

    let dir = work.path().to_path_buf();
    let url = repo_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        git(
            &[
                "-c",
                "protocol.version=2",
                "clone",
                "--quiet",
                "--recurse-submodules",
                &url,
                "app",
            ],
            &dir,
        )
    })
    .await
    .expect("joined");
    assert!(
        out.status.success(),
        "clone failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cloned = work.path().join("app");
    assert_eq!(
        std::fs::read_to_string(cloned.join("README.md")).expect("readme"),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(cloned.join("lib/lib.txt")).expect("submodule"),
        "library\n"
    );

    // The persistent pipeline ref exists, as the refspecs require; a shallow fetch of it works.
    let dir = cloned.clone();
    let refspec = format!("+refs/pipelines/{pipeline}:refs/pipelines/{pipeline}");
    let out = tokio::task::spawn_blocking(move || {
        git(
            &["fetch", "--quiet", "--depth", "1", "origin", &refspec],
            &dir,
        )
    })
    .await
    .expect("joined");
    assert!(
        out.status.success(),
        "fetch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Credentials: none → 401 with WWW-Authenticate; wrong token → 401; push → 403.
    let refs = format!("{}grp/app.git/info/refs?service=git-upload-pack", c.url());
    let resp = client().get(&refs).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&resp, "www-authenticate").as_deref(),
        Some("Basic realm=\"GitLab\"")
    );
    let token = c.job(id).expect("job").token;
    let resp = client()
        .get(&refs)
        .basic_auth("gitlab-ci-token", Some("glcbt-wrong"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client()
        .get(&refs)
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/x-git-upload-pack-advertisement")
    );
    let push = format!("{}grp/app.git/info/refs?service=git-receive-pack", c.url());
    let resp = client()
        .get(&push)
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A project outside the token's reach → 404.
    fixtures::create_repo(root.path(), "other/secret.git", &[("s", "s")]).expect("secret");
    let resp = client()
        .get(format!(
            "{}other/secret.git/info/refs?service=git-upload-pack",
            c.url()
        ))
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Once the job is over its token no longer clones.
    let resp = update(&c, id, &token, json!({"token": token, "state": "success"})).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let dir = work.path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || git(&["clone", "--quiet", &repo_url, "again"], &dir))
            .await
            .expect("joined");
    assert!(!out.status.success(), "clone after the job must fail");
    assert!(c
        .requests()
        .iter()
        .any(|r| r.endpoint == Endpoint::Git && r.status == Some(401)));
    c.shutdown().await;
}

#[tokio::test]
async fn git_faults_apply() {
    let root = tempfile::tempdir().expect("tempdir");
    fixtures::create_repo(root.path(), "grp/app.git", &[("a", "a")]).expect("repo");
    let c = start_with(CoordinatorOptions {
        git_root: Some(root.path().to_path_buf()),
        ..CoordinatorOptions::default()
    })
    .await;
    c.enqueue(JobSpec::shell("clone", &["true"]));
    let job = take_job(&c, features(false, false)).await;
    let token = job["token"].as_str().expect("token").to_string();
    c.faults().push(Endpoint::Git, Fault::Status(502));
    let refs = format!("{}grp/app.git/info/refs?service=git-upload-pack", c.url());
    let resp = client()
        .get(&refs)
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let resp = client()
        .get(&refs)
        .basic_auth("gitlab-ci-token", Some(&token))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    c.shutdown().await;
}

#[tokio::test]
async fn https_with_a_private_ca_serves_the_api_and_git_and_can_demand_a_client_certificate() {
    let pki = runwright_client::testing::TestPki::new(&["127.0.0.1"]).expect("pki");
    let root = tempfile::tempdir().expect("tempdir");
    let files = tempfile::tempdir().expect("tempdir");
    fixtures::create_repo(root.path(), "grp/app.git", &[("README.md", "over tls\n")])
        .expect("repo");
    let write = |name: &str, text: &str| {
        let p = files.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let (ca, cert, key) = (
        write("ca.pem", &pki.root_pem),
        write("client.pem", &pki.client_cert_pem),
        write("client.key", &pki.client_key_pem),
    );
    let c = start_with(CoordinatorOptions {
        git_root: Some(root.path().to_path_buf()),
        tls: Some(runwright_coordinator::CoordinatorTls {
            cert_chain_pem: pki.server_chain_pem(),
            key_pem: pki.server_key_pem.clone(),
            client_ca_pem: Some(pki.root_pem.clone()),
        }),
        ..CoordinatorOptions::default()
    })
    .await;
    assert!(c.url().starts_with("https://127.0.0.1:"), "{}", c.url());
    c.enqueue(JobSpec::shell("tls", &["true"]));

    let root_cert = reqwest::Certificate::from_pem(pki.root_pem.as_bytes()).expect("root");
    let https = |identity: Option<reqwest::Identity>| {
        let mut b = Client::builder()
            .tls_certs_only([root_cert.clone()])
            .pool_max_idle_per_host(0);
        if let Some(id) = identity {
            b = b.identity(id);
        }
        b.build().expect("client")
    };
    let body = request_body(RUNNER, None, features(false, false));
    let url = format!("{}api/v4/jobs/request", c.url());
    assert!(
        https(None).post(&url).json(&body).send().await.is_err(),
        "no client certificate, no answer"
    );
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", pki.client_cert_pem, pki.client_key_pem).as_bytes(),
    )
    .expect("identity");
    let resp = https(Some(identity))
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("request over mTLS");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let job: Value = resp.json().await.expect("job");
    let repo_url = job["git_info"]["repo_url"]
        .as_str()
        .expect("url")
        .to_string();
    assert!(
        repo_url.starts_with("https://gitlab-ci-token:"),
        "{repo_url}"
    );
    let protocol = job["variables"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["key"] == "CI_SERVER_PROTOCOL")
        .map(|v| v["value"].clone());
    assert_eq!(protocol, Some(json!("https")));

    // git over the same HTTPS, with the client certificate as git is given it.
    let dir = files.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        git(
            &[
                "-c",
                &format!("http.sslCAInfo={}", ca.display()),
                "-c",
                &format!("http.sslCert={}", cert.display()),
                "-c",
                &format!("http.sslKey={}", key.display()),
                "clone",
                "--quiet",
                &repo_url,
                "app",
            ],
            &dir,
        )
    })
    .await
    .expect("joined");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(files.path().join("app/README.md")).expect("cloned"),
        "over tls\n"
    );
    c.shutdown().await;
}
