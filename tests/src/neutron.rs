//! A real Neutron control plane for integration tests: neutron-server
//! (Neutron 21 Zed, Debian's packages) with its own MariaDB, RabbitMQ and
//! userspace Open vSwitch, started once per test binary and shared by its
//! tests ([`Neutron::shared`]).
//!
//! Everything lives in `/tmp/xdhcp-neutron-<pid>/` and listens on 127.0.0.1
//! only, on ports picked free at start, so test binaries can run in
//! parallel on one machine without seeing each other:
//!
//! | service        | listens on                     | state under the dir |
//! |----------------|--------------------------------|---------------------|
//! | MariaDB        | 127.0.0.1:free, `mysql/mysql.sock` | `mysql/data`    |
//! | epmd           | 127.0.0.1:free (and ::1)       |                     |
//! | RabbitMQ       | AMQP 127.0.0.1:free, distribution 127.0.0.1:free; node `rabbit-<pid>@localhost`, user guest | `rabbitmq/` |
//! | neutron-server | API 127.0.0.1:free (noauth)    | `neutron/`          |
//! | ovsdb-server   | `tcp:127.0.0.1:free`, `ovs/db.sock` | `ovs/conf.db`  |
//! | ovs-vswitchd   | `ovs/ovs-vswitchd.ctl`         | bridge [`Neutron::bridge`] |
//! | L2 agent       | (stand-in, see [`Neutron::ensure_l2_agent`]) | `l2/` |
//!
//! Each service logs to `<dir>/<service>.log`; errors quote the tail of the
//! relevant log. Set `XDHCP_NEUTRON_KEEP=1` to keep the directory (and so
//! the logs and configuration) after the run, `XDHCP_NEUTRON_DEBUG=1` for
//! `debug = True` in neutron-server.
//!
//! # Open vSwitch: the `dummy` datapath
//!
//! There is no OVS kernel module here, so the datapath is userspace. The
//! usual `datapath_type = netdev` has two machine-wide side effects, both
//! measured on this machine kind: its datapath is a kernel tap device named
//! `ovs-netdev`, so a second ovs-vswitchd on the machine fails every bridge
//! ("ovs-netdev: creating tap device failed: Device or resource busy …
//! failed to create bridge"), and it makes each bridge's internal port a
//! persistent tap that survives ovs-vswitchd. So ovs-vswitchd runs with
//! `--enable-dummy` and the bridge has `datapath_type = dummy`: the same
//! userspace datapath (dpif-netdev) with internal ports that are not kernel
//! devices. Ports of type system (a veth end, e.g. the host side of the DHCP
//! port that `xdhcp agent` plumbs with `ovs_use_veth = True`) are real
//! devices and forward as usual. The bridge is in `fail_mode = standalone`
//! with no controller: a learning switch, every port on one L2 segment (no
//! per-network VLAN isolation — give networks under test distinct subnets).
//!
//! # Cleanup
//!
//! Every process is spawned by one long-lived thread (so that
//! `PR_SET_PDEATHSIG`, which fires when the *thread* that forked dies, only
//! fires when the test binary dies) in its own process group, with
//! `PR_SET_PDEATHSIG = SIGKILL`, and without daemonizing (no `--detach`,
//! which would fork away from both). An `atexit` handler, run when the test
//! harness exits (also after failed tests), sends SIGTERM to the services
//! that have children (neutron-server, RabbitMQ, the L2 agent) so that they
//! reap them, SIGKILLs every process group after at most 5 s (the state is
//! throwaway) and removes the directory; ~1.5 s in all. If the binary
//! itself is killed (SIGKILL, Ctrl-C: no `atexit`), PDEATHSIG takes the
//! direct children and a watchdog (`sh` in its own process group, fed the
//! process group ids over a pipe, acting on EOF) SIGKILLs the groups, which
//! reaches grandchildren too (an orphaned neutron-server RPC worker was seen
//! to linger for seconds otherwise); the next run removes directories of
//! dead pids.

