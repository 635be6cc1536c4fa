//! The Instances view's state: the project's instances (listed once, then kept current by
//! `instance` events, or polled without them), and what its keys and kilnd's answers to the
//! instance calls do to it.

use kiln_shared::names::NameError;
use kiln_shared::protocol::{
    ImageFromInstanceParams, ImageInfo, Instance, InstanceParams, InstanceRunParams, InstanceState,
};

use super::keymap::Cmd;
use super::listed::{movement, Listed};
use super::{call, App, Deletable, Effect, Prompt, Request, View};
use crate::ssh_key::KeyError;

#[derive(Debug, Clone, Default)]
pub struct Instances {
    /// In name order, as kilnd lists them.
    pub list: Listed<Instance>,
    /// This kilnd has no `instance.*` methods (an older one): the view says so, and
    /// `instance.list` is not asked again on this connection.
    pub unsupported: bool,
    /// `image.create_from_instance` calls in flight: their `image.progress` lines are shown.
    pub capturing: usize,
}

/// The instance `r` runs: the image (by id) and the name typed. The shell reads the person's
/// default public key for it (`Effect::ReadPublicKey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    pub image: String,
    pub image_name: String,
    pub name: String,
}

/// What `s` and `S` ask to confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Stop,
    Start,
}

impl Power {
    pub fn verb(self) -> &'static str {
        match self {
            Power::Stop => "stop",
            Power::Start => "start",
        }
    }

    pub fn done(self) -> &'static str {
        match self {
            Power::Stop => "stopped",
            Power::Start => "started",
        }
    }
}

impl Instances {
    pub fn selected(&self) -> Option<&Instance> {
        self.list.items.get(self.list.sel)
    }

    pub fn get(&self, name: &str) -> Option<&Instance> {
        self.list.items.iter().find(|i| i.name == name)
    }

    /// Selects instance `keep` again after the list changed (or keeps the row, within bounds).
    fn reselect(&mut self, keep: Option<String>) {
        let found = keep.and_then(|n| self.list.items.iter().position(|i| i.name == n));
        let len = self.list.items.len();
        self.list.reselect(found, len);
    }

    /// An `instance.list` reply.
    pub(super) fn on_list(&mut self, instances: Vec<Instance>) {
        let keep = self.selected().map(|i| i.name.clone());
        self.list.items = instances;
        self.list.loaded = true;
        self.reselect(keep);
    }

    /// An event, or a call's answer: instance `name` is now `instance` (`None`: deleted).
    pub(super) fn on_change(&mut self, name: &str, instance: Option<Instance>) {
        let keep = self.selected().map(|i| i.name.clone());
        let items = &mut self.list.items;
        let at = items.iter().position(|i| i.name == name);
        match (at, instance) {
            (Some(at), Some(i)) => items[at] = i,
            (None, Some(i)) => {
                let at = items.partition_point(|x| x.name < i.name);
                items.insert(at, i);
            }
            (Some(at), None) => {
                items.remove(at);
            }
            (None, None) => {}
        }
        self.reselect(keep);
    }
}

/// A command in the Instances view.
pub(super) fn on_command(app: &mut App, cmd: Cmd) -> Vec<Effect> {
    if let Some(delta) = movement(cmd, app.list_page()) {
        let len = app.instances.list.items.len();
        app.instances.list.move_sel(delta, len);
        return Vec::new();
    }
    if cmd == Cmd::Back {
        app.view = View::Templates;
        return Vec::new();
    }
    let Some((name, state)) = app.instances.selected().map(|i| (i.name.clone(), i.state)) else {
        return Vec::new();
    };
    match cmd {
        Cmd::Stop => confirm_power(app, name, state, Power::Stop),
        Cmd::Start => confirm_power(app, name, state, Power::Start),
        // A running one is refused by kilnd, which says why.
        Cmd::Capture => {
            app.prompt = Some(Prompt::CaptureName {
                instance: name,
                input: String::new(),
            })
        }
        Cmd::Delete => {
            app.prompt = Some(Prompt::ConfirmDelete {
                what: Deletable::Instance,
                name,
                input: String::new(),
            })
        }
        Cmd::Attach => return super::attach::instance(app, &name),
        _ => {}
    }
    Vec::new()
}

/// `s` or `S` on instance `name`: asks first, unless it is in no state to.
fn confirm_power(app: &mut App, name: String, state: InstanceState, power: Power) {
    use InstanceState::*;
    let can = match power {
        Power::Stop => matches!(state, Starting | Running),
        Power::Start => matches!(state, Stopped | Failed),
    };
    if can {
        app.prompt = Some(Prompt::ConfirmPower { name, power });
    } else {
        app.message = Some(format!(
            "instance {name} is {state}: nothing to {}",
            power.verb()
        ));
    }
}

