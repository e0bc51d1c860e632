//! `shardis-proxy`: point any Redis client at it.

use std::path::PathBuf;

use clap::Parser;
use shardis_proxy::{Config, DEFAULT_CONFIG};

#[derive(Parser, Debug)]
#[command(
    name = "shardis-proxy",
    version,
    about = "Shardis: a Redis sharding proxy"
)]
struct Args {
    /// TOML configuration file (flags override it).
    #[arg(long, short = 'c', env = "SHARDIS_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Print a commented example configuration and exit.
    #[arg(long)]
    default_config: bool,
    /// Client address, e.g. 127.0.0.1:19000.
    #[arg(long)]
    listen: Option<String>,
    /// Admin HTTP address, e.g. 127.0.0.1:11080.
    #[arg(long)]
    admin_listen: Option<String>,
    /// etcd endpoints, comma separated.
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Cluster name.
    #[arg(long)]
    cluster: Option<String>,
    /// Proxy id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// Password clients must AUTH with.
    #[arg(long, env = "SHARDIS_PROXY_PASSWORD")]
    password: Option<String>,
    /// ACL user for backend connections.
    #[arg(long)]
    backend_user: Option<String>,
    /// Password for backend connections.
    #[arg(long, env = "SHARDIS_BACKEND_PASSWORD")]
    backend_password: Option<String>,
    /// Worker threads (0: CPUs available to this process).
    #[arg(long)]
    threads: Option<usize>,
    #[arg(long)]
    backend_connections: Option<usize>,
    #[arg(long)]
    max_clients: Option<usize>,
    #[arg(long)]
    lease_ttl: Option<u64>,
    #[arg(long)]
    hold_timeout_ms: Option<u64>,
    #[arg(long)]
    client_idle_timeout: Option<u64>,
    #[arg(long)]
    memory_budget_mb: Option<usize>,
    /// Unread replies (MiB) after which a client's connection is closed.
    #[arg(long)]
    max_client_output_mb: Option<usize>,
    /// Per-request statistics and slowlog: true (default) or false.
    #[arg(long, value_name = "BOOL")]
    stats: Option<bool>,
    /// Requests at least this slow (µs) go to the slowlog.
    #[arg(long)]
    slowlog_threshold_us: Option<u64>,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut c: Config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => Config::default(),
    };
    macro_rules! set {
        ($($field:ident = $arg:expr),* $(,)?) => { $( if let Some(v) = $arg.clone() { c.$field = v; } )* };
    }
    set!(
        listen = args.listen,
        admin_listen = args.admin_listen,
        etcd = args.etcd,
        cluster = args.cluster,
        id = args.id,
        threads = args.threads,
        backend_connections = args.backend_connections,
        max_clients = args.max_clients,
        lease_ttl_secs = args.lease_ttl,
        hold_timeout_ms = args.hold_timeout_ms,
        client_idle_timeout_secs = args.client_idle_timeout,
        memory_budget_mb = args.memory_budget_mb,
        max_client_output_mb = args.max_client_output_mb,
        stats = args.stats,
        slowlog_threshold_us = args.slowlog_threshold_us,
    );
    if args.password.is_some() {
        c.password = args.password.clone();
    }
    if args.backend_user.is_some() {
        c.backend_user = args.backend_user.clone();
    }
    if args.backend_password.is_some() {
        c.backend_password = args.backend_password.clone();
    }
    c.validate().map_err(anyhow::Error::msg)?;
    Ok(c)
}

fn main() {
    let args = Args::parse();
    if args.default_config {
        print!("{DEFAULT_CONFIG}");
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardis-proxy: {e:#}");
            std::process::exit(2);
        }
    };
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One thread: a current-thread runtime has no work-stealing overhead.
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardis-proxy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(shardis_proxy::run(config)) {
        eprintln!("shardis-proxy: {e:#}");
        std::process::exit(1);
    }
}
