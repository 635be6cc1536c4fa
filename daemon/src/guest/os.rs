//! What kilnd types into a guest, per OS family: reboot, deprovisioning, key removal, downloads,
//! key rotation after a resume. A second OS family is a second table here; the pipeline and the
//! drivers only ever ask the table. Who logs in is not the family's business: every image
//! records its own default user.

use super::shell_quote;

/// The commands of one OS family. Debian and Ubuntu share [`DEBIAN`].
#[derive(Debug)]
pub struct GuestOs {
    /// The family's id as images record it: "debian".
    pub id: &'static str,
    /// For messages: "Debian/Ubuntu".
    pub family: &'static str,
    /// Prints the boot id; a reboot is over when it changes.
    pub boot_id: &'static str,
    /// Reboots; the connection drops while it runs.
    pub reboot: &'static str,
    /// Waits for cloud-init to finish (exit 0 ready, 2 ready with warnings, else failed).
    pub cloud_init_wait: &'static str,
    /// The default deprovisioning: what makes a VM an image others can boot as their own.
    pub deprovision: &'static str,
    /// Exits 0 when the template put its own deprovisioning script in the guest.
    pub has_custom_deprovision: &'static str,
    /// Runs that script, and removes it.
    pub custom_deprovision: &'static str,
    /// Where a step's script is uploaded, from a name already safe for a path.
    pub step_script: fn(&str) -> String,
    /// Downloads `url` to `dest`, checking an optional sha256 and size limit.
    pub fetch: fn(url: &str, dest: &str, sha256: Option<&str>, max: Option<u64>) -> String,
    /// Removes the given public key lines from every authorized_keys file, and every host key.
    pub remove_kiln_keys: fn(keys: &[String]) -> String,
    /// After a resume: set the clock to `now`, install the host key uploaded to
    /// [`UPLOADED_HOST_KEY`] with public half `host_public`, make `client_public` the default
    /// user's only key, reload sshd, and grow the root fs to `grow_to` bytes when given.
    pub rotate_keys:
        fn(now: i64, host_public: &str, client_public: &str, grow_to: Option<u64>) -> String,
    /// After a resume into an instance: what [`rotate_keys`](Self::rotate_keys) does, and also
    /// remove every other host key, the saved VM's key (`saved_public`) wherever it is
    /// authorized, cloud-init's cached copies of the saved VM's seed, set a new machine-id and
    /// the hostname. Nothing of the saved VM's identity is left.
    pub take_identity: fn(&Identity) -> String,
    /// Mixes host randomness (hex) into the guest kernel's pool and reseeds its CRNG. A resumed
    /// guest starts with the saved VM's RNG state, so without it two guests resumed from one
    /// saved VM draw the same "random" numbers until the kernel reseeds on its own.
    pub reseed_random: fn(entropy_hex: &str) -> String,
}

/// Who a resumed instance becomes ([`GuestOs::take_identity`]).
#[derive(Debug, Clone)]
pub struct Identity {
    pub now: i64,
    pub hostname: String,
    /// "ssh-ed25519 AAAA...": the instance's pinned host key, uploaded to [`UPLOADED_HOST_KEY`].
    pub host_public: String,
    /// The person's key: the default user's only one.
    pub user_public: String,
    /// The key the saved VM authorized at its first boot.
    pub saved_public: String,
    pub grow_to: Option<u64>,
    /// 32 hex digits made on the host (the guest's own RNG is the saved VM's, see
    /// [`GuestOs::reseed_random`]).
    pub machine_id: String,
}

impl GuestOs {
    /// `script` (a resumed guest's first one) after [`reseed_random`](Self::reseed_random) with
    /// fresh host randomness, so everything it starts draws from a pool only this guest has.
    pub fn reseeded(&self, script: &str) -> Result<String, String> {
        let entropy = host_random_hex(64)?;
        Ok(format!(
            "set -e\n{}{script}",
            (self.reseed_random)(&entropy)
        ))
    }
}

/// `bytes` random bytes from the host's kernel, as hex: entropy for [`GuestOs::reseed_random`],
/// a machine-id for [`Identity`].
pub fn host_random_hex(bytes: usize) -> Result<String, String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where a resumed guest's new host private key is uploaded before `rotate_keys` installs it.
pub const UPLOADED_HOST_KEY: &str = "/tmp/kiln-host-key";

/// Every family kiln has guest commands for.
static FAMILIES: &[&GuestOs] = &[&DEBIAN];

