//! dnsmasq as neutron-dhcp-agent runs it (neutron/agent/linux/dhcp.py,
//! `Dnsmasq`): its command line and files for a network, and a guard that
//! stops the daemonized process. Shared by the parity test and the benchmarks.

use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

/// The dnsmasq binary Neutron's agent runs (Debian's dnsmasq-base).
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// The agent options both servers get (dhcp_agent.ini names).
#[derive(Debug, Clone)]
pub struct Agent {
    pub dns_domain: &'static str,
    pub enable_isolated_metadata: bool,
    pub dhcp_lease_duration: u32,
}

impl Agent {
    /// The same options as xdhcp's `--config` TOML.
    pub fn toml(&self) -> String {
        format!(
            "[DEFAULT]\ndns_domain = \"{}\"\nenable_isolated_metadata = {}\ndhcp_lease_duration = {}\n",
            self.dns_domain, self.enable_isolated_metadata, self.dhcp_lease_duration
        )
    }
}

/// Removes the twin's config directory (hosts, opts, leases, pid file, log).
pub struct ConfDir(pub PathBuf);

impl Drop for ConfDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Stops the dnsmasq whose pid file this is (it daemonizes, as under Neutron).
pub struct DnsmasqGuard {
    pub pid_file: PathBuf,
}

impl DnsmasqGuard {
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // Only a live dnsmasq: never signal a pid that was reused.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "dnsmasq").then_some(pid)
    }
}

