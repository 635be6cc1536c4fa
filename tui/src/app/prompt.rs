//! The question in the message line that takes the keyboard until answered: the templates
//! filter, a log search, a new build's image name, a new instance's name, the name of an image
//! captured from an instance, the projects to share an image with, and the confirmations of
//! cancel, stop, start and delete.

use kiln_shared::build::BuildIdParams;
use kiln_shared::protocol::{ImageDeleteParams, InstanceParams, NameParams};

use super::instances::{self, NewInstance, Power};
use super::keymap::Key;
use super::overlay::Overlay;
use super::picker::{self, PickFor, Picker};
use super::{call, log, App, Effect, Request};

/// A question in the message line that takes the keyboard until answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// Typing the templates filter (applied as it is typed).
    Filter,
    /// Typing a log search.
    Search { input: String },
    /// The image name for a new build of `template`.
    ImageName { template: String, input: String },
    /// The name of a new instance of image `image` (an id; `image_name` is shown).
    InstanceName {
        image: String,
        image_name: String,
        input: String,
    },
    /// The name of the image made of (stopped) instance `instance`.
    CaptureName { instance: String, input: String },
    /// The projects to share image `image` (an id; `image_name` is shown) with.
    ShareWith {
        image: String,
        image_name: String,
        input: String,
        /// `image` names a gallery (every version of it is offered).
        gallery: bool,
    },
    /// The Azure template file `i` imports.
    ImportPath { input: String },
    /// Cancel build `id`? Only `y` says yes.
    ConfirmCancel { id: u64 },
    /// Stop or start instance `name`? Only `y` says yes.
    ConfirmPower { name: String, power: Power },
    /// Delete a template, an image or an instance: only typing its name exactly says yes.
    ConfirmDelete {
        what: Deletable,
        name: String,
        input: String,
    },
}

/// What `D` deletes, per view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletable {
    Template,
    Image,
    Instance,
}

impl Deletable {
    pub fn noun(self) -> &'static str {
        match self {
            Deletable::Template => "template",
            Deletable::Image => "image",
            Deletable::Instance => "instance",
        }
    }
}

/// `key` typed into `input`: a character added or the last one taken back (any other key
/// changes nothing).
fn typed(input: &mut String, key: Key) {
    match key {
        Key::Char(c) => input.push(c),
        Key::Backspace => {
            input.pop();
        }
        _ => {}
    }
}