use std::{
    collections::HashSet,
    fmt::Write as _,
    fs,
    io::{self, Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::{net::UnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Mutex, MutexGuard, OnceLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde_json::{json, Value};

/// Anything that imports neutron runs with Debian's Python, not whatever
/// `python3` comes first in PATH (a pyenv one may).
pub const PYTHON: &str = "/usr/bin/python3";
pub const NEUTRON_SERVER: &str = "/usr/bin/neutron-server";
pub const NEUTRON_DB_MANAGE: &str = "/usr/bin/neutron-db-manage";
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The L2 agent stand-in (see [`Neutron::ensure_l2_agent`]).
const L2_AGENT_PY: &str = include_str!("../neutron/l2_agent.py");

/// `agent_type` of neutron-openvswitch-agent (and of the stand-in).
pub const OVS_AGENT_TYPE: &str = "Open vSwitch agent";
/// `agent_type` of neutron-dhcp-agent (and of `xdhcp agent`).
pub const DHCP_AGENT_TYPE: &str = "DHCP agent";
/// neutron-server's `agent_down_time` (its default): an agent is dead this
/// long after its last report_state. A dead agent keeps its networks
/// (`allow_automatic_dhcp_failover = False`, as in HA set-ups where a second
/// agent already serves each network): the agent benchmark binds networks to
/// a stopped agent, then starts it.
pub const AGENT_DOWN_TIME: Duration = Duration::from_secs(75);
/// neutron-server's `dns_domain` (with the `dns` extension driver): a port's
/// `dns_name` then becomes its hostname in `dns_assignment`.
pub const DNS_DOMAIN: &str = "cloud.example.";
/// The stand-in L2 agent's `report_interval`.
pub const L2_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// A running Neutron control plane; see the module documentation.
pub struct Neutron {
    /// `/tmp/xdhcp-neutron-<pid>`: configuration, state, logs.
    pub dir: PathBuf,
    /// `rabbit://guest:guest@127.0.0.1:PORT/`, for agents' `transport_url`.
    pub transport_url: String,
    /// `tcp:127.0.0.1:PORT`, for agents' `[ovs] ovsdb_connection`.
    pub ovsdb_connection: String,
    /// The integration bridge (`ovs_integration_bridge`), `br-int-<pid>`.
    pub bridge: String,
    /// `http://127.0.0.1:PORT`, the API root (noauth: no headers needed).
    pub api_url: String,
    pub api_port: u16,
    pub amqp_port: u16,
    pub mysql_port: u16,
    /// neutron-server's `[database] connection`.
    pub database_url: String,
    /// neutron.conf and ml2_conf.ini, as given to neutron-server.
    pub config_files: Vec<PathBuf>,
    /// How long each service took to start (cold), in start order.
    pub startup: Vec<(&'static str, Duration)>,
    /// Serializes broker and server stops/starts.
    control: Mutex<()>,
    /// Hosts the L2 stand-in reports for.
    l2_hosts: Mutex<HashSet<String>>,
}

static SHARED: OnceLock<Result<Neutron, String>> = OnceLock::new();

impl Neutron {
    /// The control plane of this test binary, started on first use (9–15 s cold;
    /// concurrent callers wait for the same start). Panics when it cannot
    /// start, with the failing service's log tail (and so will every later
    /// call: the start is not retried).
    pub fn shared() -> &'static Neutron {
        let started = SHARED.get_or_init(|| {
            let t = Instant::now();
            match Neutron::start() {
                Ok(n) => {
                    let mut line = String::new();
                    for (what, d) in &n.startup {
                        let _ = write!(line, " {what} {:.1}s,", d.as_secs_f64());
                    }
                    eprintln!(
                        "neutron: up in {:.1}s ({}) at {}, API {}, {}, OVSDB {}, bridge {}",
                        t.elapsed().as_secs_f64(),
                        line.trim().trim_end_matches(','),
                        n.dir.display(),
                        n.api_url,
                        n.transport_url,
                        n.ovsdb_connection,
                        n.bridge
                    );
                    Ok(n)
                }
                Err(e) => Err(format!("{e:#}")),
            }
        });
        match started {
            Ok(n) => n,
            Err(e) => panic!("starting Neutron failed: {e}"),
        }
    }

    fn start() -> Result<Neutron> {
        register_atexit();
        remove_stale_dirs();
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/xdhcp-neutron-{pid}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        lock(&DIRS).push(dir.clone());

        let [api_port, amqp_port, dist_port, epmd_port, mysql_port, ovsdb_port] = free_ports()?;
        let bridge = format!("br-int-{pid}");
        let mysql_sock = dir.join("mysql/mysql.sock");
        let database_url = format!(
            "mysql+pymysql://neutron:neutron@localhost/neutron?unix_socket={}&charset=utf8",
            mysql_sock.display()
        );
        let transport_url = format!("rabbit://guest:guest@127.0.0.1:{amqp_port}/");
        let config_files = write_neutron_config(&dir, api_port, &transport_url, &database_url)?;
        let rabbit = Rabbit::new(&dir, pid, amqp_port, dist_port, epmd_port)?;

        let started = Instant::now();
        let (db, mq, ovs) = thread::scope(|s| {
            let db = s.spawn(|| -> Result<Vec<(&'static str, Duration)>> {
                let t = Instant::now();
                start_mariadb(&dir, mysql_port, &mysql_sock)?;
                let mariadb = t.elapsed();
                let t = Instant::now();
                let mut cmd = python(NEUTRON_DB_MANAGE);
                for f in &config_files {
                    cmd.arg("--config-file").arg(f);
                }
                cmd.args(["upgrade", "heads"]);
                run_logged(
                    "neutron-db-manage",
                    cmd,
                    &dir.join("neutron-db-manage.log"),
                    Duration::from_secs(300),
                )?;
                Ok(vec![
                    ("mariadb", mariadb),
                    ("neutron-db-manage", t.elapsed()),
                ])
            });
            let mq = s.spawn(|| -> Result<Duration> {
                let t = Instant::now();
                rabbit.start_epmd()?;
                rabbit.start()?;
                Ok(t.elapsed())
            });
            let ovs = s.spawn(|| -> Result<Duration> {
                let t = Instant::now();
                start_ovs(&dir, ovsdb_port, &bridge)?;
                Ok(t.elapsed())
            });
            (join(db), join(mq), join(ovs))
        });
        let mut startup = db.context("MariaDB")?;
        startup.push(("rabbitmq", mq.context("RabbitMQ")?));
        startup.push(("ovs", ovs.context("Open vSwitch")?));
        let parallel = started.elapsed();

        let neutron = Neutron {
            transport_url,
            ovsdb_connection: format!("tcp:127.0.0.1:{ovsdb_port}"),
            bridge,
            api_url: format!("http://127.0.0.1:{api_port}"),
            api_port,
            amqp_port,
            mysql_port,
            database_url,
            config_files,
            startup,
            control: Mutex::new(()),
            l2_hosts: Mutex::new(HashSet::new()),
            dir,
        };
        let _ = RABBIT.set(rabbit);
        let t = Instant::now();
        neutron.start_server().context("neutron-server")?;
        let mut neutron = neutron;
        neutron.startup.push(("neutron-server", t.elapsed()));
        neutron.startup.push(("total", parallel + t.elapsed()));
        Ok(neutron)
    }

    fn start_server(&self) -> Result<()> {
        let mut cmd = python(NEUTRON_SERVER);
        for f in &self.config_files {
            cmd.arg("--config-file").arg(f);
        }
        let log = self.dir.join("neutron-server.log");
        start_proc("neutron-server", cmd, &log)?;
        wait_for("neutron-server API", Duration::from_secs(120), || {
            proc_check("neutron-server")?;
            Ok(self.request("GET", "/v2.0/networks?limit=1", None).ok())
        })
        .with_context(|| tail(&log, 30))?;
        Ok(())
    }

    /// Stops neutron-server (SIGTERM, then SIGKILL after 20 s) and starts it
    /// again with the same configuration; returns once the API answers.
    /// Panics on failure.
    pub fn restart_neutron_server(&self) {
        let _guard = lock(&self.control);
        proc_stop("neutron-server", libc::SIGTERM, Duration::from_secs(20));
        if let Err(e) = self.start_server() {
            panic!("restarting neutron-server: {e:#}");
        }
    }

    /// Stops the broker (SIGTERM: a clean shutdown, clients get
    /// connection.close; SIGKILL after 30 s). Panics on failure.
    pub fn stop_rabbitmq(&self) {
        let _guard = lock(&self.control);
        proc_stop("rabbitmq", libc::SIGTERM, Duration::from_secs(30));
    }

    /// Starts the broker again after [`Neutron::stop_rabbitmq`]: same node,
    /// port and data directory (durable exchanges and queues survive, as on
    /// a real restart). Returns once AMQP answers; panics on failure. A
    /// no-op when it runs.
    pub fn start_rabbitmq(&self) {
        let _guard = lock(&self.control);
        if proc_running("rabbitmq") {
            return;
        }
        let rabbit = RABBIT.get().expect("RabbitMQ was configured at start");
        if let Err(e) = rabbit.start() {
            panic!("restarting RabbitMQ: {e:#}");
        }
    }

    /// Whether the broker runs (between stop_rabbitmq and start_rabbitmq it
    /// does not).
    pub fn rabbitmq_running(&self) -> bool {
        proc_running("rabbitmq")
    }

    /// Makes `host` have an alive L2 agent ("Open vSwitch agent") on the
    /// integration bridge: started once per host, returns once GET
    /// /v2.0/agents shows it alive. Panics on failure.
    ///
    /// Why a stand-in and not the real neutron-openvswitch-agent (which does
    /// run here with `datapath_type = netdev`, registering in ~8–10 s):
    /// - the real agent only accepts `datapath_type` system or netdev
    ///   ("Valid values are [system, netdev], but found 'dummy'"), and netdev
    ///   allows one ovs-vswitchd per machine and leaves taps behind (see the
    ///   module documentation);
    /// - two real agents (two hosts for DHCP HA) cannot share one
    ///   integration bridge: each one sets itself as the bridge's only
    ///   OpenFlow controller and owns its flows (a real deployment has one
    ///   br-int per host); one bridge per host would also mean one per host
    ///   for the DHCP agents under test;
    /// - each real agent takes ~8–10 s to register and needs its own
    ///   OpenFlow listener port; the stand-in serves every host from one
    ///   process, alive in ~1.5–2.5 s.
    ///
    /// The stand-in (tests/neutron/l2_agent.py, run with Debian's python and
    /// Neutron's own RPC client code, so the wire is the real one) sends
    /// report_state every [`L2_REPORT_INTERVAL`] per host with the
    /// configurations the ML2 openvswitch mechanism driver binds flat, vlan
    /// (`physnet1`) and vxlan segments with, and does what the real agent
    /// does for an OVS Interface on the bridge with
    /// `external_ids:iface-id=<port id>` whose port is bound to one of its
    /// hosts: get_devices_details_list_and_failed_devices, then
    /// update_device_list devices_up (clearing the port's L2 provisioning
    /// block; down when admin_state_up is false), again on each
    /// `port_update` fanout cast for it, and devices_down when the
    /// Interface goes away. See [`Neutron::plug_port`].
    pub fn ensure_l2_agent(&self, host: &str) {
        if let Err(e) = self.try_ensure_l2_agent(host) {
            panic!("L2 agent for {host}: {e:#}");
        }
    }

    fn try_ensure_l2_agent(&self, host: &str) -> Result<()> {
        let mut hosts = lock(&self.l2_hosts);
        let l2 = self.dir.join("l2");
        let log = self.dir.join("l2-agent.log");
        if !proc_running("l2-agent") {
            fs::create_dir_all(&l2)?;
            let script = l2.join("l2_agent.py");
            fs::write(&script, L2_AGENT_PY)?;
            fs::write(
                l2.join("l2.conf"),
                format!(
                    "[DEFAULT]\ntransport_url = {}\n[AGENT]\nreport_interval = {}\n",
                    self.transport_url,
                    L2_REPORT_INTERVAL.as_secs()
                ),
            )?;
            let mut hosts_file = String::new();
            for h in hosts.iter() {
                let _ = writeln!(hosts_file, "{h}");
            }
            fs::write(l2.join("hosts"), hosts_file)?;
            let mut cmd = Command::new(PYTHON);
            scrub_python_env(&mut cmd);
            cmd.arg(&script)
                .arg(l2.join("l2.conf"))
                .arg(l2.join("hosts"))
                .arg(&self.bridge)
                .arg(&self.ovsdb_connection)
                .arg(&self.api_url);
            start_proc("l2-agent", cmd, &log)?;
        }
        if hosts.insert(host.to_string()) {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(l2.join("hosts"))?;
            writeln!(f, "{host}")?;
        }
        drop(hosts);
        self.wait_agent_alive(host, OVS_AGENT_TYPE, Duration::from_secs(60))
            .with_context(|| tail(&log, 20))?;
        Ok(())
    }

    /// Starts a long-running process as this control plane's services are
    /// started (own process group, PDEATHSIG, the watchdog, stdout and stderr
    /// appended to `log`), under `name` for [`Neutron::stop_service`].
    pub fn start_service(&self, name: &str, mut cmd: Command, log: &Path) -> Result<u32> {
        scrub_python_env(&mut cmd);
        start_proc(name, cmd, log)?;
        let procs = lock(&PROCS);
        let p = procs.iter().rev().find(|p| p.name == name);
        p.map(|p| p.child.id()).context("the service just started")
    }

    /// Signals service `name`'s process group, SIGKILLs it after `grace`.
    pub fn stop_service(&self, name: &str, signal: i32, grace: Duration) {
        proc_stop(name, signal, grace);
    }

    /// Whether service `name` is still running.
    pub fn service_running(&self, name: &str) -> bool {
        proc_running(name)
    }

    // ---- REST ----

    /// GET `path` (`/v2.0/…`, or relative to `/v2.0/`): the parsed JSON body;
    /// fails with the status and body unless 2xx.
    pub fn get(&self, path: &str) -> Result<Value> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.request("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.request("PUT", path, Some(body))
    }

    /// DELETE: `Value::Null` for the usual 204.
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.request("DELETE", path, None)
    }

    /// One HTTP/1.1 request (Connection: close) to the API.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/v2.0/{path}")
        };
        let what = || format!("{method} {path}");
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.api_port))
            .with_context(|| format!("{}: connecting to {}", what(), self.api_url))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_write_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(|b| b.to_string());
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.api_port
        );
        if let Some(b) = &body {
            let _ = write!(
                req,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
        }
        req.push_str("\r\n");
        if let Some(b) = &body {
            req.push_str(b);
        }
        s.write_all(req.as_bytes()).with_context(what)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).with_context(what)?;
        let (status, text) = parse_http(&raw).with_context(what)?;
        if !(200..300).contains(&status) {
            bail!("{}: HTTP {status}: {text}", what());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{}: body {text:?}", what()))
    }

    /// POST /v2.0/networks `{name}`: the network.
    pub fn create_network(&self, name: &str) -> Result<Value> {
        let r = self.post("/v2.0/networks", &json!({"network": {"name": name}}))?;
        Ok(r["network"].clone())
    }

    /// POST /v2.0/subnets: IPv4 or IPv6 after `cidr`, `extra` merged into
    /// the body (e.g. `{"gateway_ip": null}`, `allocation_pools`,
    /// `dns_nameservers`, `enable_dhcp`, `ipv6_address_mode`).
    pub fn create_subnet(&self, network_id: &str, cidr: &str, extra: Value) -> Result<Value> {
        let version = if cidr.contains(':') { 6 } else { 4 };
        let mut subnet = json!({"network_id": network_id, "cidr": cidr, "ip_version": version});
        merge(&mut subnet, extra)?;
        let r = self.post("/v2.0/subnets", &json!({ "subnet": subnet }))?;
        Ok(r["subnet"].clone())
    }

    /// POST /v2.0/ports, `extra` merged into the body (e.g.
    /// `binding:host_id`, `extra_dhcp_opts`, `fixed_ips`, `mac_address`,
    /// `device_owner`): the port.
    pub fn create_port(&self, network_id: &str, extra: Value) -> Result<Value> {
        let mut port = json!({ "network_id": network_id });
        merge(&mut port, extra)?;
        let r = self.post("/v2.0/ports", &json!({ "port": port }))?;
        Ok(r["port"].clone())
    }

    /// PUT /v2.0/ports/ID with `changes` (the attributes): the port.
    pub fn update_port(&self, id: &str, changes: Value) -> Result<Value> {
        let r = self.put(&format!("/v2.0/ports/{id}"), &json!({ "port": changes }))?;
        Ok(r["port"].clone())
    }

    pub fn port(&self, id: &str) -> Result<Value> {
        Ok(self.get(&format!("/v2.0/ports/{id}"))?["port"].clone())
    }

    pub fn delete_port(&self, id: &str) -> Result<()> {
        self.delete(&format!("/v2.0/ports/{id}")).map(drop)
    }

    pub fn network(&self, id: &str) -> Result<Value> {
        Ok(self.get(&format!("/v2.0/networks/{id}"))?["network"].clone())
    }

    /// Deletes the network (with its subnets and ports, DHCP ports included).
    pub fn delete_network(&self, id: &str) -> Result<()> {
        let ports = self.get(&format!(
            "/v2.0/ports?network_id={id}&fields=id&fields=device_owner"
        ))?;
        for p in ports["ports"].as_array().into_iter().flatten() {
            let owner = p["device_owner"].as_str().unwrap_or("");
            if owner != "network:dhcp" {
                if let Some(pid) = p["id"].as_str() {
                    let _ = self.delete_port(pid);
                }
            }
        }
        self.delete(&format!("/v2.0/networks/{id}")).map(drop)
    }

    /// Polls the port (every 50 ms) until its status is `status`; the time
    /// it took. The error says the last status seen.
    pub fn wait_port_status(&self, id: &str, status: &str, timeout: Duration) -> Result<Duration> {
        let t = Instant::now();
        loop {
            let last = match self.port(id) {
                Ok(p) => {
                    if p["status"] == status {
                        return Ok(t.elapsed());
                    }
                    p["status"].as_str().unwrap_or("?").to_string()
                }
                Err(e) => format!("{e:#}"),
            };
            if t.elapsed() > timeout {
                bail!("port {id} not {status} after {timeout:?}: {last}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET /v2.0/agents: the array of agents.
    pub fn agents(&self) -> Result<Value> {
        Ok(self.get("/v2.0/agents")?["agents"].clone())
    }

    /// The agent of `agent_type` on `host`, if registered.
    pub fn agent(&self, host: &str, agent_type: &str) -> Result<Option<Value>> {
        let agents = self.agents()?;
        Ok(agents
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["host"] == host && a["agent_type"] == agent_type)
            .cloned())
    }

    /// Waits (polling every 100 ms) until the `agent_type` agent of `host`
    /// is registered and alive; the agent.
    pub fn wait_agent_alive(
        &self,
        host: &str,
        agent_type: &str,
        timeout: Duration,
    ) -> Result<Value> {
        wait_for(&format!("{agent_type} on {host} alive"), timeout, || {
            Ok(self.agent(host, agent_type)?.filter(|a| a["alive"] == true))
        })
    }

    /// The DHCP port the DHCP agent of `host` has on `network_id`, once it
    /// has one (its device_id is `dhcp<uuid5(host)>-<network>`).
    pub fn dhcp_port_of(&self, host: &str, network_id: &str) -> Option<Value> {
        let device_id = xdhcp::agent::dhcp_device_id(host, network_id);
        let ports = self
            .get(&format!(
                "/v2.0/ports?network_id={network_id}&device_id={device_id}"
            ))
            .ok()?;
        Some(ports["ports"].get(0)?.clone())
    }

    /// Every DHCP port bound to `host` (one GET, however many networks).
    pub fn dhcp_ports_of_host(&self, host: &str) -> Result<Vec<Value>> {
        let r = self.get(&format!(
            "/v2.0/ports?device_owner=network:dhcp&binding:host_id={host}\
             &fields=id&fields=network_id&fields=device_id&fields=mac_address&fields=fixed_ips"
        ))?;
        Ok(r["ports"].as_array().cloned().unwrap_or_default())
    }

    /// The ports the L2 stand-in has reported up so far (its log's
    /// `up [...]` lines).
    pub fn l2_devices_up(&self) -> HashSet<String> {
        let text = fs::read_to_string(self.dir.join("l2-agent.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                l.split_once(": up [")?
                    .1
                    .split_once("] down")
                    .map(|(ids, _)| ids)
            })
            .flat_map(|ids| ids.split(", "))
            .map(|id| id.trim_matches('\'').to_string())
            .filter(|id| !id.is_empty())
            .collect()
    }

    /// GET /v2.0/networks/ID/dhcp-agents: the array of agents hosting it.
    pub fn dhcp_agents_of(&self, network_id: &str) -> Result<Value> {
        Ok(self.get(&format!("/v2.0/networks/{network_id}/dhcp-agents"))?["agents"].clone())
    }

    /// Waits until `count` DHCP agents host the network; their hosts.
    pub fn wait_dhcp_agents(
        &self,
        network_id: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<String>> {
        wait_for(
            &format!("{count} DHCP agents on network {network_id}"),
            timeout,
            || {
                let agents = self.dhcp_agents_of(network_id)?;
                let hosts: Vec<String> = agents
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["host"].as_str().map(str::to_string))
                    .collect();
                Ok((hosts.len() == count).then_some(hosts))
            },
        )
    }

    /// `openstack network agent remove network --dhcp AGENT NET`.
    pub fn remove_network_from_agent(&self, agent_id: &str, network_id: &str) -> Result<()> {
        self.delete(&format!(
            "/v2.0/agents/{agent_id}/dhcp-networks/{network_id}"
        ))
        .map(drop)
    }

    /// `openstack network agent add network --dhcp AGENT NET`.
    pub fn add_network_to_agent(&self, agent_id: &str, network_id: &str) -> Result<()> {
        self.post(
            &format!("/v2.0/agents/{agent_id}/dhcp-networks"),
            &json!({ "network_id": network_id }),
        )
        .map(drop)
    }

    /// PUT /v2.0/agents/ID admin_state_up: the agent.
    pub fn set_agent_admin_state(&self, agent_id: &str, up: bool) -> Result<Value> {
        let r = self.put(
            &format!("/v2.0/agents/{agent_id}"),
            &json!({"agent": {"admin_state_up": up}}),
        )?;
        Ok(r["agent"].clone())
    }

    /// DELETE /v2.0/agents/ID (a dead agent's record).
    pub fn delete_agent(&self, agent_id: &str) -> Result<()> {
        self.delete(&format!("/v2.0/agents/{agent_id}")).map(drop)
    }

    // ---- Open vSwitch ----

    /// `ovs-vsctl --db=<ovsdb> --timeout=30 ARGS…`: its stdout.
    pub fn ovs_vsctl(&self, args: &[&str]) -> Result<String> {
        ovs_vsctl(
            &format!("unix:{}", self.dir.join("ovs/db.sock").display()),
            args,
        )
    }

    /// Plugs `port` (a port object) into the bridge as a VM's NIC would be:
    /// an OVS internal port (not a kernel device on the dummy datapath)
    /// named `vm<id[:11]>`, with external_ids iface-id, attached-mac and
    /// iface-status=active. When the port is bound to a host with an L2
    /// agent, that clears its L2 provisioning block. The interface name.
    pub fn plug_port(&self, port: &Value) -> Result<String> {
        let id = port["id"].as_str().context("port without id")?;
        let name = format!("vm{}", &id[..11.min(id.len())]);
        self.plug(&name, "internal", port)?;
        Ok(name)
    }

    /// Adds the existing kernel device `dev` (e.g. a veth end) to the
    /// bridge as `port`'s interface (external_ids as [`Neutron::plug_port`]).
    pub fn plug_device(&self, dev: &str, port: &Value) -> Result<()> {
        self.plug(dev, "system", port)
    }

    fn plug(&self, name: &str, kind: &str, port: &Value) -> Result<()> {
        let id = port["id"].as_str().context("port without id")?;
        let mac = port["mac_address"]
            .as_str()
            .context("port without mac_address")?;
        let kind = if kind == "system" {
            String::from("type=\"\"")
        } else {
            format!("type={kind}")
        };
        self.ovs_vsctl(&[
            "--may-exist",
            "add-port",
            &self.bridge,
            name,
            "--",
            "set",
            "Interface",
            name,
            &kind,
            &format!("external_ids:iface-id={id}"),
            &format!("external_ids:attached-mac={mac}"),
            "external_ids:iface-status=active",
        ])?;
        Ok(())
    }

    /// Removes an interface from the bridge (the L2 agent then reports the
    /// device down).
    pub fn unplug(&self, name: &str) -> Result<()> {
        self.ovs_vsctl(&["--if-exists", "del-port", &self.bridge, name])
            .map(drop)
    }

    /// The last `lines` lines of a service's log: "neutron-server",
    /// "rabbitmq", "mariadb", "ovs-vswitchd", "ovsdb-server", "l2-agent",
    /// "neutron-db-manage".
    pub fn log_tail(&self, service: &str, lines: usize) -> String {
        tail(&self.dir.join(format!("{service}.log")), lines)
    }
}

// ---- services ----

fn write_neutron_config(
    dir: &Path,
    api_port: u16,
    transport_url: &str,
    database_url: &str,
) -> Result<Vec<PathBuf>> {
    let n = dir.join("neutron");
    for d in ["state", "lock"] {
        fs::create_dir_all(n.join(d))?;
    }
    let debug = std::env::var_os("XDHCP_NEUTRON_DEBUG").is_some_and(|v| v != "0");
    let conf = format!(
        "[DEFAULT]
debug = {debug}
auth_strategy = noauth
core_plugin = ml2
service_plugins = router
bind_host = 127.0.0.1
bind_port = {api_port}
state_path = {state}
api_paste_config = /etc/neutron/api-paste.ini
transport_url = {transport_url}
dhcp_agents_per_network = 2
dns_domain = {DNS_DOMAIN}
agent_down_time = {down}
allow_automatic_dhcp_failover = False
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
[database]
connection = {database_url}
[oslo_concurrency]
lock_path = {lock}
[quotas]
quota_network = -1
quota_subnet = -1
quota_port = -1
",
        state = n.join("state").display(),
        lock = n.join("lock").display(),
        down = AGENT_DOWN_TIME.as_secs(),
    );
    let ml2 = "[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security,dns
[ml2_type_flat]
flat_networks = *
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:200
[ml2_type_vxlan]
vni_ranges = 1:100000
";
    let files = vec![n.join("neutron.conf"), n.join("ml2_conf.ini")];
    fs::write(&files[0], conf)?;
    fs::write(&files[1], ml2)?;
    Ok(files)
}

fn start_mariadb(dir: &Path, port: u16, sock: &Path) -> Result<()> {
    let m = dir.join("mysql");
    let data = m.join("data");
    fs::create_dir_all(&data)?;
    let log = dir.join("mariadb.log");
    let mut install = Command::new("/usr/bin/mariadb-install-db");
    install.args([
        "--no-defaults",
        "--user=root",
        "--auth-root-authentication-method=normal",
    ]);
    install.arg(format!("--datadir={}", data.display()));
    run_logged(
        "mariadb-install-db",
        install,
        &dir.join("mariadb-install.log"),
        Duration::from_secs(120),
    )?;

    let mut cmd = Command::new("/usr/sbin/mariadbd");
    cmd.args([
        "--no-defaults",
        "--user=root",
        "--bind-address=127.0.0.1",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=64M",
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-doublewrite=0",
        "--max-connections=500",
        "--character-set-server=utf8mb3",
        "--collation-server=utf8mb3_general_ci",
    ]);
    cmd.arg(format!("--port={port}"))
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", sock.display()))
        .arg(format!("--pid-file={}", m.join("mariadbd.pid").display()))
        .arg(format!("--tmpdir={}", m.display()));
    start_proc("mariadb", cmd, &log)?;
    wait_for("MariaDB socket", Duration::from_secs(60), || {
        proc_check("mariadb")?;
        Ok(UnixStream::connect(sock).ok())
    })
    .with_context(|| tail(&log, 20))?;
    let mut sql = Command::new("/usr/bin/mariadb");
    sql.arg("--no-defaults")
        .arg(format!("--socket={}", sock.display()))
        .args(["-uroot", "-e"])
        .arg(
            "CREATE DATABASE neutron CHARACTER SET utf8; \
             CREATE USER 'neutron'@'localhost' IDENTIFIED BY 'neutron'; \
             GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'localhost';",
        );
    run_logged(
        "mariadb (create database)",
        sql,
        &log,
        Duration::from_secs(60),
    )?;
    Ok(())
}

/// How to (re)start the private broker.
struct Rabbit {
    dir: PathBuf,
    amqp_port: u16,
    epmd_port: u16,
    env: Vec<(String, String)>,
}

static RABBIT: OnceLock<Rabbit> = OnceLock::new();

impl Rabbit {
    fn new(dir: &Path, pid: u32, amqp_port: u16, dist_port: u16, epmd_port: u16) -> Result<Rabbit> {
        let r = dir.join("rabbitmq");
        for d in ["home", "mnesia", "log"] {
            fs::create_dir_all(r.join(d))?;
        }
        fs::write(r.join("enabled_plugins"), "[].\n")?;
        fs::write(r.join("rabbitmq.conf"), "loopback_users.guest = true\n")?;
        fs::write(r.join("rabbitmq-env.conf"), "")?;
        let p = |s: &str| r.join(s).display().to_string();
        let env = [
            ("HOME", p("home")),
            ("RABBITMQ_NODENAME", format!("rabbit-{pid}@localhost")),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", p("mnesia")),
            ("RABBITMQ_LOG_BASE", p("log")),
            ("RABBITMQ_PID_FILE", p("rabbitmq.pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", p("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE", p("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", p("advanced.config")),
            ("RABBITMQ_CONF_ENV_FILE", p("rabbitmq-env.conf")),
            // The distribution listener on loopback only (it listens on all
            // addresses otherwise).
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
            // The script then execs the VM (no wrapper shell): the pid we
            // hold is beam's, and PDEATHSIG survives the exec.
            ("RUNNING_UNDER_SYSTEMD", "true".into()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            ("ERL_EPMD_PORT", epmd_port.to_string()),
        ];
        Ok(Rabbit {
            dir: dir.to_path_buf(),
            amqp_port,
            epmd_port,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })
    }

    /// Our own epmd, in the foreground (an epmd that erl starts daemonizes
    /// and outlives everything), on its own port.
    fn start_epmd(&self) -> Result<()> {
        let mut cmd = Command::new("/usr/bin/epmd");
        cmd.args([
            "-address",
            "127.0.0.1",
            "-port",
            &self.epmd_port.to_string(),
        ]);
        let log = self.dir.join("epmd.log");
        start_proc("epmd", cmd, &log)?;
        wait_for("epmd", Duration::from_secs(10), || {
            proc_check("epmd")?;
            Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, self.epmd_port)).ok())
        })
        .with_context(|| tail(&log, 10))?;
        Ok(())
    }

    fn start(&self) -> Result<()> {
        let mut cmd = Command::new(RABBITMQ_SERVER);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let log = self.dir.join("rabbitmq.log");
        start_proc("rabbitmq", cmd, &log)?;
        wait_for("RabbitMQ AMQP", Duration::from_secs(120), || {
            proc_check("rabbitmq")?;
            Ok(amqp_ready(self.amqp_port).then_some(()))
        })
        .with_context(|| tail(&log, 30))
    }
}

/// Whether the broker answers the AMQP 0-9-1 header with a method frame
/// (connection.start): it is past boot, not just listening.
fn amqp_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    let mut frame = [0u8; 7];
    s.read_exact(&mut frame).is_ok() && frame[0] == 1
}

fn start_ovs(dir: &Path, ovsdb_port: u16, bridge: &str) -> Result<()> {
    let o = dir.join("ovs");
    fs::create_dir_all(&o)?;
    let p = |s: &str| o.join(s).display().to_string();
    let db = p("conf.db");
    let sock = o.join("db.sock");
    let mut create = Command::new("/usr/bin/ovsdb-tool");
    create.args(["create", &db, OVS_SCHEMA]);
    run_logged(
        "ovsdb-tool create",
        create,
        &dir.join("ovsdb-server.log"),
        Duration::from_secs(30),
    )?;

    let mut server = ovs_command("/usr/sbin/ovsdb-server", &o);
    server
        .arg(&db)
        .arg(format!("--remote=punix:{}", sock.display()))
        .arg(format!("--remote=ptcp:{ovsdb_port}:127.0.0.1"))
        .arg(format!("--pidfile={}", p("ovsdb-server.pid")))
        .arg(format!("--unixctl={}", p("ovsdb-server.ctl")))
        .arg(format!(
            "--log-file={}",
            dir.join("ovsdb-server.log").display()
        ))
        .arg("-vconsole:off");
    let log = dir.join("ovsdb-server.log");
    start_proc("ovsdb-server", server, &log)?;
    wait_for("ovsdb-server", Duration::from_secs(30), || {
        proc_check("ovsdb-server")?;
        Ok(UnixStream::connect(&sock).ok())
    })
    .with_context(|| tail(&log, 20))?;
    let db_url = format!("unix:{}", sock.display());
    ovs_vsctl(&db_url, &["--no-wait", "init"])?;

    let mut vswitchd = ovs_command("/usr/sbin/ovs-vswitchd", &o);
    vswitchd
        .arg("--enable-dummy")
        .arg(&db_url)
        .arg(format!("--pidfile={}", p("ovs-vswitchd.pid")))
        .arg(format!("--unixctl={}", p("ovs-vswitchd.ctl")))
        .arg(format!(
            "--log-file={}",
            dir.join("ovs-vswitchd.log").display()
        ))
        .arg("-vconsole:off");
    let log = dir.join("ovs-vswitchd.log");
    start_proc("ovs-vswitchd", vswitchd, &log)?;
    // Without --no-wait, ovs-vsctl waits for ovs-vswitchd to apply it.
    ovs_vsctl(
        &db_url,
        &[
            "--may-exist",
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            "datapath_type=dummy",
            "fail_mode=standalone",
        ],
    )
    .with_context(|| tail(&log, 20))?;
    proc_check("ovs-vswitchd").with_context(|| tail(&log, 20))?;
    Ok(())
}

/// An OVS daemon with its run/db/log directories under `o` (ovs-vswitchd
/// puts the bridges' mgmt sockets in OVS_RUNDIR).
fn ovs_command(program: &str, o: &Path) -> Command {
    let mut cmd = Command::new(program);
    for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
        cmd.env(var, o);
    }
    cmd
}

fn ovs_vsctl(db: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("/usr/bin/ovs-vsctl");
    cmd.arg(format!("--db={db}")).arg("--timeout=30").args(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = spawn(cmd)
        .context("starting ovs-vsctl")?
        .wait_with_output()
        .context("ovs-vsctl")?;
    ensure!(
        out.status.success(),
        "ovs-vsctl {}: {}: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn python(script: &str) -> Command {
    let mut cmd = Command::new(PYTHON);
    scrub_python_env(&mut cmd);
    cmd.arg(script);
    cmd
}

fn scrub_python_env(cmd: &mut Command) {
    for var in [
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "VIRTUAL_ENV",
        "PYTHONUSERBASE",
    ] {
        cmd.env_remove(var);
    }
}

// ---- processes ----

struct Proc {
    name: String,
    child: Child,
}

/// Every process started here and not yet stopped.
static PROCS: Mutex<Vec<Proc>> = Mutex::new(Vec::new());
/// Directories to remove at exit.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the one long-lived spawner thread, in its own process
/// group, with PR_SET_PDEATHSIG = SIGKILL.
fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("neutron-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    cmd.process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(tx)
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread gone"))?
}

fn log_stdio(log: &Path) -> Result<(Stdio, Stdio)> {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
}

/// Starts a long-running service, its stdout and stderr appended to `log`.
fn start_proc(name: &str, mut cmd: Command, log: &Path) -> Result<()> {
    let (out, err) = log_stdio(log)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = spawn(cmd).with_context(|| format!("starting {name} ({program})"))?;
    watchdog_send(&format!("add {}", child.id()));
    lock(&PROCS).push(Proc {
        name: name.to_string(),
        child,
    });
    Ok(())
}

/// Runs a command to completion, output appended to `log`; fails with the
/// log's tail.
fn run_logged(name: &str, mut cmd: Command, log: &Path, timeout: Duration) -> Result<()> {
    let (out, err) = log_stdio(log)?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = spawn(cmd).with_context(|| format!("starting {name}"))?;
    watchdog_send(&format!("add {}", child.id()));
    let status = wait_child(&mut child, timeout);
    if status.is_some() {
        watchdog_send(&format!("del {}", child.id()));
    }
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("{name} failed: {s}\n{}", tail(log, 30)),
        None => {
            // SAFETY: signalling the process group we created.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            watchdog_send(&format!("del {}", child.id()));
            bail!("{name} timed out after {timeout:?}\n{}", tail(log, 30))
        }
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let t = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if t.elapsed() > timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Fails if the service has exited.
fn proc_check(name: &str) -> Result<()> {
    let mut procs = lock(&PROCS);
    let Some(i) = procs.iter().position(|p| p.name == name) else {
        bail!("{name} is not running");
    };
    if let Ok(Some(status)) = procs[i].child.try_wait() {
        procs.remove(i);
        bail!("{name} exited: {status}");
    }
    Ok(())
}

fn proc_running(name: &str) -> bool {
    proc_check(name).is_ok()
}

/// Signals the service's process group, waits up to `grace`, then SIGKILLs
/// the group and reaps the process.
fn proc_stop(name: &str, signal: i32, grace: Duration) {
    let proc = {
        let mut procs = lock(&PROCS);
        match procs.iter().position(|p| p.name == name) {
            Some(i) => procs.remove(i),
            None => return,
        }
    };
    let mut child = proc.child;
    let pgid = child.id() as i32;
    // SAFETY: signalling the process group we created.
    unsafe { libc::killpg(pgid, signal) };
    if wait_child(&mut child, grace).is_none() {
        eprintln!("neutron: {name} still running {grace:?} after signal {signal}: SIGKILL");
    }
    // The leader gone, its group may still hold workers: kill them too.
    // SAFETY: as above.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
    let _ = child.wait();
    watchdog_send(&format!("del {pgid}"));
}

/// The watchdog: `sh` in its own process group, not a child that dies with
/// us, reading "add PGID" / "del PGID" / "exit" lines on a pipe from this
/// process. When the pipe reaches EOF without "exit" (the test binary died
/// without running `at_exit`, e.g. SIGKILL or SIGINT), it SIGKILLs every
/// process group still listed. PDEATHSIG alone does not suffice: it only
/// reaches our direct children, and an orphaned neutron-server worker can
/// hang for a minute stopping its RPC server against a dead broker.
const WATCHDOG_SH: &str = r#"g=" "
while read -r c p; do
  case "$c" in
    add) g="$g$p " ;;
    del) g=$(printf '%s' "$g" | sed "s/ $p / /") ;;
    exit) exit 0 ;;
  esac
done
for p in $g; do kill -KILL -- "-$p" 2>/dev/null; done
exit 0
"#;

struct Watchdog {
    child: Child,
    stdin: std::process::ChildStdin,
}

static WATCHDOG: Mutex<Option<Watchdog>> = Mutex::new(None);

fn watchdog_send(line: &str) {
    let mut w = lock(&WATCHDOG);
    if w.is_none() {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SH)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        match cmd.spawn() {
            Ok(mut child) => {
                let stdin = child.stdin.take().expect("piped stdin");
                *w = Some(Watchdog { child, stdin });
            }
            Err(e) => {
                eprintln!("neutron: starting the watchdog: {e}");
                return;
            }
        }
    }
    if let Some(w) = w.as_mut() {
        let _ = writeln!(w.stdin, "{line}");
    }
}

fn register_atexit() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(at_exit) };
    });
}

