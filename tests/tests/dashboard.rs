//! The dashboard in a real terminal: `kiln` run bare in a tmux pane at 80x24 against a real
//! kilnd, driven with send-keys and read with capture-pane, with the daemon's state checked
//! through the protocol. First, with an empty qcow2 as the base (no VM): the template is made in
//! the dashboard's form (its user script in an `$EDITOR` that is a small script), its build
//! boots nothing and stays in `booting` until the dashboard cancels it, and the Instances tab is
//! seen empty, with its keys in `?`. Then, with the bootstrapped base and its saved VM, a real
//! instance's life from the dashboard: `r` on the image runs it with the pane's `HOME`'s key,
//! `a` logs in to it in the same terminal (a command typed in its shell) and comes back, `s`
//! stops it, `c` captures it as an image (a helper VM), `D` deletes it. And the Images view's
//! Galleries tab: a gallery's definition listed, the gallery shared from it. And `i`: an Azure
//! Image Builder template imported from a file, its warnings seen before it is stored.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use kiln_tests::{qemus_in, KillVms, Kilnd, Pane};
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

#[test]
fn the_galleries_tab_lists_definitions_and_shares_a_gallery() {
    let k = Kilnd::start();
    let mut c = k.connect();
    c.call("gallery.create", json!({"name": "prod"}));
    c.call(
        "gallery.image.create",
        json!({"image": "prod/web", "os": "debian-12", "retention": {"keep_latest": 3}}),
    );
    let Some(pane) = Pane::start(&k, 80, 24, "NO_COLOR=1") else {
        return;
    };
    pane.expect("connected");
    pane.keys(&["Tab", "Tab", "4"]);
    pane.expect("Galleries (1)");
    let s = pane.expect("prod/web");
    assert!(s.contains("keep the latest 3"), "{s}");
    pane.keys(&["s"]);
    pane.expect("share gallery prod with projects");
    pane.keys(&["team-b", "Enter"]);
    pane.expect("now shared with team-b (pending)");
    let g = c.call("gallery.get", json!({"name": "prod"}));
    assert_eq!(
        g["gallery"]["members"],
        json!([{"project": "team-b", "status": "pending"}]),
        "{g}"
    );
}

#[test]
fn i_imports_an_azure_template_after_showing_what_was_dropped() {
    let k = Kilnd::start();
    let mut c = k.connect();
    let file = k.dir.path().join("azure.json");
    let azure = json!({
        "type": "Microsoft.VirtualMachineImages/imageTemplates",
        "apiVersion": "2022-02-14",
        "name": "from-azure",
        "location": "westus2",
        "properties": {
            "buildTimeoutInMinutes": 80,
            "source": {"type": "PlatformImage", "publisher": "Debian", "offer": "debian-12",
                       "sku": "12", "version": "latest"},
            "customize": [{"type": "Shell", "name": "hello", "inline": ["echo hello"]}],
            "distribute": [{"type": "ManagedImage", "imageId": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Compute/images/web",
                            "location": "westus2", "runOutputName": "web"}]
        }
    });
    std::fs::write(&file, serde_json::to_string_pretty(&azure).unwrap()).unwrap();
    let Some(pane) = Pane::start(&k, 100, 30, "NO_COLOR=1") else {
        return;
    };
    pane.expect("connected");
    pane.keys(&["i"]);
    pane.expect("import an Azure Image Builder template");
    pane.keys(&[file.to_str().unwrap(), "Enter"]);
    let s = pane.expect("not carried over");
    assert!(s.contains("location"), "{s}");
    assert!(s.contains("build_timeout_minutes = 80"), "{s}");
    let list = c.call("template.list", json!({}));
    assert_eq!(
        list["templates"],
        json!([]),
        "nothing stored before enter: {list}"
    );
    pane.keys(&["Enter"]);
    pane.expect("imported from-azure revision 1");
    let t = c.call("template.get", json!({"name": "from-azure"}))["template"].clone();
    assert_eq!(t["build_timeout_minutes"], 80, "{t}");
    assert_eq!(t["customize"][0]["inline"], json!(["echo hello"]), "{t}");
}

