//! runwright's helper image, the default `helper_image`: runwright's binary as `/usr/bin/gitlab-runner-helper`
//! (and `/usr/bin/runwright`), git with its helpers and templates, git-lfs, bash and sh, the usual file tools and
//! the CA bundle, each with the shared libraries `ldd` lists, assembled `FROM scratch` out of this host's (Debian)
//! packages, the way `scripts/test-images` assembles its images. No registry is involved: the context is sent to
//! the daemon's build API, so a remote daemon gets the image as well as a local one.
//!
//! The tag carries runwright's version and a hash of the binary (`runwright/gitlab-runner-helper:x86_64-v<ver>-<hash>`,
//! shaped like GitLab's `gitlab-runner-helper:x86_64-v<ver>`), so a new binary gets a new image and an existing
//! one is reused. The service builds it when a job needs it and it is missing (`ensure`); `runwright
//! helper-image build` builds it by hand.

use crate::DockerError;
use bollard::Docker;
use futures::StreamExt;
use runwright_trace::TraceBuffer;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// The repository part of the default image's name (never pulled: the service builds it).
pub const REPOSITORY: &str = "runwright/gitlab-runner-helper";
/// The label the image carries: its tag (version and binary hash).
pub const LABEL: &str = "org.runwright.helper-image";

/// What goes into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// runwright's helper image: the binary under both names, git, git-lfs, bash and sh, tools, CA bundle.
    Full,
    /// Only what GitLab's helper contract promises, at GitLab's paths: `/usr/bin/gitlab-runner-helper`, git and
    /// a shell (with the file tools a generated script calls). No runwright-specific path: a job that passes with
    /// it passes with GitLab's own helper image.
    Contract,
}

/// The running runwright binary and its hash.
#[derive(Debug, Clone)]
pub struct Binary {
    pub path: PathBuf,
    /// sha256 of its contents, hex.
    pub hash: String,
}

impl Binary {
    /// The executable this process runs.
    pub fn current() -> Result<Self, DockerError> {
        let path = std::env::current_exe()
            .map_err(|e| helper_error(format!("finding runwright's binary: {e}")))?;
        Self::at(path)
    }

    pub fn at(path: PathBuf) -> Result<Self, DockerError> {
        let mut file = std::fs::File::open(&path)
            .map_err(|e| helper_error(format!("reading {}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| helper_error(format!("reading {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Self {
            path,
            hash: hex::encode(hasher.finalize()),
        })
    }

    /// `runwright/gitlab-runner-helper:<arch>-v<version>-<first 12 of the hash>`.
    pub fn default_tag(&self) -> String {
        format!(
            "{REPOSITORY}:{}-v{}-{}",
            std::env::consts::ARCH,
            env!("CARGO_PKG_VERSION"),
            &self.hash[..12.min(self.hash.len())]
        )
    }
}

fn helper_error(message: String) -> DockerError {
    DockerError::HelperImage { message }
}

/// The image runwright uses when `helper_image` is unset, built now if the daemon lacks it. Concurrent jobs
/// wait for one build.
pub async fn ensure(docker: &Docker, trace: &TraceBuffer) -> Result<String, DockerError> {
    static BINARY: tokio::sync::OnceCell<Binary> = tokio::sync::OnceCell::const_new();
    static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let binary = BINARY
        .get_or_try_init(|| async {
            tokio::task::spawn_blocking(Binary::current)
                .await
                .map_err(|e| helper_error(format!("hashing runwright's binary: {e}")))?
        })
        .await?;
    let tag = binary.default_tag();
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let _building = BUILDING.lock().await;
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    trace.write(
        format!("Building runwright's helper image {tag} (once for this runwright binary) ...\n")
            .as_bytes(),
    );
    build(docker, binary, Layout::Full, &tag).await?;
    Ok(tag)
}

/// Builds the image from `binary` as `tag` through the daemon's build API.
pub async fn build(
    docker: &Docker,
    binary: &Binary,
    layout: Layout,
    tag: &str,
) -> Result<(), DockerError> {
    let (path, tag_owned) = (binary.path.clone(), tag.to_string());
    let context = tokio::task::spawn_blocking(move || context(&path, layout, &tag_owned))
        .await
        .map_err(|e| helper_error(format!("assembling the helper image: {e}")))??;
    let options = bollard::query_parameters::BuildImageOptions {
        dockerfile: "Dockerfile".to_string(),
        t: Some(tag.to_string()),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(helper_error(format!("building {tag}: {message}")));
                }
            }
            Err(e) => {
                return Err(helper_error(format!(
                    "building {tag}: {}",
                    crate::engine_api::daemon_message(&e)
                )))
            }
        }
    }
    docker.inspect_image(tag).await.map_err(|e| {
        helper_error(format!(
            "building {tag}: the image is missing after the build ({})",
            crate::engine_api::daemon_message(&e)
        ))
    })?;
    Ok(())
}