/// Stops every service (SIGTERM for up to 5 s to those with children, then
/// SIGKILL to every process group: the state is thrown away) and removes
/// the directories.
extern "C" fn at_exit() {
    let _ = std::panic::catch_unwind(|| {
        let t = Instant::now();
        let mut procs = std::mem::take(&mut *lock(&PROCS));
        // Those with children get SIGTERM first so that they reap them
        // (neutron-server its workers, beam its port programs): killed,
        // they would leave the children to PID 1 to reap.
        let graceful =
            |p: &Proc| matches!(p.name.as_str(), "neutron-server" | "rabbitmq" | "l2-agent");
        for p in procs.iter().filter(|p| graceful(p)) {
            // SAFETY: signalling process groups we created.
            unsafe { libc::killpg(p.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in procs.iter_mut().filter(|p| graceful(p)) {
            let _ = wait_child(
                &mut p.child,
                deadline.saturating_duration_since(Instant::now()),
            );
        }
        for p in &procs {
            // SAFETY: as above.
            unsafe { libc::killpg(p.child.id() as i32, libc::SIGKILL) };
        }
        for p in &mut procs {
            let _ = p.child.wait();
        }
        if let Some(mut w) = lock(&WATCHDOG).take() {
            let _ = writeln!(w.stdin, "exit");
            drop(w.stdin);
            let _ = w.child.wait();
        }
        let keep = std::env::var_os("XDHCP_NEUTRON_KEEP").is_some_and(|v| v != "0");
        for dir in std::mem::take(&mut *lock(&DIRS)) {
            if keep {
                eprintln!("neutron: kept {}", dir.display());
            } else if let Err(e) = fs::remove_dir_all(&dir) {
                eprintln!("neutron: removing {}: {e}", dir.display());
            }
        }
        if !procs.is_empty() {
            eprintln!(
                "neutron: stopped {} services in {:.2}s",
                procs.len(),
                t.elapsed().as_secs_f64()
            );
        }
    });
}

/// Removes `/tmp/xdhcp-neutron-<pid>` directories of processes that are
/// gone (a test binary that was killed; its services died with it).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("xdhcp-neutron-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

// ---- helpers ----

/// `n` distinct free TCP ports on 127.0.0.1 (bound together, then released).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<_>>()
        .context("finding free ports")?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// Polls `f` every 50 ms until it yields a value; an error from `f` ends the
/// wait (use it for "the service died").
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t = Instant::now();
    loop {
        if let Some(v) = f().with_context(|| format!("waiting for {what}"))? {
            return Ok(v);
        }
        if t.elapsed() > timeout {
            bail!("{what}: not after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn join<T>(h: thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("start-up thread panicked"))?
}

/// The last `lines` lines of a file, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            format!(
                "--- tail of {} ---\n{}",
                path.display(),
                all[from..].join("\n")
            )
        }
        Err(e) => format!("--- {}: {e} ---", path.display()),
    }
}

/// Merges the object `extra` into the object `into`.
fn merge(into: &mut Value, extra: Value) -> Result<()> {
    match extra {
        Value::Null => Ok(()),
        Value::Object(m) => {
            let into = into.as_object_mut().context("not an object")?;
            into.extend(m);
            Ok(())
        }
        other => bail!("extra must be a JSON object, not {other}"),
    }
}

/// Status and body of a complete HTTP/1.1 response.
fn parse_http(raw: &[u8]) -> Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "content-length" {
            let n: usize = v.parse().context("bad Content-Length")?;
            ensure!(body.len() >= n, "short body: {} of {n} bytes", body.len());
            body = &body[..n];
        } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    if !chunked {
        return Ok((status, String::from_utf8_lossy(body).into_owned()));
    }
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&body[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .context("bad chunk size")?;
        body = &body[eol + 2..];
        if size == 0 {
            break;
        }
        ensure!(body.len() >= size + 2, "short chunk");
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}
