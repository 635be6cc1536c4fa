//! `update` tests of `i` in the Templates view: an Azure template's file read by the shell,
//! kilnd's dry run shown with its warnings, `enter` stores it and `esc` drops it.

use super::fixtures::{app, key, press, reply, stored_template};
use super::import::window_lines;
use super::keymap::Key;
use super::*;
use kiln_shared::azure::Warning;
use kiln_shared::protocol::{TemplateImportAzureResult, TemplateRef};
use serde_json::json;

/// `i`, the path typed, and the shell's read of it: the dry run's call (its tag, its params).
fn read_azure(a: &mut App) -> (u64, serde_json::Value) {
    press(a, "iazure.json");
    let fx = key(a, Key::Enter);
    assert_eq!(
        fx,
        [Effect::ReadFile {
            path: a.cwd.join("azure.json"),
            shown: "azure.json".into()
        }]
    );
    let fx = update(
        a,
        Action::FileRead {
            shown: "azure.json".into(),
            text: Ok(r#"{"type": "Microsoft.VirtualMachineImages/imageTemplates"}"#.into()),
        },
    );
    let [Effect::Call {
        tag,
        request: Request::TemplateImportAzure(p),
    }] = fx.as_slice()
    else {
        panic!("the dry run: {fx:?}");
    };
    (*tag, serde_json::to_value(p).unwrap_or_default())
}

fn dry_run_reply() -> Reply {
    Reply::TemplateImportAzure(Ok(TemplateImportAzureResult {
        template: stored_template(),
        warnings: vec![Warning {
            path: "location".into(),
            message: "dropped: kiln builds here".into(),
        }],
        stored: None,
    }))
}

#[test]
fn i_reads_the_file_shows_the_dry_run_and_enter_stores_it() {
    let mut a = app();
    let (tag, params) = read_azure(&mut a);
    assert_eq!(params["dry_run"], true, "{params}");
    assert_eq!(
        params["azure"]["type"],
        "Microsoft.VirtualMachineImages/imageTemplates"
    );
    reply(&mut a, tag, dry_run_reply());
    assert_eq!(
        a.overlay,
        Some(overlay::Overlay::ImportWindow { scroll: 0 })
    );
    let lines = window_lines(a.import.as_ref().expect("an import"));
    assert_eq!(lines[0], "1 thing not carried over:");
    assert_eq!(lines[1], "  location: dropped: kiln builds here");
    assert!(lines.iter().any(|l| l.starts_with("name = ")), "{lines:?}");

    let fx = key(&mut a, Key::Enter);
    let [Effect::Call {
        tag,
        request: Request::TemplateImportAzure(p),
    }] = fx.as_slice()
    else {
        panic!("the store: {fx:?}");
    };
    assert!(!p.dry_run);
    let stored = TemplateImportAzureResult {
        template: stored_template(),
        warnings: Vec::new(),
        stored: Some(TemplateRef {
            name: "web".into(),
            revision: 1,
        }),
    };
    let tag = *tag;
    let fx = reply(&mut a, tag, Reply::TemplateImportAzure(Ok(stored)));
    assert!(a.overlay.is_none() && a.import.is_none());
    assert_eq!(
        a.message.as_deref(),
        Some("imported web revision 1 (0 warnings)")
    );
    assert!(
        fx.iter().any(|e| matches!(
            e,
            Effect::Call {
                request: Request::TemplateList(_),
                ..
            }
        )),
        "the list again: {fx:?}"
    );
}

#[test]
fn esc_drops_the_import_and_bad_files_or_refusals_say_why() {
    let mut a = app();
    let (tag, _) = read_azure(&mut a);
    reply(&mut a, tag, dry_run_reply());
    assert!(key(&mut a, Key::Esc).is_empty());
    assert!(a.overlay.is_none() && a.import.is_none());
    assert_eq!(a.message.as_deref(), Some("azure.json not imported"));

    press(&mut a, "i");
    key(&mut a, Key::Enter);
    assert_eq!(
        a.message.as_deref(),
        Some("nothing imported: no file named")
    );
    update(
        &mut a,
        Action::FileRead {
            shown: "x.json".into(),
            text: Ok("{not json".into()),
        },
    );
    assert!(
        a.message
            .as_deref()
            .is_some_and(|m| m.starts_with("x.json: not JSON: ")),
        "{:?}",
        a.message
    );
    update(
        &mut a,
        Action::FileRead {
            shown: "gone.json".into(),
            text: Err("No such file or directory (os error 2)".into()),
        },
    );
    assert_eq!(
        a.message.as_deref(),
        Some("gone.json: No such file or directory (os error 2)")
    );

    let (tag, _) = read_azure(&mut a);
    let refused = fixtures::refused(
        kiln_shared::protocol::ErrorKind::InvalidParams,
        "properties.customize[3]: WindowsUpdate is Windows-only; kiln builds Linux images",
        Vec::new(),
    );
    reply(&mut a, tag, Reply::TemplateImportAzure(Err(refused)));
    assert!(a.import.is_none() && a.overlay.is_none());
    assert!(
        a.message
            .as_deref()
            .is_some_and(|m| m.contains("Windows-only")),
        "{:?}",
        a.message
    );
    let _ = json!({});
}
