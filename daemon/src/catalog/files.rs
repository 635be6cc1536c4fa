//! Image files on disk: sealing a finished file into place (hash, fsync, rename, fsync the
//! directory), removing files, sweeping leftovers of work a dead daemon left behind, and the
//! permission check for files a caller asks kilnd to read.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::as_user::User;

/// Suffix of a file that is still being written; never a finished image.
pub const PARTIAL: &str = ".partial";
/// Prefix of the bootstrap script written next to the images while it runs.
pub const SCRIPT_PREFIX: &str = ".bootstrap-";
/// Prefix of the bootstrap script's work directories (`mktemp -d kiln-bootstrap.XXXXXX`).
pub const WORK_PREFIX: &str = "kiln-bootstrap.";

/// `path` with `.partial` appended: where a file is written before it is sealed as `path`.
pub fn partial_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(PARTIAL);
    PathBuf::from(s)
}

/// Size and lowercase hex SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    hash(&mut file)
}

fn hash(file: &mut File) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Flushes a directory's entries (a rename into it) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes `written` the file `dest` so that a crash at any moment leaves `dest` either absent
/// (or as it was) or whole: hashes it, fsyncs it, renames it and fsyncs the directory.
/// Returns the file's size and SHA-256.
pub fn seal(written: &Path, dest: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(written)?;
    let (size, sha256) = hash(&mut file)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(written, dest)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))?;
    Ok((size, sha256))
}

