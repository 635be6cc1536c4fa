//! The local files a template names (`script_path`, `file` sources), read as the user who
//! started the build, checked for size and hash.

use sha2::{Digest, Sha256};

use crate::as_user::User;

/// Files a `file` customizer may upload.
pub(super) const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;

/// Reads a local file a template names, checking its size and hash. For a build another user
/// started, the file is opened as that user (see [`crate::as_user::open_file`]); either way it
/// must be a regular file, judged on the file opened.
pub(super) async fn read_local(
    path: &str,
    started_by: Option<&User>,
    sha256: Option<&str>,
    max: Option<u64>,
) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let too_big = |len: u64, max: u64| {
        format!("{path} is {len} bytes or more; the limit is {max} bytes (20 MB)")
    };
    let user = started_by.filter(|u| u.is_other());
    let file = crate::as_user::open_file(user, std::path::Path::new(path))
        .await
        .map_err(|e| match user {
            Some(_) => format!("{e} (who started the build), so kilnd will not read it for them"),
            None => e.to_string(),
        })?;
    let limit = max.map_or(u64::MAX, |m| m + 1);
    let data = tokio::task::spawn_blocking(move || {
        let mut data = Vec::new();
        file.take(limit).read_to_end(&mut data).map(|_| data)
    })
    .await
    .map_err(|e| format!("reading {path} failed: {e}"))?
    .map_err(|e| format!("cannot read {path}: {e}"))?;
    if let Some(max) = max.filter(|m| data.len() as u64 > *m) {
        return Err(too_big(data.len() as u64, max));
    }
    if let Some(want) = sha256 {
        let got = format!("{:x}", Sha256::digest(&data));
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!(
                "{path}: sha256 is {got}, the template expects {want}"
            ));
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn local_files_are_read_only_as_far_as_the_builds_starter_may() {
        // Files another user cannot read take root to make.
        if kiln_shared::paths::current_uid() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &std::path::Path, m| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(dir.path(), 0o755);
        let file = |name: &str, m| {
            let p = dir.path().join(name);
            std::fs::write(&p, name).unwrap();
            mode(&p, m);
            p.display().to_string()
        };
        let open = file("open.txt", 0o644);
        let secret = file("secret.txt", 0o600);
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let hidden = dir.path().join("private");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join("f.txt"), "f").unwrap();
        mode(&hidden.join("f.txt"), 0o644);
        mode(&hidden, 0o700);

        let other = User {
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
        };
        assert_eq!(
            read_local(&open, Some(&other), None, None).await.unwrap(),
            b"open.txt"
        );
        for path in [
            secret.clone(),
            link.display().to_string(),
            hidden.join("f.txt").display().to_string(),
        ] {
            let err = read_local(&path, Some(&other), None, None)
                .await
                .unwrap_err();
            assert!(err.contains("uid 4242") && err.contains(&path), "{err}");
        }
        // kilnd's own builds (and old records without a starter) read what kilnd may.
        let root = User {
            uid: 0,
            gid: 0,
            gids: vec![0],
        };
        assert!(read_local(&secret, Some(&root), None, None).await.is_ok());
        assert!(read_local(&secret, None, None, None).await.is_ok());
        // The size limit holds as the user too.
        let big = file("big.txt", 0o644);
        let err = read_local(&big, Some(&other), None, Some(3))
            .await
            .unwrap_err();
        assert!(err.contains("the limit is 3 bytes"), "{err}");
    }

    /// A template's file sources are regular files, whoever started the build: never a device
    /// that reads forever or kilnd's own process state.
    #[tokio::test]
    async fn local_sources_are_regular_files() {
        let root = User {
            uid: 0,
            gid: 0,
            gids: vec![0],
        };
        let other = User {
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
        };
        let mut starters = vec![None, Some(&root)];
        if kiln_shared::paths::current_uid() == 0 {
            starters.push(Some(&other));
        }
        for by in starters {
            for (path, what) in [
                ("/dev/zero", "is not a regular file"),
                (
                    "/proc/self/environ",
                    "is a file of a kernel pseudo-filesystem",
                ),
                (
                    "/proc/self/cmdline",
                    "is a file of a kernel pseudo-filesystem",
                ),
            ] {
                let err = read_local(path, by, None, Some(MAX_FILE_BYTES))
                    .await
                    .unwrap_err();
                assert!(err.starts_with(&format!("{path} {what}")), "{err}");
            }
        }
    }
}
