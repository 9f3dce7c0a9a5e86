//! A small cloud for end-to-end tests: a port database, the `xdhcp` daemon as
//! a process (plumbing qdhcp namespaces onto one test bridge), and "VM"
//! namespaces whose veth sits on that bridge with a Neutron port's MAC.
//! Everything is uniquely named and removed on drop.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use xdhcp::netns::{ip, TempNs};

use crate::RawSocket;

static N: AtomicU32 = AtomicU32::new(0);
/// Clouds made by this process: each gets its own tag, so tests running at
/// once never share a bpffs directory, database or device name.
static CLOUDS: AtomicU32 = AtomicU32::new(0);

/// The `xdhcp` binary next to the test executable. `cargo xtask test` builds
/// it first; running one test binary by hand, build it with the same profile
/// (`cargo build [--release] -p dhcp-user`), or an older daemon is tested.
pub fn xdhcp_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in target/<profile>/deps, bench binaries in target/<profile>.
    let dirs = [exe.parent(), exe.parent().and_then(Path::parent)];
    let found = dirs
        .into_iter()
        .flatten()
        .map(|d| d.join("xdhcp"))
        .find(|b| b.exists());
    found.unwrap_or_else(|| {
        panic!(
            "no xdhcp binary next to {}: `cargo build --release -p dhcp-user`",
            exe.display()
        )
    })
}

/// A network of the test cloud.
#[derive(Debug, Clone)]
pub struct Net {
    /// Its place among the cloud's networks (what its MACs and ids are made of).
    pub index: usize,
    pub id: String,
    pub subnet_id: String,
    pub dhcp_port_id: String,
    pub dhcp_mac: [u8; 6],
    pub cidr: String,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub server_ip: Ipv4Addr,
}

/// A VM port.
#[derive(Debug, Clone)]
pub struct VmPort {
    pub id: String,
    pub network_id: String,
    pub subnet_id: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

/// One test cloud.
pub struct Cloud {
    pub tag: String,
    pub db: PathBuf,
    pub bpffs: PathBuf,
    pub bridge: String,
    pub log: PathBuf,
    daemon: Option<Child>,
    pub nets: Vec<Net>,
    vms: Vec<TempNs>,
    host_veths: Vec<String>,
}

fn hex_id(tag: &str, kind: u8, n: u32) -> String {
    // First 11 characters unique per test run: tap/ns- names derive from them.
    format!("{tag}{kind:x}{n:02x}-0000-4000-8000-{:012x}", n)
}

fn mac_str(mac: &[u8; 6]) -> String {
    xdhcp::neutron::model::format_mac(mac)
}

impl Cloud {
    /// An empty cloud with unique names.
    pub fn new() -> Self {
        // 7 characters: 5 of the pid, 2 of the cloud's number. (The number
        // once came from the counter imports bump too, modulo 16: two tests
        // running at once could get one tag, and one's `xdhcp down` removed
        // the other's pins.)
        let n = CLOUDS.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < 256,
            "more than 256 clouds in one test binary: tags would repeat"
        );
        let tag = format!("{:05x}{:02x}", std::process::id() & 0xf_ffff, n);
        Self {
            db: PathBuf::from(format!("/tmp/xdhcp-test-{tag}.db")),
            bpffs: PathBuf::from(format!("/sys/fs/bpf/xdhcp-t{tag}")),
            bridge: format!("xbr{tag}"),
            log: PathBuf::from(format!("/tmp/xdhcp-test-{tag}.log")),
            tag,
            daemon: None,
            nets: Vec::new(),
            vms: Vec::new(),
            host_veths: Vec::new(),
        }
    }

    /// Network `i` (0-based): 10.<i>.0.0/24 unless `cidr_base` overrides the second octet.
    pub fn net(&mut self, second_octet: u8) -> Net {
        self.net_at(second_octet, 0)
    }

    /// A network on 10.`b`.`c`.0/24 (gateway .1, DHCP port .2).
    pub fn net_at(&mut self, b: u8, c: u8) -> Net {
        let i = self.nets.len() as u32;
        let net = Net {
            index: i as usize,
            id: hex_id(&self.tag, 1, i),
            subnet_id: hex_id(&self.tag, 2, i),
            dhcp_port_id: hex_id(&self.tag, 3, i),
            dhcp_mac: [0xfa, 0x16, 0x3e, 0xd0, (i >> 8) as u8, i as u8],
            cidr: format!("10.{b}.{c}.0/24"),
            prefix: 24,
            gateway: Ipv4Addr::new(10, b, c, 1),
            server_ip: Ipv4Addr::new(10, b, c, 2),
        };
        self.nets.push(net.clone());
        net
    }

    /// A VM port on `net` with host number `host`.
    pub fn vm_port(&self, net: &Net, host: u8) -> VmPort {
        let octets = net.server_ip.octets();
        VmPort {
            id: hex_id(&self.tag, 4, (net.index as u32) << 8 | host as u32),
            network_id: net.id.clone(),
            subnet_id: net.subnet_id.clone(),
            mac: [
                0xfa,
                0x16,
                0x3e,
                (net.index >> 8) as u8,
                net.index as u8,
                host,
            ],
            ip: Ipv4Addr::new(octets[0], octets[1], octets[2], host),
        }
    }