/// A key while `prompt` (taken from `app`) is asked.
pub(super) fn on_key(app: &mut App, prompt: Prompt, key: Key) -> Vec<Effect> {
    match prompt {
        Prompt::ConfirmCancel { id } => {
            if key == Key::Char('y') || key == Key::Char('Y') {
                app.message = Some(format!("canceling build {id}..."));
                return vec![call(0, Request::BuildCancel(BuildIdParams { id }))];
            }
            app.message = Some(format!("build {id} not canceled"));
            Vec::new()
        }
        Prompt::ConfirmPower { name, power } => {
            if key == Key::Char('y') || key == Key::Char('Y') {
                return instances::power(app, name, power);
            }
            app.message = Some(format!("instance {name} not {}", power.done()));
            Vec::new()
        }
        Prompt::InstanceName {
            image,
            image_name,
            mut input,
        } => {
            match key {
                Key::Enter => {
                    if let Some(name) = instances::checked_name(app, &input, "instance started") {
                        let run = NewInstance {
                            image,
                            image_name,
                            name,
                        };
                        return vec![Effect::ReadPublicKey(run)];
                    }
                }
                Key::Esc => {}
                _ => {
                    typed(&mut input, key);
                    app.prompt = Some(Prompt::InstanceName {
                        image,
                        image_name,
                        input,
                    });
                }
            }
            Vec::new()
        }
        Prompt::ShareWith {
            image,
            image_name,
            mut input,
            gallery,
        } => {
            match key {
                Key::Enter => return super::images::share(app, image, image_name, &input, gallery),
                Key::Esc => {
                    let what = if gallery { "gallery" } else { "image" };
                    app.message = Some(format!("{what} {image_name} not shared"));
                }
                _ => {
                    typed(&mut input, key);
                    app.prompt = Some(Prompt::ShareWith {
                        image,
                        image_name,
                        input,
                        gallery,
                    });
                }
            }
            Vec::new()
        }
        Prompt::ImportPath { mut input } => {
            match key {
                Key::Enter => return super::import::read(app, &input),
                Key::Esc => {}
                _ => {
                    typed(&mut input, key);
                    app.prompt = Some(Prompt::ImportPath { input });
                }
            }
            Vec::new()
        }
        Prompt::CaptureName {
            instance,
            mut input,
        } => {
            match key {
                Key::Enter => {
                    if let Some(name) = instances::checked_name(app, &input, "image captured") {
                        return instances::capture(app, instance, name);
                    }
                }
                Key::Esc => {}
                _ => {
                    typed(&mut input, key);
                    app.prompt = Some(Prompt::CaptureName { instance, input });
                }
            }
            Vec::new()
        }
        Prompt::ConfirmDelete {
            what,
            name,
            mut input,
        } => match key {
            Key::Enter if input == name => {
                app.message = Some(format!("deleting {} {name}...", what.noun()));
                let request = match what {
                    Deletable::Template => Request::TemplateDelete(NameParams { name }),
                    Deletable::Image => Request::ImageDelete(ImageDeleteParams {
                        image: name,
                        force: false,
                    }),
                    // Typing the name was the question: its VM is killed, not powered off.
                    Deletable::Instance => {
                        Request::InstanceDelete(InstanceParams { name, force: true })
                    }
                };
                vec![call(0, request)]
            }
            Key::Enter | Key::Esc => {
                app.message = Some(format!("{} {name} not deleted", what.noun()));
                Vec::new()
            }
            Key::Backspace | Key::Char(_) => {
                match key {
                    Key::Char(c) => input.push(c),
                    _ => {
                        input.pop();
                    }
                }
                app.prompt = Some(Prompt::ConfirmDelete { what, name, input });
                Vec::new()
            }
            _ => {
                app.prompt = Some(Prompt::ConfirmDelete { what, name, input });
                Vec::new()
            }
        },
        Prompt::Filter => {
            match key {
                Key::Enter => {}
                Key::Esc => app.templates.filter.clear(),
                Key::Backspace => {
                    app.templates.filter.pop();
                    app.prompt = Some(Prompt::Filter);
                }
                Key::Char(c) => {
                    app.templates.filter.push(c);
                    app.prompt = Some(Prompt::Filter);
                }
                _ => app.prompt = Some(Prompt::Filter),
            }
            app.templates.list.sel = 0;
            Vec::new()
        }
        Prompt::Search { mut input } => {
            match key {
                Key::Enter => log::search(app, input),
                Key::Esc => {}
                Key::Backspace => {
                    input.pop();
                    app.prompt = Some(Prompt::Search { input });
                }
                Key::Char(c) => {
                    input.push(c);
                    app.prompt = Some(Prompt::Search { input });
                }
                _ => app.prompt = Some(Prompt::Search { input }),
            }
            Vec::new()
        }
        Prompt::ImageName {
            template,
            mut input,
        } => match key {
            Key::Enter if input.trim().is_empty() => {
                app.message = Some("no build started: the image needs a name".into());
                Vec::new()
            }
            Key::Enter => {
                // Then the base image: one of the template's OS, the template's source first.
                let os = app
                    .templates
                    .get(&template)
                    .map(|t| t.os.clone())
                    .unwrap_or_default();
                let source = app
                    .build_source
                    .as_ref()
                    .filter(|b| b.template == template)
                    .and_then(|b| b.image.clone());
                let sel = picker::choices(&app.images, &os)
                    .iter()
                    .position(|i| Some(&i.name) == source.as_ref())
                    .unwrap_or(0);
                app.overlay = Some(Overlay::Picker(Picker {
                    purpose: PickFor::Build {
                        template,
                        image_name: input.trim().to_string(),
                    },
                    os,
                    sel,
                    touched: false,
                }));
                app.fresh_images()
            }
            Key::Esc => {
                app.build_source = None;
                Vec::new()
            }
            Key::Backspace => {
                input.pop();
                app.prompt = Some(Prompt::ImageName { template, input });
                Vec::new()
            }
            Key::Char(c) => {
                input.push(c);
                app.prompt = Some(Prompt::ImageName { template, input });
                Vec::new()
            }
            _ => {
                app.prompt = Some(Prompt::ImageName { template, input });
                Vec::new()
            }
        },
    }
}
