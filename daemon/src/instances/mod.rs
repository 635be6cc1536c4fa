//! Instances: long-lived VMs a user runs from an image the project sees, logs in to with their
//! own key, stops, starts and captures as a new image (`capture.rs`). Their VMs outlive kilnd:
//! a restarted kilnd re-adopts each running one by its handle and reports a dead one `stopped`.
//! They run through the same `VmDriver` as builds.

mod capture;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use kiln_shared::protocol::{Instance, InstanceRunParams, InstanceState, SshInfo};
use tokio::sync::broadcast;

use crate::catalog::{Catalog, CatalogError, Requester};
use crate::driver::{InstanceSpec, VmDriver, VmSpec};
use crate::store::{InstanceRecord, Store, StoreError};
use crate::sync::lock;

/// How long a stop waits for the guest to power off before it kills the VM.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a start waits for sshd with the pinned host key (a cold TCG boot takes minutes).
const READY_TIMEOUT: Duration = Duration::from_secs(20 * 60);

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("instance {name:?} not found in project {project:?}; see `kiln instance list`")]
    NotFound { project: String, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Driver(String),
}

/// The instances of every project.
pub struct Instances {
    store: Arc<Store>,
    catalog: Arc<Catalog>,
    driver: Arc<dyn VmDriver>,
    dir: PathBuf,
    max_per_project: usize,
    /// Sends (project, name) whenever an instance changes.
    changes: broadcast::Sender<(String, String)>,
    /// Instances an operation (start, stop, delete, capture) is working on.
    busy: Mutex<HashSet<(String, String)>>,
}

/// Marks an instance busy for one operation; a second operation meanwhile is refused.
struct Busy<'a> {
    instances: &'a Instances,
    key: (String, String),
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(&self.instances.busy).remove(&self.key);
    }
}

