//! The catalog end to end over a temporary store: imports as another user, publish, replace,
//! lease, delete and export, with the files each leaves behind.

#![allow(clippy::unwrap_used)]

use super::*;
use kiln_shared::protocol::{ShareMember, ShareStatus};

/// A catalog with its data directory at `DIR/data`; the rest of DIR is "elsewhere".
fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let store = Arc::new(Store::open(&data.join("kiln.redb")).unwrap());
    let catalog = Catalog::open(store, data.join("images")).unwrap();
    (dir, catalog)
}

fn qemu_img_available() -> bool {
    std::process::Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn another_users_import_reads_only_what_they_may() {
    if !qemu_img_available() || kiln_shared::paths::current_uid() != 0 {
        eprintln!("skipped: needs qemu-img and root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let (dir, catalog) = catalog();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    for p in [dir.path(), files.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let disk = |name: &str, mode| {
        let p = files.join(name);
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&p)
            .arg("64M")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    };
    let who = Requester {
        project: "p".into(),
        admin: false,
        user: crate::as_user::User {
            uid: 4242,
            gid: 4242,
            gids: vec![4242],
        },
        admin_group: None,
    };
    let theirs = disk("readable.qcow2", 0o644);
    let image = catalog
        .import(
            &who,
            &theirs,
            "readable",
            "debian-12",
            Some("debian"),
            false,
        )
        .await
        .unwrap();
    assert_eq!(image.virtual_size, 64 << 20);

    // What uid 4242 may not read all answers alike, whatever is there: a secret file, a
    // missing one, the hidden directory, a symlink in it to a file they could read.
    let hidden = dir.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::os::unix::fs::symlink(&theirs, hidden.join("link")).unwrap();
    std::fs::copy(&theirs, hidden.join("secret.qcow2")).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let secret = disk("secret.qcow2", 0o600);
    for path in [
        secret,
        hidden.join("nonexistent").display().to_string(),
        hidden.join("secret.qcow2").display().to_string(),
        hidden.display().to_string(),
        hidden.join("link").display().to_string(),
    ] {
        let err = catalog
            .import(&who, &path, "secret", "debian-12", None, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read {path} as uid 4242: Permission denied; kilnd imports only \
                 files the caller can read"
            )
        );
    }

    // A backing file in the caller's own bytes is refused before qemu-img opens anything,
    // and so is a device or a /proc file.
    let root_only = dir.path().join("root-only");
    std::fs::write(&root_only, "TOPSECRET").unwrap();
    let evil = files.join("evil.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b"])
        .arg(&root_only)
        .arg(&evil)
        .arg("1M")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o644)).unwrap();
    let evil = evil.display().to_string();
    let err = catalog
        .import(&who, &evil, "evil", "debian-12", None, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidParams, "{err}");
    assert!(err.to_string().contains("has a backing file"), "{err}");
    for special in ["/dev/zero", "/proc/self/environ"] {
        let err = catalog
            .import(&who, special, "special", "debian-12", None, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParams, "{err}");
        assert!(err.to_string().contains("name a regular file"), "{err}");
    }
    let left: Vec<_> = std::fs::read_dir(catalog.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(files::PARTIAL))
        .collect();
    assert!(left.is_empty(), "no private copy is left: {left:?}");
}

/// The private copy keeps the caller's holes and bytes exactly.
#[test]
fn private_copies_are_sparse_and_exact() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("sparse.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(256 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", (256 << 20) - 4).unwrap();
    drop(f);
    let copy = dir.path().join("copy");
    let header = files::copy_private(&std::fs::File::open(&src).unwrap(), &copy).unwrap();
    assert_eq!(&header[..4], b"head");
    assert_eq!(sha256_file(&src).unwrap(), sha256_file(&copy).unwrap());
    let meta = std::fs::metadata(&copy).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(meta.blocks() * 512 < 1 << 20, "{} blocks", meta.blocks());
    assert!(files::copy_private(&std::fs::File::open(&src).unwrap(), &copy).is_err());
}

