//! Image files on disk: sealing a finished file into place (hash, fsync, rename, fsync the
//! directory), removing files, sweeping leftovers of work a dead daemon left behind, and the
//! permission check for files a caller asks kilnd to read.

use std::fs::File;
use std::io::{self, Read};
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

/// Why an export cannot go where it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0} is a directory; name the file to write, e.g. {0}/image.raw")]
    IsDirectory(String),
    #[error("{0} exists; set `overwrite = true` in the export target to replace it")]
    Exists(String),
    #[error("{0} is inside kilnd's data directory {1}; export somewhere else")]
    InDataDir(String, String),
    #[error("{path} belongs to uid {owner} in a sticky directory; uid {uid} may not replace it, so kilnd will not either")]
    Sticky { path: String, owner: u32, uid: u32 },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: rustix::io::Errno,
    },
}

/// Whether the directory `dir` (an open handle) is `root` or inside it, walking up by `..` from
/// the handle itself: symlinks and names on the way do not matter.
pub fn is_inside(dir: &File, root: &Path) -> bool {
    use rustix::fs::{fstat, openat, stat, Mode, OFlags};
    let Ok(root) = stat(root) else {
        return false;
    };
    let same =
        |a: &rustix::fs::Stat, b: &rustix::fs::Stat| a.st_dev == b.st_dev && a.st_ino == b.st_ino;
    let Ok(mut cur) = rustix::io::dup(dir) else {
        return false;
    };
    for _ in 0..4096 {
        let Ok(here) = fstat(&cur) else {
            return false;
        };
        if same(&here, &root) {
            return true;
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let Ok(up) = openat(&cur, "..", flags, Mode::empty()) else {
            return false;
        };
        match fstat(&up) {
            Ok(above) if !same(&above, &here) => cur = up,
            _ => return false, // "/" is its own parent.
        }
    }
    false
}

/// A file kilnd (root, in system mode) writes on a user's behalf outside its data dir, pinned to
/// its directory: the directory was opened once (as the user, see
/// [`crate::as_user::open_dir_to_write`]) and everything goes through that handle. The temporary
/// `NAME.partial` is created in it exclusively (never through a symlink left there), written (by
/// path [`Pinned::write_path`], kilnd's handle), hashed, synced and renamed over `NAME`: without
/// `overwrite`, only if no `NAME` exists at that very moment (`RENAME_NOREPLACE`). A directory
/// swapped for a symlink after the checks changes nothing.
pub struct Pinned {
    dir: File,
    name: std::ffi::OsString,
    partial: std::ffi::OsString,
    file: File,
    overwrite: bool,
    sealed: bool,
}

impl Pinned {
    /// Creates `name.partial` in `dir` (the open directory `shown` names), refusing a `name`
    /// that is a directory, or that exists without `overwrite`; with `user`, the file is
    /// theirs, and in a sticky directory (like /tmp) never replaces someone else's.
    pub fn create(
        dir: File,
        shown: &Path,
        name: &std::ffi::OsStr,
        user: Option<&User>,
        overwrite: bool,
    ) -> Result<Pinned, PinError> {
        use rustix::fs::{fstat, openat, statat, unlinkat, AtFlags, FileType, Mode, OFlags};
        let dest = shown.join(name).display().to_string();
        let io = |what, source| PinError::Io {
            what,
            path: dest.clone(),
            source,
        };
        match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(PinError::IsDirectory(dest));
            }
            Ok(_) if !overwrite => return Err(PinError::Exists(dest)),
            Ok(st) => {
                // In a sticky directory only the entry's or the directory's owner may replace it.
                let blocks = |u: &User| {
                    fstat(&dir).is_ok_and(|d| {
                        d.st_mode & 0o1000 != 0 && d.st_uid != u.uid && st.st_uid != u.uid
                    })
                };
                if let Some(u) = user.filter(|u| blocks(u)) {
                    return Err(PinError::Sticky {
                        path: dest,
                        owner: st.st_uid,
                        uid: u.uid,
                    });
                }
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io("look at", e)),
        }
        let mut partial = name.to_owned();
        partial.push(PARTIAL);
        match unlinkat(&dir, partial.as_os_str(), AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(io("remove the leftover partial file of", e)),
        }
        let fd = openat(
            &dir,
            partial.as_os_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io("create the partial file of", e))?;
        let file = File::from(fd);
        let pinned = Pinned {
            dir,
            name: name.to_owned(),
            partial,
            file,
            overwrite,
            sealed: false,
        };
        if let Some(u) = user {
            std::os::unix::fs::fchown(&pinned.file, Some(u.uid), Some(u.gid)).map_err(|e| {
                io(
                    "give to its user the partial file of",
                    rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::PERM),
                )
            })?;
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

    /// Hashes the written file, syncs it, renames it into place (not over an existing file
    /// unless `overwrite`: that fails as [`io::ErrorKind::AlreadyExists`]) and syncs the
    /// directory.
    pub fn seal(mut self) -> io::Result<(u64, String)> {
        use rustix::fs::{renameat_with, RenameFlags};
        use std::io::Seek;
        self.file.rewind()?;
        let (size, sha256) = hash(&mut self.file)?;
        self.file.sync_all()?;
        let flags = if self.overwrite {
            RenameFlags::empty()
        } else {
            RenameFlags::NOREPLACE
        };
        renameat_with(
            &self.dir,
            self.partial.as_os_str(),
            &self.dir,
            self.name.as_os_str(),
            flags,
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
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    /// `Pinned::create` of `dir/name` as kilnd's own handle on `dir`.
    fn pin(
        dir: &Path,
        name: &str,
        user: Option<&User>,
        overwrite: bool,
    ) -> Result<Pinned, PinError> {
        let handle = File::open(dir).unwrap();
        Pinned::create(handle, dir, std::ffi::OsStr::new(name), user, overwrite)
    }

    #[test]
    fn pinned_files_replace_nothing_unasked_and_follow_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("adir")).unwrap();
        let err = pin(d, "adir", None, true).err().unwrap();
        assert!(matches!(err, PinError::IsDirectory(_)), "{err}");
        std::fs::write(d.join("old.raw"), "old").unwrap();
        let err = pin(d, "old.raw", None, false).err().unwrap();
        assert!(err.to_string().contains("set `overwrite = true`"), "{err}");

        // A file that appears while the export is written is not replaced either: the rename
        // itself refuses (RENAME_NOREPLACE).
        let pinned = pin(d, "late.raw", None, false).unwrap();
        std::fs::write(pinned.write_path(), "new").unwrap();
        std::fs::write(d.join("late.raw"), "theirs").unwrap();
        let err = pinned.seal().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            std::fs::read_to_string(d.join("late.raw")).unwrap(),
            "theirs"
        );
        assert!(!d.join("late.raw.partial").exists());

        let pinned = pin(d, "old.raw", None, true).unwrap();
        std::fs::write(pinned.write_path(), "new").unwrap();
        pinned.seal().unwrap();
        assert_eq!(std::fs::read_to_string(d.join("old.raw")).unwrap(), "new");

        // A symlink left where the temporary file goes is replaced, never followed.
        let victim = d.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, d.join("out.raw.partial")).unwrap();
        let pinned = pin(d, "out.raw", None, false).unwrap();
        std::fs::write(pinned.write_path(), "abc").unwrap();
        let (size, _) = pinned.seal().unwrap();
        assert_eq!(size, 3);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");

        // Dropped unsealed: the temporary file goes.
        drop(pin(d, "gone.raw", None, false).unwrap());
        assert!(!d.join("gone.raw.partial").exists());
    }

    #[test]
    fn pinned_files_of_another_user_are_theirs_and_spare_others_in_sticky_dirs() {
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let user = User {
            uid: 4242,
            gid: 4343,
            gids: vec![4343],
        };
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::write(shared.join("roots"), "x").unwrap();
        let err = pin(&shared, "roots", Some(&user), true).err().unwrap();
        assert!(
            err.to_string().contains("uid 4242 may not replace it"),
            "{err}"
        );
        std::os::unix::fs::chown(shared.join("roots"), Some(4242), None).unwrap();
        let pinned = pin(&shared, "roots", Some(&user), true).unwrap();
        pinned.seal().unwrap();
        let meta = std::fs::metadata(shared.join("roots")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    }

    #[test]
    fn insideness_goes_by_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("images/deep")).unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(data.join("images"), dir.path().join("link")).unwrap();
        let inside = |p: &Path| is_inside(&File::open(p).unwrap(), &data);
        assert!(inside(&data));
        assert!(inside(&data.join("images/deep")));
        assert!(inside(&dir.path().join("link")), "through a symlink");
        assert!(!inside(&dir.path().join("elsewhere")));
        assert!(!inside(dir.path()));
        assert!(!inside(Path::new("/")));
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
