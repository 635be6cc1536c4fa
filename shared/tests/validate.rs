//! Template validation, one rule per line: each case mutates a valid base template and names the
//! field paths of the violations it must produce, no more and no fewer.
//!
//! A mutation is one or more lines, each `PATH = TOML-VALUE` (set, creating tables and appending
//! to arrays as needed) or `-PATH` (remove). PATH looks like a violation path:
//! `customize[1].destination`, `validate.in_vm[0]`, `tags."quoted key"`. Helpers below write the
//! mutations of the size limits (`steps(257)`, `tags(51)`).

#![allow(clippy::unwrap_used)]

use kiln_shared::apps::AppCatalog;
use kiln_shared::validate::validate;
use kiln_shared::{Template, Violation};
use toml::Value;

const HEX: &str = "d55c1cde285a581fe2862356db807de952bca7eec937e27de5d06ea657ea1dfb";

/// Valid, and uses every kind of step and target so that each rule has something to break.
const BASE: &str = r##"
name = "web-base"
description = "nginx and PostgreSQL on Debian 12"
os = "debian-12"
applications = ["nginx", "postgresql"]
min_disk_gb = 10
build_timeout_minutes = 240
user_script = "#!/bin/bash -e\nsudo apt-get install -y htop\n"

[source]
image = "debian-12"
version = "latest"

[vm]
cpus = 2
memory_mb = 2048
os_disk_gb = 0

[[customize]]
type = "shell"
name = "tools"
inline = ["sudo apt-get install -y jq"]

[[customize]]
type = "shell"
name = "setup"
script = "https://example.org/setup.sh"
sha256 = "d55c1cde285a581fe2862356db807de952bca7eec937e27de5d06ea657ea1dfb"

[[customize]]
type = "file"
name = "motd"
source = "/srv/templates/files/motd"
destination = "/tmp/motd"
sha256 = "d55c1cde285a581fe2862356db807de952bca7eec937e27de5d06ea657ea1dfb"

[[customize]]
type = "reboot"
name = "reboot"
timeout = "5m"

[validate]
boot_test = true

[[validate.in_vm]]
type = "shell"
name = "nginx-up"
inline = ["systemctl is-active nginx"]

[[distribute]]
type = "image"
run_output_name = "local"

[[distribute]]
type = "gallery"
run_output_name = "prod"
gallery = "prod"
image = "web"
version = "auto"
share_with = ["team-b"]

[[distribute]]
type = "export"
run_output_name = "vhd"
format = "vhd"
path = "/srv/images/web.vhd"

[tags]
owner = "ops"
"##;

