//! Who plays the attacker in the tests of issue 17: another local account (`useradd` in the test, removed when
//! the test ends, so parallel tests and reruns never share one) and a client off loopback (a network namespace
//! of the test's own, joined to the host by a veth pair: nothing leaves the machine). Both need root; without it
//! the test says so and skips — CI runs as root, so there they really run.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short suffix: this test process and a counter.
fn unique() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Whether the tests that need root (a user of their own, a network namespace) can run; says why not.
pub fn can_play_attacker(what: &str) -> bool {
    let ok = is_root()
        && ["useradd", "userdel", "runuser", "ip", "bash"]
            .iter()
            .all(|p| which(p));
    if !ok {
        eprintln!("skipped: {what} needs root and useradd, userdel, runuser, ip, bash");
    }
    ok
}

fn which(program: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| std::path::Path::new(d).join(program).exists())
}

/// Another local account, removed on drop.
pub struct LocalUser {
    pub name: String,
}

impl LocalUser {
    pub fn create() -> LocalUser {
        let name = format!("rwatk{}", unique());
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/bin/sh"])
            .arg(&name)
            .output()
            .expect("useradd runs");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LocalUser { name }
    }

    /// `bash -c script` as this user (no login, no environment of ours but PATH).
    pub fn bash(&self, script: &str) -> Output {
        Command::new("runuser")
            .args(["-u", &self.name, "--", "env", "-i"])
            .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin")
            .args(["bash", "-c", script])
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("runuser runs")
    }

    pub fn uid(&self) -> u32 {
        nix::unistd::User::from_name(&self.name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .expect("the user exists")
    }

    pub fn gid(&self) -> u32 {
        nix::unistd::User::from_name(&self.name)
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw())
            .expect("the user exists")
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
