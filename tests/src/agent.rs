//! `xdhcp agent` processes and VMs for the tests against a real
//! neutron-server ([`crate::neutron::Neutron`]).
//!
//! Tests of one binary share one neutron-server and one integration bridge
//! (a single L2 segment), and run in parallel. So that a test's networks are
//! scheduled only to its own agents, every test gives its agents an
//! availability zone of its own and its networks that zone as
//! `availability_zone_hints` (neutron-server's DHCP scheduler and its
//! auto-scheduling both filter agents by the hints), and uses a subnet no
//! other test uses.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde_json::{json, Value};
use xdhcp::netns::{ip, TempNs};

use crate::{cloud::xdhcp_bin, neutron::Neutron};

/// How long dhclient may take for an answer the test expects.
pub const ANSWERED: Duration = Duration::from_secs(20);

/// The seed's dnsmasq_config_file: the MTU for GRE networks.
pub const SEED_DNSMASQ_CONF: &str = "# as the seed has it, for GRE\ndhcp-option-force=26,1400\n";

/// One `xdhcp agent` process with its config files, bpffs and database.
pub struct Agent {
    pub n: &'static Neutron,
    pub host: String,
    pub az: String,
    /// `enable_isolated_metadata` (the seed's dhcp_agent.ini has it on).
    pub isolated_metadata: bool,
    /// `ovs_use_veth` (the seed's: True; False plugs an OVS internal port).
    pub use_veth: bool,
    /// `ovs_integration_bridge`: the harness's bridge unless set.
    pub bridge: String,
    /// `[xdhcp] metrics_address` is 127.0.0.1 on this port.
    pub metrics_port: u16,
    /// The `dnsmasq_config_file`'s text (the seed's: MTU 1400 for GRE).
    pub dnsmasq_conf: String,
    /// Networks it served: their qdhcp namespaces and OVS ports are removed on drop
    /// (a stopped agent leaves them, as neutron-dhcp-agent does, to serve at once on restart).
    pub networks: Vec<String>,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// The files are an operator's (e.g. neutron-dhcp-agent's): never written.
    given_files: bool,
    child: Option<Child>,
}

impl Agent {
    /// An agent for `host` in availability zone `az`, configured as the seed
    /// write-up configures neutron-dhcp-agent (openvswitch, ovs_use_veth,
    /// isolated metadata, dnsmasq_config_file with MTU 1400). Its L2 agent
    /// (the stand-in) is started too. Not started: see [`Agent::start`].
    pub fn new(n: &'static Neutron, host: &str, az: &str) -> Self {
        n.ensure_l2_agent(host);
        let dir = PathBuf::from(format!("/tmp/xdhcp-agent-{host}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Agent {
            n,
            host: host.to_string(),
            az: az.to_string(),
            isolated_metadata: true,
            use_veth: true,
            bridge: n.bridge.clone(),
            metrics_port: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap(),
            dnsmasq_conf: SEED_DNSMASQ_CONF.to_string(),
            networks: Vec::new(),
            files: vec![dir.join("neutron.conf"), dir.join("dhcp_agent.ini")],
            given_files: false,
            dir,
            child: None,
        }
    }

    /// An agent run on `files` as they are (neutron-dhcp-agent's, say), for
    /// `host` as those files name it; its log goes to its own directory.
    pub fn with_files(n: &'static Neutron, host: &str, files: Vec<PathBuf>) -> Self {
        let mut agent = Self::new(n, host, "");
        agent.files = files;
        agent.given_files = true;
        agent
    }

    fn bpffs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/xdhcp-{}", self.host))
    }

