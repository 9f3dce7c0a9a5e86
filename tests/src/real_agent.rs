//! The real neutron-dhcp-agent (Debian's, dnsmasq driver) on the harness's
//! neutron-server, beside `xdhcp agent` ([`crate::agent::Agent`]), configured
//! as the seed write-up configures it: interface_driver = openvswitch,
//! ovs_use_veth = True, isolated metadata, a dnsmasq_config_file. (The bridge
//! is `[ovs] integration_bridge`: Zed's agent no longer reads `[DEFAULT]
//! ovs_integration_bridge` and falls back to br-int.)
//!
//! Both agents name a network's namespace `qdhcp-<network_id>`, so on one
//! machine they would share it. The real agent therefore runs in a mount
//! namespace of its own with a private tmpfs on /run/netns: its `ip netns`
//! namespaces are invisible outside, while its network namespace is the
//! host's, so its tap devices are plugged into the same OVS bridge as
//! xdhcp's. On drop every process of that mount namespace (the agent, its
//! privsep helpers, each dnsmasq and haproxy it forked) is killed, which
//! frees its namespaces and so their veth pairs; the OVS ports left without
//! a device are deleted. The agent also wants the bridge to be a kernel
//! device, which it is not on the harness's dummy datapath: a veth of that
//! name stands in for it while the agent runs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use crate::neutron::{Neutron, DHCP_AGENT_TYPE};

/// Debian's neutron-dhcp-agent.
pub const NEUTRON_DHCP_AGENT: &str = "/usr/bin/neutron-dhcp-agent";

/// One neutron-dhcp-agent process with its config files and state.
pub struct RealAgent {
    pub n: &'static Neutron,
    pub host: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    service: String,
    /// It runs in a mount namespace of its own (see [`RealAgentConfig`]).
    private_netns: bool,
    /// The kernel device named as the bridge, when this agent made it.
    bridge_dev: bool,
    /// `/proc/<pid>/ns/mnt` of the agent: every process in it is the agent's.
    mnt_ns: Option<String>,
}

/// How [`RealAgent::new`] sets the agent up.
pub struct RealAgentConfig<'a> {
    /// `dnsmasq_config_file`'s text.
    pub dnsmasq_conf: &'a str,
    /// Its own mount namespace, so its qdhcp namespaces are not xdhcp's (for
    /// a network both agents host); false: the host's, as on a real node
    /// (for a swap, where xdhcp takes over its namespaces).
    pub private_netns: bool,
    /// Appended to dhcp_agent.ini (e.g. an `[xdhcp]` section, which
    /// neutron-dhcp-agent ignores).
    pub extra_ini: &'a str,
    /// `dhcp_lease_duration`.
    pub lease_secs: u32,
}

impl RealAgent {
    /// [`RealAgent::new`] with `dnsmasq_conf`, a private mount namespace and
    /// one-day leases, spawned, alive.
    pub fn start(n: &'static Neutron, host: &str, az: &str, dnsmasq_conf: &str) -> Self {
        let mut agent = Self::new(
            n,
            host,
            az,
            &RealAgentConfig {
                dnsmasq_conf,
                private_netns: true,
                extra_ini: "",
                lease_secs: 86400,
            },
        );
        agent.spawn();
        agent.wait_alive();
        agent
    }

