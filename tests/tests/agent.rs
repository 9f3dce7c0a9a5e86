//! `xdhcp agent` against a real neutron-server (MariaDB, RabbitMQ, userspace
//! OVS and an L2 agent, started once for this test binary): scheduled over
//! RPC, plugged into the integration bridge, answering a real dhclient from
//! the fast path, and turning ports ACTIVE with dhcp_ready_on_ports.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use xdhcp::netns::{ip, TempNs};
use xdhcp_tests::{cloud::xdhcp_bin, neutron::Neutron};

/// One `xdhcp agent` process with its config files, bpffs and database.
struct Agent {
    n: &'static Neutron,
    /// Networks it served: their qdhcp namespaces and OVS ports are removed on drop
    /// (a stopped agent leaves them, as neutron-dhcp-agent does, to serve at once on restart).
    networks: Vec<String>,
    dir: PathBuf,
    files: Vec<PathBuf>,
    child: Option<Child>,
}

impl Agent {
    /// Writes the config the seed write-up uses (openvswitch, ovs_use_veth,
    /// isolated metadata, dnsmasq_config_file with MTU 1400) for `host`.
    fn new(n: &'static Neutron, host: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/xdhcp-agent-{host}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/xdhcp-{host}"));
        let dnsmasq = dir.join("dnsmasq-neutron.conf");
        std::fs::write(
            &dnsmasq,
            "# as the seed has it, for GRE\ndhcp-option-force=26,1400\n",
        )
        .unwrap();
        let neutron_conf = dir.join("neutron.conf");
        std::fs::write(
            &neutron_conf,
            format!(
                "[DEFAULT]\nhost = {host}\ntransport_url = {}\nstate_path = {}\n\n[agent]\nreport_interval = 2\n\n[ovs]\novsdb_connection = {}\n",
                n.transport_url,
                dir.display(),
                n.ovsdb_connection
            ),
        )
        .unwrap();
        let dhcp_agent_ini = dir.join("dhcp_agent.ini");
        std::fs::write(
            &dhcp_agent_ini,
            format!(
                "[DEFAULT]\ninterface_driver = openvswitch\ndhcp_driver = neutron.agent.linux.dhcp.Dnsmasq\n\
                 enable_isolated_metadata = True\ndnsmasq_config_file = {}\novs_use_veth = True\n\
                 ovs_integration_bridge = {}\n\n[xdhcp]\nbpffs = {}\n",
                dnsmasq.display(),
                n.bridge,
                bpffs.display()
            ),
        )
        .unwrap();
        Agent {
            n,
            networks: Vec::new(),
            dir,
            files: vec![neutron_conf, dhcp_agent_ini],
            child: None,
        }
    }

    fn args(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|f| ["--config-file".to_string(), f.display().to_string()])
            .collect()
    }

    fn start(&mut self) {
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

    fn stop(&mut self, kill9: bool) {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn xdhcp(&self, cmd: &[&str]) -> Value {
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
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop(false);
        let _ = Command::new(xdhcp_bin())
            .args(self.args())
            .arg("down")
            .output();
        let ovs = xdhcp::plumb::OvsBridge {
            bridge: self.n.bridge.clone(),
            db: self.n.ovsdb_connection.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for net in &self.networks {
            let ports = self
                .n
                .get(&format!(
                    "/v2.0/ports?network_id={net}&device_owner=network:dhcp"
                ))
                .unwrap_or_default();
            for p in ports["ports"].as_array().into_iter().flatten() {
                if let Some(id) = p["id"].as_str() {
                    if let Err(e) = rt.block_on(xdhcp::plumb::unplug(net, id, Some(&ovs), true)) {
                        eprintln!("unplugging {id}: {e:#}");
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &xdhcp::plumb::namespace_name(net)])
                .output();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A VM: a namespace whose eth0 (the port's MAC) is a veth whose other end is
/// an OVS port on the integration bridge with the port's external_ids, as
/// Nova's os-vif plugs it, so that the L2 agent wires it.
struct Vm {
    ns: TempNs,
    n: &'static Neutron,
    host_side: String,
}

impl Vm {
    fn plug(n: &'static Neutron, port: &Value, tag: &str) -> Self {
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

    /// Runs dhclient once in the VM; returns its exit status and what it applied.
    fn dhclient(&self) -> (bool, String) {
        let lease = format!("/tmp/{}.leases", self.ns.name);
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                "timeout",
                "20",
                "dhclient",
                "-1",
                "-v",
                "-lf",
                &lease,
                "-pf",
            ])
            .arg(format!("/tmp/{}.pid", self.ns.name))
            .arg("eth0")
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&lease);
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "dhclient", "-x", "-pf"])
            .arg(format!("/tmp/{}.pid", self.ns.name))
            .output();
        let _ = std::fs::remove_file(format!("/tmp/{}.pid", self.ns.name));
        let shown = Command::new("ip")
            .args(["-n", &self.ns.name, "addr", "show", "eth0"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&shown.stdout),
        )
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

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {timeout:?}");
}

#[test]
fn scheduled_by_neutron_server_answers_from_xdp_and_ports_go_active() {
    let n = Neutron::shared();
    let host = format!("xa{}", std::process::id() % 100_000);
    n.ensure_l2_agent(&host);
    let mut agent = Agent::new(n, &host);
    agent.start();
    n.wait_agent_alive(&host, "DHCP agent", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.log()));

    let net = n.create_network(&format!("xnet-{host}")).unwrap();
    let net_id = net["id"].as_str().unwrap().to_string();
    agent.networks.push(net_id.clone());
    n.create_subnet(
        &net_id,
        "10.123.0.0/24",
        json!({"dns_nameservers": ["10.99.0.53"], "host_routes": [{"destination": "192.168.77.0/24", "nexthop": "10.123.0.1"}]}),
    )
    .unwrap();
    wait_until(
        "the network is hosted by xdhcp",
        Duration::from_secs(30),
        || {
            n.dhcp_agents_of(&net_id)
                .unwrap()
                .to_string()
                .contains(&host)
        },
    );
    let t_create = Instant::now();
    let port = n
        .create_port(
            &net_id,
            json!({"binding:host_id": host, "device_owner": "compute:nova", "device_id": "vm-1",
               "extra_dhcp_opts": [{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}]}),
        )
        .unwrap();
    let port_id = port["id"].as_str().unwrap().to_string();
    let vm = Vm::plug(n, &port, &format!("{}", std::process::id() % 10_000));
    let active = n
        .wait_port_status(&port_id, "ACTIVE", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", agent.log()));
    eprintln!(
        "port create → ACTIVE: {:?} (from create: {:?})",
        active,
        t_create.elapsed()
    );
    assert!(
        agent.log().contains("dhcp_ready_on_ports"),
        "ACTIVE because of dhcp_ready_on_ports:\n{}",
        agent.log()
    );
    let ip_addr = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, applied) = vm.dhclient();
    assert!(
        ok && applied.contains(&format!("inet {ip_addr}/24")),
        "dhclient: {applied}\nagent log:\n{}",
        agent.log()
    );
    assert!(
        applied.contains("mtu 1400"),
        "dnsmasq_config_file's MTU 1400 applied: {applied}"
    );
    let stats = agent.xdhcp(&["stats", "--json"]);
    assert!(
        stats["fast_acks"].as_u64() >= Some(1),
        "answered by the fast path: {stats}"
    );
    agent.stop(false);
}
