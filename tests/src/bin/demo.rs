//! The demo behind `cargo xtask demo` (the README's first command): two networks, four VMs, the
//! daemon on a throwaway SQLite database, real DHCP clients (udhcpc and
//! dhclient) getting their addresses, a table of what they got, the counters,
//! and everything removed again.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xdhcp::{
    netns::plumb,
    netns::{ip, TempNs},
    neutron::model::format_mac,
};

struct Vm {
    name: &'static str,
    client: &'static str,
    net: usize,
    mac: [u8; 6],
    ip: Ipv4Addr,
}

/// Everything the demo creates; removed on drop, whatever happened.
struct Demo {
    exe: PathBuf,
    db: PathBuf,
    bpffs: PathBuf,
    bridge: String,
    nets: Vec<(String, String)>,
    daemon: Option<Child>,
    vm_ns: Vec<TempNs>,
    host_veths: Vec<String>,
    /// /etc/netns/<ns>: `ip netns exec` mounts its resolv.conf over the
    /// host's, so the clients' scripts do not rewrite the machine's.
    etc_dirs: Vec<PathBuf>,
}

impl Demo {
    fn xdhcp(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.exe)
            .arg("--db")
            .arg(&self.db)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .args(args)
            .output()
            .context("running xdhcp")
    }

    fn stats(&self) -> Result<Value> {
        let out = self.xdhcp(&["stats", "--json"])?;
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        let _ = self.xdhcp(&["down"]);
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            for (net, port) in &self.nets {
                let _ = rt.block_on(plumb::unplumb(net, port, true));
            }
        }
        for v in &self.host_veths {
            let _ = Command::new("ip").args(["link", "del", v]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        self.vm_ns.clear();
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.db.display()));
        }
        for dir in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs the demo.