impl Instances {
    pub fn new(
        store: Arc<Store>,
        catalog: Arc<Catalog>,
        driver: Arc<dyn VmDriver>,
        dir: PathBuf,
        max_per_project: usize,
    ) -> std::io::Result<Arc<Instances>> {
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(Instances {
            store,
            catalog,
            driver,
            dir,
            max_per_project,
            changes: broadcast::channel(256).0,
            busy: Mutex::default(),
        }))
    }

    /// (project, name) of every instance that changes from now on.
    pub fn changes(&self) -> broadcast::Receiver<(String, String)> {
        self.changes.subscribe()
    }

    fn save(&self, rec: &InstanceRecord) -> Result<(), InstanceError> {
        self.store.put_instance(rec)?;
        let i = &rec.instance;
        let _ = self.changes.send((i.project.clone(), i.name.clone()));
        Ok(())
    }

    fn busy(&self, project: &str, name: &str) -> Result<Busy<'_>, InstanceError> {
        let key = (project.to_owned(), name.to_owned());
        if !lock(&self.busy).insert(key.clone()) {
            return Err(InstanceError::Conflict(format!(
                "instance {name} is busy with another request; try again when it is done"
            )));
        }
        Ok(Busy {
            instances: self,
            key,
        })
    }

    fn record(&self, project: &str, name: &str) -> Result<InstanceRecord, InstanceError> {
        self.store
            .get_instance(project, name)?
            .ok_or_else(|| InstanceError::NotFound {
                project: project.into(),
                name: name.into(),
            })
    }

    pub fn get(&self, project: &str, name: &str) -> Result<Instance, InstanceError> {
        Ok(self.record(project, name)?.instance)
    }

    pub fn list(&self, project: &str) -> Result<Vec<Instance>, InstanceError> {
        Ok(self
            .store
            .list_instances()?
            .into_iter()
            .map(|r| r.instance)
            .filter(|i| i.project == project)
            .collect())
    }

    /// The instance's serial console file.
    pub fn console(&self, project: &str, name: &str) -> Result<PathBuf, InstanceError> {
        let rec = self.record(project, name)?;
        Ok(self.driver.instance_console(&rec.work_dir))
    }

    /// At startup: every instance whose VM still runs stays `running` (re-adopted); one whose
    /// VM is gone is `stopped`; a VM no record names is killed.
    pub fn recover(self: &Arc<Self>) -> Result<(), InstanceError> {
        let records = self.store.list_instances()?;
        let known: HashSet<PathBuf> = records.iter().map(|r| r.work_dir.clone()).collect();
        for mut rec in records {
            let handle = rec
                .vm
                .clone()
                .or_else(|| self.driver.instance_unrecorded(&rec.work_dir));
            let alive = handle
                .as_ref()
                .is_some_and(|h| self.driver.instance_running(h, &rec.work_dir));
            let unrecorded = rec.vm.is_none();
            let i = &mut rec.instance;
            match (alive, i.state) {
                (_, InstanceState::Starting) if unrecorded => {
                    // kilnd died before it recorded the VM it was starting (a resume may be
                    // half done): end that VM; a start begins again.
                    if let Some(h) = &handle {
                        self.driver.reap(h, &rec.work_dir);
                    }
                    i.state = InstanceState::Failed;
                    i.message = format!(
                        "kilnd stopped while starting it; `kiln instance start {}` starts it again",
                        i.name
                    );
                    self.save(&rec)?;
                }
                (true, InstanceState::Stopping) => {
                    // kilnd died during the stop: finish it.
                    let instances = self.clone();
                    let (project, name) = (i.project.clone(), i.name.clone());
                    tokio::spawn(async move {
                        let _ = instances.stop(&project, &name, false).await;
                    });
                }
                (true, _) => {
                    tracing::info!(instance = %i.name, project = %i.project, "re-adopted a running instance");
                    if i.state != InstanceState::Running {
                        // Running but not known to be ready (or recorded as down): check again.
                        i.state = InstanceState::Starting;
                        let instances = self.clone();
                        let (project, name) = (i.project.clone(), i.name.clone());
                        tokio::spawn(async move { instances.watch(project, name).await });
                    }
                    rec.vm = handle;
                    self.save(&rec)?;
                }
                (
                    false,
                    InstanceState::Running | InstanceState::Starting | InstanceState::Stopping,
                ) => {
                    i.state = InstanceState::Stopped;
                    i.started_at = None;
                    i.message = "its VM was no longer running when kilnd started".into();
                    rec.vm = None;
                    self.save(&rec)?;
                }
                (false, _) => {}
            }
        }
        // A VM in a directory no record names (its record never got written) is killed, and
        // the directory removed.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for dir in entries.flatten().map(|e| e.path()) {
                if dir.is_dir() && !known.contains(&dir) {
                    if let Some(h) = self.driver.instance_unrecorded(&dir) {
                        self.driver.reap(&h, &dir);
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        Ok(())
    }

    /// Runs `p.image` as a new instance of `who`'s project.
    pub async fn run(
        self: &Arc<Self>,
        who: &Requester,
        p: InstanceRunParams,
    ) -> Result<Instance, InstanceError> {
        let project = who.project.clone();
        kiln_shared::names::check(&p.name)
            .map_err(|e| InstanceError::Invalid(format!("instance name {e}")))?;
        if p.ssh_public_key.split_whitespace().count() < 2 {
            return Err(InstanceError::Invalid(
                "ssh_public_key must be an OpenSSH public key line (\"ssh-ed25519 AAAA... comment\")"
                    .into(),
            ));
        }
        let _busy = self.busy(&project, &p.name)?;
        let existing = self.list(&project)?;
        if existing.iter().any(|i| i.name == p.name) {
            return Err(InstanceError::Conflict(format!(
                "instance {} exists already in project {project}; pick another name or delete it",
                p.name
            )));
        }
        if existing.len() >= self.max_per_project {
            return Err(InstanceError::Limit(format!(
                "project {project} has {} instances, the most max_instances (kilnd.toml) allows; delete one first",
                existing.len()
            )));
        }
        // Held until the record names the image: a delete meanwhile sees one or the other.
        let lease = self.catalog.lease(&project, &p.image).await?;
        let image = lease.record().clone();
        crate::guest::os::of_family(&image.family)
            .map_err(|e| InstanceError::Invalid(format!("image {}: {e}", image.name)))?;
        let defaults = kiln_shared::template::Vm::default();
        let work_dir = self.dir.join(format!("{project}.{}", p.name));
        let now = Utc::now();
        let mut rec = InstanceRecord {
            instance: Instance {
                name: p.name.clone(),
                project: project.clone(),
                image: image.name.clone(),
                image_id: image.id.clone(),
                os: image.os.clone(),
                state: InstanceState::Starting,
                cpus: p.cpus.unwrap_or(defaults.cpus),
                memory_mb: p.memory_mb.unwrap_or(defaults.memory_mb),
                disk_gb: p.disk_gb.unwrap_or(0).max(image.min_disk_gb),
                ssh: SshInfo {
                    host: "127.0.0.1".into(),
                    port: 0,
                    user: image.default_user.clone(),
                    host_key: String::new(),
                },
                created_at: now,
                started_at: None,
                owner: who.user.uid,
                message: String::new(),
            },
            work_dir: work_dir.clone(),
            vm: None,
            ssh_public_key: p.ssh_public_key.trim().to_owned(),
            family: image.family.clone(),
        };
        self.save(&rec)?;
        let made = std::fs::create_dir_all(&work_dir).map_err(|e| {
            InstanceError::Driver(format!("cannot create {}: {e}", work_dir.display()))
        });
        let started = match made {
            Ok(()) => self.boot(&mut rec, lease.path().to_owned()).await,
            Err(e) => Err(e),
        };
        drop(lease);
        if let Err(e) = started {
            let _ = std::fs::remove_dir_all(&work_dir);
            let _ = self.store.delete_instance(&project, &p.name);
            let _ = self.changes.send((project, p.name));
            return Err(e);
        }
        Ok(rec.instance)
    }

    /// Starts the VM of `rec` (from `base`, the image's file) and watches it come up.
    async fn boot(
        self: &Arc<Self>,
        rec: &mut InstanceRecord,
        base: PathBuf,
    ) -> Result<(), InstanceError> {
        let i = &rec.instance;
        let os = crate::guest::os::of_family(&rec.family).map_err(InstanceError::Invalid)?;
        let spec = InstanceSpec {
            vm: VmSpec {
                base_image: base,
                work_dir: rec.work_dir.clone(),
                disk_gb: i.disk_gb,
                cpus: i.cpus,
                memory_mb: i.memory_mb,
                user: i.ssh.user.clone(),
                os,
            },
            image_id: i.image_id.clone(),
            image: i.image.clone(),
            login_key: rec.ssh_public_key.clone(),
            hostname: i.name.clone(),
            port: (i.ssh.port != 0).then_some(i.ssh.port),
        };
        let started = self
            .driver
            .start_instance(&spec)
            .await
            .map_err(|e| InstanceError::Driver(format!("starting instance {}: {e}", i.name)))?;
        let i = &mut rec.instance;
        i.ssh.port = started.port;
        i.ssh.host_key = started.host_public_key;
        i.state = InstanceState::Starting;
        i.started_at = Some(Utc::now());
        i.message = started.how;
        let (project, name) = (i.project.clone(), i.name.clone());
        rec.vm = Some(started.handle);
        self.save(rec)?;
        let instances = self.clone();
        tokio::spawn(async move { instances.watch(project, name).await });
        Ok(())
    }

    /// Polls a starting instance until sshd answers with its pinned host key (`running`), its
    /// VM is gone (`failed`), or it is no longer starting.
    async fn watch(self: Arc<Self>, project: String, name: String) {
        let since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok(mut rec) = self.record(&project, &name) else {
                return;
            };
            if rec.instance.state != InstanceState::Starting {
                return;
            }
            let Some(handle) = rec.vm.clone() else {
                return;
            };
            let failed = if !self.driver.instance_running(&handle, &rec.work_dir) {
                Some("its VM exited while starting; see `kiln instance console`".to_string())
            } else if since.elapsed() > READY_TIMEOUT {
                Some(format!(
                    "sshd did not answer with the pinned host key within {} minutes",
                    READY_TIMEOUT.as_secs() / 60
                ))
            } else {
                None
            };
            let ssh = &rec.instance.ssh;
            let up = failed.is_none()
                && crate::guest::probe::host_key_matches(ssh.port, &ssh.host_key)
                    .await
                    .is_ok();
            if failed.is_none() && !up {
                continue;
            }
            // Re-read: a stop or delete may have come meanwhile.
            let _busy = match self.busy(&project, &name) {
                Ok(b) => b,
                Err(_) => continue,
            };
            match self.store.get_instance(&project, &name) {
                Ok(Some(now)) if now.instance.state == InstanceState::Starting => {
                    rec = now;
                }
                _ => return,
            }
            match failed {
                Some(why) => {
                    self.driver.reap(&handle, &rec.work_dir);
                    rec.vm = None;
                    rec.instance.state = InstanceState::Failed;
                    rec.instance.started_at = None;
                    rec.instance.message = why;
                }
                None => {
                    rec.instance.state = InstanceState::Running;
                    tracing::info!(
                        instance = %name,
                        elapsed_ms = since.elapsed().as_millis() as u64,
                        "instance running (sshd answers with the pinned host key)"
                    );
                }
            }
            let _ = self.save(&rec);
            return;
        }
    }

    /// ACPI powerdown (or a kill with `force`, or after the timeout); the instance is `stopped`.
    pub async fn stop(
        &self,
        project: &str,
        name: &str,
        force: bool,
    ) -> Result<Instance, InstanceError> {
        let _busy = self.busy(project, name)?;
        let mut rec = self.record(project, name)?;
        self.stop_vm(&mut rec, force).await?;
        Ok(rec.instance)
    }

    async fn stop_vm(&self, rec: &mut InstanceRecord, force: bool) -> Result<(), InstanceError> {
        let Some(handle) = rec.vm.clone() else {
            if matches!(rec.instance.state, InstanceState::Stopped) {
                return Ok(());
            }
            rec.instance.state = InstanceState::Stopped;
            self.save(rec)?;
            return Ok(());
        };
        rec.instance.state = InstanceState::Stopping;
        self.save(rec)?;
        let forced = if force {
            self.driver.reap(&handle, &rec.work_dir);
            true
        } else {
            self.driver
                .stop_instance(&handle, &rec.work_dir, STOP_TIMEOUT)
                .await
        };
        let i = &mut rec.instance;
        i.state = InstanceState::Stopped;
        i.started_at = None;
        i.message = match (force, forced) {
            (true, _) => "stopped by force (killed)".into(),
            (false, true) => format!(
                "the guest did not power off within {} s of the ACPI power button; it was killed",
                STOP_TIMEOUT.as_secs()
            ),
            (false, false) => "powered off".into(),
        };
        rec.vm = None;
        self.save(rec)
    }

    /// Starts a stopped (or failed) instance again, on the disk it had.
    pub async fn start(
        self: &Arc<Self>,
        project: &str,
        name: &str,
    ) -> Result<Instance, InstanceError> {
        let _busy = self.busy(project, name)?;
        let mut rec = self.record(project, name)?;
        if !matches!(
            rec.instance.state,
            InstanceState::Stopped | InstanceState::Failed
        ) {
            return Err(InstanceError::Conflict(format!(
                "instance {name} is {}; only a stopped or failed one can be started",
                rec.instance.state
            )));
        }
        let image = self
            .store
            .get_image(&rec.instance.image_id)?
            .ok_or_else(|| {
                InstanceError::Conflict(format!(
                    "the image of instance {name} ({}) is gone",
                    rec.instance.image
                ))
            })?;
        self.boot(&mut rec, image.path.clone()).await?;
        Ok(rec.instance)
    }

    /// Stop, then start.
    pub async fn restart(
        self: &Arc<Self>,
        project: &str,
        name: &str,
        force: bool,
    ) -> Result<Instance, InstanceError> {
        self.stop(project, name, force).await?;
        self.start(project, name).await
    }

    /// Ends the VM (by force) and removes every file of the instance, and its record.
    pub async fn delete(&self, project: &str, name: &str) -> Result<(), InstanceError> {
        let _busy = self.busy(project, name)?;
        let mut rec = self.record(project, name)?;
        self.stop_vm(&mut rec, true).await?;
        std::fs::remove_dir_all(&rec.work_dir)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| {
                InstanceError::Driver(format!("cannot remove {}: {e}", rec.work_dir.display()))
            })?;
        self.store.delete_instance(project, name)?;
        let _ = self.changes.send((project.into(), name.into()));
        Ok(())
    }
}