/// The family of the OS named `os` (e.g. "ubuntu-24.04" -> "debian"): a known family's id, else
/// the distribution part of the name (which [`of_family`] then refuses).
pub fn family_of(os: &str) -> &str {
    let distribution = os.split('-').next().unwrap_or_default();
    match distribution {
        "debian" | "ubuntu" => DEBIAN.id,
        other => other,
    }
}

/// The table of the OS named `os` (a template's or image's `os`, e.g. "debian-12").
pub fn of(os: &str) -> Result<&'static GuestOs, String> {
    of_family(family_of(os)).map_err(|_| {
        format!("kiln has no guest commands for OS {os:?} (it knows the Debian/Ubuntu family)")
    })
}

/// The table of the family an image records (`debian`).
pub fn of_family(family: &str) -> Result<&'static GuestOs, String> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.id == family)
        .ok_or_else(|| {
            format!(
                "kiln has no guest commands for OS family {family:?} (it knows: {})",
                FAMILIES.iter().map(|f| f.id).collect::<Vec<_>>().join(", ")
            )
        })
}

pub static DEBIAN: GuestOs = GuestOs {
    id: "debian",
    family: "Debian/Ubuntu",
    boot_id: "cat /proc/sys/kernel/random/boot_id",
    reboot: "sudo systemctl reboot",
    cloud_init_wait: "cloud-init status --wait --long",
    deprovision: DEBIAN_DEPROVISION,
    has_custom_deprovision: "test -f /tmp/DeprovisioningScript.sh",
    custom_deprovision:
        "sudo bash /tmp/DeprovisioningScript.sh && sudo rm -f /tmp/DeprovisioningScript.sh",
    step_script: |name| format!("/tmp/kiln-step-{name}.sh"),
    fetch: curl_fetch,
    remove_kiln_keys: bash_remove_kiln_keys,
    rotate_keys: debian_rotate_keys,
    take_identity: debian_take_identity,
    reseed_random: debian_reseed_random,
};

const DEBIAN_DEPROVISION: &str = r#"set -e
sudo cloud-init clean --logs --seed
sudo rm -rf /var/lib/cloud/instances /var/lib/cloud/instance
sudo truncate -s 0 /etc/machine-id
sudo rm -f /var/lib/dbus/machine-id
sudo rm -f /root/.bash_history "$HOME/.bash_history"
sudo apt-get clean
sudo rm -f /tmp/kiln-step-*.sh
sudo fstrim -a >/dev/null 2>&1 || true
"#;

/// HTTPS only, with curl's size limit and sha256sum's check.
fn curl_fetch(url: &str, dest: &str, sha256: Option<&str>, max: Option<u64>) -> String {
    let mut cmd = "curl -fsSL --proto =https".to_string();
    if let Some(max) = max {
        cmd.push_str(&format!(" --max-filesize {max}"));
    }
    cmd.push_str(&format!(" -o {} {}", shell_quote(dest), shell_quote(url)));
    if let Some(h) = sha256 {
        cmd.push_str(&format!(
            " && echo {}  {} | sha256sum -c -",
            h.to_ascii_lowercase(),
            shell_quote(dest)
        ));
    }
    cmd
}

/// `assets/remove-kiln-keys.sh` as root, given the keys' base64 blobs. The session stays open:
/// sshd has its keys loaded.
fn bash_remove_kiln_keys(keys: &[String]) -> String {
    let blobs: Vec<String> = keys
        .iter()
        .filter_map(|k| k.split_whitespace().nth(1))
        .map(shell_quote)
        .collect();
    format!(
        "sudo bash -c {} remove-kiln-keys {}",
        shell_quote(REMOVE_KILN_KEYS),
        blobs.join(" ")
    )
}

const REMOVE_KILN_KEYS: &str = include_str!("../../assets/remove-kiln-keys.sh");

fn debian_rotate_keys(
    now: i64,
    host_public: &str,
    client_public: &str,
    grow_to: Option<u64>,
) -> String {
    let grow = grow_to.map_or(String::new(), |want| format!("want={want}\n{GROW_ROOT}"));
    format!(
        "set -e\n\
         sudo date -u -s @{now} >/dev/null\n\
         sudo install -m 600 -o root -g root {UPLOADED_HOST_KEY} /etc/ssh/ssh_host_ed25519_key\n\
         rm -f {UPLOADED_HOST_KEY}\n\
         echo {host_pub} | sudo tee /etc/ssh/ssh_host_ed25519_key.pub >/dev/null\n\
         umask 077; mkdir -p ~/.ssh; echo {client_pub} > ~/.ssh/authorized_keys\n\
         sudo systemctl reload ssh\n\
         {grow}",
        host_pub = shell_quote(host_public),
        client_pub = shell_quote(client_public.trim()),
    )
}

