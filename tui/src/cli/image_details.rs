//! What `kiln image show` prints: one `field: value` line per field, the lineage back to the base
//! last.

use kiln_shared::protocol::ImageInfo;

use super::image::{human_size, members_text};
use super::output::{self, local_time_long};

/// What `image show` prints: one `field: value` line per field.
pub fn image_details(i: &ImageInfo) -> String {
    let dash = |s: Option<String>| s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into());
    let size = |b: u64| {
        if b == 0 {
            "-".to_string()
        } else {
            format!("{} ({b} bytes)", human_size(b))
        }
    };
    let captured = i.from_instance.as_ref().map(|inst| match &i.parent_image {
        Some(parent) => format!("instance {inst} (which ran image {parent})"),
        None => format!("instance {inst}"),
    });
    let built_from = captured.or_else(|| {
        i.template.as_ref().map(|t| {
            let mut s = t.clone();
            if let Some(r) = i.template_revision {
                s.push_str(&format!(" revision {r}"));
            }
            if let Some(b) = i.build {
                s.push_str(&format!(", build {b}"));
            }
            s
        })
    });
    let mut rows = vec![
        ("id", i.id.clone()),
        ("name", i.name.clone()),
        ("visibility", i.visibility.as_str().to_string()),
        ("owner", dash(i.owner_project.clone())),
        ("os", i.os.clone()),
        ("family", dash(Some(i.family.clone()))),
        ("default user", dash(Some(i.default_user.clone()))),
        ("state", i.state.as_str().to_string()),
        ("format", i.format.clone()),
        ("virtual size", size(i.virtual_size)),
        ("file size", size(i.file_size)),
        ("min disk", format!("{} GB", i.min_disk_gb)),
        ("sha256", dash(Some(i.sha256.clone()))),
        ("built from", dash(built_from)),
        ("path", i.path.clone()),
        ("created", local_time_long(&i.created_at)),
        ("shared with", dash(Some(members_text(&i.shared_with)))),
    ];
    if let Some(d) = &i.description {
        rows.push(("description", d.clone()));
    }
    // Back to the base: `lineage` lines, parent first.
    for (n, e) in i.lineage.iter().enumerate() {
        let mut line = format!("{}. ", n + 1);
        if e.name.is_empty() {
            line.push_str(&format!("{} ({})", e.id, e.visibility));
        } else {
            line.push_str(&format!("{} ({}, {})", e.name, e.id, e.visibility));
        }
        if let Some(t) = &e.template {
            line.push_str(&format!(", template {t}"));
            if let Some(r) = e.template_revision {
                line.push_str(&format!(" revision {r}"));
            }
        }
        if let Some(b) = e.build {
            line.push_str(&format!(", build {b}"));
        }
        if let Some(inst) = &e.from_instance {
            line.push_str(&format!(", captured from instance {inst}"));
        }
        if let Some(t) = &e.trigger {
            line.push_str(&format!(", triggered by {} {}", t.image, t.version));
        }
        if !e.sha256.is_empty() {
            line.push_str(&format!(", sha256 {}", &e.sha256[..e.sha256.len().min(16)]));
        }
        rows.push((if n == 0 { "lineage" } else { "" }, line));
    }
    if let Some(m) = &i.message {
        rows.push(("message", m.clone()));
    }
    rows.push((
        "warm start",
        match &i.warm {
            Some(w) => format!(
                "saved VM from {} ({}, {} vCPUs, {} MB, {} memory state)",
                local_time_long(&w.created_at),
                w.accel,
                w.cpus,
                w.memory_mb,
                human_size(w.state_bytes)
            ),
            None => "none (builds boot cold; `kiln image warm` saves one)".into(),
        },
    ));
    rows.iter()
        .map(|(k, v)| {
            let clean = output::truncate(v, usize::MAX);
            format!("{:<13} {clean}\n", format!("{k}:"))
        })
        .collect()
}
