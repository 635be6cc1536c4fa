//! What an `event` from kilnd's events subscription changes in the dashboard.

use kiln_shared::protocol::{Event, EventKind};

use super::{App, Effect};

/// An `event` from the events subscription: one build, template or instance changed (or the
/// events were lost and everything is listed again).
pub(super) fn on_event(app: &mut App, e: Event) -> Vec<Effect> {
    if app.events_sub != Some(e.sub) {
        return Vec::new();
    }
    match e.kind {
        EventKind::Build { build } => app.builds.on_event(*build),
        EventKind::Template { name, template } => app.templates.on_event(name, template),
        EventKind::Instance { name, instance } => {
            app.instances.on_change(&name, instance.map(|i| *i))
        }
        EventKind::Resync => {
            app.templates.list.loaded = false;
            app.builds.list.loaded = false;
            app.instances.list.loaded = false;
            return app.refresh();
        }
    }
    Vec::new()
}
