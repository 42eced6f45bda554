//! The dashboard on `listen_address` (issue 6): its JSON API with and without the token, the refusal to
//! expose it on a non-loopback address without one, and the page itself in headless Chromium (Debian's
//! `chromium`, driven through Debian's `chromedriver` over plain WebDriver HTTP), which must show a running
//! job's log live with its colours and a finished job's collapsed section, under the page's Content Security
//! Policy. A screenshot is kept under `<target>/test-artifacts/dashboard.png`.
//!
//! Issue 17 item 4, played by the attackers: another local user on loopback (no token, no way to read the
//! generated one), a web page through DNS rebinding (a foreign `Host`), a link that would send the browser
//! elsewhere with its session, and a Prometheus scrape from off loopback (a network namespace of the test's own).

use crate::attackers::{can_play_attacker, LocalUser, OffLoopback};
use crate::browser::{artifacts_dir, Browser};
use crate::harness::*;
use runwright_coordinator::{JobSpec, ProjectSpec};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const DASH_TOKEN: &str = "dash-token-4f1c9a";

/// config.toml with a shell runner, `listen_address` on a free loopback port and the dashboard's token.
fn dashboard_config(h: &Harness) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    h.single_runner(
        &format!("listen_address = \"{addr}\"\n[dashboard]\ntoken = \"{DASH_TOKEN}\"\n"),
        "",
    );
    addr
}

async fn wait_listening(h: &Harness, addr: &str) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}:\n{}",
            h.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

#[tokio::test]
async fn api_shows_runners_jobs_and_traces_only_with_the_token() {
    let mut h = Harness::new().await;
    let addr = dashboard_config(&h);
    h.start();
    let id = h.coordinator.enqueue(JobSpec::shell(
        "colours",
        &["printf '\\033[31mred-text\\033[0m\\n'", "seq 1 500"],
    ));
    assert_eq!(h.final_job(id).await.state, "success");
    wait_listening(&h, &addr).await;
    let base = format!("http://{addr}");
    let http = no_redirects();

    // Without the token: refused, with a hint; metrics and health stay open for Prometheus.
    for path in ["/", "/api/v1/runners", "/api/v1/jobs"] {
        let r = http.get(format!("{base}{path}")).send().await.expect("GET");
        assert_eq!(r.status(), 401, "{path}");
        assert!(r.text().await.expect("body").contains("?token="));
    }
    let r = http
        .get(format!("{base}/api/v1/runners"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/health/live"))
            .send()
            .await
            .expect("GET")
            .status(),
        200
    );

    // ?token= sets a cookie (not the token) and leaves the URL.
    let r = http
        .get(format!("{base}/?token={DASH_TOKEN}&x=1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/?x=1");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && !cookie.contains(DASH_TOKEN),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &pair)
        .send()
        .await
        .expect("GET");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("page").contains("assets/app.js"));

    let get = |path: &str| {
        let req = http.get(format!("{base}{path}")).bearer_auth(DASH_TOKEN);
        async move { req.send().await.expect("GET") }
    };
    let runners: Value = get("/api/v1/runners").await.json().await.expect("json");
    let r = &runners["runners"][0];
    assert_eq!(r["name"], "test-runner");
    assert_eq!(r["executor"], "shell");
    assert_eq!(r["state"], "polling", "{runners:#}");
    assert_eq!(r["short_token"], runwright_config::short_token(TOKEN));
    assert!(r["last_contact"].is_string(), "{runners:#}");
    assert!(
        !runners.to_string().contains(TOKEN),
        "the runner token leaked: {runners}"
    );

    let jobs: Value = get("/api/v1/jobs?status=success")
        .await
        .json()
        .await
        .expect("json");
    let job = jobs
        .as_array()
        .and_then(|a| a.iter().find(|j| j["job_id"] == id))
        .unwrap_or_else(|| panic!("job {id} not listed: {jobs:#}"))
        .clone();
    assert_eq!(job["status"], "success");
    let key = job["key"].as_str().expect("key");
    let none: Value = get("/api/v1/jobs?status=failed")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none, json!([]));
    assert_eq!(get("/api/v1/jobs?status=bogus").await.status(), 400);
    assert_eq!(get("/api/v1/jobs/..%2Fjobs/trace").await.status(), 404);

    // The whole trace, then part of it by offset and by Range.
    let full = get(&format!("/api/v1/jobs/{key}/trace")).await;
    assert_eq!(full.headers()["x-job-status"], "success");
    let full = full.bytes().await.expect("trace").to_vec();
    let text = plain_trace(&full);
    assert!(text.contains("\x1b[31mred-text"), "colours kept: {text}");
    assert!(
        text.contains("section_start:") && text.contains("\n500\n"),
        "{text}"
    );
    let part = get(&format!("/api/v1/jobs/{key}/trace?offset=10&limit=20")).await;
    assert_eq!(part.headers()["x-trace-next-offset"], "30");
    assert_eq!(
        part.headers()["x-trace-size"],
        full.len().to_string().as_str()
    );
    assert_eq!(
        part.bytes().await.expect("part").to_vec(),
        full[10..30].to_vec()
    );
    let ranged = http
        .get(format!("{base}/api/v1/jobs/{key}/trace"))
        .bearer_auth(DASH_TOKEN)
        .header("range", "bytes=5-9")
        .send()
        .await
        .expect("GET");
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 5-9/{}", full.len()).as_str()
    );
    assert_eq!(
        ranged.bytes().await.expect("range").to_vec(),
        full[5..10].to_vec()
    );

    let disk: Value = get("/api/v1/disk").await.json().await.expect("json");
    let builds = disk["directories"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["kind"] == "builds"))
        .unwrap_or_else(|| panic!("{disk:#}"));
    assert!(
        builds["exists"] == true && builds["bytes"].is_u64(),
        "{disk:#}"
    );
    assert!(disk["docker"].is_array(), "{disk:#}");
}

