//! `cargo xtask bench` (daemon part): time from `xdhcp run` to the first
//! answer with 100k ports over 1,000 networks, and the delay from a committed
//! port change to the fast path answering it, under load.
//!
//! The database holds every network; one of them has its qdhcp namespace
//! plumbed beforehand (the others' namespaces do not exist, so the daemon
//! fills their maps but has nothing to attach to). A "VM" on that network
//! sends a DISCOVER every 2 ms from the moment the daemon is started. Then,
//! while the project's load generator sends DISCOVERs for that network's other
//! ports at LOAD_RATE, new ports are committed one at a time and the VM asks
//! for each until the fast path answers.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use xdhcp::{neutron::model::ImportDoc, store::Db};
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{exchange, namespace_on_bridge, Cloud, Net},
    loadgen::LoadGen,
    rss_kib, RawSocket,
};

/// DISCOVERs per second sent while ports are committed: twice what perfdhcp
/// can drive on this machine kind.
const LOAD_RATE: f64 = 40_000.0;

fn main() -> Result<()> {
    let networks: usize = std::env::var("BENCH_NETWORKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let per_net: usize = 100;
    let mut c = Cloud::new();
    let mut nets = Vec::new();
    for k in 0..networks {
        nets.push(c.net_at((k / 250) as u8, (k % 250) as u8));
    }
    let mut doc = json!({"networks": [], "subnets": [], "ports": []});
    for net in &nets {
        let one = c.net_json(net);
        for key in ["networks", "subnets", "ports"] {
            doc[key]
                .as_array_mut()
                .unwrap()
                .extend(one[key].as_array().unwrap().iter().cloned());
        }
        let ports: Vec<_> = (10..10 + per_net as u8 - 1)
            .map(|h| c.vm_port(net, h))
            .collect();
        let refs: Vec<_> = ports.iter().collect();
        doc["ports"].as_array_mut().unwrap().extend(
            Cloud::ports_json(&refs)["ports"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let total_ports = doc["ports"].as_array().unwrap().len();
    let parsed: ImportDoc = xdhcp::neutron::import::parse(&doc.to_string())?;
    let t = Instant::now();
    Db::open(&c.db)?.import(&parsed)?;
    let import_s = t.elapsed().as_secs_f64();

    // Plumb network 0 as neutron-dhcp-agent would have, and put a VM on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let net0 = nets[0].clone();
    rt.block_on(xdhcp::netns::plumb::plumb(
        &xdhcp::netns::plumb::PlumbSpec {
            network_id: net0.id.clone(),
            port_id: net0.dhcp_port_id.clone(),
            mac: net0.dhcp_mac,
            addresses: vec![format!("{}/24", net0.server_ip).parse()?],
            mtu: None,
            bridge: Some(c.bridge.clone()),
            ovs: None,
        },
    ))?;
    let vm = c.vm_port(&net0, 10);
    let (_, sock) = c.vm(&vm)?;
    // BENCH_ATTACH_ALL: every other network's qdhcp namespace too, with its
    // DHCP device (a veth pair inside it), so the daemon attaches to all.
    let _others = if std::env::var_os("BENCH_ATTACH_ALL").is_some() {
        let t = Instant::now();
        let ns = OtherNamespaces::create(&nets[1..])?;
        eprintln!(
            "bench_daemon: {} namespaces made in {:.1} s",
            nets.len() - 1,
            t.elapsed().as_secs_f64()
        );
        Some(ns)
    } else {
        None
    };

    let t0 = Instant::now();
    c.start(false);
    let mut xid = 0u32;
    let first = loop {
        xid += 1;
        let mut d = RequestFrame::discover(vm.mac);
        d.xid = xid.to_be_bytes();
        if exchange(&sock, &d, Duration::from_millis(2)).is_some() {
            break t0.elapsed();
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "no answer in 120 s; log:\n{}",
            c.log()
        );
    };
    let rss_kb = rss_kib(c.daemon_pid().context("the daemon stopped")?);

    // Load while the changes land: the project's generator sends DISCOVERs
    // for network 0's ports at LOAD_RATE from a namespace on the same bridge.
    let load_ns = namespace_on_bridge("xbload", &c.bridge, &format!("xl{}", c.tag))?;
    // Not host 10: that is the VM's MAC, which the bridge must keep on the VM's port.
    let load_macs: Vec<[u8; 6]> = (11..10 + per_net as u8 - 1)
        .map(|h| c.vm_port(&net0, h).mac)
        .collect();
    let gen = {
        let _inside = load_ns.enter()?;
        LoadGen::new("eth0", load_macs)?
    };
    let stop = AtomicBool::new(false);

    // Change to answer: new ports committed one by one while the daemon runs.
    let mut db = Db::open(&c.db)?;
    let mut delays = Vec::new();
    let (load, changes) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            gen.run(
                Some(LOAD_RATE),
                Duration::from_secs(600),
                Duration::from_millis(200),
                &stop,
            )
        });
        // Let the load reach its rate first.
        std::thread::sleep(Duration::from_millis(500));
        let changes = commit_and_probe(&c, &net0, per_net, &mut db, &sock, &mut xid, &mut delays);
        stop.store(true, Ordering::Relaxed);
        (load.join().expect("the load thread"), changes)
    });
    changes?;
    let load = load?;
    drop(load_ns);

    delays.sort();
    let pct =
        |q: f64| delays[((delays.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1000.0;
    let log = c.log();
    let sync_ms = log
        .lines()
        .find(|l| l.contains("maps in sync"))
        .and_then(|l| l.split("elapsed_ms=").nth(1))
        .map(|s| {
            s.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .unwrap_or_default();
    if std::env::var_os("BENCH_SHOW_LOG").is_some() {
        eprintln!("{log}");
    }
    println!("daemon start-up and change-to-answer ({networks} networks, {total_ports} ports)");
    println!("  import of {total_ports} ports (one transaction):        {import_s:.2} s");
    println!("  `xdhcp run` → maps in sync (daemon log):           {sync_ms} ms");
    println!(
        "  `xdhcp run` → first OFFER on the wire:              {} ms",
        first.as_millis()
    );
    if _others.is_some() {
        let serving = log.lines().find(|l| l.contains("serving attached="));
        let field = |name: &str| {
            serving
                .and_then(|l| l.split(&format!("{name}=")).nth(1))
                .map(|s| {
                    s.chars()
                        .take_while(|c| c.is_ascii_digit())
                        .collect::<String>()
                })
                .unwrap_or_default()
        };
        println!(
            "  `xdhcp run` → every network attached (daemon log): {} ms ({} of {networks} devices served)",
            field("elapsed_ms"),
            field("attached")
        );
    }
    println!(
        "  daemon RSS after start-up:                          {} MiB",
        rss_kb / 1024
    );
    println!(
        "  load meanwhile (project's generator, {} VM MACs):   {:.0} DISCOVER/s sent, {:.0} OFFER/s back",
        per_net - 2,
        load.sent_per_s(),
        load.replies_per_s()
    );
    println!(
        "  committed port → fast path answers ({} ports, under that load): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// The qdhcp namespaces of networks the bench does not plumb, each with its
/// DHCP device: made with `ip -batch` (thousands in seconds), deleted on drop.
struct OtherNamespaces(Vec<String>);

impl OtherNamespaces {
    fn create(nets: &[Net]) -> Result<Self> {
        let mut made = OtherNamespaces(Vec::new());
        // ip keeps a descriptor of every namespace a batch names: batches of
        // 1,000 stay inside the usual open-files limit.
        for chunk in nets.chunks(1000) {
            let mut batch = String::new();
            for net in chunk {
                let ns = xdhcp::netns::names::namespace_name(&net.id);
                let (k, m) = (net.index, net.dhcp_mac);
                batch.push_str(&format!(
                    "netns add {ns}\nlink add xbd{k} netns {ns} address \
                     {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} type veth peer name xbp{k} netns {ns}\n",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                ));
                made.0.push(ns);
            }
            ip_batch(&batch).context("making the namespaces")?;
        }
        Ok(made)
    }
}

impl Drop for OtherNamespaces {
    fn drop(&mut self) {
        let batch: String = self
            .0
            .iter()
            .map(|ns| format!("netns del {ns}\n"))
            .collect();
        if let Err(e) = ip_batch(&batch) {
            eprintln!("bench_daemon: deleting the namespaces: {e:#}");
        }
    }
}

/// `ip -force -batch -` on `commands`.
fn ip_batch(commands: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running ip -batch")?;
    child
        .stdin
        .take()
        .context("ip's stdin")?
        .write_all(commands.as_bytes())?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "ip -batch: {status}");
    Ok(())
}

/// Commits network `net`'s ports from host number `10 + per_net` up, one at a
/// time, and after each sends DISCOVERs every millisecond until the fast path
/// answers; pushes each delay from commit to answer.
fn commit_and_probe(
    c: &Cloud,
    net: &Net,
    per_net: usize,
    db: &mut Db,
    sock: &RawSocket,
    xid: &mut u32,
    delays: &mut Vec<Duration>,
) -> Result<()> {
    for host in (10 + per_net as u8)..250 {
        let p = c.vm_port(net, host);
        let doc: Value = Cloud::ports_json(&[&p]);
        let parsed = xdhcp::neutron::import::parse(&doc.to_string())?;
        db.import(&parsed).context("committing a port")?;
        let committed = Instant::now();
        loop {
            *xid += 1;
            let mut d = RequestFrame::discover(p.mac);
            d.xid = xid.to_be_bytes();
            if exchange(sock, &d, Duration::from_millis(1)).is_some() {
                delays.push(committed.elapsed());
                break;
            }
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(10),
                "port {} never answered",
                p.id
            );
        }
    }
    Ok(())
}
