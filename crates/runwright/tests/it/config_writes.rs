//! Issue 17 item 7: `register`, `reset-token` and the service's token rotation write `config.toml` as the file
//! it is — through a symlink into its target (the link stays), with its owner and mode — and leave the old token
//! in no file: not the real config, not a temporary or backup file. Runner common/config.go
//! `defaultConfigSaver.Save` writes in place (`os.WriteFile`), which keeps all of that; runwright writes
//! atomically and must keep it too.

use crate::attackers::{can_play_attacker, LocalUser};
use crate::harness::*;
use runwright_coordinator::RunnerOptions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REG_TOKEN: &str = "GR1348941RegistrationTok";

fn config_text(h: &Harness, token: &str, extra: &str) -> String {
    format!(
        "# hand-written\nconcurrent = 1\ncheck_interval = 1\n\n[[runners]]\n  name = \"first\"\n  url = \"{}\"\n  id = 1\n  token = \"{token}\"\n  executor = \"shell\"\n{extra}",
        h.coordinator.url()
    )
}

/// Every file under `dir` whose bytes hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            found.extend(files_holding(&p, needle));
        } else if ft.is_file()
            && String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).contains(needle)
        {
            found.push(p);
        }
    }
    found
}

/// The one token the coordinator knows now, once it is not `old`.
fn new_token(h: &Harness, old: &str) -> String {
    let tokens = h.coordinator.runner_tokens();
    let new: Vec<&String> = tokens.iter().filter(|t| *t != old).collect();
    assert_eq!(new.len(), 1, "{tokens:?}");
    new[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_token_and_register_write_through_a_symlinked_config_into_its_target() {
    let h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator.add_registration_token(REG_TOKEN);
    // /etc/gitlab-runner/config.toml -> ../../srv/runner/config.toml, as configuration management lays it out.
    let etc = h.path().join("etc/gitlab-runner");
    let srv = h.path().join("srv/runner");
    std::fs::create_dir_all(&etc).expect("dir");
    std::fs::create_dir_all(&srv).expect("dir");
    let real = srv.join("config.toml");
    std::fs::write(&real, config_text(&h, TOKEN, "")).expect("write");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = etc.join("config.toml");
    std::os::unix::fs::symlink("../../srv/runner/config.toml", &link).expect("symlink");
    let c = link.to_string_lossy().into_owned();

    let out = h
        .command()
        .args(["reset-token", "-c", &c, "--name", "first"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = new_token(&h, TOKEN);
    let meta = std::fs::symlink_metadata(&link).expect("link");
    assert!(
        meta.file_type().is_symlink(),
        "the symlink was replaced by a file"
    );
    assert_eq!(
        std::fs::read_link(&link).expect("link"),
        Path::new("../../srv/runner/config.toml")
    );
    let text = std::fs::read_to_string(&real).expect("target");
    assert!(
        text.starts_with("# hand-written\n") && text.contains(&new),
        "{text}"
    );
    assert_eq!(
        files_holding(h.path(), TOKEN),
        Vec::<PathBuf>::new(),
        "the old token stayed behind"
    );
    assert_eq!(
        std::fs::metadata(&real).expect("meta").mode() & 0o777,
        0o600
    );

    // register appends through the same link.
    let out = h
        .command()
        .args([
            "register",
            "--non-interactive",
            "-c",
            &c,
            "--url",
            &h.coordinator.url(),
            "-r",
            REG_TOKEN,
            "--executor",
            "shell",
            "--name",
            "second",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    let text = std::fs::read_to_string(&real).expect("target");
    assert!(
        text.contains("name = \"second\"") && text.contains(&new),
        "{text}"
    );
}

/// The layout of a packaged runner: `/etc/gitlab-runner` belongs to root, `config.toml` in it to the service's
/// user, mode 0600. That user resets its token: the file is rewritten in place (its directory takes no new
/// file), keeps owner and mode, and holds only the new token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_user_resets_its_token_in_a_config_dir_owned_by_root() {
    if !can_play_attacker("a config owned by another user") {
        return;
    }
    let h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    let user = LocalUser::create();
    std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let dir = h.path().join("etc-gitlab-runner");
    std::fs::create_dir(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.join("config.toml");
    std::fs::write(&config, config_text(&h, TOKEN, "")).expect("write");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&config, Some(user.uid()), Some(user.gid())).expect("chown");

    let script = format!(
        "RUNWRIGHT_FAST_RETRIES=1 '{}' reset-token -c '{}' --name first",
        env!("CARGO_BIN_EXE_runwright"),
        config.display()
    );
    let out = user.bash(&script);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let new = new_token(&h, TOKEN);
    let m = std::fs::metadata(&config).expect("meta");
    assert_eq!((m.uid(), m.gid()), (user.uid(), user.gid()));
    assert_eq!(m.mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&config)
        .expect("read")
        .contains(&new));
    assert_eq!(files_holding(&dir, TOKEN), Vec::<PathBuf>::new());
}

/// The service (root here) rotates the token of a config that belongs to another user, mode 0600: owner and mode
/// survive, and no file beside it holds the old token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_a_non_root_owner_and_mode_0600() {
    if !can_play_attacker("a config owned by another user") {
        return;
    }
    let mut h = Harness::new().await;
    h.coordinator.add_runner(TOKEN, RunnerOptions::default());
    h.coordinator
        .set_token_expiry(TOKEN, Some(Duration::from_secs(20)));
    h.coordinator
        .set_token_lifetime(Some(Duration::from_secs(3600)));
    let user = LocalUser::create();
    let now = time::OffsetDateTime::now_utc();
    // Past 75% of its lifetime: the service rotates it at start.
    let extra = format!(
        "  token_obtained_at = {}\n  token_expires_at = {}\n",
        rfc3339(now - time::Duration::seconds(80)),
        rfc3339(now + time::Duration::seconds(20))
    );
    h.write_config(&config_text(&h, TOKEN, &extra));
    std::fs::set_permissions(&h.config_path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    std::os::unix::fs::chown(&h.config_path, Some(user.uid()), Some(user.gid())).expect("chown");
    h.start();
    let deadline = std::time::Instant::now() + WAIT;
    while !h.log().contains("runner token rotated and saved") {
        assert!(std::time::Instant::now() < deadline, "{}", h.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = new_token(&h, TOKEN);
    let m = std::fs::metadata(&h.config_path).expect("meta");
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o777),
        (user.uid(), user.gid(), 0o600)
    );
    let text = std::fs::read_to_string(&h.config_path).expect("read");
    assert!(
        text.starts_with("# hand-written\n") && text.contains(&new),
        "{text}"
    );
    // Beside config.toml: the journal, the state files, the builds — none holds the old token.
    assert_eq!(files_holding(h.path(), TOKEN), Vec::<PathBuf>::new());
}
