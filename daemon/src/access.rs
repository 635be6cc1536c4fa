//! Who is calling and what they may do: peer credentials, project membership from the config.

use std::collections::BTreeSet;

use kiln_shared::protocol::{ErrorKind, ProjectInfo, RpcError, DEFAULT_PROJECT};

use crate::as_user::User;
use crate::config::FileConfig;

/// The process at the other end of a connection, from the socket's peer credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub user: User,
    pub pid: Option<u32>,
}

impl Peer {
    /// Reads the peer's credentials; supplementary groups come from `/proc/PID/status`, since
    /// Linux's SO_PEERCRED carries only the primary group.
    pub fn from_creds(uid: u32, gid: u32, pid: Option<u32>) -> Peer {
        let mut gids = BTreeSet::from([gid]);
        if let Some(pid) = pid {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(line) = status.lines().find(|l| l.starts_with("Groups:")) {
                    gids.extend(
                        line["Groups:".len()..]
                            .split_whitespace()
                            .filter_map(|g| g.parse::<u32>().ok()),
                    );
                }
            }
        }
        Peer {
            user: User {
                uid,
                gid,
                gids: gids.into_iter().collect(),
            },
            pid,
        }
    }
}

/// Project membership rules, resolved against the system's user and group databases.
#[derive(Debug, Clone)]
pub struct Access {
    daemon_uid: u32,
    projects: Vec<ResolvedProject>,
}

#[derive(Debug, Clone)]
struct ResolvedProject {
    name: String,
    users: Vec<String>,
    groups: Vec<String>,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

/// A user or group database (`/etc/passwd`, `/etc/group`): the one reader of either, as
/// (name, id) pairs. An unreadable file is an empty table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdTable(Vec<(String, u32)>);

impl IdTable {
    /// The system's groups, from `/etc/group`.
    pub fn groups() -> IdTable {
        IdTable::read("/etc/group")
    }

    /// The system's users, from `/etc/passwd`.
    pub fn users() -> IdTable {
        IdTable::read("/etc/passwd")
    }

    fn read(path: &str) -> IdTable {
        IdTable::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Parses `/etc/passwd`- or `/etc/group`-style text; malformed lines are skipped.
    fn parse(text: &str) -> IdTable {
        IdTable(
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let id = f.nth(1)?.parse().ok()?;
                    Some((name.to_string(), id))
                })
                .collect(),
        )
    }

    /// The id of the entry called `name`.
    pub fn named(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|(n, _)| n == name).map(|e| e.1)
    }

    /// The id `n` names: a number as it is, else a name in the table.
    pub fn id_of(&self, n: &str) -> Option<u32> {
        n.parse().ok().or_else(|| self.named(n))
    }
}

impl Access {
    pub fn new(config: &FileConfig) -> Access {
        let (passwd, group) = (IdTable::users(), IdTable::groups());
        let projects = config
            .projects
            .iter()
            .map(|p| ResolvedProject {
                name: p.name.clone(),
                users: p.users.clone(),
                groups: p.groups.clone(),
                uids: p.users.iter().filter_map(|u| passwd.id_of(u)).collect(),
                gids: p.groups.iter().filter_map(|g| group.id_of(g)).collect(),
            })
            .collect();
        Access {
            daemon_uid: kiln_shared::paths::current_uid(),
            projects,
        }
    }

    /// Whether `peer` may act within `project`. Root and the daemon's own user may act in every
    /// project; anyone who can reach the socket may use `default`; configured projects admit their
    /// users and groups. An unconfigured project other than `default` admits only the first two.
    pub fn is_member(&self, peer: &Peer, project: &str) -> bool {
        if peer.user.uid == 0 || peer.user.uid == self.daemon_uid || project == DEFAULT_PROJECT {
            return true;
        }
        self.projects.iter().any(|p| {
            p.name == project
                && (p.uids.contains(&peer.user.uid)
                    || peer.user.gids.iter().any(|g| p.gids.contains(g)))
        })
    }

    pub fn check(&self, peer: &Peer, project: &str) -> Result<(), RpcError> {
        if self.is_member(peer, project) {
            Ok(())
        } else {
            Err(RpcError::new(
                ErrorKind::Forbidden,
                format!(
                    "uid {} is not a member of project {project:?}; ask an admin to add you to it in kilnd.toml",
                    peer.user.uid
                ),
            ))
        }
    }

    /// The projects `peer` may see: configured ones, `default` and any named in `extra` (those
    /// with stored data), with the caller's membership. An admin sees all of them with their
    /// users and groups; anyone else sees only the projects they may act in, without members.
    pub fn projects(&self, peer: &Peer, extra: &[String], admin: bool) -> Vec<ProjectInfo> {
        let mut names: BTreeSet<&str> = self.projects.iter().map(|p| p.name.as_str()).collect();
        names.insert(DEFAULT_PROJECT);
        names.extend(extra.iter().map(String::as_str));
        names
            .into_iter()
            .map(|name| (name, self.is_member(peer, name)))
            .filter(|&(_, member)| admin || member)
            .map(|(name, member)| {
                let conf = self
                    .projects
                    .iter()
                    .find(|p| p.name == name)
                    .filter(|_| admin);
                ProjectInfo {
                    name: name.to_string(),
                    users: conf.map(|p| p.users.clone()).unwrap_or_default(),
                    groups: conf.map(|p| p.groups.clone()).unwrap_or_default(),
                    member,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::ProjectConfig;

    #[test]
    fn membership() {
        let cfg = FileConfig {
            projects: vec![ProjectConfig {
                name: "web".into(),
                users: vec!["12345".into()],
                groups: vec!["777".into()],
            }],
            ..FileConfig::default()
        };
        let access = Access::new(&cfg);
        let stranger = Peer {
            user: crate::as_user::User {
                uid: 4242,
                gid: 4242,
                gids: vec![4242],
            },
            pid: None,
        };
        let user = Peer {
            user: crate::as_user::User {
                uid: 12345,
                gid: 12345,
                gids: vec![1],
            },
            pid: None,
        };
        let grouped = Peer {
            user: crate::as_user::User {
                uid: 999,
                gid: 999,
                gids: vec![5, 777],
            },
            pid: None,
        };
        assert!(access.is_member(&stranger, "default"));
        assert!(!access.is_member(&stranger, "web"));
        assert!(!access.is_member(&stranger, "other"));
        assert!(access.is_member(&user, "web"));
        assert!(access.is_member(&grouped, "web"));
        assert_eq!(
            access.check(&stranger, "web").unwrap_err().kind(),
            ErrorKind::Forbidden
        );
    }

    #[test]
    fn reads_group_database() {
        let ids = IdTable::parse("root:x:0:\nkiln:x:998:alice,bob\nbroken\n");
        assert_eq!(ids.0, vec![("root".into(), 0), ("kiln".into(), 998)]);
        assert_eq!(ids.named("kiln"), Some(998));
        assert_eq!(ids.named("998"), None);
        assert_eq!(ids.id_of("kiln"), Some(998));
        assert_eq!(ids.id_of("4242"), Some(4242));
        assert_eq!(ids.id_of("broken"), None);
    }
}