    fn write_config(&self) {
        let dnsmasq = self.dir.join("dnsmasq-neutron.conf");
        std::fs::write(&dnsmasq, &self.dnsmasq_conf).unwrap();
        std::fs::write(
            &self.files[0],
            format!(
                "[DEFAULT]\nhost = {}\ntransport_url = {}\nstate_path = {}\n\n\
                 [agent]\nreport_interval = 2\navailability_zone = {}\n\n[ovs]\novsdb_connection = {}\n",
                self.host,
                self.n.transport_url,
                self.dir.display(),
                self.az,
                self.n.ovsdb_connection
            ),
        )
        .unwrap();
        std::fs::write(
            &self.files[1],
            format!(
                "[DEFAULT]\ninterface_driver = openvswitch\ndhcp_driver = neutron.agent.linux.dhcp.Dnsmasq\n\
                 enable_isolated_metadata = {}\ndnsmasq_config_file = {}\novs_use_veth = {}\n\
                 ovs_integration_bridge = {}\nresync_interval = 2\n\n[xdhcp]\nbpffs = {}\n\
                 metrics_address = 127.0.0.1:{}\n",
                if self.isolated_metadata { "True" } else { "False" },
                dnsmasq.display(),
                if self.use_veth { "True" } else { "False" },
                self.bridge,
                self.bpffs().display(),
                self.metrics_port
            ),
        )
        .unwrap();
    }