#[tokio::test]
async fn a_dashboard_on_a_non_loopback_address_needs_a_token() {
    let mut h = Harness::new().await;
    let port = free_port();
    h.single_runner(&format!("listen_address = \"0.0.0.0:{port}\""), "");
    h.start();
    let id = h
        .coordinator
        .enqueue(JobSpec::shell("still-runs", &["echo ok"]));
    assert_eq!(h.final_job(id).await.state, "success");
    assert!(
        h.log().contains("is not a loopback address") && h.log().contains("[dashboard] token"),
        "{}",
        h.log()
    );
    // GitLab's runner serves metrics on any address: so do we. The dashboard and its API are refused, saying
    // what to set.
    let addr = format!("127.0.0.1:{port}");
    let (status, body) = http_get(&addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("gitlab_runner_jobs_total"), "{body}");
    for path in ["/", "/api/v1/runners", "/api/v1/jobs"] {
        let (status, body) = http_get(&addr, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("[dashboard] token"), "{path}: {body}");
        assert!(!body.contains("still-runs"), "{path}: {body}");
    }
}

#[tokio::test]
async fn chromium_shows_a_running_jobs_live_log_and_a_finished_jobs_collapsed_section() {
    crate::browser::programs();
    let mut h = Harness::new().await;
    let addr = dashboard_config(&h);
    h.start();
    let flags = h.path().join("flags");
    std::fs::create_dir_all(&flags).expect("flags dir");

    // A finished job with a section its author collapsed.
    let done = h.coordinator.enqueue(JobSpec::shell(
        "folded",
        &[
            "printf '\\033[0Ksection_start:%s:folded_part[collapsed=true]\\r\\033[0K\\033[36;1mFolded header\\033[0m\\n' \"$(date +%s)\"",
            "echo hidden-inside-the-fold",
            "printf '\\033[0Ksection_end:%s:folded_part\\r\\033[0K\\n' \"$(date +%s)\"",
            "echo after-the-fold",
        ],
    ));
    assert_eq!(h.final_job(done).await.state, "success");

    // A running job that prints more once the page is loaded.
    let live = h.coordinator.enqueue(JobSpec::shell(
        "live",
        &[
            "printf '\\033[31mred-before-load\\033[0m\\n'",
            &format!("while [ ! -f {0}/go ]; do sleep 0.2; done", flags.display()),
            "printf '\\033[32mgreen-after-load\\033[0m\\n'",
            &format!(
                "while [ ! -f {0}/end ]; do sleep 0.2; done",
                flags.display()
            ),
        ],
    ));
    h.wait_trace(live, "red-before-load").await;
    wait_listening(&h, &addr).await;

    let browser = Browser::start(h.path()).await;
    browser
        .goto(&format!("http://{addr}/?token={DASH_TOKEN}"))
        .await;
    let running =
        format!("document.querySelector('#running .joblog[data-job-id=\"{live}\"] pre.log')");
    browser
        .wait_for(
            "the running job's log in red",
            &format!(
                "const l = {running}; return !!l && [...l.querySelectorAll('span.fg-31')].some(s => s.textContent === 'red-before-load')"
            ),
        )
        .await;
    // Under the page's Content Security Policy its own stylesheet applies (the header's colour) and its script
    // ran (the log above); inline colours set by the script (256 colours, below) are allowed too.
    let styled = browser
        .eval("return getComputedStyle(document.querySelector('header')).backgroundColor")
        .await;
    assert_eq!(styled, json!("rgb(41, 41, 97)"), "app.css did not apply");
    // Output printed after the page loaded appears without a reload.
    browser.eval("window.loadedOnce = true; return true").await;
    let before = browser.eval(&format!("return {running}.textContent")).await;
    assert!(
        !before.as_str().unwrap_or("").contains("green-after-load"),
        "{before}"
    );
    std::fs::write(flags.join("go"), "").expect("flag");
    browser
        .wait_for(
            "the running job's new output",
            &format!(
                "const l = {running}; return window.loadedOnce === true && [...l.querySelectorAll('span.fg-32')].some(s => s.textContent === 'green-after-load')"
            ),
        )
        .await;

    // The finished job from the history: its own section is collapsed in the DOM, the runner's are open.
    browser
        .wait_for(
            "the finished job in the history",
            &format!("const r = document.querySelector('#history tr[data-job-id=\"{done}\"]'); if (r) r.click(); return !!r"),
        )
        .await;
    let fold = browser
        .wait_for(
            "the finished job's sections",
            &format!(
                "const log = document.querySelector('#opened .joblog[data-job-id=\"{done}\"] pre.log');
                 const d = log && log.querySelector('details[data-section=\"folded_part\"]');
                 const script = log && log.querySelector('details[data-section=\"step_script\"]');
                 if (!d || !script || !log.textContent.includes('after-the-fold')) return null;
                 return {{ open: d.open, title: d.querySelector('summary').textContent,
                          inside: d.querySelector('.section-body').textContent, scriptOpen: script.open,
                          insideShown: d.querySelector('.section-body').checkVisibility() }};"
            ),
        )
        .await;
    assert_eq!(fold["open"], false, "{fold}");
    assert_eq!(
        fold["insideShown"], false,
        "a collapsed section shows nothing: {fold}"
    );
    assert!(
        fold["title"]
            .as_str()
            .unwrap_or("")
            .contains("Folded header"),
        "{fold}"
    );
    assert!(
        fold["inside"]
            .as_str()
            .unwrap_or("")
            .contains("hidden-inside-the-fold"),
        "{fold}"
    );
    assert_eq!(fold["scriptOpen"], true, "{fold}");

    // The page's one renderer, on the cases a trace brings: progress lines overwritten by carriage returns,
    // 256 colours, nested sections split across chunks, a line split across chunks.
    let rendered = browser
        .eval(
            "const pre = document.createElement('pre'); const v = new TraceView(pre);
             v.push('10%\\r50%\\r100%\\n');
             v.push('\\x1b[1;38;5;196mred256\\x1b[0m plain\\n');
             v.push('section_start:1:outer\\r\\x1b[0KOuter\\nsection_start:2:inner[collapsed=true]\\r');
             v.push('\\x1b[0KInner\\nx\\nsection_end:3:inner\\r\\x1b[0Ksection_end:4:outer\\r\\x1b[0K\\nspl');
             v.push('it\\n'); v.flush();
             const span = pre.querySelector('span.bold');
             const outer = pre.querySelector(':scope > details[data-section=outer]');
             const inner = outer && outer.querySelector('details[data-section=inner]');
             return { lines: [...pre.children].map(c => c.tagName === 'DETAILS' ? '<' + c.dataset.section + '>' : c.textContent),
                      color: span && span.style.color, spanText: span && span.textContent,
                      outerOpen: outer && outer.open, innerOpen: inner && inner.open,
                      inner: inner && inner.querySelector('.section-body').textContent };",
        )
        .await;
    assert_eq!(
        rendered,
        json!({
            "lines": ["100%", "red256 plain", "<outer>", "split"],
            "color": "rgb(255, 0, 0)",
            "spanText": "red256",
            "outerOpen": true,
            "innerOpen": false,
            "inner": "x",
        }),
        "{rendered:#}"
    );

    // FF_TIMESTAMPS: the header becomes the line's time; a `+` line continues the one before it (a section's
    // title after its marker, a progress bar after each carriage return), as in GitLab's viewer.
    let stamped = browser
        .eval(
            "const pre = document.createElement('pre'); const v = new TraceView(pre);
             const h = (t, f) => '2025-01-31T12:34:' + t + '.000001Z ' + f;
             v.push(h('56', '00O ') + 'section_start:1:stamped\\r\\x1b[0K\\n' + h('56', '00O+') + '\\x1b[0KTitle\\n');
             v.push(h('57', '01O ') + '10%\\r\\n' + h('58', '01O+') + '50%\\r\\n');
             v.push(h('59', '01O+') + '100%\\n' + h('59', '01O ') + 'plain\\n');
             v.push(h('59', '00O ') + 'section_end:2:stamped\\r\\x1b[0K\\n'); v.flush();
             const d = pre.querySelector('details[data-section=stamped]');
             const text = (e) => [...e.childNodes].filter(n => !(n.classList && n.classList.contains('ts')))
                                   .map(n => n.textContent).join('');
             return { title: d && text(d.querySelector('summary')),
                      titleTime: d && d.querySelector('summary .ts').textContent,
                      lines: d ? [...d.querySelector('.section-body').children].map(text) : null,
                      times: d ? [...d.querySelectorAll('.section-body .ts')].map(t => t.title) : null };",
        )
        .await;
    assert_eq!(
        stamped,
        json!({
            "title": "Title",
            "titleTime": "12:34:56",
            "lines": ["100%", "plain"],
            "times": ["2025-01-31T12:34:57.000001Z", "2025-01-31T12:34:59.000001Z"],
        }),
        "{stamped:#}"
    );

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let shot = dir.join("dashboard.png");
    std::fs::write(&shot, &png).expect("screenshot");
    eprintln!("dashboard screenshot: {}", shot.display());

    std::fs::write(flags.join("end"), "").expect("flag");
    assert_eq!(h.final_job(live).await.state, "success");
}

