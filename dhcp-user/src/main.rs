//! The `xdhcp` command.

/// The commands that read and check rather than serve: `leases`, `stats`,
/// `ports`, `status`, `check`.
mod cli;

use cli::{check, view as cli_view};

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xdhcp::{
    daemon::{self, RunOptions},
    neutron::model::Kind,
    store::Db,
};

#[derive(Parser)]
#[command(
    name = "xdhcp",
    version,
    about = "DHCP for OpenStack-style clouds, answered from XDP"
)]
struct Cli {
    /// The port database (SQLite) [default: /var/lib/xdhcp/xdhcp.db, or the
    /// [xdhcp] db of --config-file].
    #[arg(long, global = true, env = "XDHCP_DB")]
    db: Option<PathBuf>,
    /// The bpffs directory the maps, programs and links are pinned in
    /// [default: /sys/fs/bpf/xdhcp, or the [xdhcp] bpffs of --config-file].
    #[arg(long, global = true)]
    bpffs: Option<PathBuf>,
    /// neutron-dhcp-agent's configuration files (oslo.config INI, in order,
    /// later wins), for `agent` and to find the database and bpffs.
    #[arg(long = "config-file", global = true)]
    config_file: Vec<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upsert networks, subnets and ports from Neutron API JSON ({"networks": [...], "subnets": [...], "ports": [...]}).
    Import {
        /// The JSON file ("-" for standard input).
        file: PathBuf,
    },
    /// Delete a port, subnet or network (a network takes its subnets and ports along).
    Delete { kind: DeleteKind, id: String },
    /// Run the daemon: load the fast path, keep its maps in sync, serve every qdhcp namespace.
    Run {
        /// Agent options (TOML, dhcp_agent.ini names).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Create missing qdhcp namespaces, DHCP devices and bridges, as neutron-dhcp-agent does.
        #[arg(long)]
        plumb: bool,
        /// With --plumb: put every network on this one bridge instead of brq<network id>.
        #[arg(long, requires = "plumb")]
        bridge: Option<String>,
        /// Start even if the database is missing or empty while the pinned fast
        /// path serves clients (it stops serving them).
        #[arg(long)]
        allow_empty_db: bool,
        /// Serve Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:9411.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
        /// Per-network metric series for at most this many networks (totals always).
        #[arg(long, value_name = "N", default_value_t = xdhcp::daemon::metrics::DEFAULT_MAX_NETWORKS)]
        metrics_max_networks: usize,
    },
    /// Detach and unpin everything (stops a running daemon first).
    Down,
    /// A drop-in neutron-dhcp-agent: scheduled by neutron-server over RPC,
    /// plugged as its interface drivers plug, answering from XDP
    /// (`xdhcp agent --config-file /etc/neutron/neutron.conf --config-file
    /// /etc/neutron/dhcp_agent.ini`).
    Agent,
    /// Leases: MAC, IP, network, port, expiry, state.
    Leases {
        #[arg(long)]
        json: bool,
    },
    /// Counters of the fast and the slow path.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Is the daemon serving: per network attached (mode), leases in the maps,
    /// last change applied, slow path alive; the agent's broker and last
    /// report. Exit status 1 when something is wrong (for liveness probes).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// What the fast path's maps hold, per client.
    Ports {
        #[arg(long)]
        json: bool,
    },
    /// Pre-start check: the config files parse, bpffs is mounted, the kernel
    /// loads the XDP program (not attached), the tools are there, the database
    /// can be written. One line per check; exit status 1 if any failed.
    Check {
        /// `xdhcp run`'s agent options (TOML), checked too.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeleteKind {
    Port,
    Subnet,
    Network,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = dispatch(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdhcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command with --db and --bpffs resolved: given, else from
/// --config-file's [xdhcp] section, else the defaults.
fn dispatch(cli: Cli) -> Result<()> {
    if matches!(cli.cmd, Cmd::Agent) {
        anyhow::ensure!(
            !cli.config_file.is_empty(),
            "xdhcp agent needs --config-file (neutron.conf, dhcp_agent.ini, …)"
        );
        return xdhcp::agent::run(&cli.config_file);
    }
    if let Cmd::Check { config } = cli.cmd {
        // Before resolving: config files that do not parse are a failed check, not an error.
        return check::run(check::Inputs {
            config_files: cli.config_file,
            config,
            db: cli.db,
            bpffs: cli.bpffs,
        });
    }
    let (db, bpffs) = if cli.config_file.is_empty() {
        (
            cli.db
                .unwrap_or_else(|| PathBuf::from("/var/lib/xdhcp/xdhcp.db")),
            cli.bpffs
                .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/xdhcp")),
        )
    } else {
        let (settings, _) = xdhcp::config::oslo::load(&cli.config_file)?;
        (
            cli.db.unwrap_or(settings.db),
            cli.bpffs.unwrap_or(settings.bpffs),
        )
    };
    let cli = Resolved {
        db,
        bpffs,
        cmd: cli.cmd,
    };
    match cli.cmd {
        Cmd::Import { file } => import(&cli.db, &file),
        Cmd::Delete { kind, id } => delete(&cli.db, kind, &id),
        Cmd::Run {
            config,
            plumb,
            bridge,
            allow_empty_db,
            metrics,
            metrics_max_networks,
        } => daemon::run(RunOptions {
            db: cli.db,
            bpffs: cli.bpffs,
            config,
            plumb,
            bridge,
            allow_empty_db,
            ovs: None,
            unplumb: false,
            metrics,
            metrics_max_networks,
            health: Default::default(),
        }),
        Cmd::Down => daemon::down(&cli.bpffs),
        Cmd::Leases { json } => cli_view::leases(&cli.db, &cli.bpffs, json),
        Cmd::Stats { json } => cli_view::stats(&cli.db, &cli.bpffs, json),
        Cmd::Ports { json } => cli_view::ports(&cli.db, &cli.bpffs, json),
        Cmd::Status { json } => cli_view::status(&cli.bpffs, json),
        Cmd::Agent | Cmd::Check { .. } => unreachable!("handled above"),
    }
}

/// The command line with --db and --bpffs resolved.
struct Resolved {
    db: PathBuf,
    bpffs: PathBuf,
    cmd: Cmd,
}

fn import(db: &Path, file: &Path) -> Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let doc =
        xdhcp::neutron::import::parse(&text).with_context(|| format!("{}", file.display()))?;
    let mut db = Db::open(db)?;
    let done = db
        .import(&doc)
        .with_context(|| format!("{}: nothing imported", file.display()))?;
    println!(
        "imported {} network(s), {} subnet(s), {} port(s)",
        done.networks, done.subnets, done.ports
    );
    Ok(())
}

fn delete(db: &Path, kind: DeleteKind, id: &str) -> Result<()> {
    let kind = match kind {
        DeleteKind::Port => Kind::Port,
        DeleteKind::Subnet => Kind::Subnet,
        DeleteKind::Network => Kind::Network,
    };
    Db::open(db)?.delete(kind, id)?;
    println!("deleted {kind:?} {id}");
    Ok(())
}
