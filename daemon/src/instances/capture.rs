//! Capture: a stopped instance's disk becomes a private image of its project (TOAST's "create
//! image"). The instance is not touched: a helper VM boots an overlay on its disk, generalizes
//! it as a build does (the same OS table's commands), removes every key kiln installed and the
//! host keys, powers off, and the catalog publishes the helper's disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kiln_shared::protocol::{ImageFromInstanceParams, ImageInfo, InstanceState};
use tokio_util::sync::CancellationToken;

use super::{InstanceError, Instances, READY_TIMEOUT};
use crate::catalog::{PublishMeta, Requester};
use crate::driver::{Say, VmSpec};
use crate::guest::Shell;

const POWERDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// Removes the helper's directory however the capture ends (its VM is gone by then: a
/// machine's drop ends it).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Instances {
    /// `image.create_from_instance`: only from a `stopped` instance.
    pub async fn capture(
        &self,
        who: &Requester,
        p: ImageFromInstanceParams,
        say: Say,
    ) -> Result<ImageInfo, InstanceError> {
        let project = who.project.clone();
        let name = p.instance.clone();
        let _busy = self.busy(&project, &name)?;
        let rec = self.record(&project, &name)?;
        let i = &rec.instance;
        if i.state != InstanceState::Stopped {
            return Err(InstanceError::Conflict(format!(
                "instance {name} is {}; an image is made only from a stopped instance: \
                 `kiln instance stop {name}` first",
                i.state
            )));
        }
        kiln_shared::names::check(&p.name)
            .map_err(|e| InstanceError::Invalid(format!("image name {e}")))?;
        let os = crate::guest::os::of_family(&rec.family).map_err(InstanceError::Invalid)?;
        let dir = self.dir.join(format!("{project}.{name}.capture"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| InstanceError::Driver(format!("cannot create {}: {e}", dir.display())))?;
        let _cleanup = RemoveDir(dir.clone());
        let spec = VmSpec {
            base_image: self.driver.instance_disk(&rec.work_dir),
            work_dir: dir,
            disk_gb: 0,
            cpus: i.cpus,
            memory_mb: i.memory_mb,
            user: i.ssh.user.clone(),
            os,
        };
        let failed = |what: &str, e: String| InstanceError::Driver(format!("capture: {what}: {e}"));
        let mut machine = self
            .driver
            .prepare(&spec, say.clone())
            .await
            .map_err(|e| failed("prepare", e.to_string()))?;
        say(format!(
            "==> booting instance {name}'s disk in a helper VM (the instance is not changed)"
        ));
        machine
            .boot()
            .await
            .map_err(|e| failed("boot", e.to_string()))?;
        let shell = machine
            .wait_ready(READY_TIMEOUT)
            .await
            .map_err(|e| failed("boot", e.to_string()))?;
        if p.generalize {
            say("==> generalizing (machine-id, cloud-init, logs)".into());
            let code = run(&*shell, os.deprovision, &say).await?;
            if code != 0 {
                return Err(failed(
                    "generalize",
                    format!("deprovisioning failed with exit code {code}"),
                ));
            }
        }
        // kiln's keys and every host key go whatever was asked; the user's key goes with
        // generalize (the image is for others then).
        let mut keys: Vec<String> = machine.kiln_keys().into_iter().map(|k| k.public).collect();
        if p.generalize {
            keys.push(rec.ssh_public_key.clone());
        }
        let code = run(&*shell, &(os.remove_kiln_keys)(&keys), &say).await?;
        if code != 0 {
            return Err(failed("removing keys", format!("exit code {code}")));
        }
        drop(shell);
        say("==> powering off the helper VM".into());
        machine
            .powerdown(POWERDOWN_TIMEOUT)
            .await
            .map_err(|e| failed("shutdown", e.to_string()))?;
        say(format!("==> publishing image {:?} (zstd qcow2)", p.name));
        let meta = PublishMeta {
            name: p.name.clone(),
            os: i.os.clone(),
            login: crate::store::Login {
                family: rec.family.clone(),
                default_user: i.ssh.user.clone(),
            },
            project: project.clone(),
            template: None,
            template_revision: None,
            build: None,
            min_disk_gb: i.disk_gb,
            share_with: Vec::new(),
            from_instance: Some(name.clone()),
            parent_image: Some(i.image_id.clone()),
            description: p.description.clone(),
            trigger: None,
        };
        let image = self.catalog.publish(machine.disk(), meta).await?;
        say(format!(
            "==> image {} ({}) made from instance {name}, sha256 {}",
            image.name, image.id, image.sha256
        ));
        Ok(image)
    }
}

/// Runs `command` in the helper, each output line to `say`; its exit code.
async fn run(shell: &dyn Shell, command: &str, say: &Say) -> Result<i32, InstanceError> {
    let say: Say = Arc::clone(say);
    shell
        .run(
            command,
            Box::new(move |_, line| say(line.to_owned())),
            &CancellationToken::new(),
        )
        .await
        .map_err(|e| InstanceError::Driver(format!("capture: {e}")))
}
