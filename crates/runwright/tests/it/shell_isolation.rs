//! Issue 19 item 7: a shell job's caches and artifacts are archived and extracted by the helper in the job's own
//! shell, as the job's user (`user = …`, through `su`), never by the service (root here, as on a packaged host).
//! The attacker is the job's author: a process it leaves behind (`setsid env -i`, outside the stage's group,
//! without the job's mark) keeps swapping the directories the helper works in for symlinks to root's files while
//! the caches and artifacts are extracted (after `post_get_sources_script` started it) and archived (after the
//! script started it again). Done by root, that read `/etc/shadow` into an archive and wrote through a symlink
//! into root's files; done by the job's user it can do neither.

use crate::attackers::{can_play_attacker, LocalUser};
use crate::harness::*;
use runwright_api::types::{Artifact, Cache, Hook};
use runwright_coordinator::{JobSpec, ProjectSpec};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Swaps, in the project dir `$1`, forever: `vendor/` and `out/` (where the cache and the artifacts are
/// extracted) between a directory and a symlink to root's directory `$2`; `keep/leak`, `keep/secret` (archived)
/// between a file and symlinks to `/etc/shadow` and root's file `$3`; `keep/dir` between a directory and a
/// symlink to the directory of `$3`. It never writes through a path that may be a symlink (files are put in
/// place by `mv`, which replaces the link itself), so even a runwright that wrongly ran all of this as root
/// would harm nothing outside the test's own directory.
const SWAPPER: &str = r#"cd "$1" || exit 1
while true; do
  for d in vendor out; do
    if [ -L "$d" ]; then rm -f "$d"; mkdir -p "$d"; else rm -rf "$d"; ln -s "$2" "$d"; fi
  done
  if [ -d keep ]; then
    ln -sfn /etc/shadow keep/leak; echo innocent > keep/.new; mv -f keep/.new keep/leak
    ln -sfn "$3" keep/secret; echo innocent > keep/.new; mv -f keep/.new keep/secret
    rm -rf keep/dir; ln -s "$(dirname "$3")" keep/dir; rm -f keep/dir; mkdir -p keep/dir
  fi
done
"#;

/// What the attack aims at: root's secret file, root's directory of files the job must not replace, and the
/// first line of `/etc/shadow`.
struct Targets {
    secret: PathBuf,
    secret_text: String,
    victims: PathBuf,
    shadow_line: String,
}

impl Targets {
    fn plant(dir: &Path) -> Targets {
        // Traversable for everyone, so only the file's own mode protects it (as `/etc/shadow`).
        let secrets = dir.join("root-files");
        std::fs::create_dir_all(&secrets).expect("dir");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let secret = secrets.join("secret");
        let secret_text = format!("root-only-secret-{}", std::process::id());
        std::fs::write(&secret, &secret_text).expect("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let victims = dir.join("root-victims");
        std::fs::create_dir_all(victims.join("sub")).expect("dir");
        for d in [&victims, &victims.join("sub")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        // The names the cache's and the artifacts' entries have below `vendor/` and `out/`.
        for f in ["data", "f", "sub/f", "sub/g"] {
            std::fs::write(victims.join(f), "precious\n").expect("victim");
        }
        let shadow_line = std::fs::read_to_string("/etc/shadow")
            .expect("/etc/shadow (root)")
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(!shadow_line.is_empty(), "an empty /etc/shadow");
        Targets {
            secret,
            secret_text,
            victims,
            shadow_line,
        }
    }

    /// Root's files are as planted: nothing replaced, added or given away.
    fn assert_untouched(&self, what: &str) {
        for f in ["data", "f", "sub/f", "sub/g"] {
            let p = self.victims.join(f);
            let meta = std::fs::symlink_metadata(&p).expect("victim");
            assert!(
                meta.is_file() && meta.uid() == 0,
                "{what}: {} replaced",
                p.display()
            );
            assert_eq!(
                std::fs::read_to_string(&p).expect("victim"),
                "precious\n",
                "{what}: {} overwritten",
                p.display()
            );
        }
        let mut names: Vec<String> = std::fs::read_dir(&self.victims)
            .expect("victims")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["data", "f", "sub"],
            "{what}: files added to root's dir"
        );
        assert_eq!(
            std::fs::read_to_string(&self.secret).expect("secret"),
            self.secret_text
        );
    }

    /// `bytes` (a log, or an archive's extracted content) carry neither secret.
    fn assert_absent(&self, what: &str, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(&self.secret_text),
            "{what} holds root's secret"
        );
        assert!(
            !text.contains(&self.shadow_line),
            "{what} holds /etc/shadow"
        );
    }
}

/// Every file's content in a zip archive, concatenated (`unzip -p`); empty for an archive with no files.
fn zip_content(archive: &Path) -> Vec<u8> {
    let out = Command::new("unzip")
        .arg("-p")
        .arg(archive)
        .output()
        .expect("unzip runs");
    out.stdout
}

fn cache(key: &str, paths: &[&str]) -> Cache {
    Cache {
        key: key.into(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
        ..Cache::default()
    }
}

fn archive(paths: &[&str]) -> Artifact {
    Artifact {
        paths: paths.iter().map(|s| s.to_string()).collect(),
        artifact_type: "archive".into(),
        artifact_format: "zip".into(),
        when: "always".into(),
        ..Artifact::default()
    }
}

#[tokio::test]
async fn a_job_swapping_its_paths_for_symlinks_neither_reads_nor_replaces_roots_files() {
    if !can_play_attacker("the symlink swap during archiving and extraction") {
        return;
    }
    let user = LocalUser::create();
    let mut h = Harness::new().await;
    let builds = h.builds_for_any_user();
    // The job's user archives and extracts its caches, so the cache dir is the user's (as gitlab-runner's shell
    // executor with `--user` needs it).
    let cache_dir = h.path().join("job-cache");
    std::fs::create_dir_all(&cache_dir).expect("cache dir");
    nix::unistd::chown(
        &cache_dir,
        Some(nix::unistd::Uid::from_raw(user.uid())),
        Some(nix::unistd::Gid::from_raw(user.gid())),
    )
    .expect("chown");
    let targets = Targets::plant(h.path());
    let swapper = h.path().join("swapper.sh");
    std::fs::write(&swapper, SWAPPER).expect("swapper");
    std::fs::set_permissions(&swapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    h.single_runner(
        &format!("user = \"{}\"", user.name),
        &format!(
            "  builds_dir = \"{}\"\n  cache_dir = \"{}\"",
            builds.display(),
            cache_dir.display()
        ),
    );
    let sha = h.make_repo("grp/app", &[("README.md", "x\n")]);
    h.start();
    // Started with an empty environment in a session of its own: outside the stage's process group, without the
    // job's mark; only the job's cgroup ends it.
    let swap = format!(
        "setsid env -i /bin/sh {} \"$CI_PROJECT_DIR\" {} {} </dev/null >/dev/null 2>&1 &",
        swapper.display(),
        targets.victims.display(),
        targets.secret.display()
    );
    let git_job = |name: &str, script: Vec<String>| JobSpec {
        name: name.into(),
        script,
        project: ProjectSpec::new(7, "grp/app"),
        sha: sha.clone(),
        ..Default::default()
    };

    // Job A: a cache and artifacts with files at the names of root's files, archived without interference.
    let a = h.coordinator.enqueue(JobSpec {
        cache: vec![cache("swap", &["vendor/"])],
        artifacts: vec![archive(&["out/"])],
        ..git_job(
            "a",
            vec![
                "mkdir -p vendor/sub out/sub".into(),
                "for f in data f sub/f sub/g; do echo mine > vendor/$f; echo mine > out/$f; done"
                    .into(),
            ],
        )
    });
    let ja = h.final_job(a).await;
    assert_eq!(ja.state, "success", "{}", ja.trace_text());
    // The archive was written by a process of the job's user, not by the service (root).
    let key_dir = cache_dir.join("grp/app/swap");
    let zip = key_dir.join("cache.zip");
    for f in [&zip, &key_dir.join("metadata.json")] {
        let meta = std::fs::metadata(f)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", f.display(), ja.trace_text()));
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid(), user.gid()),
            "{} was not written by the job's user",
            f.display()
        );
    }

    // Job B: the swapper, started by post_get_sources_script, runs through restore_cache and
    // download_artifacts, the script (which makes keep/) and archive_cache and upload_artifacts.
    let b = h.coordinator.enqueue(JobSpec {
        hooks: vec![Hook {
            name: "post_get_sources_script".into(),
            script: vec![swap, "sleep 0.2".into()],
        }],
        cache: vec![cache("swap", &["vendor/", "keep/"])],
        artifacts: vec![archive(&["keep/", "out/"])],
        artifact_dependencies: vec![a],
        ..git_job(
            "b",
            vec![
                "mkdir -p keep/dir && echo ok > keep/ok".into(),
                "sleep 1".into(),
            ],
        )
    });
    let jb = h.final_job(b).await;
    let t = jb.trace_text();
    // The stages ran (the race decides what each of them met, not whether they ran).
    for section in [
        "Restoring cache",
        "Downloading artifacts",
        "Saving cache",
        "Uploading artifacts",
    ] {
        assert!(t.contains(section), "{section} missing:\n{t}");
    }
    targets.assert_untouched("after job b");
    targets.assert_absent("the job's log", t.as_bytes());
    if zip.exists() {
        let meta = std::fs::metadata(&zip).expect("cache.zip");
        assert_eq!(
            meta.uid(),
            user.uid(),
            "cache.zip rewritten by someone else"
        );
        targets.assert_absent("the cache archive", &zip_content(&zip));
    }
    for id in [a, b] {
        if let Some(stored) = h.coordinator.artifact(id, "archive") {
            targets.assert_absent("an uploaded artifact", &zip_content(&stored.path));
        }
    }
    // Nothing of the job's user is left running (its cgroup took the swapper).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left = processes_of(user.uid());
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job's processes {left:?} outlived it"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    targets.assert_untouched("after the job ended");
    // cleanup_file_variables ran as the job's user too: the temporary dir (file variables, GITLAB_ENV) is gone.
    let project = builds
        .join(runwright_config::short_token(TOKEN))
        .join("0/grp/app");
    assert!(project.is_dir(), "{}", project.display());
    let tmp = project.with_file_name("app.tmp");
    assert!(!tmp.exists(), "{} left behind", tmp.display());
}

/// The pids of the processes of `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            (e.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}