/// A write to /dev/urandom mixes into the input pool; the RNDRESEEDCRNG ioctl (_IO('R', 7),
/// Linux 4.17+) makes the CRNG take it now (python3 is there: cloud-init needs it).
fn debian_reseed_random(entropy_hex: &str) -> String {
    format!(
        "echo {e} | sudo tee /dev/urandom >/dev/null\n\
         sudo python3 -c 'import fcntl, os; fcntl.ioctl(os.open(\"/dev/urandom\", os.O_WRONLY), 0x5207)'\n",
        e = shell_quote(entropy_hex),
    )
}

fn debian_take_identity(who: &Identity) -> String {
    let blob = who
        .saved_public
        .split_whitespace()
        .nth(1)
        .unwrap_or("no-saved-key");
    let grow = who
        .grow_to
        .map_or(String::new(), |want| format!("want={want}\n{GROW_ROOT}"));
    format!(
        r#"set -e
sudo date -u -s @{now} >/dev/null
sudo rm -f /etc/ssh/ssh_host_*
sudo install -m 600 -o root -g root {UPLOADED_HOST_KEY} /etc/ssh/ssh_host_ed25519_key
rm -f {UPLOADED_HOST_KEY}
echo {host_pub} | sudo tee /etc/ssh/ssh_host_ed25519_key.pub >/dev/null
umask 077; mkdir -p ~/.ssh; echo {user_pub} > ~/.ssh/authorized_keys
for f in /root/.ssh/authorized_keys /root/.ssh/authorized_keys2; do
  if sudo test -f "$f"; then sudo sed -i "\|{blob}|d" "$f"; fi
done
sudo grep -rlaF -e 'OPENSSH PRIVATE KEY' -e {blob_q} /var/lib/cloud 2>/dev/null | sudo xargs -r rm -f
sudo rm -f /var/lib/dbus/machine-id
echo {machine_id} | sudo tee /etc/machine-id >/dev/null
old=$(hostname)
echo {host} | sudo tee /etc/hostname >/dev/null
sudo hostname {host}
sudo sed -i "s/\b$old\b/"{host}/g /etc/hosts
sudo systemctl reload ssh
{grow}"#,
        now = who.now,
        host_pub = shell_quote(&who.host_public),
        user_pub = shell_quote(who.user_public.trim()),
        blob_q = shell_quote(blob),
        host = shell_quote(&who.hostname),
        machine_id = shell_quote(&who.machine_id),
    )
}

/// Grows the root file system's partition and file system to the (resized) disk.
/// `$want` is the new size in bytes; the guest learns of it a moment after `block_resize`.
const GROW_ROOT: &str = r#"src=$(findmnt -no SOURCE /)
part=$(cat "/sys/class/block/$(basename "$src")/partition")
disk=/dev/$(lsblk -no PKNAME "$src")
for _ in $(seq 100); do
  [ "$(sudo blockdev --getsize64 "$disk")" -ge "$want" ] && break
  sleep 0.1
done
sudo growpart "$disk" "$part" || [ $? -eq 1 ]
case $(findmnt -no FSTYPE /) in
  xfs) sudo xfs_growfs / ;;
  *) sudo resize2fs "$src" ;;
