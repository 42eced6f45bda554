//! Files and directories a service may trust (issue 17): what another local user could have planted or may
//! still change is refused. Used for the journal's own files and by the service's lock and state files
//! (`runwright` `ops/state.rs`).
//!
//! A file is trusted when it was opened without following a symbolic link at its end (`O_NOFOLLOW`: a link to
//! someone else's file, or to a file of ours the link's owner wants clobbered, is refused), it is a regular
//! file, it belongs to one of the expected owners, and no one but its owner may write to it (no group or other
//! write bit). A directory is private when it belongs to the expected owner and is not writable by group or
//! others: nobody else can create, replace or remove an entry in it.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// This process's effective user id: the owner its files must have.
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Group or others may write.
pub fn writable_by_others(meta: &Metadata) -> bool {
    meta.mode() & 0o022 != 0
}

/// Opens `path` with `options` without following a symbolic link at its end, then checks the file (see
/// [`check_file`]). The error says what is wrong with the file and what to do.
pub fn open(path: &Path, options: &mut OpenOptions, owners: &[u32]) -> io::Result<File> {
    let file = options
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "it is a symbolic link, which is never followed here (another user may have planted it): remove it",
                )
            } else {
                e
            }
        })?;
    check_file(&file.metadata()?, owners)?;
    Ok(file)
}

/// A regular file owned by one of `owners` that no one else may write to.
pub fn check_file(meta: &Metadata, owners: &[u32]) -> io::Result<()> {
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it is not a regular file: remove it",
        ));
    }
    if !owners.contains(&meta.uid()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it belongs to uid {}, not to {}: another user may have made it; remove it",
                meta.uid(),
                owner_names(owners)
            ),
        ));
    }
    if writable_by_others(meta) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "group or others may write to it (mode {:o}): chmod go-w it, or remove it",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// A directory owned by `owner` in which nobody else may create, replace or remove entries.
pub fn check_private_dir(path: &Path, owner: u32) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it is not a directory",
        ));
    }
    if meta.uid() != owner {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "it belongs to uid {}, not to uid {owner}: another user could read or swap what is kept there",
                meta.uid()
            ),
        ));
    }
    if writable_by_others(&meta) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "group or others may write to it (mode {:o}): chmod go-w it",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn owner_names(owners: &[u32]) -> String {
    owners
        .iter()
        .map(|u| format!("uid {u}"))
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rw() -> OpenOptions {
        let mut o = OpenOptions::new();
        o.read(true).write(true).create(true).truncate(false);
        o
    }

    #[test]
    fn a_symbolic_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, "precious").expect("target");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let err = open(&link, &mut rw(), &[euid()]).expect_err("link refused");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
    }

    #[test]
    fn a_file_others_may_write_or_of_another_owner_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, "x").expect("file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = open(&path, &mut rw(), &[euid()]).expect_err("world-writable refused");
        assert!(err.to_string().contains("chmod go-w"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        open(&path, &mut rw(), &[euid()]).expect("own file, not writable by others");
        let err = open(&path, &mut rw(), &[euid().wrapping_add(4242)]).expect_err("not the owner");
        assert!(err.to_string().contains("belongs to uid"), "{err}");
    }

    #[test]
    fn private_dirs_are_the_owners_and_not_writable_by_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        check_private_dir(dir.path(), euid()).expect("private");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        assert!(check_private_dir(dir.path(), euid()).is_err());
        assert!(check_private_dir(dir.path(), euid().wrapping_add(4242)).is_err());
    }
}