/// The `xdhcp` binary built beside this one (`cargo xtask demo` builds both).
fn xdhcp_exe() -> Result<PathBuf> {
    let me = std::env::current_exe().context("finding the demo's own binary")?;
    let exe = me.with_file_name("xdhcp");
    if !exe.exists() {
        bail!("{} is missing: `cargo xtask demo` builds it", exe.display());
    }
    Ok(exe)
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    for tool in ["udhcpc", "dhclient"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} is not installed: `cargo xtask setup` installs it");
        }
    }
    let pid = std::process::id();
    let tag = format!("{:05x}", pid & 0xfffff);
    let mut demo = Demo {
        exe: xdhcp_exe()?,
        db: PathBuf::from(format!("/tmp/xdhcp-demo-{tag}.db")),
        bpffs: PathBuf::from(format!("/sys/fs/bpf/xdhcp-demo-{tag}")),
        bridge: format!("xdemo{tag}"),
        nets: Vec::new(),
        daemon: None,
        vm_ns: Vec::new(),
        host_veths: Vec::new(),
        etc_dirs: Vec::new(),
    };
    let mut doc = json!({"networks": [], "subnets": [], "ports": []});
    let mut vms = Vec::new();
    for n in 0..2u8 {
        let net = format!("d{tag}{n}00-0000-4000-8000-000000000000");
        let subnet = format!("d{tag}{n}01-0000-4000-8000-000000000000");
        let dhcp = format!("d{tag}{n}02-0000-4000-8000-000000000000");
        let octet = 201 + n;
        demo.nets.push((net.clone(), dhcp.clone()));
        doc["networks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": net, "name": format!("demo-net-{n}"), "mtu": 1450}));
        doc["subnets"].as_array_mut().unwrap().push(json!({
            "id": subnet, "network_id": net, "ip_version": 4, "cidr": format!("10.{octet}.0.0/24"),
            "gateway_ip": format!("10.{octet}.0.1"), "enable_dhcp": true, "dns_nameservers": [format!("10.{octet}.0.53")],
            "host_routes": [{"destination": "192.168.99.0/24", "nexthop": format!("10.{octet}.0.1")}]
        }));
        doc["ports"].as_array_mut().unwrap().push(json!({
            "id": dhcp, "network_id": net, "mac_address": format_mac(&[0xfa, 0x16, 0x3e, 0xde, n, 2]),
            "device_owner": "network:dhcp", "fixed_ips": [{"subnet_id": subnet, "ip_address": format!("10.{octet}.0.2")}]
        }));
        for (k, client) in [(0u8, "udhcpc"), (1, "dhclient")] {
            let mac = [0xfa, 0x16, 0x3e, 0xde, n, 0x10 + k];
            let ip = Ipv4Addr::new(10, octet, 0, 10 + k);
            doc["ports"].as_array_mut().unwrap().push(json!({
                "id": format!("d{tag}{n}1{k}-0000-4000-8000-000000000000"), "network_id": net, "mac_address": format_mac(&mac),
                "device_owner": "compute:nova", "fixed_ips": [{"subnet_id": subnet, "ip_address": ip.to_string()}]
            }));
            let name = ["vm-a1", "vm-a2", "vm-b1", "vm-b2"][(n * 2 + k) as usize];
            vms.push(Vm {
                name,
                client,
                net: n as usize,
                mac,
                ip,
            });
        }
    }
    let file = PathBuf::from(format!("/tmp/xdhcp-demo-{tag}.json"));
    std::fs::write(&file, doc.to_string())?;
    let out = demo.xdhcp(&["import", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let out = out?;
    if !out.status.success() {
        bail!("import: {}", String::from_utf8_lossy(&out.stderr));
    }
    println!(
        "imported 2 networks, 2 subnets, 6 ports into {} (SQLite)",
        demo.db.display()
    );

    let log = PathBuf::from(format!("/tmp/xdhcp-demo-{tag}.log"));
    let child = Command::new(&demo.exe)
        .arg("--db")
        .arg(&demo.db)
        .arg("--bpffs")
        .arg(&demo.bpffs)
        .args(["run", "--plumb", "--bridge", &demo.bridge])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting xdhcp run")?;
    demo.daemon = Some(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while demo
        .nets
        .iter()
        .any(|(net, _)| !demo.bpffs.join("links").join(net).exists())
    {
        if Instant::now() > deadline {
            bail!(
                "the daemon did not attach within 30 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "xdhcp run --plumb: qdhcp namespaces, tap devices and bridge {} created, XDP attached",
        demo.bridge
    );

    let mut rows = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        let ns = TempNs::new("xdhcp-demo-vm")?;
        let host = format!("xdv{tag}{i}");
        ip(&[
            "link",
            "add",
            &host,
            "type",
            "veth",
            "peer",
            "name",
            &format!("xdi{tag}{i}"),
        ])?;
        demo.host_veths.push(host.clone());
        ip(&["link", "set", &format!("xdi{tag}{i}"), "netns", &ns.name])?;
        ns.ip(&["link", "set", &format!("xdi{tag}{i}"), "name", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "address", &format_mac(&vm.mac)])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        let etc = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("resolv.conf"), "")?;
        demo.etc_dirs.push(etc.clone());
        ip(&["link", "set", &host, "master", &demo.bridge])?;
        ip(&["link", "set", &host, "up"])?;
        let before = demo.stats()?;
        let lf = format!("/tmp/xdhcp-demo-{tag}-{i}.leases");
        let pf = format!("/tmp/xdhcp-demo-{tag}-{i}.pid");
        let status = match vm.client {
            "udhcpc" => Command::new("ip")
                .args([
                    "netns", "exec", &ns.name, "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5",
                    "-T", "1",
                ])
                .output()?,
            _ => Command::new("ip")
                .args([
                    "netns", "exec", &ns.name, "timeout", "20", "dhclient", "-1", "-pf", &pf,
                    "-lf", &lf, "eth0",
                ])
                .output()?,
        };
        // Read what the client applied before dhclient is stopped (its script
        // removes the address on STOP).
        let got = applied_address(&ns.name)?;
        if vm.client == "dhclient" {
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", &ns.name, "dhclient", "-x", "-pf", &pf, "-lf", &lf,
                ])
                .output();
            let _ = std::fs::remove_file(&lf);
            let _ = std::fs::remove_file(&pf);
        }
        let after = demo.stats()?;
        let dns = std::fs::read_to_string(etc.join("resolv.conf")).unwrap_or_default();
        let dns: Vec<&str> = dns
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver "))
            .collect();
        let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
        let fast =
            delta("fast_offers") >= 1 && delta("fast_acks") >= 1 && delta("slow_replies") == 0;
        if !status.status.success() {
            eprintln!(
                "{} ({}) failed: {}",
                vm.name,
                vm.client,
                String::from_utf8_lossy(&status.stderr)
            );
        }
        rows.push((
            vm.name,
            vm.client,
            vm.net,
            vm.mac,
            vm.ip,
            got,
            dns.join(","),
            fast,
        ));
        demo.vm_ns.push(ns);
    }

    println!();
    println!(
        "{:<6} {:<9} {:<11} {:<17} {:<12} {:<15} {:<12} {:<4} FAST PATH",
        "VM", "CLIENT", "NETWORK", "MAC", "PORT IP", "OBTAINED", "DNS", "OK"
    );
    let mut all_ok = true;
    for (name, client, net, mac, want, got, dns, fast) in &rows {
        let ok = got.as_ref().map(|(a, _)| a) == Some(want);
        all_ok &= ok && *fast;
        let got = got.map_or("-".to_string(), |(a, p)| format!("{a}/{p}"));
        println!(
            "{:<6} {:<9} {:<11} {:<17} {:<12} {:<15} {:<12} {:<4} {}",
            name,
            client,
            format!("demo-net-{net}"),
            format_mac(mac),
            want,
            got,
            dns,
            if ok { "yes" } else { "NO" },
            if *fast { "yes" } else { "no" }
        );
    }
    println!();
    let stats = demo.stats()?;
    let shown: Vec<String> = stats
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| v.as_u64() != Some(0))
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    println!("counters: {}", shown.join(" "));
    drop(demo);
    let _ = std::fs::remove_file(&log);
    println!("cleaned up: daemon stopped, XDP detached, pins, namespaces, veths, bridge and database removed");
    if !all_ok {
        bail!("not every VM got its address from the fast path");
    }
    Ok(())
}

/// The IPv4 address and prefix on eth0 in namespace `ns`.
fn applied_address(ns: &str) -> Result<Option<(Ipv4Addr, u8)>> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "-4", "addr", "show", "dev", "eth0"])
        .output()?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let info = &v[0]["addr_info"][0];
    Ok(
        match (
            info["local"].as_str().and_then(|s| s.parse().ok()),
            info["prefixlen"].as_u64(),
        ) {
            (Some(a), Some(p)) => Some((a, p as u8)),
            _ => None,
        },
    )
}
