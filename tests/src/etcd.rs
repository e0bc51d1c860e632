//! A real single-member etcd on free loopback client and peer ports (never the
//! defaults 2379/2380), with a temporary data directory, killed when dropped.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{free_port, http_get, lock, log_tail, says_address_in_use, ChildGuard};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The program to run; `ETCD_BIN` overrides it.
fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string())
}

#[derive(Debug)]
pub struct EtcdServer {
    /// First field: killed before the directory is removed.
    child: Mutex<Option<ChildGuard>>,
    client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until `/health` says it is healthy.
    pub fn start() -> EtcdServer {
        let mut dir = Some(
            tempfile::Builder::new()
                .prefix("shardis-etcd-")
                .tempdir()
                .expect("create a temp dir for etcd"),
        );
        for attempt in 1..=5 {
            let server = EtcdServer {
                child: Mutex::new(None),
                client_port: free_port(),
                peer_port: free_port(),
                dir: dir.take().expect("the directory is handed back on retry"),
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) if attempt < 5 && says_address_in_use(&log) => {
                    // etcd refuses a data dir that belongs to another member URL.
                    let _ = std::fs::remove_dir_all(server.data_dir());
                    dir = Some(server.dir);
                }
                Err(log) => panic!(
                    "etcd (client port {}, peer port {}) did not become healthy within \
                     {START_TIMEOUT:?}; log tail:\n{log}",
                    server.client_port, server.peer_port
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `http://127.0.0.1:PORT`, what `--etcd` takes.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path(), 30)
    }

    /// SIGKILL.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            child.kill();
        }
    }

    /// SIGSTOP: etcd stops answering while its connections stay open, the
    /// way a partitioned or hung etcd looks to its clients.
    pub fn pause(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            child.signal(nix::sys::signal::Signal::SIGSTOP);
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            child.signal(nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// Runs `etcdctl` against this server and returns its stdout (for debugging
    /// and for tests that look at raw keys).
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn_and_wait(&self) -> Result<(), String> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::create(self.log_path()).expect("create etcd log file");
        let child = Command::new(etcd_bin())
            .args(["--name", "shardis-test"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("shardis-test={peer}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "shardis-test"])
            // A single member elects itself quickly with short timers.
            .args(["--heartbeat-interval", "50"])
            .args(["--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e} (is etcd installed?)", etcd_bin()));
        let mut guard = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let health = format!("127.0.0.1:{}", self.client_port);
        loop {
            if let Some(status) = guard.exited() {
                return Err(format!("exited with {status}\n{}", self.log_tail()));
            }
            if let Ok((200, body)) = http_get(&health, "/health", Duration::from_secs(1)) {
                if body.contains("true") {
                    *lock(&self.child) = Some(guard);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}