    /// Network 10.`second_octet`.0.0/24 with one VM port (host 10), both
    /// imported.
    pub fn net_with_vm(&mut self, second_octet: u8) -> (Net, VmPort) {
        let net = self.net(second_octet);
        self.import_ok(&self.net_json(&net));
        let port = self.vm_port(&net, 10);
        self.import_ok(&Cloud::ports_json(&[&port]));
        (net, port)
    }

    /// Neutron JSON for a network with its subnet and DHCP port.
    pub fn net_json(&self, net: &Net) -> Value {
        json!({
            "networks": [{"id": net.id, "name": format!("test-{}", net.id), "mtu": 1450}],
            "subnets": [{
                "id": net.subnet_id, "network_id": net.id, "ip_version": 4, "cidr": net.cidr,
                "gateway_ip": net.gateway.to_string(), "enable_dhcp": true,
                "dns_nameservers": ["10.99.0.53"],
                "host_routes": [{"destination": "192.168.77.0/24", "nexthop": net.gateway.to_string()}],
                "allocation_pools": []
            }],
            "ports": [{
                "id": net.dhcp_port_id, "network_id": net.id, "mac_address": mac_str(&net.dhcp_mac),
                "device_owner": "network:dhcp", "admin_state_up": true,
                "fixed_ips": [{"subnet_id": net.subnet_id, "ip_address": net.server_ip.to_string()}]
            }]
        })
    }

