//! The `shardis-dashboard` binary as a child process (free port, stderr
//! captured to a file, killed when dropped), the `shardis` CLI binary, and a
//! typed API client for both.
//!
//! ```no_run
//! use shardis_tests::{DashboardProcess, EtcdServer};
//! let etcd = EtcdServer::start();
//! let dash = DashboardProcess::builder(&etcd.endpoint(), "c1").lease_ttl(2).start();
//! dash.wait_leader();
//! dash.client().create_group(1).unwrap();
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shardis_dashboard::api::Role;
use shardis_dashboard::client::Client;
use tempfile::TempDir;

use crate::process::{free_port, http_get, lock, log_tail, says_address_in_use, ChildGuard};

/// How long a dashboard may take to answer `/healthz`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// `target/<profile>` of the running test executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test>-<hash>  ->  target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// `$<env>`, or `<bin>` next to the test executable, built once with
/// `cargo build -p <package>` when missing (or always, when
/// `SHARDIS_BUILD_DASHBOARD=1`: an existing binary may be older than its
/// source). An integration test cannot use `CARGO_BIN_EXE_*` of another package.
fn locate(env: &str, package: &str, bin: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let dir = profile_dir();
    let path = dir.join(bin);
    let always = std::env::var("SHARDIS_BUILD_DASHBOARD").is_ok_and(|v| v == "1");
    if always || !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ lives in the workspace root");
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace)
            .args(["build", "-p", package, "--bin", bin]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("run cargo build -p {package}: {e}"));
        assert!(
            status.success(),
            "cargo build -p {package} failed: {status}"
        );
        assert!(
            path.exists(),
            "cargo build -p {package} did not produce {}",
            path.display()
        );
    }
    path
}

/// The dashboard binary (`SHARDIS_DASHBOARD_BIN` overrides).
pub fn dashboard_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        locate(
            "SHARDIS_DASHBOARD_BIN",
            "shardis-dashboard",
            "shardis-dashboard",
        )
    })
    .clone()
}

/// The `shardis` CLI binary (`SHARDIS_CLI_BIN` overrides).
pub fn cli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate("SHARDIS_CLI_BIN", "shardis-cli", "shardis"))
        .clone()
}

// ---------------------------------------------------------------------------
// Builder
// ---------------------------------------------------------------------------

/// Options of one dashboard process; see `shardis-dashboard --help`.
#[derive(Debug, Clone)]
pub struct DashboardBuilder {
    etcd: String,
    cluster: String,
    id: Option<String>,
    lease_ttl: Option<u64>,
    barrier_timeout: Option<u64>,
    catchup_timeout: Option<u64>,
    admin_token: Option<String>,
    backend_password: Option<String>,
    backend_user: Option<String>,
    args: Vec<String>,
}