#[test]
fn run_attach_stop_capture_and_delete_an_instance_from_the_dashboard() {
    let Some(base) = kiln_tests::base_image::base_image() else {
        return;
    };
    let k = Kilnd::start();
    let vms = KillVms(k.data_dir.clone());
    // With a saved VM: the instance resumes it instead of booting cold.
    let t0 = Instant::now();
    k.import_base(&base, true);
    eprintln!(
        "base imported with a saved VM in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut c = k.connect();
    // The pane's HOME, with the default key `r` gives the instance and `a` logs in with.
    let home = k.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::set_permissions(home.join(".ssh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = home.join(".ssh/id_ed25519");
    kiln_tests::ssh_keypair(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let env = format!("NO_COLOR=1 HOME={}", home.display());
    let Some(pane) = Pane::start(&k, 80, 24, &env) else {
        return;
    };
    pane.expect("connected");

    // Images tab, `r`, a name: it starts, and the Instances tab shows it.
    let name = "dashvm";
    pane.keys(&["Tab", "Tab"]);
    pane.expect("debian-12");
    pane.keys(&["r"]);
    pane.expect("name for an instance of debian-12:");
    let t0 = Instant::now();
    pane.keys(&[name, "Enter"]);
    pane.expect(&format!("instance {name} of debian-12 is starting"));
    pane.expect("UPTIME");
    let i = c.until_instance(name, "running", Duration::from_secs(1200));
    eprintln!(
        "instance running after {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        i["message"]
    );
    assert!(
        i["message"]
            .as_str()
            .unwrap()
            .starts_with("resumed the saved VM of debian-12"),
        "{i}"
    );
    // Its details pane, kept current by kilnd's events (the status bar always says "running N").
    let s = pane.expect("running · up");
    assert!(
        s.contains(&format!("ssh debian@127.0.0.1 port {}", i["ssh"]["port"])),
        "{s}"
    );

    // `a`: the dashboard steps aside for `kiln instance ssh` in this terminal; a command typed
    // in its shell runs in the instance; `exit` brings the dashboard back.
    pane.keys(&["a"]);
    pane.expect(&format!("@{name}:"));
    pane.keys(&["hostname > /tmp/x; hostname", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pane.screen().lines().any(|l| l.trim() == name) {
        assert!(Instant::now() < deadline, "no hostname:\n{}", pane.screen());
        std::thread::sleep(Duration::from_millis(200));
    }
    pane.keys(&["exit", "Enter"]);
    pane.expect(&format!("back from instance {name}"));
    // The Instances tab, as it was left (UPTIME is its table's header alone).
    let s = pane.expect("UPTIME");
    assert!(s.contains(&format!("{name} · image debian-12")), "{s}");
    let out = k.instance_ssh(&home, &key, name, "cat /tmp/x; cat ~/.ssh/authorized_keys");
    assert!(out.status.success(), "{}", kiln_tests::stderr(&out));
    assert_eq!(
        kiln_tests::stdout(&out),
        format!("{name}\n{public}"),
        "the typed command ran in the instance, which has the pane's HOME's key"
    );
    assert!(home
        .join(format!(".cache/kiln/known_hosts/default.{name}"))
        .is_file());

    // `s` asks, `y` stops it (ACPI).
    pane.keys(&["s"]);
    pane.expect(&format!("stop instance {name}? y/N"));
    pane.keys(&["y"]);
    let i = c.until_instance(name, "stopped", Duration::from_secs(300));
    assert_eq!(i["message"], "powered off", "{i}");
    pane.expect(&format!("instance {name} is stopped (powered off)"));
    assert!(qemus_in(&k.data_dir).is_empty());

    // `c` asks the image's name; a helper VM generalizes the disk, then the image is there.
    let image = "dash-captured";
    pane.keys(&["c"]);
    pane.expect(&format!("image name for a capture of instance {name}:"));
    pane.keys(&[image, "Enter"]);
    // Its progress lines follow in the message line.
    pane.expect("capture: ==> ");
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(1800);
    let img = loop {
        let r = c.request("image.get", json!({ "image": image }));
        let img = r["result"]["image"].clone();
        if img["state"] == "available" {
            break img;
        }
        assert!(
            Instant::now() < deadline && img["state"] != "failed",
            "image {image} never available: {r}\n{}",
            pane.screen()
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("captured after {:.1} s", t0.elapsed().as_secs_f64());
    assert_eq!(img["from_instance"], name, "{img}");
    pane.expect(&format!("created image {image}"));
    let i = c.call("instance.get", json!({ "name": name }))["instance"].clone();
    assert_eq!(i["state"], "stopped", "capture leaves it as it was: {i}");

    // `D` asks for its name typed; then it is gone.
    pane.keys(&["D"]);
    pane.expect(&format!("delete instance {name}? type its name:"));
    pane.keys(&[name, "Enter"]);
    pane.expect("no instances yet");
    let list = c.call("instance.list", json!({}));
    assert_eq!(list["instances"], json!([]), "{list}");
    assert!(qemus_in(&k.data_dir).is_empty());

    pane.keys(&["q"]);
    drop(vms);
}
