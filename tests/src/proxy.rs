//! The `shardis-proxy` binary as a child process: free ports, stderr captured
//! to a file, readiness through `/readyz`, killed when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::process::{free_port, http_get, lock, log_tail, says_address_in_use, ChildGuard};
use crate::redis_server::redis_client;
use crate::resp::RespConn;

/// How long a proxy may take to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Finding (or building) the binary
// ---------------------------------------------------------------------------

/// The proxy binary: `$SHARDIS_PROXY_BIN`, or `shardis-proxy` in the same
/// target profile directory as the running test executable, built once per
/// test process with `cargo build -p shardis-proxy` when it is missing (or
/// always, when `SHARDIS_BUILD_PROXY=1`: an existing binary may be older than
/// the proxy's source).
///
/// (An integration test cannot use `CARGO_BIN_EXE_*` of another package.)
pub fn proxy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("SHARDIS_PROXY_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("current test executable");
        // target/<profile>/deps/<test>-<hash>  ->  target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in <target>/<profile>/deps")
            .to_path_buf();
        let bin = profile_dir.join("shardis-proxy");
        let always = std::env::var("SHARDIS_BUILD_PROXY").is_ok_and(|v| v == "1");
        if always || !bin.exists() {
            build_proxy(&profile_dir);
            assert!(
                bin.exists(),
                "cargo build -p shardis-proxy did not produce {}",
                bin.display()
            );
        }
        bin
    })
    .clone()
}

