//! The dashboard in a real terminal: `kiln` run bare in a tmux pane at 80x24 against a real
//! kilnd, driven with send-keys and read with capture-pane, with the daemon's state checked
//! through the protocol. The template is made in the dashboard's form (its user script in an
//! `$EDITOR` that is a small script); the base image is an empty qcow2, so the build boots
//! nothing and stays in `booting` until the dashboard cancels it. No instance is run (that needs
//! a VM): the Instances tab is only seen empty, with its keys in `?`.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use kiln_tests::{Kilnd, Pane};
use serde_json::json;

#[test]
fn build_from_the_dashboard_follow_its_log_and_cancel_it() {
    let k = Kilnd::start();
    // An empty disk boots nothing: no saved VM for it.
    k.import_empty_base();
    let mut c = k.connect();
    // The "editor": sets min_disk_gb in a template's TOML, writes a user script into any other
    // file.
    let editor = k.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\ncase \"$1\" in\n\
         *.toml) sed -i 's/^min_disk_gb = .*/min_disk_gb = 20/' \"$1\" ;;\n\
         *) printf '#!/bin/bash -e\\necho from the form\\n' > \"$1\" ;;\n\
         esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();

    let env = format!("VISUAL= EDITOR={} NO_COLOR=1", editor.display());
    let Some(pane) = Pane::start(&k, 80, 24, &env) else {
        return;
    };
    pane.expect("connected");
    let s = pane.expect("no templates yet");
    assert!(s.lines().count() <= 24);

    // `n` opens the form; nothing is stored while the name is missing.
    pane.keys(&["n"]);
    pane.expect("New template");
    pane.keys(&["C-s"]);
    pane.expect("not saved: 1 problem");
    let list = c.call("template.list", json!({}));
    assert_eq!(list["templates"], json!([]), "{list}");

    // Name, description, then nginx: apache2 greys out with the reason on its line.
    pane.keys(&["web", "Tab", "from the form", "Tab", "Tab", "Space"]);
    let s = pane.expect("[x] nginx");
    assert!(s.contains("[-] apache2    conflicts with nginx"), "{s}");
    // The source image from the picker (8 more applications, min disk, timeout, source).
    for _ in 0..11 {
        pane.keys(&["Tab"]);
    }
    pane.expect("▶ Source image");
    pane.keys(&["Enter"]);
    pane.expect("source image · debian-12");
    pane.keys(&["Enter"]);
    // The user script in $EDITOR, then save.
    pane.keys(&["Tab", "Enter"]);
    pane.expect("#!/bin/bash -e (2 lines)");
    pane.keys(&["C-s"]);
    pane.expect("created web revision 1");
    let t = c.call("template.get", json!({"name": "web"}))["template"].clone();
    assert_eq!(t["description"], "from the form", "{t}");
    assert_eq!(t["applications"], json!(["nginx"]), "{t}");
    assert_eq!(t["source"]["image"], "debian-12", "{t}");
    assert_eq!(
        t["user_script"], "#!/bin/bash -e\necho from the form\n",
        "{t}"
    );

    // `e` edits it (the whole TOML too, with ctrl-e): a new revision, the rest kept.
    pane.keys(&["e"]);
    pane.expect("Edit web (from revision 1)");
    pane.keys(&["Tab", " v2", "C-e"]);
    pane.expect("20 GB");
    pane.keys(&["C-s"]);
    pane.expect("updated web revision 2");
    let r = c.call("template.get", json!({"name": "web"}));
    assert_eq!(r["revision"], 2, "{r}");
    assert_eq!(r["template"]["description"], "from the form v2");
    assert_eq!(r["template"]["min_disk_gb"], 20);
    assert_eq!(r["template"]["user_script"], t["user_script"]);

    // `d` shows every detail, scrolled with the movement keys; esc closes it.
    pane.keys(&["d"]);
    pane.expect("template web · j/k scroll");
    pane.expect("revisions: 2");
    pane.keys(&["G"]);
    pane.expect("images: 0");
    pane.keys(&["Escape"]);
    pane.expect("d opens them whole");

    // `b` asks for the image name, then the base image, starts the build and shows it.
    pane.keys(&["b"]);
    pane.expect("image name");
    pane.keys(&["img1", "Enter"]);
    pane.expect("base image for web");
    pane.keys(&["Enter"]);
    pane.expect("build 1");
    let b = c.call("build.get", json!({"id": 1}))["build"].clone();
    // kilnd records the base image it resolved the name to, by id.
    let base = c.call("image.get", json!({"image": "debian-12"}))["image"]["id"].clone();
    assert_eq!(
        (
            b["template"].clone(),
            b["image_name"].clone(),
            b["base_image"].clone()
        ),
        (json!("web"), json!("img1"), base)
    );

    // The build's details are on screen, live; its log follows.
    pane.expect("booting");
    pane.keys(&["l"]);
    pane.expect("==> booting");
    pane.keys(&["Escape"]);
    pane.expect("Build 1");

    // `x` asks (default no); `y` cancels.
    pane.keys(&["x"]);
    pane.expect("y/N");
    pane.keys(&["y"]);
    pane.expect("canceled");
    let b = c.call("build.get", json!({"id": 1}))["build"].clone();
    assert_eq!(b["state"], "canceled", "{b}");

    // esc goes to the builds list, which has it.
    pane.keys(&["Escape"]);
    pane.expect("ELAPSED");
    let s = pane.expect("img1");
    assert!(s.contains("web"), "{s}");

    // `r` on an image asks the new instance's name (esc: none is run; an instance needs a VM,
    // tests/instances.rs runs them); the Instances tab lists none and `?` names its keys.
    pane.keys(&["Tab", "r"]);
    pane.expect("name for an instance of debian-12:");
    pane.keys(&["Escape", "Tab"]);
    pane.expect("no instances yet: r on an image");
    pane.keys(&["?", &"j".repeat(60)]);
    pane.expect("log in here (kiln instance ssh)");
    let list = c.call("instance.list", json!({}));
    assert_eq!(list["instances"], json!([]), "{list}");
    pane.keys(&["Escape"]);

    pane.keys(&["q"]);
}
