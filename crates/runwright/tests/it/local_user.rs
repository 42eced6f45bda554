//! Another local account for the tests that play an attacker (issue 17): created with `useradd` under a name
//! of its own (parallel tests and reruns never collide), removed with `userdel` when the guard drops, and a
//! runner entry whose jobs run as that account (`user = …`, as GitLab's shell executor does with `su`).

use crate::harness::Harness;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct LocalUser {
    pub name: String,
}

impl LocalUser {
    /// A fresh account (`<prefix><pid><n>`, no home, bash as its shell), or `None` with a visible message when
    /// the tests do not run as root (CI does).
    pub fn create(prefix: &str) -> Option<LocalUser> {
        static N: AtomicU32 = AtomicU32::new(0);
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!(
                "skipped: creating another local user needs root (CI runs the tests as root)"
            );
            return None;
        }
        let name = format!(
            "{prefix}{}{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        // Concurrent useradd/userdel calls of parallel tests contend for /etc/passwd's lock: try again.
        for attempt in 0..50 {
            let out = Command::new("useradd")
                .args(["-M", "-N", "-s", "/bin/bash", "-d", "/nonexistent", &name])
                .output()
                .expect("useradd runs");
            if out.status.success() {
                return Some(LocalUser { name });
            }
            assert!(
                attempt < 49,
                "useradd {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        None
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("could not remove the test user {}", self.name);
    }
}

impl Harness {
    /// A builds dir the job's account can use inside the (root-only) temp dir: the temp dir opened to 0755 and
    /// `shared-builds` 0777. Returns the builds dir.
    pub fn builds_for_any_user(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let builds = self.path().join("shared-builds");
        std::fs::create_dir_all(&builds).expect("builds");
        std::fs::set_permissions(&builds, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        builds
    }
}
