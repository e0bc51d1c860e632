//! A real `redis-server` on a free loopback port with its own temporary
//! directory, no persistence, killed when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::process::{free_port, lock, log_tail, says_address_in_use, ChildGuard};
use crate::resp::{escape, RespConn};

/// How long a starting server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The program to run; `REDIS_SERVER_BIN` overrides it.
fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_string())
}

#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    args: Vec<String>,
}

impl RedisServerBuilder {
    /// `requirepass`: clients (and the proxy) must AUTH.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// One extra command-line argument, e.g. `.arg("--maxmemory").arg("10mb")`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("shardis-redis-")
            .tempdir()
            .expect("create a temp dir for redis-server");
        // A port can be taken between our check and redis binding it (another
        // test process): try a few fresh ones.
        let mut dir = Some(dir);
        for attempt in 1..=5 {
            let server = RedisServer {
                child: Mutex::new(None),
                port: free_port(),
                dir: dir.take().expect("the directory is handed back on retry"),
                password: self.password.clone(),
                extra_args: self.args.clone(),
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) if attempt < 5 && says_address_in_use(&log) => dir = Some(server.dir),
                Err(log) => panic!(
                    "redis-server on port {} did not start within {START_TIMEOUT:?}; log tail:\n{log}",
                    server.port
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// A running (or killed, or paused) redis-server.
#[derive(Debug)]
pub struct RedisServer {
    /// `None` while killed. First field: dropped (killed) before the directory goes.
    child: Mutex<Option<ChildGuard>>,
    port: u16,
    /// Holds the log; removed when the server is dropped.
    dir: TempDir,
    password: Option<String>,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// A server with default settings.
    pub fn start() -> RedisServer {
        Self::builder().start()
    }

    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("redis.log")
    }

    /// The last 30 lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path(), 30)
    }

    /// A raw RESP connection, authenticated when the server has a password.
    pub fn conn(&self) -> RespConn {
        RespConn::connect_auth(&self.addr(), self.password())
    }

    /// A `redis` crate connection, authenticated when the server has a password.
    pub fn client(&self) -> redis::Connection {
        redis_client(&self.addr(), self.password())
    }

    /// Sends one command on a fresh connection and returns the raw reply.
    pub fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Vec<u8> {
        self.conn().cmd(args)
    }

    /// True when `key` exists on this server.
    pub fn exists(&self, key: &str) -> bool {
        let reply = self.cmd(&["EXISTS", key]);
        match reply.as_slice() {
            b":1\r\n" => true,
            b":0\r\n" => false,
            other => panic!("EXISTS {key} on {}: {}", self.addr(), escape(other)),
        }
    }

    /// Number of keys on this server.
    pub fn dbsize(&self) -> i64 {
        self.conn()
            .reply(&["DBSIZE"])
            .integer()
            .expect("DBSIZE answers an integer")
    }

    pub fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(ChildGuard::pid)
    }

    pub fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| c.exited().is_none())
    }

    /// SIGKILL: no shutdown, no save. The data is gone (there is no persistence).
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            child.kill();
        }
    }

    /// Starts the server again on the same port and directory (killing it first
    /// if it still runs), and waits until it answers.
    pub fn restart(&self) {
        self.kill();
        // The old socket may linger in TIME_WAIT: redis sets SO_REUSEADDR, but
        // retry a few times in case the port is briefly unavailable.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline && says_address_in_use(&log) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!(
                    "redis-server on port {} did not restart; log tail:\n{log}",
                    self.port
                ),
            }
        }
    }

    /// SIGSTOP: the server keeps its connections but answers nothing.
    pub fn pause(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            child.signal(Signal::SIGSTOP);
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(child) = lock(&self.child).as_ref() {
            child.signal(Signal::SIGCONT);
        }
    }

    /// Makes this server a replica of `master` and waits until the initial
    /// sync is done (`master_link_status:up`).
    pub fn replicaof(&self, master: &RedisServer) {
        let mut conn = self.conn();
        if let Some(pw) = master.password() {
            let reply = conn.cmd(&["CONFIG", "SET", "masterauth", pw]);
            assert_eq!(reply, b"+OK\r\n", "masterauth: {}", escape(&reply));
        }
        let port = master.port().to_string();
        let reply = conn.cmd(&["REPLICAOF", "127.0.0.1", &port]);
        assert_eq!(reply, b"+OK\r\n", "REPLICAOF: {}", escape(&reply));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let info = conn
                .reply(&["INFO", "replication"])
                .text()
                .unwrap_or_default();
            if info.contains("master_link_status:up") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not sync with master {} within {START_TIMEOUT:?}:\n{info}\nlog:\n{}",
                self.addr(),
                master.addr(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spawns the process and waits until PING is answered. On failure the
    /// child is killed and the log tail returned.
    fn spawn_and_wait(&self) -> Result<(), String> {
        let dir = self.dir();
        let stderr = File::create(dir.join("stderr.log")).expect("create redis stderr file");
        let mut cmd = Command::new(redis_server_bin());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            // Replicas sync at once instead of after the default 5 s delay.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_path());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        cmd.args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawn {}: {e} (is redis-server installed?)",
                redis_server_bin()
            )
        });
        let mut guard = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = guard.exited() {
                return Err(format!(
                    "exited with {status}\n{}\n{}",
                    self.log_tail(),
                    log_tail(&dir.join("stderr.log"), 10)
                ));
            }
            if self.answers_ping() {
                *lock(&self.child) = Some(guard);
                return Ok(());
            }
            if Instant::now() >= deadline {
                drop(guard);
                return Err(self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the server answers PING (`-NOAUTH` counts: it is up).
    fn answers_ping(&self) -> bool {
        let Ok(mut conn) = RespConn::try_connect(&self.addr()) else {
            return false;
        };
        conn.set_timeout(Duration::from_secs(1));
        conn.send(&["PING"]);
        match conn.try_read_frame() {
            Ok(reply) => reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH"),
            Err(_) => false,
        }
    }
}

/// A `redis` crate connection to `addr` (AUTH with `password` when given).
pub fn redis_client(addr: &str, password: Option<&str>) -> redis::Connection {
    let url = match password {
        Some(pw) => format!("redis://:{pw}@{addr}/"),
        None => format!("redis://{addr}/"),
    };
    let client =
        redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("redis url {url}: {e}"));
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("redis crate connection to {addr}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set read timeout");
    conn
}
