//! `shardis-dashboard`: the control plane's HTTP API for one cluster.

use std::path::PathBuf;

use clap::Parser;
use shardis_dashboard::{Config, DEFAULT_CONFIG};

#[derive(Parser, Debug)]
#[command(
    name = "shardis-dashboard",
    version,
    about = "Shardis control plane: groups, slots, proxies and promotion through a JSON API"
)]
struct Args {
    /// TOML configuration file (flags override it).
    #[arg(long, short = 'c', env = "SHARDIS_DASHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Print a commented example configuration and exit.
    #[arg(long)]
    default_config: bool,
    /// API address [default: 127.0.0.1:18080].
    #[arg(long)]
    listen: Option<String>,
    /// etcd endpoints, comma separated [default: http://127.0.0.1:23790].
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Cluster name [default: shardis].
    #[arg(long)]
    cluster: Option<String>,
    /// Dashboard id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// Token every mutating call must bring as `Authorization: Bearer <token>`.
    #[arg(long, env = "SHARDIS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// ACL user for the dashboard's Redis commands and the replicas' masteruser.
    #[arg(long)]
    backend_user: Option<String>,
    /// Password for the Redis servers (also the replicas' masterauth).
    #[arg(long, env = "SHARDIS_BACKEND_PASSWORD", hide_env_values = true)]
    backend_password: Option<String>,
    /// Leadership lease TTL in seconds [default: 5].
    #[arg(long)]
    lease_ttl: Option<u64>,
    /// How long a barrier waits for the proxies, in seconds [default: 30].
    #[arg(long)]
    barrier_timeout: Option<u64>,
    /// How long a promotion waits for the replica to catch up, in seconds [default: 30].
    #[arg(long)]
    catchup_timeout: Option<u64>,
    /// MiB of key names the migration mover keeps per wave [default: 256].
    #[arg(long)]
    mover_memory_mib: Option<u64>,
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
        etcd = args.etcd,
        cluster = args.cluster,
        id = args.id,
        lease_ttl_secs = args.lease_ttl,
        barrier_timeout_secs = args.barrier_timeout,
        catchup_timeout_secs = args.catchup_timeout,
        mover_memory_mib = args.mover_memory_mib,
    );
    for (field, arg) in [
        (&mut c.admin_token, &args.admin_token),
        (&mut c.backend_user, &args.backend_user),
        (&mut c.backend_password, &args.backend_password),
    ] {
        if arg.is_some() {
            field.clone_from(arg);
        }
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
        // Colours only on a terminal: not in log files or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardis-dashboard: {e:#}");
            std::process::exit(2);
        }
    };
    // The control plane is light: two threads leave the cores to Redis and proxies.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardis-dashboard: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(shardis_dashboard::run(config)) {
        eprintln!("shardis-dashboard: {e:#}");
        std::process::exit(1);
    }
}