/// Copies `source` (a caller's file, already open) into the new kilnd-private file `to` (0600,
/// created exclusively), keeping holes: only the data ranges `SEEK_DATA`/`SEEK_HOLE` report are
/// read, so a sparse raw disk costs what it holds. Returns the first 4 KiB of the copy, the
/// header its format is judged by.
pub fn copy_private(source: &File, to: &Path) -> io::Result<Vec<u8>> {
    use rustix::fs::{seek, SeekFrom};
    use std::io::Write;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    let len = source.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let start = match seek(source, SeekFrom::Data(pos)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem without SEEK_DATA: all of it is data.
            Err(_) => pos,
        };
        let end = seek(source, SeekFrom::Hole(start)).unwrap_or(len).min(len);
        let mut at = start;
        while at < end {
            let want = usize::try_from(end - at)
                .unwrap_or(buf.len())
                .min(buf.len());
            let n = match source.read_at(&mut buf[..want], at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            out.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        if at < end {
            break; // The file shrank meanwhile: the rest is a hole.
        }
        pos = end;
    }
    out.set_len(len)?;
    out.flush()?;
    let mut header = vec![0u8; 4096];
    let n = out.read_at(&mut header, 0)?;
    header.truncate(n);
    Ok(header)
}

/// Removes a file; one that is not there is fine.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes an image's file and every temporary file of its id (`ID.*.partial*`).
pub fn remove_image_files(dir: &Path, id: &str, path: &Path) -> io::Result<()> {
    remove_file(path)?;
    remove_file(&partial_of(path))?;
    let prefix = format!("{id}.");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name.starts_with(&prefix) && name.contains(PARTIAL))
                || name == format!("{SCRIPT_PREFIX}{id}.sh")
            {
                remove_file(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// Mount points at or below `dir`, from /proc/self/mountinfo (octal escapes undone).
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first, so nested mounts come off in order.
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(char::from(b)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes what unfinished work left in the images directory: `*.partial*` files, bootstrap
/// scripts and bootstrap work directories (unmounting what a killed bootstrap left mounted
/// there first; a directory that still has a mount inside is left alone). Only call this while
/// no catalog work runs. Returns what was removed.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && name.starts_with(WORK_PREFIX) {
            for mount in mounts_below(&path) {
                let _ = std::process::Command::new("umount").arg(&mount).status();
            }
            if !mounts_below(&path).is_empty() {
                tracing::warn!(
                    "not removing {}: something is still mounted inside it",
                    path.display()
                );
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => removed.push(path),
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        } else if !is_dir && (name.contains(PARTIAL) || name.starts_with(SCRIPT_PREFIX)) {
            match remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            }
        }
    }
    removed
}

/// A file kilnd (root, in system mode) writes on a user's behalf outside its data dir, pinned to
/// its directory: the directory is opened once and checked through that handle, the temporary
/// `NAME.partial` is created in it exclusively (never through a symlink left there) and then
/// written (by path [`Pinned::write_path`], kilnd's handle), hashed, synced and renamed through
/// the handles. A directory swapped for a symlink after the checks changes nothing.
pub struct Pinned {
    dir: File,
    name: std::ffi::OsString,
    partial: std::ffi::OsString,
    file: File,
    sealed: bool,
}

impl Pinned {
    /// Opens `dest`'s directory and creates `dest.partial` in it; with `user`, only if that
    /// user may create `dest` there (by the permission bits: search on every directory above, write on its own,
    /// and in a sticky directory like /tmp never over someone else's file), and the file is theirs.
    pub fn create(dest: &Path, user: Option<User>) -> Result<Pinned, String> {
        use rustix::fs::{openat, statat, unlinkat, AtFlags, Mode, OFlags};
        let shown = dest.display();
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(format!("{shown} names no file"));
        };
        let dir =
            File::open(parent).map_err(|e| format!("cannot open {}: {e}", parent.display()))?;
        if let Some(u) = user {
            let meta = dir
                .metadata()
                .map_err(|e| format!("{}: {e}", parent.display()))?;
            let bits = |uid: u32, gid: u32, mode: u32| {
                if uid == u.uid {
                    mode >> 6
                } else if u.gids.contains(&gid) {
                    mode >> 3
                } else {
                    mode
                }
            };
            let writable = bits(meta.uid(), meta.gid(), meta.mode()) & 0o3 == 0o3;
            let reachable = parent.ancestors().skip(1).all(|d| {
                std::fs::metadata(d).is_ok_and(|m| bits(m.uid(), m.gid(), m.mode()) & 0o1 == 0o1)
            });
            let sticky_blocks = meta.mode() & 0o1000 != 0
                && meta.uid() != u.uid
                && statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| st.st_uid != u.uid);
            if !(writable && reachable && meta.is_dir()) || sticky_blocks {
                return Err(format!(
                    "uid {} may not write {shown}, so kilnd will not write it for them",
                    u.uid
                ));
            }
        }
        let mut partial = name.to_owned();
        partial.push(PARTIAL);
        match unlinkat(&dir, partial.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(format!("cannot remove {shown}{PARTIAL}: {e}")),
        }
        let fd = openat(
            &dir,
            partial.as_os_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| format!("cannot create {shown}{PARTIAL}: {e}"))?;
        let file = File::from(fd);
        let pinned = Pinned {
            dir,
            name: name.to_owned(),
            partial,
            file,
            sealed: false,
        };
        if let Some(u) = user {
            std::os::unix::fs::fchown(&pinned.file, Some(u.uid), Some(u.gid))
                .map_err(|e| format!("cannot give {shown}{PARTIAL} to uid {}: {e}", u.uid))?;
        }
        Ok(pinned)
    }

    /// The path by which another process (qemu-img) writes the temporary file: kilnd's own
    /// handle on it, whatever its name points at by then.
    pub fn write_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// Hashes the written file, syncs it, renames it into place and syncs the directory.
    pub fn seal(mut self) -> io::Result<(u64, String)> {
        use std::io::Seek;
        self.file.rewind()?;
        let (size, sha256) = hash(&mut self.file)?;
        self.file.sync_all()?;
        rustix::fs::renameat(
            &self.dir,
            self.partial.as_os_str(),
            &self.dir,
            self.name.as_os_str(),
        )?;
        self.dir.sync_all()?;
        self.sealed = true;
        Ok((size, sha256))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if !self.sealed {
            let _ = rustix::fs::unlinkat(
                &self.dir,
                self.partial.as_os_str(),
                rustix::fs::AtFlags::empty(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pinned_files_follow_the_users_permissions_and_no_symlink() {
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mode =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        mode(dir.path(), 0o755);
        let user = User {
            uid: 4242,
            gid: 4343,
            gids: &[4343],
        };
        let create = |p: &Path, u| Pinned::create(p, u).map(drop);
        assert!(
            create(&dir.path().join("new"), Some(user)).is_err(),
            "0755 root dir"
        );
        assert!(create(&dir.path().join("new"), None).is_ok(), "kilnd's own");
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        mode(&shared, 0o1777);
        std::fs::write(shared.join("roots"), "x").unwrap();
        assert!(create(&shared.join("new"), Some(user)).is_ok());
        let err = create(&shared.join("roots"), Some(user)).unwrap_err();
        assert!(err.contains("uid 4242 may not write"), "{err}");
        std::os::unix::fs::chown(shared.join("roots"), Some(4242), None).unwrap();
        assert!(
            create(&shared.join("roots"), Some(user)).is_ok(),
            "their own file"
        );

        // A symlink left where the temporary file goes is replaced, never followed; the file
        // is the user's, written through kilnd's handle, and lands under its name.
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4343)).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, theirs.join("out.raw.partial")).unwrap();
        let pinned = Pinned::create(&theirs.join("out.raw"), Some(user)).unwrap();
        std::fs::write(pinned.write_path(), "abc").unwrap();
        let (size, _) = pinned.seal().unwrap();
        assert_eq!(size, 3);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let meta = std::fs::metadata(theirs.join("out.raw")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.len()), (4242, 4343, 3));
        assert!(!theirs.join("out.raw.partial").exists());

        // Dropped unsealed: the temporary file goes.
        drop(Pinned::create(&theirs.join("gone.raw"), Some(user)).unwrap());
        assert!(!theirs.join("gone.raw.partial").exists());
        mode(dir.path(), 0o700);
        assert!(
            create(&shared.join("new"), Some(user)).is_err(),
            "cannot reach the directory"
        );
    }

    #[test]
    fn seal_hashes_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let written = dir.path().join("a.qcow2.partial");
        std::fs::write(&written, b"abc").unwrap();
        let dest = dir.path().join("a.qcow2");
        let (size, sha) = seal(&written, &dest).unwrap();
        assert_eq!(size, 3);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(dest.exists() && !written.exists());
        assert_eq!(partial_of(&dest), written);
    }

    #[test]
    fn sweep_removes_leftovers_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "img-1.qcow2",
            "img-2.qcow2.partial",
            "img-3.bootstrap.partial.tmp",
            ".bootstrap-img-3.sh",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::create_dir_all(d.join("kiln-bootstrap.abc123/snap")).unwrap();
        let mut removed: Vec<String> = sweep(d)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                ".bootstrap-img-3.sh",
                "img-2.qcow2.partial",
                "img-3.bootstrap.partial.tmp",
                "kiln-bootstrap.abc123"
            ]
        );
        assert!(d.join("img-1.qcow2").exists());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }
}
