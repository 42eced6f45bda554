//! Issue 19 item 4 (and item 7's docker half): what a job controls — files an earlier job planted in the builds
//! volume, its `GIT_*` flags, its variables, the archives it hands the helper, a service swapping paths — runs
//! (if at all) in the job's own containers, never on the host. Every test asserts the same three things: a marker
//! path outside the volumes (under the test's temp dir, on the host) stays absent; no process the job started is
//! left on the host; the runner's `config.toml` and its token cannot be read from any container of the job.
//!
//! The "secrets" are stand-ins the tests make (never a real host file), and nothing here writes through a path
//! that could be a symlink to one.

use crate::docker::*;
use crate::harness::*;
use runwright_api::types::{Artifact, Cache, Hook, Image};
use runwright_coordinator::JobSpec;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the host side of a test watches: the marker dir on the host and the secrets the containers must not
/// read.
struct Witness {
    /// `<test temp dir>/host-markers`, made empty: a command of the job run on the host writes here.
    host: PathBuf,
    config: String,
    token: String,
}

impl Witness {
    fn new(h: &Harness, token: &str) -> Self {
        let host = h.path().join("host-markers");
        std::fs::create_dir_all(&host).expect("host marker dir");
        Self {
            host,
            config: h.config_path.display().to_string(),
            token: token.to_string(),
        }
    }

    /// A host path for marker `name` (its dir exists on the host only).
    fn marker(&self, name: &str) -> String {
        self.host.join(name).display().to_string()
    }

    /// A shell line printing `<tag>:config-unreadable` (else `<tag>:CONFIG-READ`) and `<tag>:token-absent` (else
    /// `<tag>:TOKEN-FOUND`): config.toml by its host path, the runner token in the process's and PID 1's
    /// environment and the usual places of the container's file system and volumes. The token is put together
    /// at run time, so the script itself (which may be a file in the volume) does not hold it.
    fn probe(&self, tag: &str) -> String {
        let (head, tail) = self.token.split_at(8);
        format!(
            "rw_probe() {{ if cat '{cfg}' 2>/dev/null | grep -q token; then echo \"$1:CONFIG-READ\"; else echo \"$1:config-unreadable\"; fi; \
             t='{head}'; t=\"$t\"'{tail}'; if grep -rlsF \"$t\" /proc/self/environ /proc/1/environ /etc /root /tmp /builds /cache 2>/dev/null | grep -q .; \
             then echo \"$1:TOKEN-FOUND\"; else echo \"$1:token-absent\"; fi; }}; rw_probe {tag}",
            cfg = self.config,
        )
    }

    /// The trace shows `tag`'s probe, and that it found nothing.
    fn assert_probed(&self, t: &str, tag: &str) {
        assert!(
            t.contains(&format!("{tag}:config-unreadable")),
            "{tag}: {t}"
        );
        assert!(t.contains(&format!("{tag}:token-absent")), "{tag}: {t}");
        assert!(!t.contains(&format!("{tag}:CONFIG-READ")), "{tag}: {t}");
        assert!(!t.contains(&format!("{tag}:TOKEN-FOUND")), "{tag}: {t}");
    }

    /// Nothing of the job reached the host: no marker, and the runner token is in no trace.
    fn assert_host_clean(&self, what: &str, t: &str) {
        let made: Vec<String> = std::fs::read_dir(&self.host)
            .expect("host marker dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(made, Vec::<String>::new(), "{what}: markers on the host");
        assert!(
            !t.contains(&self.token),
            "{what}: the runner token in the trace"
        );
    }
}

/// A shell line leaving `sleep <n>` behind in the background, outliving its stage.
fn leave_process(n: u32) -> String {
    format!("sleep {n} >/dev/null 2>&1 &")
}

/// A service of the job (busybox, on the job's volumes as every container of the job is) that probes for the
/// runner's secrets into `file` (in a volume), then stays, leaving `sleep <sleeper>` running.
fn probing_service(w: &Witness, file: &str, sleeper: u32) -> Image {
    Image {
        name: BUSYBOX.into(),
        alias: "prober".into(),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            format!(
                "{} > {file}.tmp; mv {file}.tmp {file}; exec sleep {sleeper}",
                w.probe("service")
            ),
        ]),
        ..Default::default()
    }
}

/// A script line waiting (up to 30 s) for the service's probe in `file`, then printing it.
fn service_probe_result(file: &str) -> String {
    format!(
        "i=0; until [ -f {file} ] || [ $i -gt 300 ]; do sleep 0.1; i=$((i+1)); done; cat {file}"
    )
}