    /// Neutron JSON for VM ports.
    pub fn ports_json(ports: &[&VmPort]) -> Value {
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| {
                json!({
                    "id": p.id, "network_id": p.network_id, "mac_address": mac_str(&p.mac),
                    "device_owner": "compute:nova", "admin_state_up": true,
                    "fixed_ips": [{"subnet_id": p.subnet_id, "ip_address": p.ip.to_string()}]
                })
            })
            .collect();
        json!({ "ports": ports })
    }

    /// Runs `xdhcp ARGS…` against this cloud's database and bpffs.
    pub fn xdhcp(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(xdhcp_bin());
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .args(args);
        cmd.output().expect("running xdhcp")
    }

    /// `xdhcp import` of a JSON document; returns the output.
    pub fn import(&self, doc: &Value) -> Output {
        let file = PathBuf::from(format!(
            "/tmp/xdhcp-import-{}-{}.json",
            self.tag,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = self.xdhcp(&["import", file.to_str().unwrap()]);
        let _ = std::fs::remove_file(&file);
        out
    }

    /// `xdhcp import` that must succeed.
    pub fn import_ok(&self, doc: &Value) {
        let out = self.import(doc);
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `xdhcp run --plumb --bridge <test bridge>` (plus `extra`).
    pub fn start(&mut self, plumb: bool) {
        self.start_with(plumb, None);
    }

    /// Starts the daemon with agent options (`--config`, TOML text) when given.
    pub fn start_with(&mut self, plumb: bool, config_toml: Option<&str>) {
        self.start_args(plumb, config_toml, &[]);
    }

    /// [`Cloud::start_with`] with more `xdhcp run` arguments.
    pub fn start_args(&mut self, plumb: bool, config_toml: Option<&str>, extra: &[&str]) {
        assert!(self.daemon.is_none(), "daemon already running");
        let config = config_toml.map(|text| {
            let path = PathBuf::from(format!("/tmp/xdhcp-test-{}.toml", self.tag));
            std::fs::write(&path, text).expect("writing the agent config");
            path
        });
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(xdhcp_bin());
        cmd.arg("--db")
            .arg(&self.db)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("run");
        if let Some(path) = &config {
            cmd.arg("--config").arg(path);
        }
        if plumb {
            cmd.args(["--plumb", "--bridge", &self.bridge]);
        }
        cmd.args(extra);
        cmd.stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        self.daemon = Some(cmd.spawn().expect("starting xdhcp run"));
    }

    /// Stops the daemon with SIGTERM (or SIGKILL with `kill9`) and waits for it.
    pub fn stop(&mut self, kill9: bool) {
        if let Some(mut child) = self.daemon.take() {
            let sig = if kill9 { libc::SIGKILL } else { libc::SIGTERM };
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, sig) };
            let _ = child.wait();
        }
    }

    /// Runs `xdhcp --db DB --bpffs <this cloud's> run EXTRA…` for at most
    /// `timeout`: its output if it exited by then, `None` (and killed) if not.
    pub fn run_briefly(&self, db: &Path, extra: &[&str], timeout: Duration) -> Option<Output> {
        let mut child = Command::new(xdhcp_bin())
            .arg("--db")
            .arg(db)
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("run")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting xdhcp run");
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if child.try_wait().expect("waiting for xdhcp").is_some() {
                return Some(child.wait_with_output().expect("xdhcp output"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether the daemon started by [`Cloud::start`] is still running.
    pub fn daemon_alive(&mut self) -> bool {
        self.daemon
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Whether the daemon exits within `timeout`. `xdhcp down` returns once
    /// the daemon has let go of its lock, which it does a moment before its
    /// process ends.
    pub fn daemon_exits_within(&mut self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while self.daemon_alive() {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Waits until the daemon's log contains `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> Result<()> {
        self.wait_log_times(text, 1, timeout)
    }

    /// Waits until the log (of every daemon this cloud started) contains `text` `times` times.
    pub fn wait_log_times(&self, text: &str, times: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(text).count() >= times {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{text:?} not {times} time(s) in the daemon log after {timeout:?}:\n{}",
            self.log()
        )
    }

    /// The daemon's process id, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }

    /// The daemon's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `net` has a pinned attachment.
    pub fn wait_attached(&self, net: &Net, timeout: Duration) -> Result<()> {
        let pin = self.bpffs.join("links").join(&net.id);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pin.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "network {} not attached after {timeout:?}; daemon log:\n{}",
            net.id,
            self.log()
        )
    }

    /// A VM namespace with `eth0` (MAC of `port`) on the test bridge, and a
    /// raw socket on it.
    pub fn vm(&mut self, port: &VmPort) -> Result<(usize, RawSocket)> {
        let ns = TempNs::new(&format!("xvm{}", self.tag))?;
        let i = self.vms.len();
        let host = format!("xv{}{i}", self.tag);
        let inner = format!("xi{}{i}", self.tag);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
        self.host_veths.push(host.clone());
        ip(&["link", "set", &inner, "netns", &ns.name])?;
        ns.ip(&["link", "set", &inner, "name", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "address", &mac_str(&port.mac)])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ip(&["link", "set", &host, "master", &self.bridge])?;
        ip(&["link", "set", &host, "up"])?;
        let sock = {
            let _inside = ns.enter()?;
            RawSocket::bind("eth0")?
        };
        self.vms.push(ns);
        Ok((i, sock))
    }

    /// The namespace of VM `i`.
    pub fn vm_ns(&self, i: usize) -> &TempNs {
        &self.vms[i]
    }

    /// `xdhcp stats --json`.
    pub fn stats(&self) -> Value {
        let out = self.xdhcp(&["stats", "--json"]);
        assert!(
            out.status.success(),
            "xdhcp stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }
}

impl Default for Cloud {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.stop(false);
        if std::panic::catch_unwind(xdhcp_bin).is_ok() {
            let _ = self.xdhcp(&["down"]);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for net in &self.nets {
            let _ = rt.block_on(xdhcp::netns::plumb::unplumb(
                &net.id,
                &net.dhcp_port_id,
                false,
            ));
        }
        for host in &self.host_veths {
            let _ = Command::new("ip").args(["link", "del", host]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        self.vms.clear();
        let _ = std::fs::remove_file(format!("/tmp/xdhcp-test-{}.toml", self.tag));
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.db.display()));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A throwaway namespace (`PREFIX-…`) whose `eth0` is up and whose veth peer
/// `host` is up on `bridge`; the pair goes with the namespace.
pub fn namespace_on_bridge(prefix: &str, bridge: &str, host: &str) -> Result<TempNs> {
    let ns = TempNs::new(prefix)?;
    ip(&[
        "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ])?;
    ip(&["link", "set", host, "master", bridge])?;
    ip(&["link", "set", host, "up"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(ns)
}

/// Sends a DISCOVER (or `frame`) from a VM socket and waits for the reply with its xid.
pub fn exchange(
    sock: &RawSocket,
    frame: &crate::craft::RequestFrame,
    timeout: Duration,
) -> Option<Vec<u8>> {
    sock.send(&frame.bytes()).ok()?;
    sock.recv_matching(timeout, |f| crate::is_dhcp_reply(f, frame.xid))
}

/// Retries DISCOVERs from `mac` (xid `xid`, `xid + 1`, …, 300 ms each) until
/// one is answered or `deadline` passes: the address offered. The daemon
/// applies database changes asynchronously.
pub fn offered(sock: &RawSocket, mac: [u8; 6], xid: u32, deadline: Duration) -> Option<Ipv4Addr> {
    let end = Instant::now() + deadline;
    let mut i = 0;
    while Instant::now() < end {
        let mut d = crate::craft::RequestFrame::discover(mac);
        d.xid = (xid + i).to_be_bytes();
        if let Some(f) = exchange(sock, &d, Duration::from_millis(300)) {
            return Some(crate::yiaddr(&f));
        }
        i += 1;
    }
    None
}

/// The DHCP message type (option 53) of a reply frame.
pub fn msg_type(frame: &[u8]) -> Option<u8> {
    let (_, value) = crate::reply_tlvs(frame)
        .into_iter()
        .find(|(c, _)| *c == 53)?;
    value.first().copied()
}
