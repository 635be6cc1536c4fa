//! Who may do what to an image: the [`Requester`], who counts as an admin, and
//! [`Requester::may_manage`], the one rule for changing an image (warming, deleting, sharing).
//! Who sees an image at all is [`ImageRecord::visibility_for`].

use kiln_shared::protocol::Visibility;

use super::{CatalogError, ImageRecord};
use crate::access::{IdTable, Peer};
use crate::as_user::User;

/// Who asks the catalog for something: the project they act in, whether they may manage public
/// images, and their credentials (for files they ask kilnd to read).
#[derive(Debug, Clone)]
pub struct Requester {
    pub project: String,
    pub admin: bool,
    pub user: User,
    /// The configured admin group, for messages.
    pub admin_group: Option<String>,
}

impl Requester {
    pub fn new(peer: &Peer, project: &str, admin_group: Option<&str>) -> Requester {
        Requester {
            project: project.to_string(),
            admin: is_admin(peer, admin_group),
            user: peer.user.clone(),
            admin_group: admin_group.map(str::to_string),
        }
    }

    pub fn user(&self) -> &User {
        &self.user
    }

    pub(super) fn needs_admin(&self, what: &str) -> Result<(), CatalogError> {
        if self.admin {
            return Ok(());
        }
        let how = match &self.admin_group {
            Some(g) => format!("membership in the admin group {g:?}"),
            None => "an admin group (set admin_group in kilnd.toml and join it)".to_string(),
        };
        Err(CatalogError::Forbidden(format!(
            "{what} manages public images, which needs root, kilnd's own user or {how}; uid {} \
             has none of these",
            self.user.uid
        )))
    }
}

/// Whether `peer` may manage public images: root, the daemon's own user, or a member of
/// `admin_group` (a group name or number).
pub fn is_admin(peer: &Peer, admin_group: Option<&str>) -> bool {
    peer.user.uid == 0
        || peer.user.uid == kiln_shared::paths::current_uid()
        || admin_group
            .and_then(|g| IdTable::groups().id_of(g))
            .is_some_and(|gid| peer.user.gids.contains(&gid))
}

/// What a project does to an image beyond reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Manage {
    /// Save a booted VM of it (warm start).
    Warm,
    Delete,
    Share,
    Unshare,
}

impl Manage {
    fn verb(self) -> &'static str {
        match self {
            Manage::Warm => "warm",
            Manage::Delete => "delete",
            Manage::Share => "share",
            Manage::Unshare => "unshare",
        }
    }
}

impl Requester {
    /// Whether `self` may do `what` to `r`: its owner project may manage a private image, an
    /// admin a public one (which is never shared: every project sees it); an image shared with
    /// `self`'s project belongs to another project.
    pub(super) fn may_manage(&self, r: &ImageRecord, what: Manage) -> Result<(), CatalogError> {
        let owner = r.owner.as_deref().unwrap_or_default();
        match (r.visibility_for(&self.project), what) {
            (Some(Visibility::Public), Manage::Share | Manage::Unshare) => {
                Err(CatalogError::Invalid(format!(
                    "image {} is public: every project sees it already",
                    r.name
                )))
            }
            (Some(Visibility::Public), Manage::Warm) => {
                self.needs_admin(&format!("warming image {}", r.name))
            }
            (Some(Visibility::Public), Manage::Delete) => {
                self.needs_admin(&format!("deleting image {}", r.name))
            }
            (Some(Visibility::Shared), Manage::Delete) => Err(CatalogError::Forbidden(format!(
                "image {} belongs to project {owner:?}, which shared it with {:?}; only \
                 {owner:?} can delete it",
                r.name, self.project
            ))),
            (Some(Visibility::Shared), what) => Err(CatalogError::Forbidden(format!(
                "image {} belongs to project {owner:?}; only that project can {} it",
                r.name,
                what.verb()
            ))),
            (Some(Visibility::Private) | None, _) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_shared::protocol::ErrorKind;

    #[test]
    fn admins() {
        let peer = |uid, gids: Vec<u32>| Peer {
            user: crate::as_user::User {
                uid,
                gid: uid,
                gids,
            },
            pid: None,
        };
        let me = kiln_shared::paths::current_uid();
        assert!(is_admin(&peer(0, vec![0]), None));
        assert!(is_admin(&peer(me, vec![]), None));
        let stranger = if me == 4242 { 4243 } else { 4242 };
        assert!(!is_admin(&peer(stranger, vec![4242]), None));
        assert!(!is_admin(&peer(stranger, vec![4242]), Some("777")));
        assert!(is_admin(&peer(stranger, vec![4242, 777]), Some("777")));
        assert!(!is_admin(
            &peer(stranger, vec![777]),
            Some("kiln-no-such-group")
        ));
    }

    /// Checks `what` on an image of `owner` shared with `shared`, asked by a member of
    /// `project` (an admin or not): `Ok`, or the error's kind and a piece of its message.
    fn check(
        owner: Option<&str>,
        shared: &[&str],
        project: &str,
        admin: bool,
        what: Manage,
        expected: Result<(), (ErrorKind, &str)>,
    ) {
        let mut r = ImageRecord::new("img-1", "web", "debian-12", owner, "/x".into());
        for p in shared {
            crate::store::set_member(
                &mut r.shared_with,
                p,
                kiln_shared::protocol::ShareStatus::Accepted,
            );
        }
        let who = Requester {
            project: project.into(),
            admin,
            user: crate::as_user::User {
                uid: 4242,
                gid: 4242,
                gids: vec![4242],
            },
            admin_group: Some("kiln-admins".into()),
        };
        let got = who.may_manage(&r, what);
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err((kind, text))) => {
                assert_eq!(e.kind(), kind, "{what:?} {owner:?} by {project}: {e}");
                assert!(e.to_string().contains(text), "{what:?}: {e}");
            }
            (got, expected) => panic!("{what:?} {owner:?} by {project}: {got:?}, not {expected:?}"),
        }
    }

    #[test]
    fn who_may_manage_an_image() {
        use ErrorKind::{Forbidden, InvalidParams};
        use Manage::*;
        let ok = Ok(());
        let public = None;
        let web = Some("web");
        check(web, &[], "web", false, Delete, ok);
        check(web, &[], "web", false, Warm, ok);
        check(web, &["db"], "web", false, Share, ok);
        check(web, &["db"], "web", false, Unshare, ok);
        check(public, &[], "web", true, Delete, ok);
        check(public, &[], "web", true, Warm, ok);
        let admin_only = Err((Forbidden, "group \"kiln-admins\""));
        check(public, &[], "web", false, Delete, admin_only);
        check(public, &[], "web", false, Warm, admin_only);
        let everyone = Err((InvalidParams, "is public: every project sees it already"));
        check(public, &[], "web", true, Share, everyone);
        check(public, &[], "web", false, Unshare, everyone);
        let theirs = |verb| Err((Forbidden, verb));
        check(
            web,
            &["db"],
            "db",
            true,
            Delete,
            theirs("which shared it with \"db\"; only \"web\" can delete it"),
        );
        check(
            web,
            &["db"],
            "db",
            false,
            Warm,
            theirs("only that project can warm it"),
        );
        check(
            web,
            &["db"],
            "db",
            true,
            Share,
            theirs("only that project can share it"),
        );
        check(
            web,
            &["db"],
            "db",
            false,
            Unshare,
            theirs("only that project can unshare it"),
        );
    }
}