impl DashboardBuilder {
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
    /// `--lease-ttl` (seconds).
    pub fn lease_ttl(mut self, secs: u64) -> Self {
        self.lease_ttl = Some(secs);
        self
    }
    /// `--barrier-timeout` (seconds).
    pub fn barrier_timeout(mut self, secs: u64) -> Self {
        self.barrier_timeout = Some(secs);
        self
    }
    /// `--catchup-timeout` (seconds).
    pub fn catchup_timeout(mut self, secs: u64) -> Self {
        self.catchup_timeout = Some(secs);
        self
    }
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }
    pub fn backend_password(mut self, pw: impl Into<String>) -> Self {
        self.backend_password = Some(pw.into());
        self
    }
    pub fn backend_user(mut self, user: impl Into<String>) -> Self {
        self.backend_user = Some(user.into());
        self
    }
    /// Any other command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Spawns the dashboard and waits until `/healthz` answers (it may still
    /// be a standby: see [`DashboardProcess::wait_leader`]).
    pub fn start(self) -> DashboardProcess {
        let mut dir = Some(
            tempfile::Builder::new()
                .prefix("shardis-dashboard-")
                .tempdir()
                .expect("create a temp dir for the dashboard"),
        );
        for attempt in 1..=5 {
            let dash = DashboardProcess {
                child: Mutex::new(None),
                port: free_port(),
                options: self.clone(),
                dir: dir.take().expect("the directory is handed back on retry"),
            };
            dash.spawn_process();
            match dash.wait_healthy(START_TIMEOUT) {
                Ok(()) => return dash,
                Err(log) if attempt < 5 && says_address_in_use(&log) => {
                    dash.kill();
                    dir = Some(dash.dir);
                }
                Err(log) => panic!(
                    "shardis-dashboard ({}) did not answer /healthz within {START_TIMEOUT:?}; \
                     stderr tail:\n{log}",
                    dashboard_bin().display()
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
pub struct DashboardProcess {
    /// First field: killed before the directory holding its stderr is removed.
    child: Mutex<Option<ChildGuard>>,
    port: u16,
    options: DashboardBuilder,
    dir: TempDir,
}

impl DashboardProcess {
    pub fn builder(etcd_endpoint: &str, cluster: &str) -> DashboardBuilder {
        DashboardBuilder {
            etcd: etcd_endpoint.to_string(),
            cluster: cluster.to_string(),
            id: None,
            lease_ttl: None,
            barrier_timeout: None,
            catchup_timeout: None,
            admin_token: None,
            backend_password: None,
            backend_user: None,
            args: Vec::new(),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, what `shardis --dashboard` takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A typed API client (with the admin token, when the dashboard has one).
    pub fn client(&self) -> Client {
        Client::new(&self.url(), self.options.admin_token.clone())
    }

    /// A client without the admin token.
    pub fn anonymous_client(&self) -> Client {
        Client::new(&self.url(), None)
    }

    /// Runs the `shardis` CLI against this dashboard (with its token).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(cli_bin());
        cmd.arg("--dashboard").arg(self.url()).args(args);
        cmd.env_remove("SHARDIS_TOKEN")
            .env_remove("SHARDIS_DASHBOARD");
        if let Some(token) = &self.options.admin_token {
            cmd.env("SHARDIS_TOKEN", token);
        }
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", cli_bin().display()))
    }

    /// Waits (up to 15 s) until this dashboard says it is the leader.
    pub fn wait_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let last = self.client().overview();
            if let Ok(o) = &last {
                if o.dashboard.role == Role::Leader {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "dashboard {} did not become the leader; last overview: {last:?}\n{}",
                self.addr(),
                self.stderr_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its role right now, `None` when it does not answer.
    pub fn role(&self) -> Option<Role> {
        self.client().overview().ok().map(|o| o.dashboard.role)
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        log_tail(&self.stderr_path(), lines)
    }

    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(ChildGuard::pid)
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        lock(&self.child).as_mut().and_then(ChildGuard::exited)
    }

    /// SIGKILL: no resignation, the leadership lease runs out by itself.
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            child.kill();
        }
    }

    /// SIGTERM and wait (up to 15 s): the dashboard resigns on the way out.
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

    fn spawn_process(&self) {
        let o = &self.options;
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("create the dashboard's stderr file");
        let mut cmd = Command::new(dashboard_bin());
        cmd.args(["--listen", &self.addr()])
            .args(["--etcd", &o.etcd])
            .args(["--cluster", &o.cluster]);
        if let Some(id) = &o.id {
            cmd.args(["--id", id]);
        }
        for (flag, value) in [
            ("--lease-ttl", o.lease_ttl),
            ("--barrier-timeout", o.barrier_timeout),
            ("--catchup-timeout", o.catchup_timeout),
        ] {
            if let Some(v) = value {
                cmd.args([flag, &v.to_string()]);
            }
        }
        if let Some(user) = &o.backend_user {
            cmd.args(["--backend-user", user]);
        }
        // Secrets through the environment, as an operator would.
        cmd.env_remove("SHARDIS_ADMIN_TOKEN")
            .env_remove("SHARDIS_BACKEND_PASSWORD");
        if let Some(token) = &o.admin_token {
            cmd.env("SHARDIS_ADMIN_TOKEN", token);
        }
        if let Some(pw) = &o.backend_password {
            cmd.env("SHARDIS_BACKEND_PASSWORD", pw);
        }
        cmd.args(&o.args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", dashboard_bin().display()));
        *lock(&self.child) = Some(ChildGuard::new(child));
    }

    fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!("exited with {status}\n{}", self.stderr_tail(40)));
            }
            if let Ok((200, _)) = http_get(&self.addr(), "/healthz", Duration::from_secs(2)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.stderr_tail(40));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}