/// One file system entry of the image.
#[derive(Debug, Clone)]
enum Entry {
    Dir(u32),
    /// A host file's contents with a mode.
    File(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(String),
}

/// The tools a generated stage script may call besides git and the helper (GitLab's helper image has them
/// through busybox).
const TOOLS: &[&str] = &[
    "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dirname", "env", "false", "find",
    "grep", "gzip", "head", "hostname", "id", "ln", "ls", "mkdir", "mktemp", "mv", "readlink",
    "realpath", "rm", "rmdir", "sed", "sleep", "sort", "stat", "tail", "tar", "tee", "touch", "tr",
    "true", "uname", "wc", "xargs",
];

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// The build context: a Dockerfile and `rootfs/`, as a tar archive.
fn context(binary: &Path, layout: Layout, tag: &str) -> Result<Vec<u8>, DockerError> {
    let mut fs = Rootfs::default();
    // merged /usr, as Debian lays it out: /bin, /lib, /lib64 and /sbin are links into /usr
    for d in ["bin", "lib", "lib64", "sbin"] {
        fs.put(d, Entry::Symlink(format!("usr/{d}")));
    }
    fs.put("tmp", Entry::Dir(0o1777));
    fs.put("root", Entry::Dir(0o700));
    fs.put("etc/passwd", Entry::Bytes(PASSWD.into(), 0o644));
    fs.put("etc/group", Entry::Bytes(GROUP.into(), 0o644));
    fs.put(
        "etc/nsswitch.conf",
        Entry::Bytes(
            b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec(),
            0o644,
        ),
    );

    let stripped = strip(binary)?;
    let helper = stripped.as_ref().map_or(binary, |t| t.path());
    fs.elf("usr/bin/gitlab-runner-helper", helper, 0o755);
    if layout == Layout::Full {
        fs.put(
            "usr/bin/runwright",
            Entry::Symlink("gitlab-runner-helper".into()),
        );
    }

    let bash = find_exe("bash").ok_or_else(|| missing("bash", "bash"))?;
    fs.elf("usr/bin/bash", &bash, 0o755);
    match find_exe("dash") {
        Some(dash) => {
            fs.elf("usr/bin/dash", &dash, 0o755);
            fs.put("usr/bin/sh", Entry::Symlink("dash".into()));
        }
        None => fs.put("usr/bin/sh", Entry::Symlink("bash".into())),
    }
    for tool in TOOLS {
        if let Some(p) = find_exe(tool) {
            fs.elf(&format!("usr/bin/{tool}"), &p, 0o755);
        }
    }

    let git = find_exe("git").ok_or_else(|| missing("git", "git"))?;
    fs.elf("usr/bin/git", &git, 0o755);
    fs.git_core(&git)?;
    fs.tree(
        Path::new("/usr/share/git-core/templates"),
        "usr/share/git-core/templates",
    );
    if layout == Layout::Full {
        match find_exe("git-lfs") {
            Some(lfs) => fs.elf("usr/bin/git-lfs", &lfs, 0o755),
            None => return Err(missing("git-lfs", "git-lfs")),
        }
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if bundle.exists() {
            fs.put(
                "etc/ssl/certs/ca-certificates.crt",
                Entry::File(bundle.into(), 0o644),
            );
        } else {
            return Err(missing(
                "/etc/ssl/certs/ca-certificates.crt",
                "ca-certificates",
            ));
        }
    }
    fs.libraries()?;

    let dockerfile = format!(
        "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nENV LANG=C.UTF-8\nLABEL {LABEL}=\"{tag}\"\nCMD [\"sh\"]\n"
    );
    fs.tar(&dockerfile)
}

fn missing(what: &str, package: &str) -> DockerError {
    helper_error(format!(
        "{what} is not on this host, and runwright's helper image is assembled from the host's packages: install it (apt-get install {package}) or set [runners.docker] helper_image (e.g. GitLab's registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v<version>)"
    ))
}

/// The runwright binary without its symbols, in a temporary file (`None` when `strip` is not installed).
fn strip(binary: &Path) -> Result<Option<tempfile::NamedTempFile>, DockerError> {
    let Ok(out) = tempfile::NamedTempFile::new() else {
        return Ok(None);
    };
    let status = std::process::Command::new("strip")
        .arg("-o")
        .arg(out.path())
        .arg(binary)
        .stderr(std::process::Stdio::null())
        .status();
    Ok(match status {
        Ok(s) if s.success() => Some(out),
        _ => None,
    })
}

fn find_exe(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Where a host path lands in the merged-/usr image: `/lib/x` → `usr/lib/x`.
fn image_path(host: &Path) -> String {
    let s = host.to_string_lossy();
    let s = s.trim_start_matches('/');
    for top in ["bin/", "lib/", "lib64/", "sbin/"] {
        if s.starts_with(top) {
            return format!("usr/{s}");
        }
    }
    s.to_string()
}

#[derive(Default)]
struct Rootfs {
    entries: BTreeMap<String, Entry>,
    /// Host ELF files whose libraries must come along.
    elves: BTreeSet<PathBuf>,
}

impl Rootfs {
    fn put(&mut self, path: &str, entry: Entry) {
        self.entries.insert(path.to_string(), entry);
    }

    /// A host executable (symlinks followed), recorded for `ldd`.
    fn elf(&mut self, path: &str, host: &Path, mode: u32) {
        let real = std::fs::canonicalize(host).unwrap_or_else(|_| host.to_path_buf());
        self.elves.insert(real.clone());
        self.put(path, Entry::File(real, mode));
    }

    /// git's helper programs: the ones that are git itself (hard links) become links to `/usr/bin/git`.
    fn git_core(&mut self, git: &Path) -> Result<(), DockerError> {
        use std::os::unix::fs::MetadataExt;
        let dir = Path::new("/usr/lib/git-core");
        let Ok(read) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        let git_meta =
            std::fs::metadata(git).map_err(|e| helper_error(format!("{}: {e}", git.display())))?;
        for entry in read.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let dest = format!("usr/lib/git-core/{name}");
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(&path) {
                    self.put(&dest, Entry::Symlink(target.to_string_lossy().to_string()));
                }
            } else if meta.is_file() {
                if meta.dev() == git_meta.dev() && meta.ino() == git_meta.ino() {
                    self.put(&dest, Entry::Symlink("/usr/bin/git".into()));
                } else {
                    let mode = meta.mode() & 0o7777;
                    if is_elf(&path) {
                        self.elf(&dest, &path, mode);
                    } else {
                        self.put(&dest, Entry::File(path, mode));
                    }
                }
            } else if meta.is_dir() {
                self.tree(&path, &dest);
            }
        }
        Ok(())
    }