impl Drop for DnsmasqGuard {
    fn drop(&mut self) {
        let Some(pid) = self.pid() else { return };
        // SAFETY: signalling the dnsmasq this test started (checked by name above).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(2);
        while Instant::now() < end && self.pid().is_some() && !zombie(pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.pid().is_some() && !zombie(pid) {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

pub fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The files and arguments neutron-dhcp-agent writes for one network.
#[derive(Debug, Default)]
pub struct NeutronConf {
    pub args: Vec<String>,
    pub host: String,
    pub addn_hosts: String,
    pub opts: String,
    pub leases: String,
}

impl NeutronConf {
    /// Writes the hosts, addn_hosts, opts and leases files into `dir`, under
    /// the names the arguments refer to.
    pub fn write_files(&self, dir: &Path) -> Result<()> {
        for (file, text) in [
            ("host", &self.host),
            ("addn_hosts", &self.addn_hosts),
            ("opts", &self.opts),
            ("leases", &self.leases),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// An IPv4 CIDR as (network, prefix length).
pub fn cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let (a, p) = s
        .split_once('/')
        .with_context(|| format!("{s:?} is not a CIDR"))?;
    let p: u8 = p.parse()?;
    ensure!(p <= 32, "{s:?}: prefix above 32");
    let mask = mask_of(p);
    Ok((Ipv4Addr::from(u32::from(a.parse::<Ipv4Addr>()?) & mask), p))
}

pub fn mask_of(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// Neutron's `Dnsmasq._build_cmdline_callback`, `_output_hosts_file`,
/// `_output_addn_hosts_file`, `_output_opts_file` and `_output_init_lease_file`
/// for one network with IPv4 subnets, with the agent's defaults for every
/// option `agent` does not set (dnsmasq_local_resolv false, no
/// dnsmasq_config_file, no dnsmasq_dns_servers, no renewal/rebinding times,
/// dhcp_broadcast_reply false, the openvswitch interface driver).
pub fn neutron_conf(doc: &Value, agent: &Agent, dir: &Path, tap: &str) -> Result<NeutronConf> {
    let arr = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    let (networks, subnets, ports) = (arr("networks"), arr("subnets"), arr("ports"));
    let file = |k: &str| dir.join(k).display().to_string();
    let mut args: Vec<String> = vec![
        "--no-hosts".into(),
        "--no-resolv".into(),
        format!("--pid-file={}", file("pid")),
        format!("--dhcp-hostsfile={}", file("host")),
        format!("--addn-hosts={}", file("addn_hosts")),
        format!("--dhcp-optsfile={}", file("opts")),
        format!("--dhcp-leasefile={}", file("leases")),
        "--dhcp-match=set:ipxe,175".into(),
        "--dhcp-userclass=set:ipxe6,iPXE".into(),
        "--local-service".into(),
        "--bind-dynamic".into(),
        // OVS driver (not bridged): tap* would be bridge ports; there are none here.
        format!("--bridge-interface={tap},tap*"),
    ];
    let dhcp_subnets: Vec<&Value> = subnets
        .iter()
        .filter(|s| s["enable_dhcp"] == true && s["ip_version"] == 4)
        .collect();
    let lease = format!("{}s", agent.dhcp_lease_duration);
    let mut possible_leases = 0u64;
    for s in &dhcp_subnets {
        let (net, prefix) = cidr(s["cidr"].as_str().unwrap())?;
        args.push(format!(
            "--dhcp-range=set:subnet-{},{net},static,{},{lease}",
            s["id"].as_str().unwrap(),
            Ipv4Addr::from(mask_of(prefix))
        ));
        possible_leases += 1u64 << (32 - prefix);
    }
    let mtu = networks
        .first()
        .and_then(|n| n["mtu"].as_u64())
        .unwrap_or(0);
    if mtu > 0 {
        args.push(format!("--dhcp-option-force=option:mtu,{mtu}"));
    }
    args.push(format!("--dhcp-lease-max={}", possible_leases.min(1 << 24)));
    args.push("--conf-file=/dev/null".into());
    if !agent.dns_domain.is_empty() {
        args.push(format!("--domain={}", agent.dns_domain));
    }

    let is_dhcp_subnet = |id: &Value| dhcp_subnets.iter().any(|s| s["id"] == *id);
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut conf = NeutronConf {
        args,
        ..Default::default()
    };
    // Hosts, addn_hosts and the initial lease file.
    let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()
        + u64::from(agent.dhcp_lease_duration);
    let excluded = [
        "network:router_ha_interface",
        "network:floatingip",
        "network:dhcp",
    ];
    for p in &ports {
        if excluded.contains(&p["device_owner"].as_str().unwrap_or_default()) {
            continue;
        }
        let mac = str_of(&p["mac_address"]);
        let has_opts = p["extra_dhcp_opts"]
            .as_array()
            .is_some_and(|o| !o.is_empty());
        for f in p["fixed_ips"].as_array().cloned().unwrap_or_default() {
            let ip = str_of(&f["ip_address"]);
            let hostname = format!("host-{}", ip.replace('.', "-"));
            let fqdn = if agent.dns_domain.is_empty() {
                hostname.clone()
            } else {
                format!("{hostname}.{}", agent.dns_domain)
            };
            writeln!(conf.addn_hosts, "{ip}\t{fqdn} {hostname}")?;
            if !is_dhcp_subnet(&f["subnet_id"]) {
                continue;
            }
            writeln!(conf.leases, "{expiry} {mac} {ip} * *")?;
            if has_opts {
                // No client-id among our extra_dhcp_opts: the set:port- form.
                writeln!(conf.host, "{mac},{fqdn},{ip},set:port-{}", str_of(&p["id"]))?;
            } else {
                writeln!(conf.host, "{mac},{fqdn},{ip}")?;
            }
        }
    }
    // Options per subnet.
    let dhcp_port = ports.iter().find(|p| p["device_owner"] == "network:dhcp");
    let mut opts: Vec<String> = Vec::new();
    for s in &dhcp_subnets {
        let id = str_of(&s["id"]);
        let tag = format!("tag:subnet-{id}");
        let dns: Vec<String> = s["dns_nameservers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(str_of)
            .collect();
        if dns == ["0.0.0.0"] {
            opts.push(format!("{tag},option:dns-server"));
        } else if !dns.is_empty() {
            opts.push(format!("{tag},option:dns-server,{}", dns.join(",")));
        }
        let mut gateway = s["gateway_ip"].as_str().map(str::to_string);
        let mut routes: Vec<String> = Vec::new();
        for hr in s["host_routes"].as_array().cloned().unwrap_or_default() {
            if hr["destination"] == "0.0.0.0/0" {
                gateway.get_or_insert(str_of(&hr["nexthop"]));
            } else {
                routes.push(format!(
                    "{},{}",
                    str_of(&hr["destination"]),
                    str_of(&hr["nexthop"])
                ));
            }
        }
        // Isolated: no router interface port holds the gateway address.
        let isolated = !ports.iter().any(|p| {
            p["device_owner"]
                .as_str()
                .is_some_and(|o| o.starts_with("network:router_interface"))
                && p["fixed_ips"].as_array().is_some_and(|f| {
                    f.iter().any(|f| {
                        f["subnet_id"] == s["id"] && Some(str_of(&f["ip_address"])) == gateway
                    })
                })
        });
        let dhcp_ip = dhcp_port.and_then(|p| {
            p["fixed_ips"]
                .as_array()?
                .iter()
                .find(|f| f["subnet_id"] == s["id"])
                .map(|f| str_of(&f["ip_address"]))
        });
        if isolated && agent.enable_isolated_metadata {
            if let Some(ip) = dhcp_ip {
                routes.push(format!("169.254.169.254/32,{ip}"));
            }
        } else if !isolated {
            if let Some(gw) = &gateway {
                routes.push(format!("169.254.169.254/32,{gw}"));
            }
        }
        for other in &subnets {
            if other["ip_version"] == 4 && other["cidr"] != s["cidr"] {
                routes.insert(0, format!("{},0.0.0.0", str_of(&other["cidr"])));
            }
        }
        if !routes.is_empty() {
            if let Some(gw) = &gateway {
                routes.push(format!("0.0.0.0/0,{gw}"));
            }
            opts.push(format!(
                "{tag},option:classless-static-route,{}",
                routes.join(",")
            ));
            opts.push(format!("{tag},249,{}", routes.join(",")));
        }
        match &gateway {
            Some(gw) => opts.push(format!("{tag},option:router,{gw}")),
            None => opts.push(format!("{tag},option:router")),
        }
    }
    // Options per port (extra_dhcp_opts), client-id excepted.
    for p in &ports {
        for o in p["extra_dhcp_opts"].as_array().cloned().unwrap_or_default() {
            let name = str_of(&o["opt_name"]);
            if o["ip_version"].as_u64().unwrap_or(4) != 4 || name == "client-id" || name == "61" {
                continue;
            }
            let name = if name.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                format!("option:{name}")
            };
            opts.push(format!(
                "tag:port-{},{name},{}",
                str_of(&p["id"]),
                str_of(&o["opt_value"])
            ));
        }
    }
    conf.opts = opts.join("\n");
    Ok(conf)
}
