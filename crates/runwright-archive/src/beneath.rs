//! Paths below a directory, opened one component at a time with `openat(2)` and `O_NOFOLLOW`: a directory of
//! the tree that is swapped for a symlink while an archive is written or extracted makes the operation fail
//! (`ELOOP`/`ENOTDIR`) instead of reaching outside the tree. The root itself is trusted (the project directory
//! the caller names); everything below it is not, since a job's other processes may change it at any time.
//!
//! Writing reads every file through [`open_file`]; extraction creates, moves and finishes everything through
//! directory descriptors from [`open_dir`] and [`mkdir_all`].

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens `root` itself (a directory, reached however its path says).
pub(crate) fn open_root(root: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// The plain names of `rel`; anything else (`..`, `/`) is refused.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} leaves the directory", rel.display()),
            )),
        })
        .collect()
}

/// The directory `rel` below `dir`, every component a real directory (no symlink followed).
pub(crate) fn open_dir<Fd: AsFd>(dir: Fd, rel: &Path) -> io::Result<OwnedFd> {
    let mut cur = openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    for name in names(rel)? {
        cur = openat(&cur, name, DIR_FLAGS, Mode::empty())?;
    }
    Ok(cur)
}

/// The directory `rel` below `dir`, creating missing components with `mode` (never through a symlink);
/// `created` is told of each directory made.
pub(crate) fn mkdir_all<Fd: AsFd>(
    dir: Fd,
    rel: &Path,
    mode: u32,
    mut created: impl FnMut(&OwnedFd, &OsStr) -> io::Result<()>,
) -> io::Result<OwnedFd> {
    let mut cur = openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    for name in names(rel)? {
        match nix::sys::stat::mkdirat(&cur, name, Mode::from_bits_truncate(mode)) {
            Ok(()) => created(&cur, name)?,
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = openat(&cur, name, DIR_FLAGS, Mode::empty())?;
    }
    Ok(cur)
}

/// The parent directory of `rel` below `dir` and `rel`'s last name.
pub(crate) fn open_parent<Fd: AsFd>(dir: Fd, rel: &Path) -> io::Result<(OwnedFd, &OsStr)> {
    let name = rel.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", rel.display()),
        )
    })?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    Ok((open_dir(dir, parent)?, name))
}

/// The regular file `rel` below `root` for reading; a symlink anywhere on the way (the file itself included)
/// is an error.
pub(crate) fn open_file(root: &Path, rel: &Path) -> io::Result<File> {
    let root = open_root(root)?;
    let (parent, name) = open_parent(&root, rel)?;
    let fd = openat(
        &parent,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_on_the_way_is_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a/f"), "in").unwrap();
        std::fs::write(outside.join("f"), "out").unwrap();
        assert!(open_file(&root, Path::new("a/f")).is_ok());
        std::os::unix::fs::symlink(&outside, root.join("l")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), root.join("a/lf")).unwrap();
        assert!(open_file(&root, Path::new("l/f")).is_err());
        assert!(open_file(&root, Path::new("a/lf")).is_err());
        assert!(open_file(&root, Path::new("../outside/f")).is_err());
        let fd = open_root(&root).unwrap();
        assert!(open_dir(&fd, Path::new("l")).is_err());
        assert!(mkdir_all(&fd, Path::new("l/new"), 0o755, |_, _| Ok(())).is_err());
        assert!(!outside.join("new").exists());
        assert!(mkdir_all(&fd, Path::new("a/b/c"), 0o755, |_, _| Ok(())).is_ok());
        assert!(root.join("a/b/c").is_dir());
    }
}