    /// Writes neutron.conf and dhcp_agent.ini for `host` in availability
    /// zone `az` and starts its L2 agent stand-in; the agent itself is not
    /// started ([`RealAgent::spawn`]).
    pub fn new(n: &'static Neutron, host: &str, az: &str, cfg: &RealAgentConfig<'_>) -> Self {
        n.ensure_l2_agent(host);
        let dir = PathBuf::from(format!("/tmp/xdhcp-real-agent-{host}"));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["state", "lock"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let dnsmasq = dir.join("dnsmasq-neutron.conf");
        std::fs::write(&dnsmasq, cfg.dnsmasq_conf).unwrap();
        let files = vec![dir.join("neutron.conf"), dir.join("dhcp_agent.ini")];
        std::fs::write(
            &files[0],
            format!(
                "[DEFAULT]\nhost = {host}\ntransport_url = {}\nstate_path = {}\n\n\
                 [agent]\nreport_interval = 2\navailability_zone = {az}\nroot_helper = sudo\n\n\
                 [ovs]\novsdb_connection = {}\n\n[oslo_concurrency]\nlock_path = {}\n",
                n.transport_url,
                dir.join("state").display(),
                n.ovsdb_connection,
                dir.join("lock").display(),
            ),
        )
        .unwrap();
        std::fs::write(
            &files[1],
            format!(
                "[DEFAULT]\ninterface_driver = openvswitch\n\
                 dhcp_driver = neutron.agent.linux.dhcp.Dnsmasq\n\
                 enable_isolated_metadata = True\ndnsmasq_config_file = {}\n\
                 ovs_use_veth = True\nresync_interval = 2\ndhcp_lease_duration = {}\n\
                 dnsmasq_base_log_dir = {}\n\n[ovs]\nintegration_bridge = {}\n\n{}",
                dnsmasq.display(),
                cfg.lease_secs,
                dir.join("dnsmasq-log").display(),
                n.bridge,
                cfg.extra_ini,
            ),
        )
        .unwrap();
        // The agent checks that the bridge is a kernel device before plugging
        // (interface.py, check_bridge_exists); on the dummy datapath it is
        // none: a veth of that name (no module for `dummy` here) stands for it.
        let bridge_dev = !Path::new(&format!("/sys/class/net/{}", n.bridge)).exists();
        if bridge_dev {
            let peer = format!("xbr{}", std::process::id());
            xdhcp::netns::ip(&[
                "link", "add", &n.bridge, "type", "veth", "peer", "name", &peer,
            ])
            .unwrap();
        }
        RealAgent {
            n,
            host: host.to_string(),
            dir,
            files,
            service: format!("neutron-dhcp-agent-{host}"),
            private_netns: cfg.private_netns,
            bridge_dev,
            mnt_ns: None,
        }
    }

    /// Starts neutron-dhcp-agent (again), its log appended to `agent.log`.
    pub fn spawn(&mut self) {
        let mut cmd = if self.private_netns {
            std::fs::create_dir_all("/run/netns").unwrap();
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
                .arg("mount -t tmpfs xdhcp-real-agent /run/netns && exec \"$@\"")
                .args(["sh", NEUTRON_DHCP_AGENT]);
            c
        } else {
            Command::new(NEUTRON_DHCP_AGENT)
        };
        for f in &self.files {
            cmd.arg("--config-file").arg(f);
        }
        cmd.arg("--log-file").arg(self.dir.join("agent.log"));
        let pid = self
            .n
            .start_service(&self.service, cmd, &self.dir.join("stderr.log"))
            .unwrap_or_else(|e| panic!("starting neutron-dhcp-agent: {e:#}"));
        if !self.private_netns {
            return;
        }
        // The namespace once unshare has made it (the pid stays, exec after exec).
        let own = mnt_ns_of("self");
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            match mnt_ns_of(&pid.to_string()) {
                Some(ns) if Some(&ns) != own.as_ref() => {
                    self.mnt_ns = Some(ns);
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        panic!(
            "neutron-dhcp-agent never got a mount namespace of its own: {}",
            self.log()
        );
    }

    /// Waits until neutron-server lists the agent alive.
    pub fn wait_alive(&self) {
        self.n
            .wait_agent_alive(&self.host, DHCP_AGENT_TYPE, Duration::from_secs(90))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.log()));
    }

    /// Stops the agent: SIGTERM to its process group (the agent and its
    /// privsep helpers), SIGKILL after a grace. dnsmasq and haproxy daemonize
    /// into sessions of their own and keep running, as under a unit with
    /// `KillMode=process` (Debian's unit, without it, would stop them too).
    pub fn stop(&mut self) {
        self.n
            .stop_service(&self.service, libc::SIGTERM, Duration::from_secs(5));
    }

    /// The pids of the dnsmasq processes it started (their pid files).
    pub fn dnsmasq_pids(&self) -> Vec<i32> {
        let Ok(nets) = std::fs::read_dir(self.dir.join("state/dhcp")) else {
            return Vec::new();
        };
        nets.flatten()
            .filter_map(|d| std::fs::read_to_string(d.path().join("pid")).ok())
            .filter_map(|p| p.trim().parse::<i32>().ok())
            .filter(|p| Path::new(&format!("/proc/{p}/cmdline")).exists())
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("dnsmasq"))
            })
            .collect()
    }

    /// What the dnsmasq processes logged (`dnsmasq_base_log_dir`).
    pub fn dnsmasq_log(&self) -> String {
        let mut text = String::new();
        for net in std::fs::read_dir(self.dir.join("dnsmasq-log"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                text.push_str(&std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
        text
    }

    /// The agent's id in neutron-server.
    pub fn id(&self) -> String {
        self.n
            .agent(&self.host, DHCP_AGENT_TYPE)
            .unwrap()
            .expect("the agent is registered")["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// This agent's DHCP port on `network_id`, once it has one.
    pub fn dhcp_port(&self, network_id: &str) -> Option<Value> {
        self.n.dhcp_port_of(&self.host, network_id)
    }

    /// Whether a dnsmasq of this agent runs for `network_id` (its pid file
    /// names a live process).
    pub fn dnsmasq_running(&self, network_id: &str) -> bool {
        let pid = self.dir.join(format!("state/dhcp/{network_id}/pid"));
        std::fs::read_to_string(pid)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
    }

    /// The tails of the agent's log and stderr, for failure messages.
    pub fn log(&self) -> String {
        let tail = |f: &str| {
            let text = std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let mut procs = String::new();
        for pid in self.processes() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            procs.push_str(&format!("  {pid} {cmdline}\n"));
        }
        // Its namespaces, as seen from its mount namespace.
        let in_ns = self
            .processes()
            .into_iter()
            .find(|p| self.mnt_ns.is_some() && mnt_ns_of(&p.to_string()) == self.mnt_ns);
        let inside = |cmd: &str| {
            let mut c = match in_ns {
                Some(pid) => {
                    let mut c = Command::new("nsenter");
                    c.arg(format!("--mount=/proc/{pid}/ns/mnt")).arg("sh");
                    c
                }
                None => Command::new("sh"),
            };
            c.args(["-c", cmd])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let namespaces = inside(
            "for n in $(ip netns list | cut -d' ' -f1); do echo $n; ip -n $n -s addr; done; \
             ps -eo pid,args | grep -E 'dnsmasq|haproxy' | grep -v grep",
        );
        let ovs = self.n.ovs_vsctl(&["show"]).unwrap_or_default();
        let dnsmasq_log = {
            let text = self.dnsmasq_log();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        format!(
            "neutron-dhcp-agent log:\n{}\nstderr:\n{}\nprocesses:\n{procs}namespaces:\n{namespaces}\novs:\n{ovs}\ndnsmasq log:\n{dnsmasq_log}",
            tail("agent.log"),
            tail("stderr.log")
        )
    }

    /// The agent's processes: those of its mount namespace (the agent, its
    /// privsep helpers) and those naming its directory (each dnsmasq and
    /// haproxy, which `ip netns exec` gives mount namespaces of their own).
    pub fn processes(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let dir = self.dir.display().to_string();
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let in_ns = self.mnt_ns.is_some()
                    && mnt_ns_of(&pid.to_string()).as_ref() == self.mnt_ns.as_ref();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let zombie = cmdline.is_empty();
                in_ns || (!zombie && String::from_utf8_lossy(&cmdline).contains(&dir))
            })
            .collect()
    }
}

/// `/proc/<pid>/ns/mnt`'s link ("mnt:[4026531841]").
fn mnt_ns_of(pid: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

impl RealAgent {
    /// SIGKILL to the agent's process group (the agent and its privsep
    /// helpers): a crash. Its dnsmasq and haproxy processes keep running.
    pub fn kill9(&mut self) {
        self.n
            .stop_service(&self.service, libc::SIGKILL, Duration::from_secs(5));
    }

    /// The node as a reboot leaves it: the agent stopped, every dnsmasq and
    /// haproxy of it killed, its namespaces (and so veth pairs) and the
    /// bridge's ports left without a device gone; its state directory
    /// (hosts, opts and leases files) kept.
    pub fn wipe_node(&mut self) {
        self.stop();
        // dnsmasq and haproxy daemonize out of the agent's process group.
        for _ in 0..50 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: a process of the agent's own mount namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // In a mount namespace of its own, its namespaces went with it, and
        // with them the veth pairs; in the host's, they stay: delete them.
        // Then the bridge's ports that lost their device.
        if !self.private_netns {
            for net in std::fs::read_dir(self.dir.join("state/dhcp"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let ns = format!("qdhcp-{}", net.file_name().to_string_lossy());
                let _ = Command::new("ip").args(["netns", "del", &ns]).output();
            }
        }
        if let Ok(ports) = self.n.ovs_vsctl(&["list-ports", &self.n.bridge]) {
            let stale: Vec<&str> = ports
                .lines()
                .filter(|p| p.starts_with("tap"))
                .filter(|p| !Path::new(&format!("/sys/class/net/{p}")).exists())
                .collect();
            // One transaction for all (one each takes minutes with thousands).
            for chunk in stale.chunks(200) {
                let mut args = Vec::new();
                for p in chunk {
                    if !args.is_empty() {
                        args.push("--");
                    }
                    args.extend(["--if-exists", "del-port", self.n.bridge.as_str(), p]);
                }
                let _ = self.n.ovs_vsctl(&args);
            }
        }
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        self.wipe_node();
        if self.bridge_dev {
            let _ = xdhcp::netns::ip(&["link", "del", &self.n.bridge]);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
