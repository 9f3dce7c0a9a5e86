//! The `xdhcp` command.

mod cli_view;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use aya::{TestRun, TestRunOptions};
use clap::{Parser, Subcommand};
use dhcp_ebpf::{
    stat, ClientKey, Lease, NetConfig, OptsBlob, ENTRY_PROGRAM, FAST_PROGRAM, HOSTNAME_MAX,
    OPTS_MAX,
};
use xdhcp::{
    bpffs::TempPinDir,
    craft::RequestFrame,
    daemon::{self, RunOptions},
    db::Db,
    ebpf,
    ebpf::FastPath,
    model::Kind,
    netns::TempNs,
    options::ReplyOptions,
};

#[derive(Parser)]
#[command(
    name = "xdhcp",
    version,
    about = "DHCP for OpenStack-style clouds, answered from XDP"
)]
struct Cli {
    /// The port database (SQLite).
    #[arg(
        long,
        global = true,
        env = "XDHCP_DB",
        default_value = "/var/lib/xdhcp/xdhcp.db"
    )]
    db: PathBuf,
    /// The bpffs directory the maps, programs and links are pinned in.
    #[arg(long, global = true, default_value = "/sys/fs/bpf/xdhcp")]
    bpffs: PathBuf,
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
    },
    /// Detach and unpin everything (stops a running daemon first).
    Down,
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
    /// What the fast path's maps hold, per client.
    Ports {
        #[arg(long)]
        json: bool,
    },
    /// Load the embedded XDP program, let the kernel verify it, and report.
    Check,
    /// Attach the fast path in a throwaway namespace and answer a DISCOVER and a REQUEST.
    Demo,
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
    let result = match cli.cmd {
        Cmd::Import { file } => import(&cli.db, &file),
        Cmd::Delete { kind, id } => delete(&cli.db, kind, &id),
        Cmd::Run {
            config,
            plumb,
            bridge,
        } => daemon::run(RunOptions {
            db: cli.db,
            bpffs: cli.bpffs,
            config,
            plumb,
            bridge,
        }),
        Cmd::Down => daemon::down(&cli.bpffs),
        Cmd::Leases { json } => cli_view::leases(&cli.db, &cli.bpffs, json),
        Cmd::Stats { json } => cli_view::stats(&cli.db, &cli.bpffs, json),
        Cmd::Ports { json } => cli_view::ports(&cli.db, &cli.bpffs, json),
        Cmd::Check => check(),
        Cmd::Demo => demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xdhcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn import(db: &Path, file: &Path) -> Result<()> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let doc = xdhcp::import::parse(&text).with_context(|| format!("{}", file.display()))?;
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

fn check() -> Result<()> {
    let pins = TempPinDir::new("xdhcp-check")?;
    let mut fast = FastPath::load(&pins.path)?;
    let fast_insns = ebpf::verified_insns(fast.program()?)?;
    let mut entry = fast.entry(1)?;
    let entry_insns = ebpf::verified_insns(ebpf::program(&mut entry, ENTRY_PROGRAM)?)?;
    println!(
        "verified: {FAST_PROGRAM} {fast_insns} instructions processed, {ENTRY_PROGRAM} (per network) \
         {entry_insns}; object {} bytes",
        ebpf::OBJECT.len()
    );
    Ok(())
}

fn demo() -> Result<()> {
    const NET: u32 = 1;
    let server_mac = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x02];
    let vm_mac = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
    let server_ip: Ipv4Addr = "10.0.0.2".parse()?;
    let vm_ip: Ipv4Addr = "10.0.0.5".parse()?;

    let ns = TempNs::new("xdhcp-demo")?;
    ns.ip(&[
        "link", "add", "tapdemo", "type", "veth", "peer", "name", "vmdemo",
    ])?;
    ns.ip(&["link", "set", "tapdemo", "up"])?;
    ns.ip(&["link", "set", "vmdemo", "up"])?;
    println!(
        "created network namespace {} with veth tapdemo <-> vmdemo",
        ns.name
    );

    let pins = TempPinDir::new("xdhcp-demo")?;
    let fast = FastPath::load(&pins.path)?;
    let mut maps = fast.maps()?;
    let mut entry = fast.entry(NET)?;
    let prog = ebpf::program(&mut entry, ENTRY_PROGRAM)?;
    let (_, mode) = {
        let _inside = ns.enter()?;
        ebpf::attach(prog, "tapdemo")?
    };
    println!(
        "loaded the fast path (pinned under {}) and attached network {NET}'s entry program to \
         tapdemo ({mode:?} mode)",
        pins.path.display()
    );

    let blob = ReplyOptions {
        lease_secs: 86400,
        prefix_len: 24,
        router: Some("10.0.0.1".parse()?),
        dns: vec!["10.0.0.2".parse()?],
        domain: Some("openstacklocal".into()),
        mtu: Some(1450),
        ..Default::default()
    }
    .encode()?;
    let mut opts = OptsBlob {
        len: blob.len() as u16,
        _pad: [0; 2],
        bytes: [0; OPTS_MAX],
    };
    opts.bytes[..blob.len()].copy_from_slice(&blob);
    let hostname = b"host-10-0-0-5";
    let mut lease = Lease {
        ip: vm_ip.octets(),
        server_ip: server_ip.octets(),
        siaddr: [0; 4],
        lease_secs: 86400,
        opts_id: 1,
        hostname_len: hostname.len() as u8,
        _pad: [0; 3],
        hostname: [0; HOSTNAME_MAX],
    };
    lease.hostname[..hostname.len()].copy_from_slice(hostname);
    maps.nets.insert(
        NET,
        NetConfig {
            server_mac,
            flags: 0,
        },
        0,
    )?;
    maps.opts.insert(1, opts, 0)?;
    maps.leases.insert(ClientKey::new(NET, vm_mac), lease, 0)?;
    println!(
        "lease for {} -> {vm_ip} written to the maps",
        fmt_mac(&vm_mac)
    );

    for (what, frame) in [
        ("DHCPDISCOVER", RequestFrame::discover(vm_mac)),
        (
            "DHCPREQUEST",
            RequestFrame::request(vm_mac, vm_ip, server_ip),
        ),
    ] {
        let input = frame.bytes();
        let mut out = vec![0u8; 4096];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(&input),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        if result.return_value != dhcp_ebpf::verdict::TX {
            bail!(
                "{what}: the fast path did not answer (verdict {})",
                result.return_value
            );
        }
        // The output starts at the XDP metadata the entry program added.
        let out = &out[dhcp_ebpf::NET_META_LEN..result.data_size_out as usize];
        let msg = decode(out)?;
        println!(
            "{what} from {} -> {:?} yiaddr {} ({} bytes, answered by XDP_TX)",
            fmt_mac(&vm_mac),
            msg.opts().msg_type().context("no message type")?,
            msg.yiaddr(),
            out.len()
        );
    }
    let counters = maps.counters()?;
    let shown: Vec<String> = stat::NAMES
        .iter()
        .zip(counters)
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!("counters: {}", shown.join(" "));
    drop(entry); // detaches
    println!(
        "detached; deleting namespace {} and pins {}",
        ns.name,
        pins.path.display()
    );
    Ok(())
}

/// Decodes the DHCP message of a reply frame (Ethernet, IPv4, UDP).
fn decode(frame: &[u8]) -> Result<dhcproto::v4::Message> {
    use dhcproto::Decodable;
    let ihl = ((frame.get(14).context("short frame")? & 0x0f) as usize) * 4;
    let payload = frame.get(14 + ihl + 8..).context("short frame")?;
    Ok(dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(
        payload,
    ))?)
}

fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