    pub fn args(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|f| ["--config-file".to_string(), f.display().to_string()])
            .collect()
    }

    /// Starts `xdhcp agent` (its log appended to `agent.log`) and waits until
    /// neutron-server lists it alive; the agent object of GET /v2.0/agents.
    pub fn start(&mut self) -> Value {
        self.spawn();
        self.n
            .wait_agent_alive(&self.host, "DHCP agent", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", self.log()))
    }

    /// The agent's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts `xdhcp agent` without waiting for anything.
    pub fn spawn(&mut self) {
        if !self.given_files {
            self.write_config();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = Command::new(xdhcp_bin())
            .args(self.args())
            .arg("agent")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting xdhcp agent");
        self.child = Some(child);
    }

    /// Stops the agent: SIGTERM, or SIGKILL (a crash: nothing cleaned up).
    pub fn stop(&mut self, kill9: bool) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(
                    c.id() as i32,
                    if kill9 { libc::SIGKILL } else { libc::SIGTERM },
                )
            };
            let _ = c.wait();
        }
    }

    /// `xdhcp down` on the agent's files: the pinned fast path removed too,
    /// as when the node is gone.
    pub fn down(&mut self) {
        self.stop(false);
        self.xdhcp(&["down"]);
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// `xdhcp --config-file … CMD`: its JSON output.
    pub fn xdhcp(&self, cmd: &[&str]) -> Value {
        let out = Command::new(xdhcp_bin())
            .args(self.args())
            .args(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xdhcp {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// The IP the fast path's LEASES map holds for `mac` (`xdhcp ports
    /// --json`), if any.
    /// None too while nothing is pinned yet (the daemon starting).
    pub fn fast_path_ip(&self, mac: &str) -> Option<String> {
        let out = Command::new(xdhcp_bin())
            .args(self.args())
            .args(["ports", "--json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && stderr.contains("no fast path pinned") {
            return None;
        }
        assert!(out.status.success(), "xdhcp ports: {stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                p["mac"]
                    .as_str()
                    .is_some_and(|m| m.eq_ignore_ascii_case(mac))
            })
            .and_then(|p| p["ip"].as_str().map(String::from))
    }

    /// GET /metrics of the agent: the exposition text ("" when unreachable).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return String::new();
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out
    }

    /// A metric's value in one scrape (`name` with its labels, as exposed).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// `xdhcp status --json`: whether it exited 0, and the report.
    pub fn status(&self) -> (bool, Value) {
        let out = Command::new(xdhcp_bin())
            .args(self.args())
            .args(["status", "--json"])
            .output()
            .unwrap();
        (
            out.status.success(),
            serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        )
    }

    /// The fast path's ACK count (`xdhcp stats --json`); 0 while there is
    /// none to read yet (an agent starting creates its database).
    pub fn fast_acks(&self) -> u64 {
        let out = Command::new(xdhcp_bin())
            .args(self.args())
            .args(["stats", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["fast_acks"].as_u64())
            .unwrap_or(0)
    }

    /// Creates a network in this agent's availability zone, with an IPv4
    /// subnet `cidr` (`subnet` merged into the subnet's body): its id. Its
    /// qdhcp namespace and OVS ports are removed when the agent is dropped.
    pub fn create_network(&mut self, name: &str, cidr: &str, subnet: Value) -> String {
        let net = self
            .n
            .post(
                "/v2.0/networks",
                &json!({"network": {"name": name, "availability_zone_hints": [self.az]}}),
            )
            .unwrap()["network"]
            .clone();
        let id = net["id"].as_str().unwrap().to_string();
        self.networks.push(id.clone());
        self.n.create_subnet(&id, cidr, subnet).unwrap();
        id
    }

    /// [`Agent::create_network`], then waits until neutron-server has
    /// scheduled the network to a DHCP agent (this one: the only one in its
    /// zone).
    pub fn create_scheduled_network(&mut self, name: &str, cidr: &str, subnet: Value) -> String {
        let id = self.create_network(name, cidr, subnet);
        self.n
            .wait_dhcp_agents(&id, 1, Duration::from_secs(30))
            .unwrap();
        id
    }

    /// Plugs a VM on `port` as Nova does, waits (up to `active_within`) until
    /// neutron-server reports the port ACTIVE, and checks that the VM is
    /// answered with the port's address `ip`: the VM.
    pub fn plug_answered(&self, port: &Value, ip: &str, active_within: Duration) -> Vm {
        let vm = Vm::plug(self.n, port);
        self.n
            .wait_port_status(port["id"].as_str().unwrap(), "ACTIVE", active_within)
            .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", self.log()));
        assert!(vm.dhclient(ANSWERED).has(ip, 24), "{}", self.log());
        vm
    }

    /// The agent's id in neutron-server.
    pub fn id(&self) -> String {
        self.n
            .agent(&self.host, "DHCP agent")
            .unwrap()
            .expect("the agent is registered")["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The IP of this agent's DHCP port on `network_id`, once it has one.
    pub fn dhcp_port_ip(&self, network_id: &str) -> Option<String> {
        self.dhcp_port(network_id)?["fixed_ips"][0]["ip_address"]
            .as_str()
            .map(String::from)
    }

    /// This agent's DHCP port on `network_id`, once it has one.
    pub fn dhcp_port(&self, network_id: &str) -> Option<Value> {
        self.n.dhcp_port_of(&self.host, network_id)
    }
}

impl Agent {
    /// The node as a reboot leaves it: the agent stopped, the pinned fast
    /// path gone (`xdhcp down`), no qdhcp namespaces or taps for
    /// [`Agent::networks`]; its database and files kept.
    pub fn wipe_node(&mut self) {
        self.stop(false);
        let _ = Command::new(xdhcp_bin())
            .args(self.args())
            .arg("down")
            .output();
        let ovs = xdhcp::netns::ovs::OvsBridge {
            bridge: self.bridge.clone(),
            db: self.n.ovsdb_connection.clone(),
            use_veth: self.use_veth,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Every DHCP port of this host at once (a GET per network takes
        // minutes with a thousand networks).
        let ports = self
            .n
            .get(&format!(
                "/v2.0/ports?device_owner=network:dhcp&binding:host_id={}&fields=id&fields=network_id&fields=device_id",
                self.host
            ))
            .unwrap_or_default();
        for net in &self.networks {
            let device_id = xdhcp::agent::dhcp_device_id(&self.host, net);
            for p in ports["ports"].as_array().into_iter().flatten() {
                if p["device_id"] != json!(device_id) {
                    continue;
                }
                if let Some(id) = p["id"].as_str() {
                    if let Err(e) =
                        rt.block_on(xdhcp::netns::plumb::unplug(net, id, Some(&ovs), true))
                    {
                        eprintln!("unplugging {id}: {e:#}");
                    }
                }
            }
            // A DHCP port released meanwhile (admin-down, removed from the
            // agent) was unplugged by the agent itself; deleting the
            // namespace takes whatever veth is left with it.
            let _ = Command::new("ip")
                .args(["netns", "del", &xdhcp::netns::names::namespace_name(net)])
                .output();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.wipe_node();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What one dhclient run got.
pub struct Dhcp {
    /// dhclient exited 0 (it got a lease).
    pub ok: bool,
    /// dhclient's log and `ip addr show eth0` afterwards.
    pub text: String,
    /// The lease file dhclient wrote (every option it received).
    pub lease: String,
}

impl Dhcp {
    /// Whether the VM holds `ip`/`prefix` on eth0.
    pub fn has(&self, ip: &str, prefix: u8) -> bool {
        self.ok && self.text.contains(&format!("inet {ip}/{prefix} "))
    }

    /// The lease's `option …` lines, sorted, without those that differ by
    /// server or time (server identifier, lease times are compared too).
    pub fn options(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lease
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("option ") || l.starts_with("fixed-address"))
            .map(String::from)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The value of `option NAME` in the lease.
    pub fn option(&self, name: &str) -> Option<String> {
        let prefix = format!("option {name} ");
        self.lease.lines().map(str::trim).find_map(|l| {
            l.strip_prefix(&prefix)
                .map(|v| v.trim_end_matches(';').to_string())
        })
    }
}

/// A VM: a namespace whose eth0 (the port's MAC) is a veth whose other end is
/// an OVS port on the integration bridge with the port's external_ids, as
/// Nova's os-vif plugs it, so that the L2 agent wires it.
pub struct Vm {
    pub ns: TempNs,
    n: &'static Neutron,
    host_side: String,
}

impl Vm {
    pub fn plug(n: &'static Neutron, port: &Value) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}{}",
            std::process::id() % 10_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns = TempNs::new(&format!("xvm-{tag}")).unwrap();
        let host_side = format!("qvo{tag}");
        ip(&[
            "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ])
        .unwrap();
        let mac = port["mac_address"].as_str().unwrap();
        ns.ip(&["link", "set", "eth0", "address", mac]).unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ip(&["link", "set", &host_side, "up"]).unwrap();
        n.plug_device(&host_side, port).unwrap();
        Vm { ns, n, host_side }
    }

    /// Runs dhclient once in the VM (a fresh DORA: no lease file, eth0's
    /// addresses flushed first), giving up after `timeout`.
    pub fn dhclient(&self, timeout: Duration) -> Dhcp {
        let lease = format!("/tmp/{}.leases", self.ns.name);
        let pid = format!("/tmp/{}.pid", self.ns.name);
        let _ = std::fs::remove_file(&lease);
        let _ = self.ns.ip(&["addr", "flush", "dev", "eth0"]);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "timeout"])
            .arg(timeout.as_secs().max(1).to_string())
            .args(["dhclient", "-1", "-v", "-lf", &lease, "-pf", &pid, "eth0"])
            .output()
            .unwrap();
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                "dhclient",
                "-x",
                "-pf",
                &pid,
            ])
            .output();
        let _ = std::fs::remove_file(&pid);
        let lease_text = std::fs::read_to_string(&lease).unwrap_or_default();
        let _ = std::fs::remove_file(&lease);
        let shown = Command::new("ip")
            .args(["-n", &self.ns.name, "addr", "show", "eth0"])
            .output()
            .unwrap();
        Dhcp {
            ok: out.status.success(),
            text: String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&shown.stdout),
            lease: lease_text,
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.n.unplug(&self.host_side);
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_side])
            .output();
    }
}

/// A short name unique to this test binary's run and to `tag`, for hosts and
/// availability zones (`<tag><pid % 100000>`).
pub fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// A VM's port as Nova creates it: device_owner compute:nova, bound to
/// `host`, `device` as its device_id, `extra` merged into the body.
pub struct VmPort {
    pub port: Value,
    pub id: String,
    pub ip: String,
    pub mac: String,
}

pub fn vm_port(n: &Neutron, network_id: &str, host: &str, device: &str, extra: Value) -> VmPort {
    let mut body =
        json!({"binding:host_id": host, "device_owner": "compute:nova", "device_id": device});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let port = n.create_port(network_id, body).unwrap();
    let text = |v: &Value| v.as_str().unwrap().to_string();
    VmPort {
        id: text(&port["id"]),
        ip: text(&port["fixed_ips"][0]["ip_address"]),
        mac: text(&port["mac_address"]),
        port,
    }
}
