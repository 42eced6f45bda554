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

/// Another local account for one test (a unique name), removed on drop after the processes it started here
/// ended.
pub struct LocalUser {
    pub name: String,
    uid: u32,
    gid: u32,
    children: std::sync::Mutex<Vec<std::process::Child>>,
}

impl LocalUser {
    pub fn create() -> LocalUser {
        let name = format!("rwatk{}", unique());
        // Parallel tests contend for /etc/passwd's lock: useradd then fails with "cannot lock"; try again.
        let mut last = String::new();
        for _ in 0..50 {
            let out = Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--user-group",
                    "--shell",
                    "/bin/sh",
                ])
                .arg(&name)
                .output()
                .expect("useradd runs");
            if out.status.success() {
                let user = nix::unistd::User::from_name(&name)
                    .ok()
                    .flatten()
                    .expect("the user exists");
                return LocalUser {
                    name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                    children: std::sync::Mutex::new(Vec::new()),
                };
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("useradd {name} failed: {last}");
    }

    /// [`LocalUser::create`], or `None` with a visible note when this process is not root (CI runs as root).
    pub fn create_or_skip(test: &str) -> Option<LocalUser> {
        if !is_root() {
            eprintln!(
                "SKIPPED {test}: creating another local user needs root (CI runs this as root)"
            );
            return None;
        }
        Some(LocalUser::create())
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// `program` run as this user, with a minimal environment, from `/`.
    pub fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/nonexistent")
            .current_dir("/")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("the attacker's command runs")
    }

    /// `bash -c script` as this user.
    pub fn bash(&self, script: &str) -> Output {
        self.run("bash", &["-c", script])
    }

    /// A request with curl: (status, body).
    pub fn http(&self, args: &[&str]) -> (u16, String) {
        let out = self.run("curl", &[&["-s", "-w", "\n%{http_code}"], args].concat());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Keeps a process of this user's running until the user goes.
    pub fn spawn(&self, mut cmd: Command) {
        let child = cmd.spawn().expect("the attacker's process starts");
        // Waited for when the user goes (Drop).
        self.children.lock().expect("children").push(child);
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = Command::new("userdel")
            .arg(&self.name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A network namespace joined to the host by a veth pair: the host side is `host_ip`, a client inside reaches
/// the host's listeners from `client_ip` — not loopback, and not leaving the machine. Deleted on drop.
pub struct OffLoopback {
    ns: String,
    pub host_ip: String,
    pub client_ip: String,
}

impl OffLoopback {
    pub fn create() -> OffLoopback {
        let id = unique();
        let ns = format!("rwns{id}");
        // A /30 of 10.213.0.0/16 per namespace (its number from the process and counter).
        let n: u32 = id.parse::<u32>().unwrap_or(0) % 16384;
        let (a, b) = (n / 64, (n % 64) * 4);
        let host_ip = format!("10.213.{a}.{}", b + 1);
        let client_ip = format!("10.213.{a}.{}", b + 2);
        let (va, vb) = (format!("rwva{id}"), format!("rwvb{id}"));
        let net = OffLoopback {
            ns: ns.clone(),
            host_ip: host_ip.clone(),
            client_ip: client_ip.clone(),
        };
        for args in [
            vec!["netns", "add", &ns],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &vb, "netns", &ns],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &va],
            vec!["link", "set", &va, "up"],
            vec![
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{client_ip}/30"),
                "dev",
                &vb,
            ],
            vec!["netns", "exec", &ns, "ip", "link", "set", &vb, "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip runs");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        net
    }

    /// One HTTP/1.0 `GET path` from inside the namespace to the host's `port`, with `headers` (`Name: value`
    /// lines); the whole answer (status line, headers, body).
    pub fn get(&self, port: u16, path: &str, headers: &[&str]) -> String {
        let mut request = format!("GET {path} HTTP/1.0\r\nHost: {}:{port}\r\n", self.host_ip);
        for h in headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let script = format!(
            "exec 3<>/dev/tcp/{}/{port} && printf '%s' \"$REQUEST\" >&3 && cat <&3",
            self.host_ip
        );
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "timeout", "20", "bash", "-c", &script,
            ])
            .env("REQUEST", request)
            .stdin(Stdio::null())
            .output()
            .expect("ip netns exec runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for OffLoopback {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl crate::harness::Harness {
    /// A builds dir the job's account can use inside the (root-only) temp dir: the temp dir opened to 0755 and
    /// `shared-builds` 0777. Returns the builds dir.
    pub fn builds_for_any_user(&self) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let builds = self.path().join("shared-builds");
        std::fs::create_dir_all(&builds).expect("builds");
        std::fs::set_permissions(&builds, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        builds
    }
}
