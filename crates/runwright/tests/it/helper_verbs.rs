//! The helper verbs as a job's predefined stages call them: the real binary under the name
//! `gitlab-runner-helper` (a symlink in a temp dir, as a helper image has it), in a project directory, with
//! the job token only in the environment (`CI_JOB_TOKEN`, which gitlab-runner's `--token` falls back to),
//! against the test coordinator (artifacts) and moto (presigned cache URLs), plus the local-only cache, a
//! missing cache, hostile archives, and paths swapped for symlinks while the helper works.

use crate::harness::*;
use runwright_api::types::Artifact;
use runwright_cache::testing::MotoServer;
use runwright_coordinator::{JobSpec, ProjectSpec, RunnerOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `<dir>/bin/<name>` linked to the runwright binary.
fn linked(dir: &Path, name: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let link = bin.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_runwright"), &link).expect("symlink");
    }
    link
}

/// Runs `program args…` in `wd` with nothing of the test's environment but `PATH` and `env`.
fn run_in(program: &Path, wd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let _ = std::fs::create_dir_all(wd);
    let mut cmd = Command::new(program);
    cmd.current_dir(wd)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os(runwright_static::env_vars::PATH).unwrap_or_default(),
        )
        .env("RUNWRIGHT_FAST_RETRIES", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("helper runs");
    println!(
        "$ {} {}\nexit {:?}\n--- stdout\n{}--- stderr\n{}",
        program.display(),
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn helper(dir: &Path, wd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_in(&linked(dir, "gitlab-runner-helper"), wd, args, env)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Enqueues `spec` and takes it as a runner would: the job is running, its token valid. `(id, token)`.
async fn running_job(h: &Harness, spec: JobSpec) -> (i64, String) {
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let id = h.coordinator.enqueue(spec);
    let body = serde_json::json!({
        "token": TOKEN,
        "system_id": "s_0123456789ab",
        "info": {"features": {"two_phase_job_commit": true, "artifacts": true}},
    });
    let resp = reqwest::Client::new()
        .post(format!("{}api/v4/jobs/request", h.coordinator.url()))
        .json(&body)
        .send()
        .await
        .expect("jobs/request");
    assert_eq!(resp.status().as_u16(), 201, "a job is handed out");
    let job: serde_json::Value = resp.json().await.expect("job payload");
    assert_eq!(job["id"].as_i64(), Some(id));
    let token = job["token"].as_str().expect("job token").to_owned();
    (id, token)
}

fn job(name: &str, project: i64) -> JobSpec {
    JobSpec {
        name: name.into(),
        script: vec!["true".into()],
        project: ProjectSpec::new(project, &format!("grp/p{project}")),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_go_up_and_come_down_with_the_job_token_from_the_environment() {
    let h = Harness::new().await;
    let url = h.coordinator.url();
    let (a, token_a) = running_job(
        &h,
        JobSpec {
            artifacts: vec![Artifact {
                paths: vec!["out/".into()],
                ..Artifact::default()
            }],
            ..job("build", 1)
        },
    )
    .await;
    let wd_a = h.path().join("a");
    std::fs::create_dir_all(wd_a.join("out/sub")).expect("out");
    std::fs::write(wd_a.join("out/sub/f.txt"), "from build").expect("file");
    std::os::unix::fs::symlink("sub/f.txt", wd_a.join("out/link")).expect("link");
    // gitlab-runner's own argument list (shells/abstract.go `writeUploadArtifact`), less `--token`: the token
    // comes from the job's environment.
    let id_a = a.to_string();
    let out = helper(
        h.path(),
        &wd_a,
        &[
            "artifacts-uploader",
            "--url",
            &url,
            "--id",
            &id_a,
            "--timeout",
            "1h0m0s",
            "--response-header-timeout",
            "10m0s",
            "--path",
            "out/",
            "--artifact-format",
            "zip",
            "--artifact-type",
            "archive",
        ],
        &[("CI_JOB_TOKEN", &token_a)],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("out/: found 4 matching artifact files and directories"),
        "{t}"
    );
    assert!(
        t.contains("Uploading artifacts as \"archive\" to coordinator... 201 Created"),
        "{t}"
    );
    assert!(
        t.contains(&format!("id={a} responseStatus=201 Created")),
        "{t}"
    );
    assert!(!t.contains(&token_a), "the job token never appears: {t}");
    let stored = h.coordinator.artifact(a, "archive").expect("uploaded");
    assert_eq!(stored.artifact_format, "zip");

    // The next job downloads them with its own token, everything from the environment (`CI_SERVER_URL`,
    // `CI_JOB_ID` name the dependency as gitlab-runner's `JobCredentials` env fallbacks do).
    let (_b, token_b) = running_job(
        &h,
        JobSpec {
            artifact_dependencies: vec![a],
            ..job("test", 2)
        },
    )
    .await;
    let wd_b = h.path().join("b");
    let out = helper(
        h.path(),
        &wd_b,
        &["artifacts-downloader"],
        &[
            ("CI_JOB_TOKEN", &token_b),
            ("CI_SERVER_URL", &url),
            ("CI_JOB_ID", &id_a),
        ],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("Downloading artifacts from coordinator... ok"),
        "{t}"
    );
    assert!(!t.contains(&token_b), "{t}");
    assert_eq!(
        std::fs::read_to_string(wd_b.join("out/sub/f.txt")).expect("extracted"),
        "from build"
    );
    assert_eq!(
        std::fs::read_link(wd_b.join("out/link")).expect("symlink kept"),
        Path::new("sub/f.txt")
    );

    // The same verb through `runwright <verb>` and `gitlab-runner <verb>`, as gitlab-runner's main binary has
    // it: a job without artifacts answers 404, and the helper exits 1 as gitlab-runner's does.
    let (none, _) = running_job(&h, job("none", 3)).await;
    for name in ["runwright", "gitlab-runner"] {
        let bin = linked(h.path(), name);
        let out = run_in(
            &bin,
            &h.path().join("c"),
            &[
                "artifacts-downloader",
                "--url",
                &url,
                "--id",
                &none.to_string(),
            ],
            &[("CI_JOB_TOKEN", &token_b)],
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains("FATAL: file does not exist"), "{name}: {t}");
        assert!(t.contains("404 Not Found"), "{name}: {t}");
    }

    // Without credentials: gitlab-runner's warnings and `Incomplete arguments`.
    let out = helper(h.path(), &wd_b, &["artifacts-downloader"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("WARNING: Missing runner credentials (--token)"),
        "{t}"
    );
    assert!(t.contains("FATAL: Incomplete arguments"), "{t}");
}

/// A presigned cache (moto): archived and uploaded with the PUT URL and its signed header, downloaded and
/// extracted in a fresh directory with the GET URL, up to date the second time, a missing object exits 1.
/// URLs in the output never carry their query (the signature).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_cache_round_trips_through_s3() {
    let moto = MotoServer::start();
    moto.create_bucket("runner-cache");
    let s3 = runwright_cache::S3Cache::new(&moto.cache_config("runner-cache"), "abcdefgh")
        .expect("s3 config")
        .expect("s3 cache");
    let object = s3.object_name(1, "deps-key", false).expect("object");
    let life = Duration::from_secs(600);
    let put = s3
        .presign_put(&object, life, "deps-key")
        .await
        .expect("put")
        .to_string();
    let get = s3
        .presign_get(&object, life)
        .await
        .expect("get")
        .to_string();
    let head = s3
        .presign_head(&object, life)
        .await
        .expect("head")
        .to_string();
    assert!(
        put.contains('?') && get.contains('?'),
        "presigned URLs carry a query"
    );

    let dir = tempfile::tempdir().expect("tmp");
    let wd = dir.path().join("project");
    std::fs::create_dir_all(wd.join("vendor")).expect("vendor");
    std::fs::write(wd.join("vendor/dep.txt"), "dependency").expect("file");
    let out = helper(
        dir.path(),
        &wd,
        &[
            "cache-archiver",
            "--file",
            "../cache/grp/p1/deps-key/cache.zip",
            "--timeout",
            "10",
            "--path",
            "vendor/",
            "--url",
            &put,
            "--header",
            "X-Amz-Meta-Cachekey: deps-key",
            "--check-url",
            &head,
        ],
        &[("CACHE_METADATA", r#"{"cachekey":"deps-key"}"#)],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "Uploading cache.zip to {}",
            runwright_cache::strip_query(&put)
        )),
        "{t}"
    );
    assert!(
        !t.contains("X-Amz-Signature") && !t.contains('?'),
        "no query in output: {t}"
    );
    let meta = std::fs::read_to_string(dir.path().join("cache/grp/p1/deps-key/metadata.json"))
        .expect("metadata.json");
    assert_eq!(meta, r#"{"cachekey":"deps-key"}"#);

    // Another host: no local copy.
    let other = dir.path().join("other");
    let args = [
        "cache-extractor",
        "--file",
        "../cache2/deps-key/cache.zip",
        "--timeout",
        "10",
        "--url",
        &get,
        "--head-url",
        &head,
    ];
    let out = helper(dir.path(), &other, &args, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!(
            "Downloading cache from {}",
            runwright_cache::strip_query(&get)
        )),
        "{t}"
    );
    assert!(!t.contains('?'), "{t}");
    assert_eq!(
        std::fs::read_to_string(other.join("vendor/dep.txt")).expect("restored"),
        "dependency"
    );
    // What S3 gave back of the metadata (`x-amz-meta-*`) is written beside the archive, as GitLab's helper does.
    let meta = std::fs::read_to_string(dir.path().join("cache2/deps-key/metadata.json"))
        .expect("metadata.json");
    assert!(meta.contains(r#""cachekey":"deps-key""#), "{meta}");
    let out = helper(dir.path(), &other, &args, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("cache.zip is up to date"), "{t}");

    // No such object: gitlab-runner's `warningln` and exit 1, so the script says "Failed to extract cache".
    let missing = s3
        .presign_get(&s3.object_name(1, "nothing", false).expect("object"), life)
        .await
        .expect("get")
        .to_string();
    let out = helper(
        dir.path(),
        &other,
        &[
            "cache-extractor",
            "--file",
            "../cache3/cache.zip",
            "--url",
            &missing,
        ],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("WARNING: file does not exist"), "{t}");

    // Over --max-uploaded-archive-size: kept locally, GitLab's words.
    let out = helper(
        dir.path(),
        &wd,
        &[
            "cache-archiver",
            "--file",
            "../cache4/cache.zip",
            "--path",
            "vendor/",
            "--url",
            &put,
            "--max-uploaded-archive-size",
            "10",
        ],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("is too big (Limit is set to 10). Cache will be stored only locally."),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cache_alone_and_a_missing_one() {
    let dir = tempfile::tempdir().expect("tmp");
    // gitlab-runner's scripts guard every helper call with `if gitlab-runner-helper --version` (shells/
    // abstract.go `guardRunnerCommand`); `--help` lists the verbs.
    let out = helper(dir.path(), dir.path(), &["--version"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).starts_with("gitlab-runner-helper "),
        "{}",
        text(&out)
    );
    let out = helper(dir.path(), dir.path(), &["--help"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    for verb in [
        "cache-extractor",
        "cache-archiver",
        "artifacts-downloader",
        "artifacts-uploader",
        "cache-init",
        "read-logs",
        "health-check",
    ] {
        assert!(t.contains(verb), "{verb}: {t}");
    }
    assert!(!t.contains("register"), "only the helper's verbs: {t}");
    // A flag no gitlab-runner helper has: exit 1, as gitlab-runner's helper (urfave/cli's error, Fatal).
    let out = helper(
        dir.path(),
        dir.path(),
        &["cache-extractor", "--no-such-flag"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let runwright = linked(dir.path(), "runwright");
    let out = run_in(
        &runwright,
        dir.path(),
        &["cache-extractor", "--no-such-flag"],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "runwright <verb> too: {}",
        text(&out)
    );

    let wd = dir.path().join("project");
    std::fs::create_dir_all(wd.join("node_modules/x")).expect("dirs");
    std::fs::write(wd.join("node_modules/x/index.js"), "x").expect("file");
    std::fs::write(wd.join("untracked.txt"), "u").expect("file");
    let out = helper(
        dir.path(),
        &wd,
        &[
            "cache-archiver",
            "--file",
            "../cache/key/cache.zip",
            "--timeout",
            "10",
            "--path",
            "node_modules/",
            "--exclude",
            "node_modules/x/index.js",
            "--path",
            "untracked.txt",
        ],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("node_modules/x/index.js: excluded 1 files"),
        "{t}"
    );
    assert!(t.contains("Cache will be stored only locally."), "{t}");
    let fresh = dir.path().join("fresh");
    let out = helper(
        dir.path(),
        &fresh,
        &[
            "cache-extractor",
            "--file",
            "../cache/key/cache.zip",
            "--timeout",
            "10",
        ],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        fresh.join("node_modules/x").is_dir() && !fresh.join("node_modules/x/index.js").exists()
    );
    assert_eq!(
        std::fs::read_to_string(fresh.join("untracked.txt")).expect("file"),
        "u"
    );

    let out = helper(
        dir.path(),
        &fresh,
        &["cache-extractor", "--file", "../cache/none/cache.zip"],
        &[],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("WARNING: Cache file does not exist"), "{t}");
    assert!(!t.contains("FATAL"), "{t}");
}

/// One entry of [`hostile_zip`]: name, kind, data.
pub(crate) type ZipEntry<'a> = (&'a str, char, &'a str);

/// A zip of `entries` (`(name, kind, data)`, kind `f` file, `l` symlink whose data is the target), written
/// by Python's zipfile, which writes whatever names it is given.
pub(crate) fn hostile_zip(path: &Path, entries: &[ZipEntry]) {
    let spec = serde_json::to_string(
        &entries
            .iter()
            .map(|(n, k, d)| serde_json::json!([n, k.to_string(), d]))
            .collect::<Vec<_>>(),
    )
    .expect("json");
    let script = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, kind, data in json.loads(sys.argv[2]):
        i = zipfile.ZipInfo(name)
        i.create_system = 3
        i.external_attr = ((0o120777 if kind == "l" else 0o100644) << 16)
        z.writestr(i, data)
"#;
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(spec)
        .status()
        .expect("python3");
    assert!(st.success(), "zip written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_from_the_cache_and_from_artifacts() {
    let h = Harness::new().await;
    let dir = h.path();
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let cases: [(&str, Vec<ZipEntry>); 4] = [
        ("zip-slip", vec![("../../outside/slip.txt", 'f', "pwned")]),
        (
            "absolute",
            vec![("/tmp/runwright-helper-abs.txt", 'f', "pwned")],
        ),
        (
            "symlink-escape",
            vec![
                ("esc", 'l', "../../outside"),
                ("esc/through.txt", 'f', "pwned"),
            ],
        ),
        (
            "link-out",
            vec![("ok.txt", 'f', "fine"), ("out", 'l', "/etc")],
        ),
    ];
    for (name, entries) in &cases {
        let zip = dir.join(format!("cache-{name}/cache.zip"));
        std::fs::create_dir_all(zip.parent().expect("parent")).expect("dir");
        hostile_zip(&zip, entries);
        let wd = dir.join(format!("project-{name}"));
        let out = helper(
            dir,
            &wd,
            &["cache-extractor", "--file", zip.to_str().expect("utf-8")],
            &[],
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {t}");
        assert!(t.contains("FATAL: "), "{name}: {t}");
        // Nothing of the archive landed anywhere: not outside, not even the harmless entries.
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            0,
            "{name}"
        );
        assert!(
            !Path::new("/tmp/runwright-helper-abs.txt").exists(),
            "{name}"
        );
        assert!(!wd.join("ok.txt").exists(), "{name}: all or nothing");
    }

    // The same archive as a dependency's artifacts: uploaded raw (as it is), refused on download.
    let url = h.coordinator.url();
    let (a, token_a) = running_job(&h, job("evil", 4)).await;
    let up = dir.join("evil-up");
    std::fs::create_dir_all(&up).expect("dir");
    hostile_zip(&up.join("artifacts.zip"), &cases[2].1);
    let out = helper(
        dir,
        &up,
        &[
            "artifacts-uploader",
            "--url",
            &url,
            "--id",
            &a.to_string(),
            "--path",
            "artifacts.zip",
            "--artifact-format",
            "raw",
            "--artifact-type",
            "archive",
            "--name",
            "artifacts.zip",
        ],
        &[("CI_JOB_TOKEN", &token_a)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (_b, token_b) = running_job(
        &h,
        JobSpec {
            artifact_dependencies: vec![a],
            ..job("victim", 5)
        },
    )
    .await;
    let wd = dir.join("victim");
    let out = helper(
        dir,
        &wd,
        &[
            "artifacts-downloader",
            "--url",
            &url,
            "--id",
            &a.to_string(),
        ],
        &[("CI_JOB_TOKEN", &token_b)],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("Downloading artifacts from coordinator... ok"),
        "{t}"
    );
    assert!(t.contains("FATAL: "), "{t}");
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    assert!(!wd.join("esc").exists());
}

/// Swaps `dir` for a symlink to `to` and back, as fast as it can, until the returned flag is set: half the
/// time `dir` is the real directory, half the time the symlink. Whatever the helper made of `dir` meanwhile
/// (a new directory where the symlink was) becomes the real directory of the next round.
fn swapper(
    dir: PathBuf,
    to: PathBuf,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u64>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let real = dir.with_extension("real");
    let handle = std::thread::spawn(move || {
        let mut swaps = 0u64;
        let settle = |dir: &Path, real: &Path| {
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(dir);
            }
            if std::fs::symlink_metadata(dir).is_err() {
                let _ = std::fs::rename(real, dir);
            } else if real.exists() {
                let _ = std::fs::remove_dir_all(real);
            }
        };
        while !flag.load(Ordering::Relaxed) {
            settle(&dir, &real);
            if std::fs::rename(&dir, &real).is_ok() && std::os::unix::fs::symlink(&to, &dir).is_ok()
            {
                swaps += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
            settle(&dir, &real);
            std::thread::sleep(Duration::from_millis(1));
        }
        settle(&dir, &real);
        swaps
    });
    (stop, handle)
}

/// A process of the job swapping a directory of the project for a symlink to a directory outside while the
/// helper archives and extracts (issue 19 item 7): no archive ever holds the outside file, nothing is ever
/// written outside, whatever the timing. Each run either succeeds on the real tree or fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_symlink_while_the_helper_works_never_leads_outside() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("tmp");
    let wd = dir.path().join("project");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(wd.join("d")).expect("d");
    std::fs::create_dir_all(&outside).expect("outside");
    // Many files of the same names inside and outside: the helper spends long enough in `d` for the swaps to
    // land in the middle of its work.
    for n in 0..300 {
        std::fs::write(wd.join(format!("d/f{n}.txt")), "inside").expect("inside file");
        std::fs::write(outside.join(format!("f{n}.txt")), "OUTSIDE-SECRET").expect("outside file");
    }
    // Stored, not deflated (`fastest`): the outside file's text would show in the archive as is.
    let level = [("CACHE_COMPRESSION_LEVEL", "fastest")];

    // Archiving.
    let (stop, swaps) = swapper(wd.join("d"), outside.clone());
    let (mut ok, mut failed) = (0, 0);
    for i in 0..25 {
        let file = format!("../cache/{i}/cache.zip");
        let out = helper(
            dir.path(),
            &wd,
            &["cache-archiver", "--file", &file, "--path", "d/"],
            &level,
        );
        let archive = dir.path().join(format!("cache/{i}/cache.zip"));
        if let Ok(bytes) = std::fs::read(&archive) {
            assert!(
                !bytes.windows(14).any(|w| w == b"OUTSIDE-SECRET"),
                "run {i}: the archive holds the file outside the project"
            );
        }
        match out.status.code() {
            Some(0) => ok += 1,
            _ => failed += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let n = swaps.join().expect("swapper");
    println!("archiving: {ok} ok, {failed} failed, {n} swaps");
    assert!(n > 0, "the swapper swapped");
    assert!(wd.join("d").is_dir() && !wd.join("d.real").exists());

    // Extraction of a good archive (made without the race) into a project whose `d` keeps being swapped.
    let out = helper(
        dir.path(),
        &wd,
        &[
            "cache-archiver",
            "--file",
            "../good/cache.zip",
            "--path",
            "d/",
        ],
        &level,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    std::fs::write(wd.join("d/f0.txt"), "changed locally").expect("rewrite");
    let before = std::fs::read_dir(&outside).expect("outside").count();
    let (stop, swaps) = swapper(wd.join("d"), outside.clone());
    let (mut ok, mut failed) = (0, 0);
    for i in 0..25 {
        let out = helper(
            dir.path(),
            &wd,
            &["cache-extractor", "--file", "../good/cache.zip"],
            &[],
        );
        match out.status.code() {
            Some(0) => ok += 1,
            _ => failed += 1,
        }
        for n in 0..300 {
            assert_eq!(
                std::fs::read_to_string(outside.join(format!("f{n}.txt"))).expect("outside file"),
                "OUTSIDE-SECRET",
                "run {i}: a file outside was replaced"
            );
        }
        assert_eq!(
            std::fs::read_dir(&outside).expect("outside").count(),
            before,
            "run {i}: something was written outside"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let n = swaps.join().expect("swapper");
    println!("extraction: {ok} ok, {failed} failed, {n} swaps");
    assert!(n > 0, "the swapper swapped");
}