#[tokio::test]
async fn publish_and_export_are_atomic_and_hashed() {
    if !qemu_img_available() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let (dir, catalog) = catalog();
    let src = dir.path().join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&src)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success());
    let meta = PublishMeta {
        name: "web".into(),
        os: "debian-12".into(),
        login: crate::store::Login {
            family: "debian".into(),
            default_user: "cloud".into(),
        },
        project: "p".into(),
        template: Some("web".into()),
        template_revision: Some(3),
        build: Some(7),
        min_disk_gb: 0,
        share_with: vec!["q".into(), "p".into()],
        from_instance: None,
        parent_image: None,
        description: None,
        trigger: None,
    };
    let first = catalog.publish(&src, meta.clone()).await.unwrap();
    assert_eq!(first.state, kiln_shared::protocol::ImageState::Available);
    assert_eq!(first.virtual_size, 64 << 20);
    assert_eq!(first.min_disk_gb, 1);
    let pending_q = vec![ShareMember {
        project: "q".into(),
        status: ShareStatus::Pending,
    }];
    assert_eq!(first.shared_with, pending_q);
    let (size, sha) = sha256_file(Path::new(&first.path)).unwrap();
    assert_eq!((size, sha), (first.file_size, first.sha256.clone()));

    // A second publish of the same name replaces the first, keeping its shares.
    let second = catalog
        .publish(
            &src,
            PublishMeta {
                share_with: vec![],
                from_instance: None,
                parent_image: None,
                description: None,
                ..meta
            },
        )
        .await
        .unwrap();
    assert_eq!(second.shared_with, pending_q);
    assert!(!Path::new(&first.path).exists());
    let who = Requester {
        project: "p".into(),
        admin: false,
        user: crate::as_user::User {
            uid: 4242,
            gid: 4242,
            gids: vec![],
        },
        admin_group: None,
    };
    let list = catalog.list(&who, None).await.unwrap();
    assert_eq!(
        list.iter().map(|i| &i.id).collect::<Vec<_>>(),
        vec![&second.id]
    );

    // Pending, q cannot build from it; accepted, it can.
    let q = Requester {
        project: "q".into(),
        ..who.clone()
    };
    let err = catalog.lease("q", "web").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    catalog
        .answer(&q, "web", ShareStatus::Accepted)
        .await
        .unwrap();
    let lease = catalog.lease("q", "web").await.unwrap();

    // A shared, leased image is not deleted, unless by force: then its file stays until the
    // lease drops.
    let err = catalog.delete(&who, "web", false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let text = err.to_string();
    assert!(text.contains("shared with project q (accepted)"), "{text}");
    assert!(text.contains("1 build or warm start reading it"), "{text}");
    catalog.delete(&who, "web", true).await.unwrap();
    assert!(Path::new(&second.path).exists(), "the lease still reads it");
    let err = catalog.lease("q", &second.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "deleting: {err}");
    drop(lease);
    assert!(!Path::new(&second.path).exists());
    assert!(catalog.store.get_image(&second.id).unwrap().is_none());

    let dest = dir.path().join("out.vhd");
    let (path, size, sha) = catalog
        .export(&src, "vhd", &dest, None, false)
        .await
        .unwrap();
    assert_eq!(path, dest);
    assert_eq!(sha256_file(&dest).unwrap(), (size, sha));
    assert!(!files::partial_of(&dest).exists());
    let err = catalog
        .export(&src, "vdi", &dest, None, false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidParams);

    // Where an export may not go, whoever asks: over a file without `overwrite`, onto a
    // directory, into kilnd's data directory (its store included, by any path).
    let export = |to: PathBuf, overwrite| {
        let src = src.clone();
        let catalog = &catalog;
        async move { catalog.export(&src, "raw", &to, None, overwrite).await }
    };
    let err = export(dest.clone(), false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("set `overwrite = true`"), "{err}");
    assert_eq!(sha256_file(&dest).unwrap().0, size, "left alone");
    export(dest.clone(), true).await.unwrap();
    assert_eq!(
        sha256_file(&dest).unwrap().0,
        64 << 20,
        "replaced by the raw export"
    );
    let err = export(dir.path().join("data"), true).await.unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("via")).unwrap();
    for inside in [
        dir.path().join("data/kiln.redb"),
        dir.path().join("via/kiln.redb"),
        catalog.dir().join("x.raw"),
    ] {
        let err = export(inside.clone(), true).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParams, "{err}");
        assert!(
            err.to_string().contains("inside kilnd's data directory"),
            "{err}"
        );
    }

    // For a build another user started, kilnd writes only where they may write, and the
    // file is theirs. (Making files of another user takes root.)
    if kiln_shared::paths::current_uid() == 0 {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let other = crate::as_user::User {
            uid: 4242,
            gid: 4343,
            gids: vec![4343],
        };
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(dir.path(), 0o755).unwrap();
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).unwrap();
        mode(&closed, 0o755).unwrap();
        let err = catalog
            .export(&src, "raw", &closed.join("x.raw"), Some(&other), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        assert!(err.to_string().contains("as uid 4242"), "{err}");
        assert!(!closed.join("x.raw").exists());
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(4242), Some(4343)).unwrap();
        let (path, _, _) = catalog
            .export(&src, "raw", &theirs.join("x.raw"), Some(&other), false)
            .await
            .unwrap();
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        // A writable directory reached through one they cannot search is not theirs to use.
        let hidden = dir.path().join("hidden");
        std::fs::create_dir_all(hidden.join("open")).unwrap();
        mode(&hidden.join("open"), 0o777).unwrap();
        mode(&hidden, 0o700).unwrap();
        std::os::unix::fs::symlink(hidden.join("open"), theirs.join("door")).unwrap();
        let err = catalog
            .export(&src, "raw", &theirs.join("door/x.raw"), Some(&other), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        assert!(!hidden.join("open/x.raw").exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(catalog.dir()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