#[test]
fn every_rule() {
    let a = |n: usize| "a".repeat(n);
    let hangul = |n: usize| "가".repeat(n);

    check("", &[]);

    // name
    check(r#"name = """#, &["name"]);
    check("-name", &["name"]);
    check(&format!("name = {:?}", a(255)), &[]);
    check(&format!("name = {:?}", a(256)), &["name"]);
    check(&format!("name = {:?}", hangul(85)), &[]);
    check(&format!("name = {:?}", hangul(86)), &["name"]);
    check(r#"name = "web-base ウェブ""#, &[]);
    check(r#"name = "web\u0007base""#, &["name"]);
    check(r#"name = "web\nbase""#, &["name"]);
    check(r#"name = "web\u007fbase""#, &["name"]);
    check(r#"name = "web/base""#, &["name"]);
    check(r#"name = " web-base""#, &["name"]);
    check(r#"name = "web-base ""#, &["name"]);
    // The first rule a name breaks is the one reported.
    check(r#"name = "\tweb/base""#, &["name"]);
    // One rule for every name (names.rs): invisible characters, '.', '..', a leading '-'.
    check(r#"name = "web-base\u202E""#, &["name"]);
    check(r#"name = "web-base\u200B""#, &["name"]);
    check(r#"name = "\uFEFFweb-base""#, &["name"]);
    check(r#"name = "web\u2028base""#, &["name"]);
    check(r#"name = "web\u2029base""#, &["name"]);
    check(r#"name = "web\u00ADbase""#, &["name"]);
    check(r#"name = "web\u00A0base""#, &["name"]);
    check(r#"name = "web\u3000base""#, &["name"]);
    check(r#"name = "web\u0000base""#, &["name"]);
    check(r#"name = ".""#, &["name"]);
    check(r#"name = "..""#, &["name"]);
    check(r#"name = "...""#, &[]);
    check(r#"name = ".web""#, &[]);
    check(r#"name = "-x""#, &["name"]);
    check(r#"name = "x-""#, &[]);
    check(r#"name = "a/b""#, &["name"]);
    check(r#"name = "web base""#, &[]);
    check(r#"name = "$(id)""#, &[]);
    check(r#"name = "웹 🚀""#, &[]);

    // os
    check(r#"os = """#, &["os"]);
    check("-os", &["os"]);
    check(r#"os = "Debian-12""#, &["os"]);
    check(r#"os = "debian12""#, &["os"]);
    check(r#"os = "debian 12""#, &["os"]);
    check(r#"os = "debian-""#, &["os"]);
    check(r#"os = "ubuntu-24.04""#, &[]);
    check("-applications\nos = \"rhel-9.4\"", &[]);

    // user_script
    check("-user_script", &[]);
    check(r##"user_script = "#!/bin/sh\necho hi\n""##, &[]);
    check(r#"user_script = "echo hi\n""#, &["user_script"]);
    check(r#"user_script = """#, &["user_script"]);
    check(r#"user_script = "\n#!/bin/bash\n""#, &["user_script"]);

    // build_timeout_minutes: 0 is the default, then 6..=960
    check("build_timeout_minutes = 0", &[]);
    check("build_timeout_minutes = 1", &["build_timeout_minutes"]);
    check("build_timeout_minutes = 5", &["build_timeout_minutes"]);
    check("build_timeout_minutes = 6", &[]);
    check("build_timeout_minutes = 960", &[]);
    check("build_timeout_minutes = 961", &["build_timeout_minutes"]);

    // min_disk_gb
    check("min_disk_gb = 0", &[]);
    check("min_disk_gb = 65536", &[]);
    check("min_disk_gb = 65537", &["min_disk_gb"]);

    // source
    check(r#"source.image = """#, &["source.image"]);
    check(r#"source.image = "   ""#, &["source.image"]);
    check("-source", &["source.image"]);
    // GALLERY/IMAGE names a gallery image; both parts follow the name rule.
    check(r#"source.image = "team/web-base-2024""#, &[]);
    check(r#"source.image = "team/-x""#, &["source.image"]);
    check(r#"source.image = "team/a/b""#, &["source.image"]);
    check(
        "source.image = \"team/web\"\nsource.version = \"1.2\"",
        &["source.version"],
    );
    check(
        "source.image = \"team/web\"\nsource.version = \"1.2.0\"",
        &[],
    );
    check(r#"source.image = "img-0123456789abcdef""#, &[]);
    check(r#"source.image = "web-base\u200B""#, &["source.image"]);
    check(r#"source.image = "-x""#, &["source.image"]);
    check(r#"source.version = """#, &["source.version"]);
    // A plain image has one version: pinning one would be ignored, so it is refused.
    check(r#"source.version = "2024.06.1""#, &["source.version"]);
    check(
        "source.image = \"team/web\"\nsource.version = \"2024.6.1\"",
        &[],
    );
    check(
        "source.image = \"team/web\"\nsource.version = \"2024.06.1\"",
        &["source.version"],
    );
    check(r#"source.version = "1.0 beta""#, &["source.version"]);

    // vm
    check("vm.cpus = 0", &["vm.cpus"]);
    check("vm.cpus = 1", &[]);
    check("vm.cpus = 64", &[]);
    check("vm.cpus = 65", &["vm.cpus"]);
    check("vm.memory_mb = 255", &["vm.memory_mb"]);
    check("vm.memory_mb = 256", &[]);
    check("vm.memory_mb = 262144", &[]);
    check("vm.memory_mb = 262145", &["vm.memory_mb"]);
    check("vm.os_disk_gb = 30", &[]);
    check("vm.os_disk_gb = 65536", &[]);
    check("vm.os_disk_gb = 65537", &["vm.os_disk_gb"]);

    // step names
    check(r#"customize[0].name = """#, &["customize[0].name"]);
    check("-customize[0].name", &["customize[0].name"]);
    check(r#"customize[0].name = "has space""#, &["customize[0].name"]);
    check(r#"customize[0].name = "Ünïcode""#, &["customize[0].name"]);
    check(r#"customize[0].name = "a.b_c-D9""#, &[]);
    check(&format!("customize[0].name = {:?}", a(64)), &[]);
    check(
        &format!("customize[0].name = {:?}", a(65)),
        &["customize[0].name"],
    );
    check(r#"customize[1].name = "tools""#, &["customize[1].name"]);
    check(r#"customize[3].name = "tools""#, &["customize[3].name"]);
    check(r#"validate.in_vm[0].name = "tools""#, &[]);

    // shell: exactly one of inline / script
    check(
        r#"customize[0].script = "https://example.org/x.sh""#,
        &["customize[0]"],
    );
    check("-customize[0].inline", &["customize[0]"]);
    check("customize[0].inline = []", &["customize[0].inline"]);
    check(r#"customize[1].script = "/srv/scripts/setup.sh""#, &[]);
    // Relative paths only in a template file, which the CLI resolves before it sends.
    check(
        r#"customize[1].script = "scripts/setup.sh""#,
        &["customize[1].script"],
    );
    check(
        r#"customize[1].script = "/srv/../etc/setup.sh""#,
        &["customize[1].script"],
    );
    check(
        r#"customize[1].script = "HTTPS://example.org/setup.sh""#,
        &[],
    );
    check(
        r#"customize[1].script = "http://example.org/setup.sh""#,
        &["customize[1].script"],
    );
    check(
        r#"customize[1].script = "ftp://example.org/setup.sh""#,
        &["customize[1].script"],
    );
    check(
        r#"customize[1].script = "file:///root/setup.sh""#,
        &["customize[1].script"],
    );
    check(
        r#"customize[1].script = "https://""#,
        &["customize[1].script"],
    );
    check(
        r#"customize[1].script = "https://example.org/my setup.sh""#,
        &["customize[1].script"],
    );
    check(r#"customize[1].script = """#, &["customize[1].script"]);
    check("-customize[1].sha256", &[]);
    check(
        &format!("customize[0].sha256 = {HEX:?}"),
        &["customize[0].sha256"],
    );

    // sha256
    check(r#"customize[1].sha256 = "abc""#, &["customize[1].sha256"]);
    check(r#"customize[1].sha256 = """#, &["customize[1].sha256"]);
    check(
        &format!("customize[1].sha256 = {:?}", &HEX[1..]),
        &["customize[1].sha256"],
    );
    check(
        &format!("customize[1].sha256 = \"{HEX}0\""),
        &["customize[1].sha256"],
    );
    check(
        &format!("customize[1].sha256 = \"g{}\"", &HEX[1..]),
        &["customize[1].sha256"],
    );
    check(
        &format!("customize[1].sha256 = {:?}", HEX.to_uppercase()),
        &[],
    );
    check(
        &format!("customize[2].sha256 = {:?}", &HEX[1..]),
        &["customize[2].sha256"],
    );

    // file
    check(r#"customize[2].source = """#, &["customize[2].source"]);
    check(r#"customize[2].source = "https://example.org/motd""#, &[]);
    check(r#"customize[2].source = "/srv/files/motd""#, &[]);
    check(
        r#"customize[2].source = "rel/path""#,
        &["customize[2].source"],
    );
    check(
        r#"customize[2].source = "./motd""#,
        &["customize[2].source"],
    );
    check(
        r#"customize[2].source = "/srv/./files/motd""#,
        &["customize[2].source"],
    );
    check(
        r#"customize[2].source = "/srv//files/motd""#,
        &["customize[2].source"],
    );
    check(
        r#"customize[2].source = "/srv/files/""#,
        &["customize[2].source"],
    );
    check(r#"customize[2].source = "/""#, &["customize[2].source"]);
    check(
        r#"customize[2].source = "/srv/motd\u0000""#,
        &["customize[2].source"],
    );
    check(
        r#"customize[2].source = "/srv/mo\ntd""#,
        &["customize[2].source"],
    );
    check(&format!("customize[2].source = \"/{}\"", a(4095)), &[]);
    check(
        &format!("customize[2].source = \"/{}\"", a(4096)),
        &["customize[2].source"],
    );
    check(
        &format!("customize[2].source = \"https://example.org/{}\"", a(5000)),
        &["customize[2].source"],
    );
    check(
        r#"customize[2].source = "http://example.org/motd""#,
        &["customize[2].source"],
    );
    check(
        r#"customize[2].destination = """#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/etc/motd""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "tmp/motd""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmpfoo/motd""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/../etc/motd""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/a/../../etc""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/..""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/./motd""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/web/""#,
        &["customize[2].destination"],
    );
    check(
        r#"customize[2].destination = "/tmp/mo\ntd""#,
        &["customize[2].destination"],
    );
    check(r#"customize[2].destination = "/tmp/web/motd""#, &[]);
    check(r#"customize[2].destination = "/tmp/..motd""#, &[]);

    // reboot timeout: a plain number is seconds; zero and more than 1h are rejected
    check("-customize[3].timeout", &[]);
    check(r#"customize[3].timeout = "90s""#, &[]);
    check(r#"customize[3].timeout = "1h""#, &[]);
    check(r#"customize[3].timeout = "300""#, &[]);
    check(r#"customize[3].timeout = "1h0m""#, &[]);
    check(r#"customize[3].timeout = "0s""#, &["customize[3].timeout"]);
    check(r#"customize[3].timeout = "0""#, &["customize[3].timeout"]);
    check(r#"customize[3].timeout = "61m""#, &["customize[3].timeout"]);
    check(
        r#"customize[3].timeout = "soon""#,
        &["customize[3].timeout"],
    );
    check(r#"customize[3].timeout = "5 m""#, &["customize[3].timeout"]);
    check(
        r#"customize[3].timeout = "5min""#,
        &["customize[3].timeout"],
    );
    check(r#"customize[3].timeout = """#, &["customize[3].timeout"]);

    // validate.in_vm: the same rules under their own path
    check(
        r#"validate.in_vm[0].name = """#,
        &["validate.in_vm[0].name"],
    );
    check(
        r#"validate.in_vm[1] = { type = "shell", name = "nginx-up", inline = ["true"] }"#,
        &["validate.in_vm[1].name"],
    );
    check(
        r#"validate.in_vm[0].script = "http://example.org/check.sh""#,
        &["validate.in_vm[0]", "validate.in_vm[0].script"],
    );
    check(
        "validate.in_vm[0].inline = []",
        &["validate.in_vm[0].inline"],
    );
    check(
        r#"validate.in_vm[1] = { type = "file", name = "f", source = "/srv/f", destination = "/etc/f" }"#,
        &["validate.in_vm[1].destination"],
    );
    check(
        r#"validate.in_vm[1] = { type = "reboot", name = "r", timeout = "0s" }"#,
        &["validate.in_vm[1].timeout"],
    );

    // distribute
    check("-distribute", &["distribute"]);
    check("distribute = []", &["distribute"]);
    check(
        r#"distribute[0].run_output_name = """#,
        &["distribute[0].run_output_name"],
    );
    check(
        r#"distribute[0].run_output_name = "my output""#,
        &["distribute[0].run_output_name"],
    );
    check(&format!("distribute[0].run_output_name = {:?}", a(64)), &[]);
    check(
        &format!("distribute[0].run_output_name = {:?}", a(65)),
        &["distribute[0].run_output_name"],
    );
    check(
        r#"distribute[2].run_output_name = "local""#,
        &["distribute[2].run_output_name"],
    );
    check(r#"distribute[2].format = "qcow2""#, &[]);
    check(r#"distribute[2].format = "raw""#, &[]);
    check(r#"distribute[2].format = "vmdk""#, &[]);
    check(
        r#"distribute[2].format = "QCOW2""#,
        &["distribute[2].format"],
    );
    check(r#"distribute[2].format = "iso""#, &["distribute[2].format"]);
    check("-distribute[2].format", &["distribute[2].format"]);
    check(r#"distribute[2].path = """#, &["distribute[2].path"]);
    check(
        r#"distribute[2].path = "images/web.vhd""#,
        &["distribute[2].path"],
    );
    check(
        r#"distribute[2].path = "rel/path""#,
        &["distribute[2].path"],
    );
    check(
        r#"distribute[2].path = "/tmp/../etc/shadow""#,
        &["distribute[2].path"],
    );
    check(r#"distribute[2].path = "/tmp/""#, &["distribute[2].path"]);
    check(r#"distribute[2].path = "/""#, &["distribute[2].path"]);
    check(
        r#"distribute[2].path = "/srv/./web.vhd""#,
        &["distribute[2].path"],
    );
    check(
        r#"distribute[2].path = "/srv/web\u0000.vhd""#,
        &["distribute[2].path"],
    );
    check(
        r#"distribute[2].path = "/srv/web\n.vhd""#,
        &["distribute[2].path"],
    );
    check(r#"distribute[2].path = "/srv/..web.vhd""#, &[]);
    check(
        r#"distribute[3] = { type = "export", run_output_name = "raw", format = "raw", path = "/srv/images/web.vhd" }"#,
        &["distribute[3].path"],
    );
    check(r#"distribute[1].gallery = """#, &["distribute[1].gallery"]);
    check(r#"distribute[1].image = """#, &["distribute[1].image"]);
    check(
        r#"distribute[1].gallery = "prod\u202E""#,
        &["distribute[1].gallery"],
    );
    check(r#"distribute[1].image = "a/b""#, &["distribute[1].image"]);
    check(r#"distribute[1].image = "..""#, &["distribute[1].image"]);
    check(
        r#"distribute[1].share_with = ["-team"]"#,
        &["distribute[1].share_with[0]"],
    );
    check(r#"distribute[1].version = "1.2.3""#, &[]);
    check(r#"distribute[1].version = "0.0.10""#, &[]);
    check("-distribute[1].version", &[]);
    check(
        r#"distribute[1].version = "v1.2.3""#,
        &["distribute[1].version"],
    );
    check(
        r#"distribute[1].version = "1.2""#,
        &["distribute[1].version"],
    );
    check(
        r#"distribute[1].version = "1.2.3.4""#,
        &["distribute[1].version"],
    );
    check(
        r#"distribute[1].version = "01.2.3""#,
        &["distribute[1].version"],
    );
    check(
        r#"distribute[1].version = "1.2.3-rc1""#,
        &["distribute[1].version"],
    );
    check(
        r#"distribute[1].version = "latest""#,
        &["distribute[1].version"],
    );
    check(r#"distribute[1].version = """#, &["distribute[1].version"]);
    check(
        r#"distribute[1].share_with = ["team-b", ""]"#,
        &["distribute[1].share_with[1]"],
    );

    // applications
    check("-applications", &[]);
    check(
        r#"applications = ["nginx", "docker", "mariadb", "postgresql", "redis", "nodejs", "openjdk"]"#,
        &[],
    );
    check(r#"applications = ["apache2"]"#, &[]);
    check(r#"applications = ["nginx", "ngnix"]"#, &["applications[1]"]);
    check(r#"applications = ["nginx", ""]"#, &["applications[1]"]);
    check(r#"applications = ["nginx", "nginx"]"#, &["applications[1]"]);
    check(r#"applications = ["nginx", "apache2"]"#, &["applications"]);
    check(
        r#"applications = ["apache2", "redis", "nginx"]"#,
        &["applications"],
    );
    check(r#"applications = ["mysql"]"#, &["applications[0]"]);
    check(
        r#"applications = ["mariadb", "mysql"]"#,
        &["applications[1]", "applications"],
    );
    check("os = \"ubuntu-24.04\"\napplications = [\"mysql\"]", &[]);
    check(
        "os = \"ubuntu-22.04\"\napplications = [\"mysql\", \"mariadb\"]",
        &["applications"],
    );
    check(
        "os = \"ubuntu-24.04\"\napplications = [\"nginx\", \"mysql\", \"apache2\", \"mariadb\"]",
        &["applications", "applications"],
    );
    check(
        r#"os = "debian-14""#,
        &["applications[0]", "applications[1]"],
    );
    check(r#"os = "debian-13""#, &[]);
    check(
        "os = \"debian-13\"\napplications = [\"nginx\", \"openjdk\", \"mysql\"]",
        &["applications[1]", "applications[2]"],
    );
    // A malformed os is reported once, not again for every application.
    check(r#"os = "Debian 13""#, &["os"]);

    // tags
    check(r#"tags."" = "x""#, &["tags"]);
    check(&format!("tags.{} = \"x\"", a(512)), &[]);
    check(&format!("tags.{} = \"x\"", a(513)), &["tags"]);
    check(r#"tags = { "a\nb" = "x" }"#, &["tags"]);
    check(r#"tags.owner = "o\u0000ps""#, &["tags.owner"]);
    check(&format!("tags.owner = {:?}", a(256)), &[]);
    check(&format!("tags.owner = {:?}", a(257)), &["tags.owner"]);
    check(&format!("tags.owner = {:?}", hangul(86)), &["tags.owner"]);
    check(r#"tags.owner = """#, &[]);
    check("-tags", &[]);
    check(&tags(50), &[]);
    check(&tags(51), &["tags"]);

    // sizes: user_script and each inline command <= 256 KiB and without NUL
    check(&format!("user_script = {:?}", script(256 << 10)), &[]);
    check(
        &format!("user_script = {:?}", script((256 << 10) + 1)),
        &["user_script"],
    );
    check(
        r##"user_script = "#!/bin/sh\necho \u0000\n""##,
        &["user_script"],
    );
    check(&format!("customize[0].inline = [{:?}]", a(256 << 10)), &[]);
    check(
        &format!("customize[0].inline = [{:?}]", a((256 << 10) + 1)),
        &["customize[0].inline[0]"],
    );
    check(
        r#"customize[0].inline = ["true", "echo \u0000"]"#,
        &["customize[0].inline[1]"],
    );
    check(
        r#"validate.in_vm[0].inline = ["echo \u0000"]"#,
        &["validate.in_vm[0].inline[0]"],
    );
    check(&inline(1000), &[]);
    check(&inline(1001), &["customize[0].inline"]);
    // A template is at most 1 MiB as JSON: five commands of 250 KiB are more.
    check(
        &format!(
            "customize[0].inline = [{}]",
            vec![format!("{:?}", a(250 << 10)); 5].join(", ")
        ),
        &[""],
    );

    // sizes: steps, checks, targets, applications, and other strings
    check(&steps("customize", 4, 256), &[]);
    check(&steps("customize", 4, 257), &["customize"]);
    check(&steps("validate.in_vm", 1, 256), &[]);
    check(&steps("validate.in_vm", 1, 257), &["validate.in_vm"]);
    check(&targets(32), &[]);
    check(&targets(33), &["distribute"]);
    check(
        &format!("applications = [{}]", vec!["\"nginx\""; 65].join(", ")),
        &["applications"],
    );
    check(
        &format!(
            "distribute[1].share_with = [{}]",
            vec!["\"team-b\""; 65].join(", ")
        ),
        &["distribute[1].share_with"],
    );
    check(&format!("description = {:?}", a(1024)), &[]);
    check(&format!("description = {:?}", a(1025)), &["description"]);
    check(r#"description = "two\nlines\twith a tab""#, &[]);
    check(r#"description = "bell\u0007""#, &["description"]);
    check(
        &format!("os = \"debian-{}\"", "1".repeat(57)),
        &["applications[0]", "applications[1]"],
    );
    check(&format!("os = \"debian-{}\"", "1".repeat(58)), &["os"]);
    // A gallery version's parts fit in 32 bits; one long bad version is one violation.
    check(
        "source.image = \"g/i\"\nsource.version = \"4294967295.4294967295.4294967295\"",
        &[],
    );
    check(
        "source.image = \"g/i\"\nsource.version = \"4294967296.0.0\"",
        &["source.version"],
    );
    check(
        &format!("source.version = {:?}", a(65)),
        &["source.version"],
    );

    // trigger: image_name is required with on_base_change and is a name once substituted.
    check("trigger.on_base_change = false", &[]);
    check("trigger.on_base_change = true", &["trigger.image_name"]);
    check(
        "trigger.on_base_change = true\ntrigger.image_name = \"web-{version}\"",
        &[],
    );
    check("trigger.image_name = \"web-{date}-{build}\"", &[]);
    check("trigger.image_name = \"web\"", &[]);
    check(
        "trigger.image_name = \"web-{tag}\"",
        &["trigger.image_name"],
    );
    check(
        "trigger.image_name = \"web-{version\"",
        &["trigger.image_name"],
    );
    check("trigger.image_name = \"web-}\"", &["trigger.image_name"]);
    check(
        "trigger.image_name = \"web/{version}\"",
        &["trigger.image_name"],
    );
    check(
        "trigger.image_name = \"-{version}\"",
        &["trigger.image_name"],
    );
    check(&format!("trigger.image_name = \"{}\"", a(255)), &[]);
    // Checked with a 12-byte version (a plain image's YYYYMMDDHHMM).
    check(
        &format!("trigger.image_name = \"{}{{version}}\"", a(243)),
        &[],
    );
    check(
        &format!("trigger.image_name = \"{}{{version}}\"", a(244)),
        &["trigger.image_name"],
    );
    check(
        "trigger.on_base_change = true\ntrigger.image_name = \"{x}\"\n-source",
        &["trigger.image_name", "source.image"],
    );
}

#[test]
fn long_reports_are_cut_short() {
    let commands = vec!["\"echo \\u0000\""; 1000].join(", ");
    let violations = violations_after(&format!("customize[0].inline = [{commands}]"));
    assert_eq!(violations.len(), 201, "{violations:#?}");
    let last = violations.last().unwrap();
    assert_eq!(last.path, "");
    assert!(last.message.contains("800 more"), "{last}");
}

/// A shell script of exactly `bytes` bytes.
fn script(bytes: usize) -> String {
    let head = "#!/bin/sh\n";
    format!("{head}{}", "#".repeat(bytes - head.len()))
}

/// Mutations that give the base template `n` tags (it has one).
fn tags(n: usize) -> String {
    (1..n).map(|i| format!("tags.t{i} = \"x\"\n")).collect()
}

/// Mutations that grow `list` from `have` to `n` shell steps with unique names.
fn steps(list: &str, have: usize, n: usize) -> String {
    (have..n)
        .map(|i| {
            format!("{list}[{i}] = {{ type = \"shell\", name = \"s{i}\", inline = [\"true\"] }}\n")
        })
        .collect()
}

/// A mutation that gives the first shell step `n` inline commands.
fn inline(n: usize) -> String {
    format!("customize[0].inline = [{}]", vec!["\"true\""; n].join(", "))
}

/// Mutations that grow the three distribute targets to `n` image targets.
fn targets(n: usize) -> String {
    (3..n)
        .map(|i| format!("distribute[{i}] = {{ type = \"image\", run_output_name = \"o{i}\" }}\n"))
        .collect()
}

#[test]
fn every_violation_is_reported_at_once() {
    check(
        "name = \"\"
os = \"Debian\"
build_timeout_minutes = 3
user_script = \"echo\"
source.image = \"\"
vm.cpus = 0
vm.memory_mb = 128
customize[0].name = \"setup\"
customize[2].destination = \"/etc/motd\"
customize[3].timeout = \"0s\"
distribute[2].format = \"iso\"
distribute[1].version = \"v2\"
applications = [\"nginx\", \"apache2\", \"nginx\", \"php\"]
tags.owner = \"\"
tags.\"\" = \"x\"",
        &[
            "name",
            "os",
            "applications[2]",
            "applications[3]",
            "applications",
            "build_timeout_minutes",
            "user_script",
            "source.image",
            "vm.cpus",
            "vm.memory_mb",
            "customize[1].name",
            "customize[2].destination",
            "customize[3].timeout",
            "distribute[1].version",
            "distribute[2].format",
            "tags",
        ],
    );
}

#[test]
fn messages_say_what_is_allowed() {
    let a = "a".repeat(256);
    check_message(&format!("name = {a:?}"), "name", &["256 bytes", "255"]);
    check_message(
        r#"name = "web-base\u200B""#,
        "name",
        &[r#""web-base\u{200b}""#, "U+200B", "invisible"],
    );
    check_message(r#"name = "-x""#, "name", &["'-'", "option"]);
    check_message(
        "trigger.on_base_change = true",
        "trigger.image_name",
        &["required", "{version}", "{date}", "{build}"],
    );
    check_message(
        r#"trigger.image_name = "web-{tag}""#,
        "trigger.image_name",
        &["{tag}", "{version}, {date}, {build}"],
    );
    check_message(
        r#"trigger.image_name = "web/{version}""#,
        "trigger.image_name",
        &["placeholders are replaced", "'/'"],
    );
    check_message(
        r#"distribute[2].path = "/tmp/../etc/shadow""#,
        "distribute[2].path",
        &["\"..\"", "/tmp/../etc/shadow"],
    );
    check_message(
        r#"customize[2].source = "rel/path""#,
        "customize[2].source",
        &["relative", "absolute", "template file"],
    );
    check_message(
        &format!("user_script = {:?}", script((256 << 10) + 1)),
        "user_script",
        &["262145 bytes", "262144"],
    );
    check_message(&steps("customize", 4, 257), "customize", &["257", "256"]);
    check_message(&tags(51), "tags", &["51 tags", "50"]);
    check_message(r#"os = "Debian""#, "os", &["debian-12", "ubuntu-24.04"]);
    check_message(
        "build_timeout_minutes = 5",
        "build_timeout_minutes",
        &["6", "960", "0", "240"],
    );
    check_message(
        r#"applications = ["nginx", "ngnix"]"#,
        "applications[1]",
        &["\"ngnix\"", "nginx", "apache2", "openjdk"],
    );
    check_message(
        r#"applications = ["apache2", "redis", "nginx"]"#,
        "applications",
        &["apache2 (applications[0])", "nginx (applications[2])"],
    );
    check_message(
        r#"applications = ["mysql"]"#,
        "applications[0]",
        &["debian-12", "ubuntu-22.04", "ubuntu-24.04"],
    );
    check_message(
        r#"customize[1].script = "http://example.org/setup.sh""#,
        "customize[1].script",
        &["https://"],
    );
    check_message(
        r#"customize[1].name = "tools""#,
        "customize[1].name",
        &["customize[0]"],
    );
    check_message(
        r#"customize[2].destination = "/etc/motd""#,
        "customize[2].destination",
        &["/tmp/"],
    );
    check_message(
        r#"customize[3].timeout = "soon""#,
        "customize[3].timeout",
        &["\"soon\"", "5m", "seconds"],
    );
    check_message(
        r#"distribute[2].format = "iso""#,
        "distribute[2].format",
        &["qcow2, raw, vhd, vmdk"],
    );
    check_message(
        r#"distribute[1].version = "v1.2.3""#,
        "distribute[1].version",
        &["auto", "1.2.3"],
    );
    check_message("-distribute", "distribute", &["image"]);
    // Long user text is cut short in messages.
    let long = "x".repeat(10_000);
    let violations = violations_after(&format!("os = {long:?}"));
    assert!(violations[0].message.len() < 300, "{}", violations[0]);
}

#[test]
fn violations_display_with_their_path() {
    let violations = violations_after("vm.cpus = 0");
    assert_eq!(
        violations[0].to_string(),
        format!("vm.cpus: {}", violations[0].message)
    );
}

/// Validates the base template after `mutations` and compares the violations' paths, in any
/// order, with `expected`.
#[track_caller]
fn check(mutations: &str, expected: &[&str]) {
    let violations = violations_after(mutations);
    let mut got: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
    let mut want = expected.to_vec();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "after {mutations:?}, violations were:\n{violations:#?}"
    );
    for v in &violations {
        assert!(!v.message.is_empty(), "{v:?} has no message");
    }
}

/// Checks that the violation at `path` mentions each of `needles`.
#[track_caller]
fn check_message(mutations: &str, path: &str, needles: &[&str]) {
    let violations = violations_after(mutations);
    let Some(v) = violations.iter().find(|v| v.path == path) else {
        panic!("after {mutations:?}, no violation at {path}: {violations:#?}");
    };
    for needle in needles {
        assert!(
            v.message.contains(needle),
            "message at {path} should mention {needle:?}: {:?}",
            v.message
        );
    }
}

fn violations_after(mutations: &str) -> Vec<Violation> {
    let mut doc: Value = toml::from_str(BASE).unwrap();
    for line in mutations.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(path) = line.strip_prefix('-') {
            edit(&mut doc, &parse_path(path), None);
        } else {
            let (path, value) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("mutation {line:?} is not PATH = VALUE or -PATH"));
            let value: toml::Table = toml::from_str(&format!("v = {value}"))
                .unwrap_or_else(|e| panic!("value in {line:?} is not TOML: {e}"));
            edit(&mut doc, &parse_path(path), value.get("v").cloned());
        }
    }
    let text = toml::to_string(&doc).unwrap();
    let template = Template::from_toml(&text)
        .unwrap_or_else(|v| panic!("mutated template does not parse: {v}\n{text}"));
    validate(&template, &AppCatalog::builtin())
}

enum Segment {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut chars = path.trim().chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '.' => {
                chars.next();
            }
            '[' => {
                chars.next();
                let n: String = chars.by_ref().take_while(|&c| c != ']').collect();
                segments.push(Segment::Index(n.parse().unwrap()));
            }
            '"' => {
                chars.next();
                let key: String = chars.by_ref().take_while(|&c| c != '"').collect();
                segments.push(Segment::Key(key));
            }
            _ => {
                let mut key = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '.' || c == '[' {
                        break;
                    }
                    key.push(c);
                    chars.next();
                }
                segments.push(Segment::Key(key));
            }
        }
    }
    segments
}

/// Sets (`Some`) or removes (`None`) the value at `path`; setting index `len` appends.
fn edit(node: &mut Value, path: &[Segment], value: Option<Value>) {
    let (first, rest) = path.split_first().unwrap();
    match first {
        Segment::Key(key) => {
            let table = node.as_table_mut().unwrap();
            if rest.is_empty() {
                match value {
                    Some(v) => table.insert(key.clone(), v),
                    None => table.remove(key),
                };
                return;
            }
            let child = table.entry(key.clone()).or_insert_with(|| match rest[0] {
                Segment::Key(_) => Value::Table(toml::Table::new()),
                Segment::Index(_) => Value::Array(Vec::new()),
            });
            edit(child, rest, value);
        }
        Segment::Index(i) => {
            let array = node.as_array_mut().unwrap();
            if rest.is_empty() {
                match value {
                    Some(v) if *i == array.len() => array.push(v),
                    Some(v) => array[*i] = v,
                    None => {
                        array.remove(*i);
                    }
                }
                return;
            }
            edit(&mut array[*i], rest, value);
        }
    }
}