/// `r` on image `image` (the Images view): asks the new instance's name.
pub(super) fn ask_run(app: &mut App, image: &ImageInfo) {
    app.prompt = Some(Prompt::InstanceName {
        image: image.id.clone(),
        image_name: image.name.clone(),
        input: String::new(),
    });
}

/// The name typed for a new instance or image: `None` once the message line says what is wrong
/// with it (`what` is done with a good one).
pub(super) fn checked_name(app: &mut App, input: &str, what: &str) -> Option<String> {
    let name = input.trim();
    match kiln_shared::names::check(name) {
        Ok(()) => Some(name.to_owned()),
        Err(NameError::Empty) => {
            app.message = Some(format!("no {what}: it needs a name"));
            None
        }
        Err(e) => {
            app.message = Some(format!("no {what}: name {e}"));
            None
        }
    }
}

/// `y` to a `ConfirmPower` question.
pub(super) fn power(app: &mut App, name: String, power: Power) -> Vec<Effect> {
    let params = InstanceParams { name, force: false };
    let request = match power {
        Power::Stop => {
            app.message = Some(format!(
                "stopping instance {} (ACPI power button; killed if it has not powered off \
                 within 120 s)…",
                params.name
            ));
            Request::InstanceStop(params)
        }
        Power::Start => {
            app.message = Some(format!("starting instance {}…", params.name));
            Request::InstanceStart(params)
        }
    };
    vec![call(0, request)]
}

/// The name of the image `c` captures `instance` as was typed.
pub(super) fn capture(app: &mut App, instance: String, name: String) -> Vec<Effect> {
    app.message = Some(format!(
        "capturing instance {instance} as image {name}: a helper VM generalizes its disk \
         (minutes)…"
    ));
    app.instances.capturing += 1;
    let params = ImageFromInstanceParams {
        instance,
        name,
        generalize: true,
        description: None,
    };
    vec![call(0, Request::ImageCreateFromInstance(params))]
}

/// The shell read (or could not read) the person's public key for `run`.
pub(super) fn on_public_key(
    app: &mut App,
    run: NewInstance,
    key: Result<String, KeyError>,
) -> Vec<Effect> {
    match key {
        Ok(ssh_public_key) => {
            app.message = Some(format!(
                "starting instance {} of {}…",
                run.name, run.image_name
            ));
            let params = InstanceRunParams {
                image: run.image,
                name: run.name,
                cpus: None,
                memory_mb: None,
                disk_gb: None,
                ssh_public_key,
            };
            vec![call(0, Request::InstanceRun(params))]
        }
        Err(KeyError::Missing { .. }) => {
            app.message = Some(format!(
                "instance {} not started: no ~/.ssh/id_ed25519.pub or id_rsa.pub to log in \
                 with; make one with `ssh-keygen -t ed25519`",
                run.name
            ));
            Vec::new()
        }
        Err(e) => {
            app.message = Some(format!("instance {} not started: {e}", run.name));
            Vec::new()
        }
    }
}

/// `instance.run` answered: the new instance is listed, and shown if its image still is.
pub(super) fn on_run(app: &mut App, i: Instance) {
    app.message = Some(format!(
        "instance {} of {} is {}; ssh port {}",
        i.name, i.image, i.state, i.ssh.port
    ));
    let name = i.name.clone();
    app.instances.on_change(&name, Some(i));
    if app.view == View::Images && app.overlay.is_none() {
        app.view = View::Instances;
        if let Some(at) = app.instances.list.items.iter().position(|i| i.name == name) {
            app.instances.list.sel = at;
        }
    }
}

/// `instance.stop` or `instance.start` answered with the instance as it is now.
pub(super) fn on_power(app: &mut App, i: Instance) {
    let said = if i.message.is_empty() {
        String::new()
    } else {
        format!(" ({})", i.message)
    };
    app.message = Some(format!("instance {} is {}{said}", i.name, i.state));
    let name = i.name.clone();
    app.instances.on_change(&name, Some(i));
}

/// `image.create_from_instance` published `image`.
pub(super) fn on_captured(app: &mut App, image: &ImageInfo) {
    app.message = Some(format!(
        "created image {} ({}) from instance {}",
        image.name,
        image.id,
        image.from_instance.as_deref().unwrap_or("?")
    ));
    app.images.list.loaded = false;
}
