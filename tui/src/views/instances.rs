//! The Instances view: the project's instances (state, size, SSH port, uptime) and a details
//! pane for the selected one.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use super::{draw_list_table, duration_text, empty, Theme};
use crate::app::{App, Connection};
use kiln_shared::protocol::{Instance, InstanceState};

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let items = &app.instances.list.items;
    if items.is_empty() {
        let text = match (
            app.instances.unsupported,
            app.instances.list.loaded,
            &app.connection,
        ) {
            (true, _, Connection::Connected { version }) => {
                format!("kilnd {version} has no instances: upgrade kilnd to run images as VMs")
            }
            (_, false, Connection::Connected { .. }) => "loading instances…".to_string(),
            (_, false, _) => "not connected to kilnd".to_string(),
            _ => "no instances yet: r on an image (Images tab) runs one".to_string(),
        };
        return empty(f, app, area, &text);
    }
    let (list, pane) = super::list_and_details(area);
    let t = Theme::of(app);
    let rows = items.iter().map(|i| {
        Row::new(vec![
            Cell::from(i.name.clone()),
            Cell::from(i.image.clone()),
            Cell::from(i.state.as_str()).style(t.instance_state(i.state)),
            Cell::from(i.cpus.to_string()),
            Cell::from(format!("{} MB", i.memory_mb)),
            Cell::from(port_text(i)),
            Cell::from(uptime(app, i)),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Length(7),
        ],
    );
    let header = ["NAME", "IMAGE", "STATE", "CPUS", "MEMORY", "SSH", "UPTIME"];
    draw_list_table(f, app, list, table, &header, app.instances.list.sel);

    let (Some(pane), Some(i)) = (pane, app.instances.selected()) else {
        return;
    };
    f.render_widget(
        Paragraph::new(pane_lines(app, i))
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" details ")),
        pane,
    );
}

/// The port SSH is forwarded on while its VM runs, else `-`.
fn port_text(i: &Instance) -> String {
    match ssh_port(i) {
        Some(port) => port.to_string(),
        None => "-".into(),
    }
}

/// The port a login goes to now: none unless its VM is starting or running.
fn ssh_port(i: &Instance) -> Option<u16> {
    let up = matches!(i.state, InstanceState::Starting | InstanceState::Running);
    (up && i.ssh.port != 0).then_some(i.ssh.port)
}

/// How long its VM has been up (since it last started), `-` while stopped.
fn uptime(app: &App, i: &Instance) -> String {
    i.started_at
        .map_or("-".into(), |s| duration_text((app.now - s).num_seconds()))
}

fn pane_lines<'a>(app: &App, i: &'a Instance) -> Vec<Line<'a>> {
    let t = Theme::of(app);
    let mut lines = vec![
        Line::styled(format!("{} · image {}", i.name, i.image), t.header()),
        Line::from(match i.started_at {
            Some(s) => format!(
                "{} · up {}, since {}",
                i.state,
                uptime(app, i),
                s.format("%H:%M:%S UTC")
            ),
            None => i.state.to_string(),
        }),
        Line::from(format!(
            "{} CPUs · {} MB · disk {} GiB · {}",
            i.cpus, i.memory_mb, i.disk_gb, i.os
        )),
        Line::from(match ssh_port(i) {
            Some(port) => format!("ssh {}@{} port {port}", i.ssh.user, i.ssh.host),
            None => format!("ssh as {} once it runs", i.ssh.user),
        }),
        Line::from(format!(
            "created {}",
            i.created_at.format("%Y-%m-%d %H:%M UTC")
        )),
    ];
    if !i.message.is_empty() {
        let style = if i.state == InstanceState::Failed {
            t.error()
        } else {
            t.dim()
        };
        lines.push(Line::styled(i.message.clone(), style));
    }
    lines
}