fn build_proxy(profile_dir: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "-p", "shardis-proxy", "--bin", "shardis-proxy"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => {}
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd.status().expect("run cargo build -p shardis-proxy");
    assert!(
        status.success(),
        "cargo build -p shardis-proxy failed: {status}"
    );
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

/// Options of one proxy process; see `shardis-proxy --help`.
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    etcd: String,
    cluster: String,
    id: Option<String>,
    password: Option<String>,
    backend_password: Option<String>,
    backend_user: Option<String>,
    threads: Option<usize>,
    max_clients: Option<usize>,
    lease_ttl: Option<u64>,
    config: Option<PathBuf>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

static PROXY_SEQ: AtomicUsize = AtomicUsize::new(0);

impl ProxyBuilder {
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// `--password`: clients must AUTH.
    pub fn password(mut self, pw: impl Into<String>) -> Self {
        self.password = Some(pw.into());
        self
    }
    /// `--backend-password`: what the proxy sends to the redis servers.
    pub fn backend_password(mut self, pw: impl Into<String>) -> Self {
        self.backend_password = Some(pw.into());
        self
    }
    pub fn backend_user(mut self, user: impl Into<String>) -> Self {
        self.backend_user = Some(user.into());
        self
    }
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = Some(n);
        self
    }
    pub fn lease_ttl(mut self, secs: u64) -> Self {
        self.lease_ttl = Some(secs);
        self
    }
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }
    /// Any other command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Spawns the proxy and waits until `/readyz` answers 200.
    pub fn start(self) -> ProxyProcess {
        let proxy = self.spawn();
        proxy.wait_ready(READY_TIMEOUT);
        proxy
    }

    /// Spawns the proxy and waits only until `/healthz` answers 200 (for tests
    /// that look at readiness themselves).
    pub fn spawn(self) -> ProxyProcess {
        let dir = tempfile::Builder::new()
            .prefix("shardis-proxy-")
            .tempdir()
            .expect("create a temp dir for the proxy");
        let id = self.id.clone().unwrap_or_else(|| {
            format!(
                "test-{}-{}",
                std::process::id(),
                PROXY_SEQ.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut dir = Some(dir);
        for attempt in 1..=5 {
            let proxy = ProxyProcess {
                child: Mutex::new(None),
                port: free_port(),
                admin_port: free_port(),
                id: id.clone(),
                options: self.clone(),
                dir: dir.take().expect("the directory is handed back on retry"),
            };
            proxy.spawn_process();
            match proxy.wait_healthy(READY_TIMEOUT) {
                Ok(()) => return proxy,
                Err(log) if attempt < 5 && says_address_in_use(&log) => {
                    proxy.kill();
                    dir = Some(proxy.into_dir());
                }
                Err(log) => panic!(
                    "shardis-proxy {id} ({}) did not start (no /healthz 200 within {READY_TIMEOUT:?}); \
                     stderr tail:\n{log}",
                    proxy_bin().display()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

// ---------------------------------------------------------------------------
// Process
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct ProxyProcess {
    /// First field: killed before the directory holding its stderr is removed.
    child: Mutex<Option<ChildGuard>>,
    port: u16,
    admin_port: u16,
    id: String,
    options: ProxyBuilder,
    dir: TempDir,
}

impl ProxyProcess {
    /// A builder for a proxy of `cluster` using the etcd at `etcd_endpoint`.
    pub fn builder(etcd_endpoint: &str, cluster: &str) -> ProxyBuilder {
        ProxyBuilder {
            etcd: etcd_endpoint.to_string(),
            cluster: cluster.to_string(),
            id: None,
            password: None,
            backend_password: None,
            backend_user: None,
            threads: None,
            max_clients: None,
            lease_ttl: None,
            config: None,
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn admin_addr(&self) -> String {
        format!("127.0.0.1:{}", self.admin_port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The client password the proxy was started with.
    pub fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// A raw RESP connection, authenticated when the proxy has a password.
    pub fn conn(&self) -> RespConn {
        RespConn::connect_auth(&self.addr(), self.password())
    }

    /// A `redis` crate connection, authenticated when the proxy has a password.
    pub fn client(&self) -> redis::Connection {
        redis_client(&self.addr(), self.password())
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// The last `lines` lines the proxy logged.
    pub fn stderr_tail(&self, lines: usize) -> String {
        log_tail(&self.stderr_path(), lines)
    }

    /// Everything the proxy logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// `GET path` on the admin port: status and body.
    pub fn admin_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(&self.admin_addr(), path, Duration::from_secs(5))
    }

    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(ChildGuard::pid)
    }

    /// True while the process has not exited (a paused one is running).
    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| c.exited().is_none())
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        lock(&self.child).as_mut().and_then(ChildGuard::exited)
    }

    /// Waits until `/readyz` answers 200; panics with the stderr tail otherwise.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                panic!(
                    "shardis-proxy {} exited with {status} before it was ready; stderr tail:\n{}",
                    self.id,
                    self.stderr_tail(40)
                );
            }
            let last = match self.admin_get("/readyz") {
                Ok((200, _)) => return,
                Ok((code, body)) => format!("{code} {body}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "shardis-proxy {} not ready within {timeout:?} (last /readyz: {last}); \
                     stderr tail:\n{}",
                    self.id,
                    self.stderr_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            child.kill();
        }
    }

    /// SIGTERM and wait (up to 15 s) for the process to exit. `None` if it did
    /// not exit in time (it is then killed).
    pub fn terminate(&self) -> Option<ExitStatus> {
        let mut guard = lock(&self.child);
        let child = guard.as_mut()?;
        child.signal(Signal::SIGCONT);
        child.signal(Signal::SIGTERM);
        let status = child.wait_timeout(Duration::from_secs(15));
        if status.is_none() {
            child.kill();
        }
        guard.take();
        status
    }

    /// SIGSTOP.
    pub fn pause(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            child.signal(Signal::SIGSTOP);
        }
    }

    /// SIGCONT.
    pub fn resume(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            child.signal(Signal::SIGCONT);
        }
    }

    /// Kills the process (if running) and starts it again with the same id,
    /// ports and options; waits until ready.
    pub fn restart(&self) {
        self.kill();
        self.spawn_process();
        self.wait_ready(READY_TIMEOUT);
    }

    fn into_dir(self) -> TempDir {
        self.dir
    }

    fn spawn_process(&self) {
        let o = &self.options;
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("create the proxy's stderr file");
        let mut cmd = Command::new(proxy_bin());
        cmd.args(["--listen", &self.addr()])
            .args(["--admin-listen", &self.admin_addr()])
            .args(["--etcd", &o.etcd])
            .args(["--cluster", &o.cluster])
            .args(["--id", &self.id]);
        if let Some(pw) = &o.password {
            cmd.args(["--password", pw]);
        }
        if let Some(pw) = &o.backend_password {
            cmd.args(["--backend-password", pw]);
        }
        if let Some(user) = &o.backend_user {
            cmd.args(["--backend-user", user]);
        }
        if let Some(n) = o.threads {
            cmd.args(["--threads", &n.to_string()]);
        }
        if let Some(n) = o.max_clients {
            cmd.args(["--max-clients", &n.to_string()]);
        }
        if let Some(ttl) = o.lease_ttl {
            cmd.args(["--lease-ttl", &ttl.to_string()]);
        }
        if let Some(config) = &o.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(&o.args);
        // Quiet by default; RUST_LOG from the test's environment still wins.
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &o.envs {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", proxy_bin().display()));
        *lock(&self.child) = Some(ChildGuard::new(child));
    }

    /// Waits for `/healthz` 200; on failure returns the stderr tail.
    fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!("exited with {status}\n{}", self.stderr_tail(40)));
            }
            if let Ok((200, _)) = self.admin_get("/healthz") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.stderr_tail(40));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}
