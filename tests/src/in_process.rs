//! kilnd in-process on its own runtime and a temp socket, with the scripted
//! [`FakeDriver`](crate::fake_driver::FakeDriver) in place of QEMU: for tests of queue and
//! catalog logic in seconds. It proves nothing about building images (real VMs do).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_daemon::config::{Config, FileConfig};
use serde_json::json;

use crate::fake_driver::FakeDriver;
use crate::Conn;

/// kilnd running in-process on its own runtime, so dropping the runtime is a crash.
pub struct Daemon {
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub dir: Arc<tempfile::TempDir>,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub fake: Arc<FakeDriver>,
}

impl Daemon {
    /// A new kilnd with `config` (kilnd.toml text) and a base image `debian-12` in its catalog.
    pub fn start(config: &str) -> Daemon {
        let d = Daemon::start_in(Arc::new(tempfile::tempdir().unwrap()), config);
        let base = d.dir.path().join("base.qcow2");
        let ok = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        d.conn().call(
            "image.import",
            json!({"path": base, "name": "debian-12", "os": "debian-12", "user": "debian"}),
        );
        d
    }

    /// kilnd on the data dir in `dir`, with a new fake driver.
    pub fn start_in(dir: Arc<tempfile::TempDir>, config: &str) -> Daemon {
        let socket = dir.path().join("run").join("kiln.sock");
        let data_dir = dir.path().join("data");
        let mut cfg = Config::at(socket.clone(), data_dir.clone());
        cfg.file = FileConfig::parse(config).unwrap();
        let fake = FakeDriver::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let driver: Arc<dyn kiln_daemon::driver::VmDriver> = fake.clone();
        let _ = std::fs::remove_file(&socket);
        rt.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = kiln_daemon::run_with(cfg, Some(driver), shutdown).await {
                panic!("kilnd: {e}");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "kilnd did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon {
            rt: Some(rt),
            stop: Some(stop),
            dir,
            socket,
            data_dir,
            fake,
        }
    }

    pub fn conn(&self) -> Conn {
        Conn::open(&self.socket)
    }

    /// Ends the runtime with no shutdown: tasks are dropped where they stand, and the fake's
    /// VMs keep running, as after a SIGKILL. Returns the directory for a restart.
    pub fn crash(mut self) -> Arc<tempfile::TempDir> {
        self.fake.crash();
        // Dropping the sender would let kilnd shut down in order; a crash does not.
        std::mem::forget(self.stop.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self.dir.clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.rt.take() {
            // Let the shutdown end running builds before the runtime goes.
            std::thread::sleep(Duration::from_millis(200));
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}