/// Waits until no process runs `sleep <n>` (the job's containers are gone); fails after a while.
async fn assert_no_process_left(n: u32) {
    let arg = n.to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_running(&["sleep", &arg]) > 0 {
        assert!(
            Instant::now() < deadline,
            "a process of the job (sleep {n}) is still running on the host"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lines of `t` that start with `prefix`, without it, sorted.
fn listed(t: &str, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = t
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|s| s.trim().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A docker runner's entry (as `Harness::docker_runner`), with `extra` in `[[runners]]` and `docker_extra` in
/// `[runners.docker]`, for config files holding several.
fn runner_entry(h: &Harness, token: &str, extra: &str, docker_extra: &str) -> String {
    format!(
        "[[runners]]\n  name = \"docker-{}\"\n  url = \"{}\"\n  token = \"{token}\"\n  executor = \"docker\"\n{extra}\n  [runners.docker]\n    image = \"{BUSYBOX}\"\n    pull_policy = [\"if-not-present\"]\n{docker_extra}\n",
        &token[8..14],
        h.coordinator.url()
    )
}

/// A hook script (`#!/bin/sh`) as a planted git hook runs it: it says where it ran, leaves a marker in the
/// volume (`<volume dir>/<name>`) and one at the host marker path, probes for the runner's secrets and leaves a
/// process behind.
fn hook_body(w: &Witness, volume: &str, name: &str, sleeper: u32) -> String {
    format!(
        "#!/bin/sh\necho \"planted {name} ran as $(id -u)\" >&2\nmkdir -p {volume} && touch {volume}/{name}\n\
         mkdir -p '{host}' 2>/dev/null && touch '{marker}'\n{probe} >&2\n{sleep}\nexit 0\n",
        host = w.host.display(),
        marker = w.marker(name),
        probe = w.probe(&format!("hook-{name}")),
        sleep = leave_process(sleeper),
    )
}

/// A script line writing `body` (no backslashes) to the executable file `path`, its directory made.
fn write(path: &str, body: &str) -> String {
    format!(
        "mkdir -p \"$(dirname {path})\" && printf '%b' '{}' > {path} && chmod 755 {path}",
        body.replace('\'', "'\\''").replace('\n', "\\n")
    )
}

/// Issue 19 item 4: an earlier job of the project (same builds volume, `GIT_STRATEGY: fetch`) plants hooks in
/// `.git/hooks`, a `core.hooksPath` with hooks, and `core.fsmonitor` in `.git/config`.
///
/// With `clean_git_config = false` git in the next job's `get_sources` runs them — in the helper container: their
/// markers are in the volume, none on the host, and from there config.toml and the runner token are out of reach.
/// With `clean_git_config` on (the default of every executor but shell) the next `get_sources` removes them first,
/// as gitlab-runner's `writeGitCleanup`/`writeGitCleanupAllConfigs` does (shells/abstract.go): `.git/config`,
/// `.git/hooks` and the template's go (and `.git/hooks/post-checkout` and the lock files even without it); what it
/// does not touch stays — `.git/info`, `.git/modules/*` without a submodule strategy, files outside `.git` — and
/// git runs none of it.
#[tokio::test]
async fn planted_hooks_and_git_config_run_in_the_helper_or_not_at_all_never_on_the_host() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = format!("glrt-t1_{:016x}", rand_u64());
    h.coordinator
        .add_runner(&token, runwright_coordinator::RunnerOptions::default());
    let entry = |clean: &str| runner_entry(&h, &token, clean, "");
    let (unclean, clean) = (entry("  clean_git_config = false"), entry(""));
    let config = |e: &str| format!("concurrent = 1\ncheck_interval = 1\n{e}");
    h.write_config(&config(&unclean));
    let w = Witness::new(&h, &token);
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    const SLEEPER: u32 = 7141;
    let fetch = |name: &str, script: &[&str]| {
        job(name, (7, "grp/app"), &sha, script).with_variable("GIT_STRATEGY", "fetch")
    };

    // The planting job: a normal job of the project, its script writing into its own checkout.
    let mut plant = vec![
        "test -d .git && echo checkout-present".to_string(),
        // .git/hooks: run by git unless core.hooksPath points elsewhere.
        write(".git/hooks/post-checkout", &hook_body(&w, "/builds/rw-markers", "git-hooks-post-checkout", SLEEPER)),
        write(
            ".git/hooks/reference-transaction",
            &hook_body(&w, "/builds/rw-markers", "git-hooks-reference-transaction", SLEEPER),
        ),
        write(".git/hooks/pre-commit", &hook_body(&w, "/builds/rw-markers", "git-hooks-pre-commit", SLEEPER)),
        // core.hooksPath: a directory outside .git, which no cleanup removes.
        write("/builds/grp/evil-hooks/post-checkout", &hook_body(&w, "/builds/rw-markers", "hookspath-post-checkout", SLEEPER)),
        write(
            "/builds/grp/evil-hooks/reference-transaction",
            &hook_body(&w, "/builds/rw-markers", "hookspath-reference-transaction", SLEEPER),
        ),
        write("/builds/grp/evil-hooks/fsmonitor", &hook_body(&w, "/builds/rw-markers", "fsmonitor", SLEEPER)),
        "printf '[core]\\n\\thooksPath = /builds/grp/evil-hooks\\n\\tfsmonitor = /builds/grp/evil-hooks/fsmonitor\\n' >> .git/config"
            .to_string(),
        // What gitlab-runner's cleanup leaves: .git/info, and .git/modules when there are no submodules to
        // update (its RmFilesRecursive of modules runs only with a submodule strategy).
        "mkdir -p .git/info && echo survivor > .git/info/rw-survivor".to_string(),
        write(".git/modules/lib/hooks/post-checkout", &hook_body(&w, "/builds/rw-markers", "module-hook", SLEEPER)),
        "printf '[core]\\n\\tbare = false\\n' > .git/modules/lib/config".to_string(),
    ];
    plant.push(leave_process(SLEEPER));
    let plant: Vec<&str> = plant.iter().map(String::as_str).collect();
    let id = h.coordinator.enqueue(fetch("plant", &plant));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("checkout-present\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;
    w.assert_host_clean("plant", &t);

    // clean_git_config = false: the next get_sources runs what was planted, in the helper container.
    let report = [
        "{ ls /builds/rw-markers 2>/dev/null || true; } | sed 's/^/marker: /'",
        "rm -rf /builds/rw-markers",
        "echo listed",
    ];
    let mut runs = fetch("runs-them", &report);
    runs.hooks = vec![Hook {
        name: "post_get_sources_script".into(),
        script: vec![w.probe("helper")],
    }];
    let id = h.coordinator.enqueue(runs);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("listed\n"), "{t}");
    let ran = listed(&t, "marker: ");
    // git's checkout runs the post-checkout hook of core.hooksPath (.git/hooks/post-checkout was removed as a
    // stale file, as gitlab-runner removes it even without clean_git_config).
    assert!(
        ran.contains(&"hookspath-post-checkout".to_string()),
        "{ran:?}\n{t}"
    );
    assert!(
        !ran.contains(&"git-hooks-post-checkout".to_string()),
        "{ran:?}\n{t}"
    );
    assert!(
        t.contains("planted hookspath-post-checkout ran as 0"),
        "{t}"
    );
    for name in &ran {
        w.assert_probed(&t, &format!("hook-{name}"));
    }
    w.assert_probed(&t, "helper");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;
    w.assert_host_clean("clean_git_config = false", &t);

    // clean_git_config on (the default): get_sources removes the planted config and hooks before git runs.
    h.write_config(&config(&clean));
    h.wait_log("runner entry changed").await;
    let service_result = service_probe_result("/builds/probe-service");
    let check = [
        "{ ls /builds/rw-markers 2>/dev/null || true; } | sed 's/^/marker: /'",
        "echo listed",
        "grep -n 'hooksPath\\|fsmonitor' .git/config || echo config-clean",
        "{ ls .git/hooks 2>/dev/null || true; } | sed 's/^/git-hook: /'",
        "cat .git/info/rw-survivor",
        "test -x .git/modules/lib/hooks/post-checkout && echo module-hook-kept",
        "test -f .git/modules/lib/config && echo module-config-kept",
        "test -x /builds/grp/evil-hooks/post-checkout && echo outside-git-kept",
        "cat README.md",
        &w.probe("build"),
        &service_result,
    ];
    let mut cleaned = fetch("cleaned", &check);
    cleaned.services = vec![probing_service(&w, "/builds/probe-service", SLEEPER)];
    cleaned.hooks = vec![Hook {
        name: "post_get_sources_script".into(),
        script: vec![w.probe("helper")],
    }];
    let id = h.coordinator.enqueue(cleaned);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("listed\n"), "{t}");
    assert_eq!(
        listed(&t, "marker: "),
        Vec::<String>::new(),
        "{t}\n{}",
        h.log()
    );
    assert!(!t.contains("planted "), "{t}");
    assert!(t.contains("config-clean\n"), "{t}");
    assert_eq!(listed(&t, "git-hook: "), Vec::<String>::new(), "{t}");
    for kept in [
        "survivor\n",
        "module-hook-kept\n",
        "module-config-kept\n",
        "outside-git-kept\n",
        "hello from git\n",
    ] {
        assert!(t.contains(kept), "{kept:?} missing:\n{t}");
    }
    for tag in ["helper", "build", "service"] {
        w.assert_probed(&t, tag);
    }
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;
    w.assert_host_clean("clean_git_config", &t);
}

/// A command substitution in three spellings (`$(…)`, backticks, after `;`), each making the host marker
/// `<name>-<form>` and the volume marker `/cache/subst-<name>-<form>` by redirections (`>a>b`): no space a
/// variable split on white space would cut, no `${…}` the runner's expansion of variables would eat.
fn substitutions(w: &Witness, name: &str) -> [String; 3] {
    let touch = |form: &str| {
        format!(
            ">{}>/cache/subst-{name}-{form}",
            w.marker(&format!("{name}-{form}"))
        )
    };
    [
        format!("$({})", touch("dollar")),
        format!("`{}`", touch("backtick")),
        format!(";{}", touch("semicolon")),
    ]
}

/// The lines a job prints listing the volume's substitution markers (`subst: <name>`), then `listed`.
const LIST_SUBST: &str =
    "{ ls /cache 2>/dev/null || true; } | { grep '^subst-' || true; } | sed 's/^/subst: /'; echo listed";

/// Issue 19 item 4: `GIT_CLEAN_FLAGS`, `GIT_FETCH_EXTRA_FLAGS`, `GIT_CHECKOUT`, `GIT_SUBMODULE_PATHS`,
/// `GIT_SUBMODULE_UPDATE_FLAGS` and submodule paths (in `.gitmodules`) holding `$(…)`, backticks and `;` reach
/// git as literal arguments in the helper container: no substitution anywhere, neither on the host (markers
/// under the test's temp dir) nor in the containers (markers in the `/cache` volume), and git names the literal
/// text where it refuses it. The runner writes each flag as one quoted argument, split on white space only,
/// as gitlab-runner does (`strings.Fields`, then its shell writer's quoting).
#[tokio::test]
async fn git_flags_and_submodule_paths_with_shell_metacharacters_are_never_substituted() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    volumes = [\"/cache\"]");
    let w = Witness::new(&h, &token);
    const SLEEPER: u32 = 7142;
    h.make_repo("grp/lib", &[("lib.txt", "library\n")]);
    h.make_repo("grp/app", &[("app.txt", "app\n")]);
    let lib_bare = h.path().join("git/grp/lib.git").display().to_string();
    let app_src = h.path().join("src/grp/app");
    // The same library at three paths, each a substitution in another spelling.
    let paths: Vec<String> = substitutions(&w, "path")
        .iter()
        .enumerate()
        .map(|(i, s)| format!("sub{i}/x{s}"))
        .collect();
    for p in &paths {
        h.git(
            &app_src,
            &[
                "-c",
                "protocol.allow=always",
                "submodule",
                "add",
                "-q",
                &lib_bare,
                p,
            ],
        );
        h.git(
            &app_src,
            &[
                "config",
                "-f",
                ".gitmodules",
                &format!("submodule.{p}.url"),
                "../lib.git",
            ],
        );
    }
    let sha = h.commit("grp/app", &[], "add the libraries");
    h.start();
    let spec = |name: &str, script: &[&str]| {
        let mut s = job(name, (7, "grp/app"), &sha, script);
        s.project.token_access = vec!["grp/lib".into()];
        s.hooks = vec![Hook {
            name: "post_get_sources_script".into(),
            script: vec![w.probe("helper"), leave_process(SLEEPER)],
        }];
        s
    };
    let [c1, c2, c3] = substitutions(&w, "clean");
    let [k1, _, _] = substitutions(&w, "checkout");

    // Clean flags and GIT_CHECKOUT in a job that succeeds; the submodules are checked out at their literal paths.
    let clean = spec(
        "clean-flags",
        &[
            "for d in sub0 sub1 sub2; do find $d -name lib.txt; done",
            &w.probe("build"),
            &service_probe_result("/cache/probe-service"),
            LIST_SUBST,
        ],
    )
    .with_variable("GIT_SUBMODULE_STRATEGY", "recursive")
    .with_variable("GIT_CLEAN_FLAGS", &format!("-ffdx -e {c1} -e {c2} -e{c3}"))
    .with_variable("GIT_CHECKOUT", &format!("true{k1}"));
    let mut clean = clean;
    clean.services = vec![probing_service(&w, "/cache/probe-service", SLEEPER)];
    let id = h.coordinator.enqueue(clean);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    for p in &paths {
        assert!(t.contains(&format!("{p}/lib.txt\n")), "{p}: {t}");
    }
    assert!(t.contains("GIT_CHECKOUT: expected bool got"), "{t}");
    assert!(t.contains("listed\n"), "{t}");
    assert_eq!(listed(&t, "subst: "), Vec::<String>::new(), "{t}");
    for tag in ["helper", "build", "service"] {
        w.assert_probed(&t, tag);
    }
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;
    w.assert_host_clean("GIT_CLEAN_FLAGS", &t);

    // Fetch flags: git gets the substitution as an argument and refuses it, literally.
    let [f1, f2, f3] = substitutions(&w, "fetch");
    let fetch = spec("fetch-flags", &["echo never"])
        .with_variable("GIT_FETCH_EXTRA_FLAGS", &format!("--prune {f1} {f2} {f3}"));
    let id = h.coordinator.enqueue(fetch);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "failed", "{t}");
    assert!(
        t.contains(&format!("fatal: invalid refspec '{f1}'")),
        "the literal argument in git's error: {t}"
    );
    assert!(!t.contains("\nnever\n"), "{t}");
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;
    w.assert_host_clean("GIT_FETCH_EXTRA_FLAGS", &t);

    // Submodule paths, then update flags: literal pathspecs, refused by git.
    let subpaths = substitutions(&w, "subpaths");
    let update = substitutions(&w, "update");
    for (var, value, forms) in [
        ("GIT_SUBMODULE_PATHS", subpaths.join(" "), &subpaths),
        (
            "GIT_SUBMODULE_UPDATE_FLAGS",
            format!("--jobs=1 {}", update.join(" ")),
            &update,
        ),
    ] {
        let subs = spec("submodule-flags", &["echo never"])
            .with_variable("GIT_SUBMODULE_STRATEGY", "normal")
            .with_variable(var, &value);
        let id = h.coordinator.enqueue(subs);
        let j = h.final_job(id).await;
        let t = j.trace_text();
        assert_eq!(j.state, "failed", "{var}: {t}");
        for form in forms {
            assert!(
                t.contains(&format!("pathspec '{form}' did not match")),
                "{var}: the literal argument in git's error: {t}"
            );
        }
        assert!(!t.contains("\nnever\n"), "{t}");
        assert_eq!(leftovers(&token, id), Vec::<String>::new());
        assert_no_process_left(SLEEPER).await;
        w.assert_host_clean(var, &t);
    }

    // No container substituted anything either: the volume holds no marker.
    let id = h.coordinator.enqueue(sourceless("look", &[LIST_SUBST]));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("listed\n"), "{t}");
    assert_eq!(listed(&t, "subst: "), Vec::<String>::new(), "{t}");
    w.assert_host_clean("look", &t);
}