// ---------------------------------------------------------------------------------------------------------
// issue 17 item 4

/// The value of header `name` in a response's header lines.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A job of project `grp/secret-app` that has finished (its path is what must not leave the host), once this
/// host's own scrape of `addr` counts it.
async fn secret_project_job(h: &Harness, addr: &str) -> i64 {
    let id = h.coordinator.enqueue(JobSpec {
        project: ProjectSpec::new(42, "grp/secret-app"),
        ..JobSpec::shell("secret-job", &["echo output-for-the-owner-only"])
    });
    assert_eq!(h.final_job(id).await.state, "success", "{}", h.log());
    wait_listening(h, addr).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = http_get(addr, "/metrics").await;
        if body.contains("project=\"grp/secret-app\"") {
            return id;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn another_local_user_reads_nothing_from_a_loopback_dashboard() {
    if !can_play_attacker("another local user") {
        return;
    }
    let mut h = Harness::new().await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // No [dashboard] section: the dashboard used to be open to every local user.
    h.single_runner(&format!("listen_address = \"{addr}\""), "");
    h.start();
    secret_project_job(&h, &addr).await;
    // The directory on the way is open, as /etc/gitlab-runner is: only the files' own modes protect them.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let attacker = LocalUser::create();
    let get = |path: &str, extra: &str| {
        let out = attacker.bash(&format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: {addr}\\r\\n{extra}\\r\\n' >&3 && cat <&3"
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for path in ["/", "/api/v1/jobs", "/api/v1/runners", "/?token=guess"] {
        let answer = get(path, "");
        assert!(answer.starts_with("HTTP/1.0 401"), "{path}: {answer}");
        assert!(
            !answer.contains("secret-job") && !answer.contains("output-for-the-owner-only"),
            "{answer}"
        );
    }
    // The token the service generated is the service user's alone.
    let token = h.dashboard_token().await;
    let file = h.path().join(".runwright_dashboard_token");
    let meta = std::fs::symlink_metadata(&file).expect("token file");
    assert_eq!((meta.mode() & 0o777, meta.uid()), (0o600, 0));
    let read = attacker.bash(&format!("cat {}", file.display()));
    assert!(!read.status.success(), "the attacker read the token");
    assert!(!String::from_utf8_lossy(&read.stdout).contains(&token));
    // The log says how to open the dashboard; the token is printed only to a terminal.
    let log = h.log();
    assert!(
        log.contains(&format!("http://{addr}/?token=<the token in")),
        "{log}"
    );
    assert!(!log.contains(&token), "{log}");

    // The service user, with the token, sees the jobs.
    let answer = get(
        "/api/v1/jobs",
        &format!("Authorization: Bearer {token}\\r\\n"),
    );
    assert!(
        answer.starts_with("HTTP/1.0 200") && answer.contains("secret-job"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_every_answer_carries_the_security_headers() {
    let mut h = Harness::new().await;
    let addr = dashboard_config(&h);
    h.start();
    secret_project_job(&h, &addr).await;
    let port = addr.rsplit(':').next().expect("port");
    let auth = format!("Authorization: Bearer {DASH_TOKEN}");
    let get = |path: &'static str, host: String, with_token: bool| {
        let mut headers = vec![format!("Host: {host}")];
        if with_token {
            headers.push(auth.clone());
        }
        let addr = addr.clone();
        async move { http_request(&addr, path, &headers).await }
    };

    // DNS rebinding: a page at evil.example, its name pointed at 127.0.0.1, is same-origin with what answers
    // there. The dashboard does not answer to that name, even with the token (a browser may hold the cookie).
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
    ] {
        let (status, _, body) = get("/api/v1/jobs", host.clone(), true).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert!(!body.contains("secret-job"), "{body}");
        // Metrics stay served (Prometheus), without project paths.
        let (status, _, body) = get("/metrics", host.clone(), false).await;
        assert_eq!(status, 200);
        assert!(
            body.contains(
                "runwright_project_jobs_total{runner=\"test-runner\",state=\"success\"} 1"
            ),
            "{body}"
        );
        assert!(!body.contains("secret-app"), "{host}: {body}");
    }
    for host in [
        addr.clone(),
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
    ] {
        let (status, _, body) = get("/api/v1/jobs", host.clone(), true).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // This host's own scrape sees the projects.
    let (_, _, body) = get("/metrics", addr.clone(), false).await;
    assert!(body.contains("project=\"grp/secret-app\""), "{body}");

    // Every answer: the page, a refusal, an unknown path, metrics, health.
    let answers = [
        get("/", addr.clone(), true).await,
        get("/assets/app.js", addr.clone(), true).await,
        get("/api/v1/jobs", addr.clone(), false).await,
        get("/api/v1/jobs", "evil.example".into(), true).await,
        get("/no/such/page", addr.clone(), true).await,
        get("/metrics", addr.clone(), false).await,
        get("/health/live", addr.clone(), false).await,
    ];
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [200, 200, 401, 403, 404, 200, 200]);
    for (status, head, _) in &answers {
        let csp = header(head, "content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("style-src 'self'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe"),
            "{status}: {head}"
        );
        assert_eq!(header(head, "x-frame-options"), Some("DENY"), "{head}");
        assert_eq!(
            header(head, "x-content-type-options"),
            Some("nosniff"),
            "{head}"
        );
        assert_eq!(
            header(head, "referrer-policy"),
            Some("no-referrer"),
            "{head}"
        );
    }
}

#[tokio::test]
async fn the_token_redirect_stays_on_the_host_and_its_session_expires() {
    let mut h = Harness::new().await;
    let addr = dashboard_config(&h);
    h.start();
    wait_listening(&h, &addr).await;
    let host = format!("Host: {addr}");

    // A link that would send the browser, with its fresh session, to another host.
    for (path, location) in [
        (
            format!("//evil.example/x?token={DASH_TOKEN}&a=1"),
            "/evil.example/x?a=1",
        ),
        (
            format!("///evil.example?token={DASH_TOKEN}"),
            "/evil.example",
        ),
        (format!("/?token={DASH_TOKEN}"), "/"),
    ] {
        let (status, head, _) = http_request(&addr, &path, std::slice::from_ref(&host)).await;
        assert_eq!(status, 303, "{path}: {head}");
        assert_eq!(header(&head, "location"), Some(location), "{path}");
    }

    // The session cookie: expires, HttpOnly, SameSite, and Secure when a proxy says the browser came by TLS.
    let (_, head, _) = http_request(
        &addr,
        &format!("/?token={DASH_TOKEN}"),
        std::slice::from_ref(&host),
    )
    .await;
    let cookie = header(&head, "set-cookie").expect("cookie").to_string();
    for attr in ["Path=/", "Max-Age=43200", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attr), "{attr}: {cookie}");
    }
    assert!(
        !cookie.contains("Secure") && !cookie.contains(DASH_TOKEN),
        "{cookie}"
    );
    let (_, head, _) = http_request(
        &addr,
        &format!("/?token={DASH_TOKEN}"),
        &[host.clone(), "X-Forwarded-Proto: https".into()],
    )
    .await;
    let secure = header(&head, "set-cookie").expect("cookie");
    assert!(secure.ends_with("; Secure"), "{secure}");

    let pair = cookie.split(';').next().expect("pair").to_string();
    let with_cookie = |value: String| {
        let (addr, host) = (addr.clone(), host.clone());
        async move {
            http_request(&addr, "/api/v1/jobs", &[host, format!("Cookie: {value}")])
                .await
                .0
        }
    };
    assert_eq!(with_cookie(pair.clone()).await, 200);
    // The expiry is the server's too: a cookie with a later one, or the token's old digest (a cookie that never
    // expired), is refused.
    let (name, value) = pair.split_once('=').expect("name=value");
    let (exp, sig) = value.split_once('.').expect("exp.sig");
    let later: u64 = exp.parse::<u64>().expect("exp") + 3600;
    assert_eq!(with_cookie(format!("{name}={later}.{sig}")).await, 401);
    use sha2::Digest;
    let old_digest = hex_of(&sha2::Sha256::digest(format!(
        "runwright-dashboard\0{DASH_TOKEN}"
    )));
    assert_eq!(with_cookie(format!("{name}={old_digest}")).await, 401);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scraped_off_loopback_without_the_token_show_counts_not_project_paths() {
    if !can_play_attacker("a client off loopback") {
        return;
    }
    let mut h = Harness::new().await;
    let port = free_port();
    h.single_runner(
        &format!("listen_address = \"0.0.0.0:{port}\"\n[dashboard]\ntoken = \"{DASH_TOKEN}\"\n"),
        "",
    );
    h.start();
    secret_project_job(&h, &format!("127.0.0.1:{port}")).await;
    let net = OffLoopback::create();

    // The network's scrape: GitLab's metrics and runwright's counts, no project.
    let answer = net.get(port, "/metrics", &[]);
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer}"
    );
    assert!(
        answer.contains("gitlab_runner_jobs_total{runner=\"test-runner\""),
        "{answer}"
    );
    assert!(
        answer.contains("runwright_project_jobs_total{runner=\"test-runner\",state=\"success\"} 1"),
        "{answer}"
    );
    assert!(
        !answer.contains("secret-app") && !answer.contains("project="),
        "{answer}"
    );
    // With the token, or from this host itself, everything.
    let answer = net.get(
        port,
        "/metrics",
        &[&format!("Authorization: Bearer {DASH_TOKEN}")],
    );
    assert!(answer.contains("project=\"grp/secret-app\""), "{answer}");
    let (_, body) = http_get(&format!("127.0.0.1:{port}"), "/metrics").await;
    assert!(body.contains("project=\"grp/secret-app\""), "{body}");
    // The dashboard off loopback: its token, and the address reached as Host.
    let answer = net.get(port, "/api/v1/jobs", &[]);
    assert!(answer.contains(" 401 "), "{answer}");
    let answer = net.get(
        port,
        "/api/v1/jobs",
        &[&format!("Authorization: Bearer {DASH_TOKEN}")],
    );
    assert!(
        answer.contains(" 200 ") && answer.contains("secret-job"),
        "{answer}"
    );
    assert!(
        !net.client_ip.is_empty() && !h.log().contains(DASH_TOKEN),
        "{}",
        h.log()
    );
}

#[tokio::test]
async fn require_token_false_opens_a_loopback_dashboard_and_says_what_it_exposes() {
    let mut h = Harness::new().await;
    let addr = format!("127.0.0.1:{}", free_port());
    h.single_runner(
        &format!(
            "listen_address = \"{addr}\"\n[dashboard]\nrequire_token = false\nallowed_hosts = [\"runner.example.com\"]\n"
        ),
        "",
    );
    h.start();
    wait_listening(&h, &addr).await;
    for host in [addr.clone(), "runner.example.com:443".into()] {
        let (status, _, body) =
            http_request(&addr, "/api/v1/runners", &[format!("Host: {host}")]).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, _, _) = http_request(&addr, "/", &["Host: evil.example".into()]).await;
    assert_eq!(status, 403);
    assert!(
        h.log()
            .contains("every local user, and every job on this host, can read"),
        "{}",
        h.log()
    );
    assert!(!h.path().join(".runwright_dashboard_token").exists());
}
