//! The `xdhcp` command.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use aya::{TestRun, TestRunOptions};
use clap::{Parser, Subcommand};
use dhcp_ebpf::{
    stat, ClientKey, Lease, NetConfig, OptsBlob, ENTRY_PROGRAM, FAST_PROGRAM, HOSTNAME_MAX,
    OPTS_MAX,
};
use xdhcp::{
    bpffs::TempPinDir, craft::RequestFrame, ebpf, ebpf::FastPath, netns::TempNs,
    options::ReplyOptions,
};

#[derive(Parser)]
#[command(
    name = "xdhcp",
    version,
    about = "DHCP for OpenStack-style clouds, answered from XDP"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load the embedded XDP program, let the kernel verify it, and report.
    Check,
    /// Attach the fast path in a throwaway namespace and answer a DISCOVER and a REQUEST.
    Demo,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Check => check(),
        Cmd::Demo => demo(),
    }
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
