//! Kea's DHCPv4 server (Debian's kea-dhcp4-server) as the third server of the
//! load benchmark: the same network and one host reservation per port (by
//! MAC, as Neutron's static allocation), memfile leases, multi-threaded.

use std::{
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The server binary.
pub const KEA: &str = "kea-dhcp4";

/// Kea's configuration for `iface` (in the network's namespace): subnet
/// `cidr` with `gateway` and the same DNS server as the other servers get, a
/// reservation for each (MAC, IP) and no pool (only reserved clients are
/// answered), leases in a memfile under `dir`, a thread pool of one thread a
/// core (Kea's automatic size) and raw sockets (clients without an address).
pub fn config(
    iface: &str,
    dir: &Path,
    cidr: &str,
    gateway: Ipv4Addr,
    hosts: impl Iterator<Item = ([u8; 6], Ipv4Addr)>,
) -> Value {
    let reservations: Vec<Value> = hosts
        .map(|(mac, ip)| {
            json!({"hw-address": xdhcp::neutron::model::format_mac(&mac), "ip-address": ip.to_string()})
        })
        .collect();
    json!({"Dhcp4": {
        "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": true,
                           "name": dir.join("leases4.csv").display().to_string(), "lfc-interval": 0},
        "multi-threading": {"enable-multi-threading": true, "thread-pool-size": 0, "packet-queue-size": 64},
        "valid-lifetime": 86400,
        "host-reservation-identifiers": ["hw-address"],
        "reservations-global": false,
        "reservations-in-subnet": true,
        "reservations-out-of-pool": true,
        "authoritative": true,
        "subnet4": [{
            "id": 1,
            "subnet": cidr,
            "option-data": [
                {"name": "routers", "data": gateway.to_string()},
                {"name": "domain-name-servers", "data": "10.99.0.53"}
            ],
            "reservations": reservations
        }],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": dir.join("kea.log").display().to_string()}]}]
    }})
}

/// A kea-dhcp4 running in a namespace; stopped (and waited for) when dropped.
pub struct Kea {
    child: Child,
    /// The command line, for the report.
    pub command: String,
}

impl Kea {
    /// Writes `conf` into `dir` and starts kea-dhcp4 on it in `namespace`
    /// (its pid and lock files in `dir` too: never the system's).
    pub fn spawn(namespace: &str, dir: &Path, conf: &Value) -> Result<Self> {
        let path = dir.join("kea-dhcp4.conf");
        fs::write(&path, serde_json::to_vec(conf)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let stderr = fs::File::create(dir.join("stderr"))?;
        // `ip netns exec` execs kea-dhcp4 in place: the child is the server.
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, KEA, "-c"])
            .arg(&path)
            .env("KEA_PIDFILE_DIR", dir)
            .env("KEA_LOCKFILE_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .context("starting kea-dhcp4 (apt-get install kea-dhcp4-server)")?;
        let mut kea = Self {
            child,
            command: format!("{KEA} -c DIR/kea-dhcp4.conf"),
        };
        // A configuration error ends it at once: say so, with its words.
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = kea.child.try_wait()? {
            let err = fs::read_to_string(dir.join("stderr")).unwrap_or_default();
            let log = fs::read_to_string(dir.join("kea.log")).unwrap_or_default();
            anyhow::bail!("kea-dhcp4 exited ({status}): {err}{log}");
        }
        Ok(kea)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Kea {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The version line of kea-dhcp4 (`-V` prints it first).
pub fn version() -> String {
    Command::new(KEA)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "not installed".into())
}