esac
"#;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn families_by_os_name() {
        assert_eq!(of("debian-12").unwrap().family, "Debian/Ubuntu");
        assert_eq!(of("ubuntu-24.04").unwrap().id, "debian");
        assert_eq!(family_of("ubuntu-22.04"), "debian");
        assert_eq!(family_of("fedora-40"), "fedora");
        let err = of("fedora-40").unwrap_err();
        assert!(err.contains("\"fedora-40\""), "{err}");
        let err = of_family("fedora").unwrap_err();
        assert!(
            err.contains("\"fedora\"") && err.contains("debian"),
            "{err}"
        );
    }

    #[test]
    fn a_resumed_guest_reseeds_its_rng_with_host_randomness_first() {
        let a = DEBIAN.reseeded("echo next\n").unwrap();
        let b = DEBIAN.reseeded("echo next\n").unwrap();
        assert!(a.starts_with("set -e\necho "), "{a}");
        assert!(
            a.contains("| sudo tee /dev/urandom") && a.contains("0x5207"),
            "{a}"
        );
        assert!(a.ends_with("echo next\n"), "{a}");
        assert_ne!(a, b, "fresh randomness each time");
        assert_eq!(host_random_hex(16).unwrap().len(), 32);
    }

    #[test]
    fn downloads_are_https_with_hash_and_limit() {
        assert_eq!(
            (DEBIAN.fetch)("https://x/a b", "/tmp/f", Some("AB"), Some(9)),
            "curl -fsSL --proto =https --max-filesize 9 -o /tmp/f 'https://x/a b' \
             && echo ab  /tmp/f | sha256sum -c -"
        );
    }

    /// Every file under `root` (relative path, content), symlinks not followed.
    fn tree(root: &std::path::Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    dirs.push(e.path());
                } else if t.is_file() {
                    let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                    let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into();
                    out.push((rel, text));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn kiln_keys_are_removed_from_every_authorized_keys_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let put = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        let (build, saved, legacy) = ("AAAAbuildKey1", "AAAAsavedVmKey2", "AAAAoldKiln3");
        let own = "ssh-ed25519 AAAAusersOwnKey alice@laptop";
        put(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\ndebian:x:1000:1000::/home/debian:/bin/bash\n\
             alice:x:1001:1001::/home/alice:/bin/bash\nsvc:x:998:998::/srv/svc:/usr/sbin/nologin\n",
        );
        put(
            "etc/ssh/sshd_config",
            "Port 22\nAuthorizedKeysFile .ssh/authorized_keys /etc/ssh/keys/%u\n",
        );
        // What cloud-init's disable_root writes for root, from the saved VM's first boot.
        put(
            "root/.ssh/authorized_keys",
            &format!("no-port-forwarding,command=\"echo 'Please login as the user \\\"debian\\\"'\" ssh-ed25519 {saved} kiln-build\n"),
        );
        put(
            "home/debian/.ssh/authorized_keys",
            &format!("ssh-ed25519 {build} kiln-build\n{own}\n"),
        );
        put(
            "etc/ssh/keys/alice",
            &format!("ssh-ed25519 {build} copied\n"),
        );
        put("home/alice/.ssh/authorized_keys", &format!("{own}\n"));
        put(
            "var/backups/authorized_keys.old",
            &format!("ssh-ed25519 {saved}\n"),
        );
        put(
            "srv/svc/.ssh/authorized_keys2",
            &format!("ssh-ed25519 {legacy} kiln-build\n"),
        );
        put(
            "var/lib/cloud/instances/i-1/user-data.txt",
            "ssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n",
        );
        put("var/lib/cloud/instances/i-1/boot-finished", "done\n");
        put("etc/ssh/ssh_host_ed25519_key", "private");
        put("etc/ssh/ssh_host_ed25519_key.pub", "ssh-ed25519 AAAAhost");

        let keys = [
            format!("ssh-ed25519 {build} kiln-build"),
            format!("ssh-ed25519 {saved} kiln-build"),
        ];
        // The guest runs `sudo bash -c SCRIPT NAME BLOB...`; the same words here, without sudo.
        let cmd = (DEBIAN.remove_kiln_keys)(&keys);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd.replacen("sudo ", "", 1))
            .env("KILN_ROOT", root)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );

        let files = tree(root);
        for (rel, text) in &files {
            for k in [
                build,
                saved,
                legacy,
                "kiln-build",
                "PRIVATE KEY",
                "AAAAhost",
            ] {
                assert!(!text.contains(k), "{k} left in {rel}: {text}\n{stdout}");
            }
        }
        let names: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        for gone in [
            "root/.ssh/authorized_keys",
            "etc/ssh/keys/alice",
            "var/backups/authorized_keys.old",
            "srv/svc/.ssh/authorized_keys2",
            "var/lib/cloud/instances/i-1/user-data.txt",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
        ] {
            assert!(!names.contains(&gone), "{gone} should be gone: {names:?}");
        }
        // Keys that are not kiln's stay, in files that keep their mode.
        let debian = root.join("home/debian/.ssh/authorized_keys");
        assert_eq!(
            std::fs::read_to_string(&debian).unwrap(),
            format!("{own}\n")
        );
        assert_eq!(
            std::fs::metadata(&debian).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let alice = std::fs::read_to_string(root.join("home/alice/.ssh/authorized_keys"));
        assert_eq!(alice.unwrap(), format!("{own}\n"));
        assert!(names.contains(&"var/lib/cloud/instances/i-1/boot-finished"));
    }
}