/// The command lines of the processes in this test's own mount namespace (the host's, not a container's) whose
/// environment holds `needle`.
fn host_processes_with_env(needle: &str) -> Vec<String> {
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = e.path();
        if std::fs::read_link(p.join("ns/mnt")).ok() != ours {
            continue;
        }
        let Ok(env) = std::fs::read(p.join("environ")) else {
            continue;
        };
        if env.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            let cmd = std::fs::read(p.join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmd).replace('\0', " "));
        }
    }
    found
}

/// A shared object whose constructor creates `/cache/rw-markers/ld-preload` and the host marker
/// `ld-preload` (whichever exists where it is loaded; `O_NOFOLLOW`, so never through a symlink), built with the
/// host's compiler; `None` without one.
fn preload_object(w: &Witness, dir: &Path) -> Option<PathBuf> {
    let src = dir.join("evil.c");
    let so = dir.join("evil.so");
    std::fs::write(
        &src,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void rw_mark(void) {{\n\
             const char *p[] = {{\"/cache/rw-markers/ld-preload\", \"{}\"}};\n\
             for (int i = 0; i < 2; i++) {{ int fd = open(p[i], O_WRONLY | O_CREAT | O_NOFOLLOW, 0666); if (fd >= 0) close(fd); }}\n}}\n",
            w.marker("ld-preload")
        ),
    )
    .expect("source");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-Os", "-s", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(so)
}

/// Issue 19 item 4: the job's variables `PATH` (a directory of the job's with its own `git`), `LD_PRELOAD` (a
/// shared object of the job's) and `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` (`core.hooksPath`,
/// `core.fsmonitor`, `credential.helper` naming the job's commands) are the job's environment in its
/// containers, as gitlab-runner exports every variable in every stage's script (shells/abstract.go
/// `writeExports`): what they name runs in the helper container — its markers in the volume — and nothing on the
/// host. No process on the host (the service included) ever has them in its environment; config.toml and the
/// runner token stay out of reach of the helper, the build container and a service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_ld_preload_and_git_config_variables_never_reach_the_host() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    volumes = [\"/cache\"]");
    let w = Witness::new(&h, &token);
    const SLEEPER: u32 = 7143;
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    let so = preload_object(&w, h.path());
    h.start();

    // The job's files, made by an earlier job in the /cache volume.
    let mut plant = vec![
        write(
            "/cache/evil-bin/git",
            &format!(
                "#!/bin/sh\nmkdir -p /cache/rw-markers && touch /cache/rw-markers/path-git\nmkdir -p '{}' 2>/dev/null && touch '{}'\n{}\nexec /usr/bin/git \"$@\"\n",
                w.host.display(),
                w.marker("path-git"),
                leave_process(SLEEPER)
            ),
        ),
        write(
            "/cache/evil-hooks/post-checkout",
            &hook_body(&w, "/cache/rw-markers", "hookspath-post-checkout", SLEEPER),
        ),
        write(
            "/cache/evil-hooks/fsmonitor",
            &hook_body(&w, "/cache/rw-markers", "fsmonitor", SLEEPER),
        ),
        write(
            "/cache/evil-hooks/credential",
            &hook_body(&w, "/cache/rw-markers", "credential-helper", SLEEPER),
        ),
    ];
    if let Some(so) = &so {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(so).expect("so"));
        plant.push(format!("echo '{b64}' | base64 -d > /cache/evil.so"));
    } else {
        eprintln!("no C compiler: LD_PRELOAD names a file that is not a shared object");
        plant.push("echo not-an-object > /cache/evil.so".into());
    }
    plant.push("ls /cache/evil-bin /cache/evil-hooks /cache/evil.so".into());
    let plant: Vec<&str> = plant.iter().map(String::as_str).collect();
    let id = h.coordinator.enqueue(sourceless("plant", &plant));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    w.assert_host_clean("plant", &t);

    let host_so = so
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let path = "/cache/evil-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let preload = format!("/cache/evil.so:{host_so}");
    let probed = service_probe_result("/cache/probe-service");
    let mut spec = job(
        "variables",
        (7, "grp/app"),
        &sha,
        &[
            &probed,
            &w.probe("build"),
            "{ ls /cache/rw-markers 2>/dev/null || true; } | sed 's/^/marker: /'",
            "echo listed",
            "cat README.md",
        ],
    )
    .with_variable("PATH", path)
    .with_variable("LD_PRELOAD", &preload)
    .with_variable("GIT_CONFIG_COUNT", "3")
    .with_variable("GIT_CONFIG_KEY_0", "core.hooksPath")
    .with_variable("GIT_CONFIG_VALUE_0", "/cache/evil-hooks")
    .with_variable("GIT_CONFIG_KEY_1", "core.fsmonitor")
    .with_variable("GIT_CONFIG_VALUE_1", "/cache/evil-hooks/fsmonitor")
    .with_variable("GIT_CONFIG_KEY_2", "credential.helper")
    .with_variable("GIT_CONFIG_VALUE_2", "!/cache/evil-hooks/credential");
    spec.services = vec![probing_service(&w, "/cache/probe-service", SLEEPER)];
    spec.hooks = vec![Hook {
        name: "post_get_sources_script".into(),
        script: vec![w.probe("helper"), leave_process(SLEEPER)],
    }];
    let id = h.coordinator.enqueue(spec);
    // While the job runs: no host process has the job's variables in its environment.
    let service = h.pid();
    let mut samples = 0;
    loop {
        for needle in ["/cache/evil-bin", "/cache/evil.so", "/cache/evil-hooks"] {
            let found = host_processes_with_env(needle);
            assert_eq!(
                found,
                Vec::<String>::new(),
                "{needle} in a host process's environment"
            );
        }
        samples += 1;
        if h.coordinator.job(id).is_some_and(|j| j.is_final()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive(service), "the service ran throughout");
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(samples > 10, "{samples} samples");
    assert!(t.contains("hello from git\n"), "{t}");
    assert!(t.contains("listed\n"), "{t}");
    let ran = listed(&t, "marker: ");
    eprintln!("ran in the helper: {ran:?}");
    // The job's PATH found its git, and git its hooks, in the helper container.
    for expected in ["path-git", "hookspath-post-checkout"] {
        assert!(
            ran.contains(&expected.to_string()),
            "{expected}: {ran:?}\n{t}"
        );
    }
    if so.is_some() {
        assert!(ran.contains(&"ld-preload".to_string()), "{ran:?}\n{t}");
    }
    for name in ran
        .iter()
        .filter(|n| n.starts_with("hookspath") || *n == "fsmonitor")
    {
        w.assert_probed(&t, &format!("hook-{name}"));
    }
    for tag in ["helper", "build", "service"] {
        w.assert_probed(&t, tag);
    }
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;
    w.assert_host_clean("variables", &t);
}

/// The name of the job's running helper container.
fn helper_container(token: &str, job_id: i64) -> String {
    let o = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!(
                "label=com.gitlab.gitlab-runner.runner.id={}",
                runwright_config::short_token(token)
            ),
            "--filter",
            &format!("label=com.gitlab.gitlab-runner.job.id={job_id}"),
            "--filter",
            "label=com.gitlab.gitlab-runner.type=predefined",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .expect("docker ps");
    let name = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(!name.is_empty(), "no running helper for job {job_id}");
    name
}

/// `sh -c script` in a running container; its stdout.
fn exec_in(container: &str, script: &str) -> String {
    let o = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A file on the host that must not exist (a regression would have made it): removed if it does, then the
/// test fails.
fn assert_absent_on_host(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok() {
        let _ = std::fs::remove_file(path);
        panic!("{} was written on the host", path.display());
    }
}

/// Issue 19 item 4: hostile archives through real jobs — a cache (planted in the `/cache` volume by an earlier
/// job, as any job of the runner can) and a dependency's artifacts (what the coordinator serves replaced by the
/// archive) with zip-slip entries, absolute names, and a symlink (to `/etc`, to the `/cache` volume) with a file
/// through it, each after a harmless entry. The helper container refuses every one whole: nothing of it in the
/// project dir, nothing outside it in the volumes, nothing in the helper's `/etc`, nothing on the host. A cache
/// that does not extract is a warning and the job goes on (gitlab-runner's `cache-extractor` failing does not
/// fail the job); artifacts that do not extract fail it (gitlab-runner's `artifacts-downloader`, exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_caches_and_artifacts_are_refused_in_the_helper_and_reach_nothing_outside() {
    use crate::helper_verbs::{hostile_zip, ZipEntry};
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    volumes = [\"/cache\"]");
    let w = Witness::new(&h, &token);
    const SLEEPER: u32 = 7144;
    h.start();
    let etc_name = format!("rw-isol-{:016x}", rand_u64());
    let through_etc = format!("etc/{etc_name}");
    let (slip_host, abs_host) = (w.marker("slip"), w.marker("abs"));
    let slip_host = format!("../../../../../../../../../..{slip_host}");
    // Extracted in /builds/grp/app: `../../../cache` is the /cache volume.
    let cases: Vec<(&str, Vec<ZipEntry>)> = vec![
        (
            "slip-volume",
            vec![("../../../cache/rw-landed-slip", 'f', "pwned")],
        ),
        ("slip-host", vec![(&slip_host, 'f', "pwned")]),
        (
            "absolute-volume",
            vec![("/cache/rw-landed-abs", 'f', "pwned")],
        ),
        ("absolute-host", vec![(&abs_host, 'f', "pwned")]),
        (
            "link-etc",
            vec![("etc", 'l', "/etc"), (&through_etc, 'f', "pwned")],
        ),
        (
            "link-volume",
            vec![
                ("vol", 'l', "/cache"),
                ("vol/rw-landed-through", 'f', "pwned"),
            ],
        ),
    ];
    let zips: Vec<(String, Vec<u8>)> = cases
        .iter()
        .map(|(name, entries)| {
            let mut all: Vec<ZipEntry> = vec![("harmless.txt", 'f', "fine")];
            all.extend(entries.iter().cloned());
            let path = h.path().join(format!("{name}.zip"));
            hostile_zip(&path, &all);
            (name.to_string(), std::fs::read(&path).expect("zip"))
        })
        .collect();
    let look = [
        "{ ls /cache 2>/dev/null || true; } | { grep '^rw-landed' || true; } | sed 's/^/landed: /'",
        "echo listed",
    ];
    let assert_nothing_landed = |what: &str, t: &str| {
        assert_eq!(listed(t, "landed: "), Vec::<String>::new(), "{what}: {t}");
        assert_absent_on_host(&Path::new("/etc").join(&etc_name));
        w.assert_host_clean(what, t);
    };

    // The caches: made by one job, replaced by the next (what a job of this runner can do to /cache), restored by
    // a third.
    let caches: Vec<Cache> = cases
        .iter()
        .map(|(name, _)| Cache {
            key: format!("hostile-{name}"),
            paths: vec!["c/".into()],
            policy: "pull-push".into(),
            when: "on_success".into(),
            ..Default::default()
        })
        .collect();
    let mut first = sourceless("make-caches", &["mkdir -p c && echo cached > c/f"]);
    first.cache = caches.clone();
    let id = h.coordinator.enqueue(first);
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    use base64::Engine as _;
    let mut plant = Vec::new();
    for (name, bytes) in &zips {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        plant.push(format!(
            "f=$(find /cache -name cache.zip | grep -F '/hostile-{name}'); test -n \"$f\" && echo '{b64}' | base64 -d > \"$f\" && echo \"planted {name}\""
        ));
    }
    let plant: Vec<&str> = plant.iter().map(String::as_str).collect();
    let id = h.coordinator.enqueue(sourceless("plant-caches", &plant));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    for (name, _) in &cases {
        assert!(t.contains(&format!("planted {name}\n")), "{name}: {t}");
    }
    let mut restore = sourceless(
        "restore-caches",
        &[
            "{ ls -A . || true; } | sed 's/^/in-project: /'",
            &w.probe("build"),
            &service_probe_result("/cache/probe-service"),
            &leave_process(SLEEPER),
            "echo waiting-for-gate",
            "i=0; until [ -e /cache/gate ] || [ $i -gt 600 ]; do sleep 0.1; i=$((i+1)); done",
            look[0],
            look[1],
        ],
    );
    restore.services = vec![probing_service(&w, "/cache/probe-service", SLEEPER)];
    restore.cache = caches
        .iter()
        .map(|c| Cache {
            policy: "pull".into(),
            ..c.clone()
        })
        .collect();
    let id = h.coordinator.enqueue(restore);
    h.wait_trace(id, "waiting-for-gate").await;
    // The helper's own /etc, and its view of the runner's secrets, while it still runs.
    let helper = helper_container(&token, id);
    assert_eq!(
        exec_in(
            &helper,
            &format!("ls /etc/{etc_name} 2>/dev/null; echo checked")
        ),
        "checked\n"
    );
    let probed = exec_in(
        &helper,
        &format!("{}; {}", w.probe("helper"), leave_process(SLEEPER)),
    );
    w.assert_probed(&probed, "helper");
    assert!(
        processes_running(&["sleep", &SLEEPER.to_string()]) > 0,
        "the job's processes run"
    );
    exec_in(&helper, "touch /cache/gate");
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert_eq!(
        t.matches(": entries must stay inside the target").count()
            + t.matches(": symlink points outside the target").count(),
        cases.len(),
        "{t}"
    );
    assert_eq!(
        t.matches("Failed to extract cache").count(),
        cases.len(),
        "{t}"
    );
    assert!(t.contains("listed\n"), "{t}");
    // All or nothing: not even the harmless entries were extracted.
    assert_eq!(listed(&t, "in-project: "), Vec::<String>::new(), "{t}");
    assert_nothing_landed("caches", &t);
    for tag in ["build", "service"] {
        w.assert_probed(&t, tag);
    }
    assert_eq!(leftovers(&token, id), Vec::<String>::new());
    assert_no_process_left(SLEEPER).await;

    // The artifacts: a producer's upload, replaced where the coordinator keeps it by each archive in turn.
    let mut producer = sourceless("producer", &["echo built > out.txt"]);
    producer.artifacts = vec![Artifact {
        paths: vec!["out.txt".into()],
        when: "on_success".into(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        ..Default::default()
    }];
    let producer = h.coordinator.enqueue(producer);
    let j = h.final_job(producer).await;
    assert_eq!(j.state, "success", "{}", j.trace_text());
    let stored = h
        .coordinator
        .artifact(producer, "archive")
        .expect("uploaded")
        .path;
    for (name, bytes) in &zips {
        // The coordinator's own file in its temp dir, replaced (never written through).
        std::fs::remove_file(&stored).expect("remove the stored archive");
        std::fs::write(&stored, bytes).expect("hostile archive");
        let consumer = h.coordinator.enqueue(JobSpec {
            artifact_dependencies: vec![producer],
            ..sourceless("consumer", &["echo never"])
        });
        let j = h.final_job(consumer).await;
        let t = j.trace_text();
        assert_eq!(j.state, "failed", "{name}: {t}");
        assert!(
            t.contains(&format!(
                "Downloading artifacts for producer ({producer})..."
            )),
            "{name}: {t}"
        );
        assert!(t.contains("FATAL: "), "{name}: {t}");
        assert!(
            t.contains("entries must stay inside the target")
                || t.contains("symlink points outside the target"),
            "{name}: refused for its entries: {t}"
        );
        assert!(!t.contains("\nnever\n"), "{name}: {t}");
        assert_eq!(leftovers(&token, consumer), Vec::<String>::new());
        w.assert_host_clean(name, &t);
    }
    let id = h.coordinator.enqueue(sourceless("look", &look));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    assert!(t.contains("listed\n"), "{t}");
    assert_nothing_landed("artifacts", &t);
}

/// Swaps, in the service container, forever, in the project dir `$1` (once `keep/` is there), a few times a
/// second: `keep/leak`, `keep/env`, `keep/passwd` between a file and symlinks to the helper container's stand-in
/// secret (`/root/rw-secret`), `/proc/self/environ` (the archiver's environment, with the job token) and
/// `/etc/passwd`; `keep/dir` between a directory and a symlink to `/root`; `keep` itself between the directory
/// and a symlink to `/root`. Files are put in place by `mv`, which replaces a link rather than writing through it.
const SWAPPER: &str = r#"until [ -d "$1/keep" ]; do sleep 0.05; done; cd "$1" || exit 1
while true; do
  if [ -d keep ] && [ ! -L keep ]; then (cd keep && ln -sfn /root/rw-secret leak && ln -sfn /proc/self/environ env && ln -sfn /etc/passwd passwd && rm -rf dir && ln -s /root dir); fi
  sleep 0.07
  if [ -d keep ] && [ ! -L keep ]; then (cd keep && for f in leak env passwd; do echo innocent > .n; mv -f .n $f; done; rm -f dir; mkdir -p dir; echo innocent > dir/.n; mv -f dir/.n dir/f); fi
  sleep 0.07
  mv keep keep.real && ln -s /root keep && sleep 0.03 && rm -f keep && mv keep.real keep
  sleep 0.05
done
"#;

/// How many entries of a zip archive are symlinks (`unzip -Z`'s mode column).
fn zip_symlinks(dir: &Path, name: &str, bytes: &[u8]) -> usize {
    let path = dir.join(format!("{name}.zip"));
    std::fs::write(&path, bytes).expect("zip");
    let out = Command::new("unzip")
        .arg("-Z")
        .arg(&path)
        .output()
        .expect("unzip runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('l'))
        .count()
}

/// `(path, bytes)` of every zip a job printed between `ZIP-BEGIN <path>` and `ZIP-END` in base64.
fn printed_zips(t: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in t.lines() {
        if let Some(p) = line.strip_prefix("ZIP-BEGIN ") {
            current = Some((p.trim().to_string(), String::new()));
        } else if line.starts_with("ZIP-END") {
            if let Some((p, b64)) = current.take() {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .expect("base64 of a zip");
                out.push((p, bytes));
            }
        } else if let Some((_, b64)) = current.as_mut() {
            b64.push_str(line.trim());
        }
    }
    out
}

/// Every file's content in a zip archive, concatenated (`unzip -p`, to stdout only: nothing is extracted).
fn zip_content(dir: &Path, name: &str, bytes: &[u8]) -> Vec<u8> {
    let path = dir.join(format!("{name}.zip"));
    std::fs::write(&path, bytes).expect("zip");
    let out = Command::new("unzip")
        .arg("-p")
        .arg(&path)
        .output()
        .expect("unzip runs");
    out.stdout
}

/// Issue 19 item 7, docker: a service container of the job (on the job's volumes, as GitLab's services are)
/// keeps swapping the cached and uploaded paths for symlinks to files of the helper container's root — a
/// root-only stand-in secret, `/proc/self/environ` (the archiver's, with the job token), `/etc/passwd` — and
/// directories for symlinks to `/root`, while `archive_cache` and `upload_artifacts_on_success` run. No cache or
/// artifact archive ever holds any of them, over several rounds: a path that is a symlink when the archiver
/// looks is archived as a symlink, and one that becomes a symlink after it looked is not read through (the
/// archive fails: a cache is then not saved, artifacts fail the job, the job's own doing). Nothing reaches the
/// host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_swapping_cached_paths_for_symlinks_never_gets_helper_files_archived() {
    if !docker_ready(&[BUSYBOX]) {
        return;
    }
    let mut h = Harness::docker().await;
    let token = h.docker_runner("", "    volumes = [\"/cache\"]");
    let w = Witness::new(&h, &token);
    const SLEEPER: u32 = 7145;
    let sha = h.make_repo("grp/app", &[("README.md", "hello from git\n")]);
    h.start();
    let secret = format!("helper-root-secret-{:016x}", rand_u64());
    let project = "/builds/grp/app";
    let mut tokens = Vec::new();
    let mut artifacts = Vec::new();
    let mut caches_made = 0;
    let mut round_logs = Vec::new();
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let mut spec = job(
            "swapped",
            (7, "grp/app"),
            &sha,
            &[
                "mkdir -p keep/dir && for f in leak env passwd dir/f; do echo innocent > keep/$f; done",
                &w.probe("build"),
                "i=0; until [ -f /builds/probe-service ] || [ $i -gt 300 ]; do sleep 0.1; i=$((i+1)); done; cat /builds/probe-service",
                &leave_process(SLEEPER),
                // The service swaps for a while before the archiving starts, and on through it.
                "sleep 1",
            ],
        )
        // A fresh builds volume each round: nothing of the last round's swapping is there when git cleans.
        .with_variable("GIT_STRATEGY", "clone");
        spec.hooks = vec![Hook {
            name: "pre_get_sources_script".into(),
            script: vec![
                // The helper container's root-only file the archiving must never read.
                format!("umask 077; echo {secret} > /root/rw-secret"),
                w.probe("helper"),
                leave_process(SLEEPER),
            ],
        }];
        spec.services = vec![Image {
            name: BUSYBOX.into(),
            alias: "swapper".into(),
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "{} > /builds/probe-service.tmp; mv /builds/probe-service.tmp /builds/probe-service; {} exec sh -c '{}' swapper {project}",
                    w.probe("service"),
                    leave_process(SLEEPER),
                    SWAPPER.replace('\'', "'\\''")
                ),
            ]),
            ..Default::default()
        }];
        spec.cache = vec![Cache {
            key: format!("swapped-{round}"),
            paths: vec!["keep/".into()],
            policy: "pull-push".into(),
            when: "on_success".into(),
            ..Default::default()
        }];
        spec.artifacts = vec![Artifact {
            paths: vec!["keep/".into()],
            when: "on_success".into(),
            artifact_type: "archive".into(),
            artifact_format: "zip".into(),
            ..Default::default()
        }];
        let id = h.coordinator.enqueue(spec);
        let j = h.final_job(id).await;
        let t = j.trace_text();
        for tag in ["helper", "build", "service"] {
            w.assert_probed(&t, tag);
        }
        let cache_lines: Vec<&str> = t
            .lines()
            .skip_while(|l| !l.contains("Creating cache"))
            .take_while(|l| !l.contains("Uploading artifacts"))
            .collect();
        round_logs.push(format!("round {round}: {cache_lines:?}"));
        if t.contains("No files to cache") {
            // Nothing matched (`keep` was a symlink when the helper looked): no archive, as gitlab-runner's
            // cache-archiver makes none.
        } else if t.contains("Created cache") {
            caches_made += 1;
        } else {
            assert!(t.contains("Failed to create cache"), "round {round}: {t}");
        }
        match h.coordinator.artifact(id, "archive") {
            Some(stored) => {
                assert_eq!(j.state, "success", "round {round}: {t}");
                artifacts.push(std::fs::read(&stored.path).expect("stored artifact"));
            }
            None => {
                // The archiver refused a path swapped under it: the upload stage fails, and with it the job.
                assert_eq!(j.state, "failed", "round {round}: {t}");
                let upload = t.rsplit("Uploading artifacts").next().unwrap_or_default();
                assert!(
                    upload.contains("FATAL: /builds/grp/app/keep"),
                    "round {round}: {t}"
                );
            }
        }
        tokens.push(j.token.clone());
        assert_eq!(leftovers(&token, id), Vec::<String>::new());
        assert_no_process_left(SLEEPER).await;
        w.assert_host_clean("swapped", &t);
    }

    // The caches, as the /cache volume holds them.
    let id = h.coordinator.enqueue(sourceless(
        "read-caches",
        &["for f in $(find /cache -name cache.zip | sort); do echo \"ZIP-BEGIN $f\"; base64 \"$f\"; echo ZIP-END; done"],
    ));
    let j = h.final_job(id).await;
    let t = j.trace_text();
    assert_eq!(j.state, "success", "{t}");
    let caches = printed_zips(&t);
    assert_eq!(caches.len(), caches_made, "{t}\n{round_logs:#?}");
    let archives = caches.iter().map(|(p, b)| (p.clone(), b.clone())).chain(
        artifacts
            .iter()
            .enumerate()
            .map(|(i, b)| (format!("artifacts of round {i}"), b.clone())),
    );
    let (mut innocent, mut links, mut checked) = (0, 0, 0);
    for (i, (what, bytes)) in archives.enumerate() {
        checked += 1;
        links += zip_symlinks(h.path(), &format!("archive-{i}"), &bytes);
        let content = zip_content(h.path(), &format!("archive-{i}"), &bytes);
        let text = String::from_utf8_lossy(&content);
        innocent += text.matches("innocent").count();
        assert!(
            !text.contains(&secret),
            "{what} holds the helper's root-only file"
        );
        assert!(!text.contains("root:x:0:0"), "{what} holds /etc/passwd");
        for job_token in &tokens {
            assert!(
                !text.contains(job_token.as_str()),
                "{what} holds a job token (the archiver's environment)"
            );
        }
        assert!(
            !text.contains("CI_JOB_TOKEN"),
            "{what} holds an environment"
        );
    }
    eprintln!(
        "{checked} archives checked ({caches_made} caches, {} artifacts of {ROUNDS} rounds), {links} symlink entries",
        artifacts.len()
    );
    assert!(innocent > 0, "the archives hold the job's own files");
    // The swaps were seen: some archive holds a swapped path, as the symlink it was.
    assert!(links > 0, "no archive caught a path while it was a symlink");
    w.assert_host_clean("read-caches", &t);
}
