//! Real-VM tests of the QEMU driver and the SSH communicator: they boot the cloud-init base image
//! named by `KILN_TEST_BASE_IMAGE` (e.g. one from `daemon/assets/bootstrap-debian.sh`) and are
//! skipped, with a message, when it is unset (a failure under `CI=true`). Under TCG a boot to ready takes about 2 minutes.

use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_daemon::driver::qemu::{self as driver, AccelProbe, Vm};
use kiln_daemon::driver::VmSpec;
use kiln_daemon::guest::{Guest, GuestError, Stream};
use tokio_util::sync::CancellationToken;

#[path = "../../tests/src/base_image.rs"]
mod base_image;
use base_image::base_image;

fn spec(base: &Path, work_dir: &Path) -> VmSpec {
    VmSpec {
        base_image: base.to_owned(),
        work_dir: work_dir.to_owned(),
        disk_gb: 4,
        cpus: 2,
        memory_mb: 1024,
        user: "debian".into(),
        os: &kiln_daemon::guest::os::DEBIAN,
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// Runs `command` and returns its exit code with every (stream, line) it printed.
async fn run(guest: &Guest, command: &str) -> (i32, Vec<(Stream, String)>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let code = guest
        .exec(
            command,
            move |stream, line| sink.lock().expect("lines").push((stream, line.to_owned())),
            &CancellationToken::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("exec {command:?}: {e}"));
    let lines = lines.lock().expect("lines").clone();
    (code, lines)
}

fn out(lines: &[&str]) -> Vec<(Stream, String)> {
    lines
        .iter()
        .map(|l| (Stream::Stdout, (*l).to_owned()))
        .collect()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids of live processes whose command line mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_exec_upload_powerdown() {
    let Some(base) = base_image() else { return };
    init_tracing();
    let dir = tempfile::Builder::new()
        .prefix("kiln-vm-")
        .tempdir()
        .expect("temp dir");
    let t0 = Instant::now();

    let prepared = driver::prepare(&spec(&base, dir.path()))
        .await
        .expect("prepare");
    assert!(prepared.overlay.exists() && prepared.seed.exists());
    assert!(prepared.host_public_key.starts_with("ssh-ed25519 AAAA"));
    assert!(
        !dir.path().join("host_key").exists(),
        "the host private key must only be in the seed"
    );
    let t_prepare = t0.elapsed();

    let probe = AccelProbe::default();
    let mut vm = Vm::boot(&prepared, &probe).await.expect("boot");
    assert_eq!(probe.current(), Some(vm.accel()));
    let (pid, port) = (vm.pid(), vm.ssh_port());
    let attach = vm.attach_command();
    assert!(attach.contains(&format!("-p {port} ")) && attach.ends_with("debian@127.0.0.1"));
    let t_boot = t0.elapsed();

    let guest = vm
        .wait_ready(Duration::from_secs(900))
        .await
        .expect("wait_ready");
    let t_ready = t0.elapsed();

    let (code, lines) = run(&guest, "echo out; echo err >&2; exit 3").await;
    assert_eq!(code, 3);
    assert_eq!(
        lines,
        vec![
            (Stream::Stdout, "out".to_owned()),
            (Stream::Stderr, "err".to_owned())
        ]
    );

    guest
        .upload_bytes(
            b"hello kiln\nsecond line\n".to_vec(),
            "/tmp/kiln-bytes",
            0o640,
        )
        .await
        .expect("upload_bytes");
    let (code, lines) = run(&guest, "stat -c %a /tmp/kiln-bytes && cat /tmp/kiln-bytes").await;
    assert_eq!(
        (code, lines),
        (0, out(&["640", "hello kiln", "second line"]))
    );

    let local = dir.path().join("local-file");
    std::fs::write(&local, "from a file").expect("write local file");
    guest
        .upload(&local, "/tmp/kiln-file", 0o755)
        .await
        .expect("upload");
    let (code, lines) = run(&guest, "stat -c %a /tmp/kiln-file && cat /tmp/kiln-file").await;
    assert_eq!((code, lines), (0, out(&["755", "from a file"])));

    // Cancel ends a running command promptly, and the session stays usable.
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let canceled = guest.exec("sleep 60", |_, _| {}, &cancel).await;
    assert!(
        matches!(canceled, Err(GuestError::Canceled)),
        "{canceled:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run(&guest, "echo again").await, (0, out(&["again"])));

    // Pinning: another key (the client's, a valid ed25519 key) must be refused.
    let wrong = std::fs::read_to_string(prepared.client_key.with_extension("pub")).expect("pub");
    match Guest::connect(port, "debian", &prepared.client_key, &wrong).await {
        Err(GuestError::HostKeyMismatch { .. }) => {}
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    let t_checks = t0.elapsed();

    drop(guest);
    vm.powerdown(Duration::from_secs(120))
        .await
        .expect("powerdown");
    let t_down = t0.elapsed();
    assert!(!process_alive(pid), "qemu {pid} still exists");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open"
    );
    assert!(vm.exited().await.success());
    eprintln!(
        "timings (accel {}): prepare {:.2}s, boot {:.2}s, ready {:.1}s, checks {:.1}s, powerdown {:.1}s",
        vm.accel(),
        t_prepare.as_secs_f64(),
        (t_boot - t_prepare).as_secs_f64(),
        (t_ready - t_boot).as_secs_f64(),
        (t_checks - t_ready).as_secs_f64(),
        (t_down - t_checks).as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_vm_leaves_no_qemu() {
    let Some(base) = base_image() else { return };
    init_tracing();
    let dir = tempfile::Builder::new()
        .prefix("kiln-vm-")
        .tempdir()
        .expect("temp dir");
    let prepared = driver::prepare(&spec(&base, dir.path()))
        .await
        .expect("prepare");
    let mut vm = Vm::boot(&prepared, &AccelProbe::default())
        .await
        .expect("boot");
    let pid = vm.pid();
    assert!(process_alive(pid));
    assert_eq!(processes_mentioning(dir.path()), vec![pid]);
    // kill_stale refuses a pid whose command line does not name the given work directory.
    assert!(!driver::kill_stale(
        pid,
        None,
        Path::new("/var/tmp/not-this-build")
    ));

    let started = Instant::now();
    vm.kill().await;
    eprintln!("kill took {:?}", started.elapsed());
    assert!(!process_alive(pid), "qemu {pid} still exists");
    assert!(processes_mentioning(dir.path()).is_empty());
    vm.kill().await;
    let status = tokio::time::timeout(Duration::from_secs(1), vm.exited())
        .await
        .expect("exited resolves at once for a dead VM");
    assert!(!status.success());
}