    /// A host directory tree as it is (regular files, directories, symlinks).
    fn tree(&mut self, host: &Path, dest: &str) {
        use std::os::unix::fs::MetadataExt;
        for entry in walkdir::WalkDir::new(host)
            .follow_links(false)
            .into_iter()
            .flatten()
        {
            let Ok(rel) = entry.path().strip_prefix(host) else {
                continue;
            };
            let path = if rel.as_os_str().is_empty() {
                dest.to_string()
            } else {
                format!("{dest}/{}", rel.display())
            };
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(t) = std::fs::read_link(entry.path()) {
                    self.put(&path, Entry::Symlink(t.to_string_lossy().to_string()));
                }
            } else if meta.is_dir() {
                self.put(&path, Entry::Dir(meta.mode() & 0o7777));
            } else if meta.is_file() {
                self.put(
                    &path,
                    Entry::File(entry.path().to_path_buf(), meta.mode() & 0o7777),
                );
            }
        }
    }

    /// Every shared library `ldd` lists for the recorded executables, at the path `ldd` names (the loader too).
    fn libraries(&mut self) -> Result<(), DockerError> {
        let elves: Vec<PathBuf> = self.elves.iter().cloned().collect();
        let mut libs = BTreeSet::new();
        for chunk in elves.chunks(64) {
            let out = std::process::Command::new("ldd")
                .args(chunk)
                .output()
                .map_err(|e| helper_error(format!("running ldd (from libc-bin): {e}")))?;
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let lib = match words.as_slice() {
                    [_, "=>", path, ..] if path.starts_with('/') => *path,
                    [path, ..] if path.starts_with('/') && !path.ends_with(':') => *path,
                    _ => continue,
                };
                libs.insert(PathBuf::from(lib));
            }
        }
        for lib in libs {
            let dest = image_path(&lib);
            if self.entries.contains_key(&dest) {
                continue;
            }
            let real = std::fs::canonicalize(&lib).unwrap_or(lib);
            self.put(&dest, Entry::File(real, 0o755));
        }
        Ok(())
    }

    /// The context archive: every parent directory, then the entries in path order; owned by root, time 0.
    fn tar(self, dockerfile: &str) -> Result<Vec<u8>, DockerError> {
        let io = |e: std::io::Error| helper_error(format!("assembling the helper image: {e}"));
        let mut all: BTreeMap<String, Entry> = BTreeMap::new();
        for path in self.entries.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                all.entry(p.to_string_lossy().to_string())
                    .or_insert(Entry::Dir(0o755));
                parent = p.parent();
            }
        }
        all.extend(self.entries);
        let mut b = tar::Builder::new(Vec::new());
        let header = |kind: tar::EntryType, mode: u32, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(size);
            h
        };
        let mut df = header(tar::EntryType::Regular, 0o644, dockerfile.len() as u64);
        b.append_data(&mut df, "Dockerfile", dockerfile.as_bytes())
            .map_err(io)?;
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            "rootfs/",
            &[][..],
        )
        .map_err(io)?;
        for (path, entry) in all {
            let name = format!("rootfs/{path}");
            match entry {
                Entry::Dir(mode) => {
                    b.append_data(
                        &mut header(tar::EntryType::Directory, mode, 0),
                        format!("{name}/"),
                        &[][..],
                    )
                    .map_err(io)?;
                }
                Entry::Bytes(data, mode) => {
                    b.append_data(
                        &mut header(tar::EntryType::Regular, mode, data.len() as u64),
                        &name,
                        &data[..],
                    )
                    .map_err(io)?;
                }
                Entry::File(host, mode) => {
                    let f = std::fs::File::open(&host)
                        .map_err(|e| helper_error(format!("reading {}: {e}", host.display())))?;
                    let len = f.metadata().map_err(io)?.len();
                    b.append_data(&mut header(tar::EntryType::Regular, mode, len), &name, f)
                        .map_err(io)?;
                }
                Entry::Symlink(target) => {
                    b.append_link(
                        &mut header(tar::EntryType::Symlink, 0o777, 0),
                        &name,
                        &target,
                    )
                    .map_err(io)?;
                }
            }
        }
        b.into_inner().map_err(io)
    }
}

fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Labels of the images this module made, for listing.
pub fn labels(tag: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL.to_string(), tag.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_paths() {
        assert_eq!(
            image_path(Path::new("/lib/x86_64-linux-gnu/libc.so.6")),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            image_path(Path::new("/lib64/ld-linux-x86-64.so.2")),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(image_path(Path::new("/usr/lib/libz.so")), "usr/lib/libz.so");
    }

    #[test]
    fn the_tag_carries_version_and_hash() {
        let b = Binary {
            path: PathBuf::from("/x"),
            hash: "0123456789abcdef".into(),
        };
        let tag = b.default_tag();
        assert!(tag.starts_with("runwright/gitlab-runner-helper:"), "{tag}");
        assert!(
            tag.ends_with(&format!("-v{}-0123456789ab", env!("CARGO_PKG_VERSION"))),
            "{tag}"
        );
    }

    #[test]
    fn the_context_holds_the_helper_git_and_a_shell_with_their_libraries() {
        if find_exe("git").is_none() || find_exe("bash").is_none() {
            return;
        }
        let exe = find_exe("true").expect("true");
        let ctx = context(&exe, Layout::Contract, "t").expect("context");
        let mut archive = tar::Archive::new(&ctx[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        for want in [
            "Dockerfile",
            "rootfs/usr/bin/gitlab-runner-helper",
            "rootfs/usr/bin/git",
            "rootfs/usr/bin/sh",
            "rootfs/usr/bin/bash",
            "rootfs/usr/lib/git-core/git-remote-http",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(
            !names.iter().any(|n| n == "rootfs/usr/bin/runwright"),
            "contract layout has no runwright path"
        );
    }
}
