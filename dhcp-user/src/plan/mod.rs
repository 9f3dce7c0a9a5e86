//! Neutron's semantics: what one network needs in the fast path's maps.
//!
//! [`Model`] holds the database's networks, subnets and ports; [`Model::plan`]
//! turns one network into its DHCP port's config and one planned lease per
//! port (fixed IP, options blob, host name). [`crate::mapsync::Sync`] writes
//! plans into the maps.

pub mod extra_opts;
pub mod options;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use dhcp_ebpf::{Lease, HOSTNAME_MAX};
use ipnet::{IpNet, Ipv4Net};

use crate::{
    config::AgentConfig,
    neutron::model::{v4, Network, Port, Snapshot, Subnet},
    plan::extra_opts::Encoded,
    plan::options::{ReplyOptions, Route},
};

/// The metadata service's address, routed via the DHCP port on isolated subnets.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Ports remembered at most by [`not_served_is_news`].
const NOT_SERVED_MEMO: usize = 65_536;

/// Whether a port's reason for not being served (`None`: it is served) is
/// news worth a log line: new or changed since the last plan of it. The agent
/// replans every network at each resync; an unservable port is logged once
/// per change, not once per resync.
fn not_served_is_news(port_id: &str, why: Option<&str>) -> bool {
    static LAST: std::sync::Mutex<Option<HashMap<String, String>>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let last = last.get_or_insert_with(HashMap::new);
    let Some(why) = why else {
        if !last.is_empty() {
            last.remove(port_id);
        }
        return false;
    };
    if last.get(port_id).is_some_and(|w| w == why) {
        return false;
    }
    if last.len() >= NOT_SERVED_MEMO && !last.contains_key(port_id) {
        last.clear();
    }
    last.insert(port_id.to_string(), why.to_string());
    true
}

/// The database's contents, indexed for the sync.
#[derive(Debug, Default, Clone)]
pub struct Model {
    pub networks: HashMap<String, Network>,
    pub subnets: HashMap<String, Subnet>,
    /// port id → port; the key is shared with `ports_by_net`.
    pub ports: HashMap<std::sync::Arc<str>, Port>,
    /// network id → ids of its ports, in id order.
    pub ports_by_net: HashMap<String, std::collections::BTreeSet<std::sync::Arc<str>>>,
}

/// An option blob's content, shared by the leases (and the maps' writer)
/// that use it: most ports of a network have the same options.
pub type Blob = std::sync::Arc<[u8]>;

/// One client's entry, before it gets an option-blob id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLease {
    pub port_id: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub lease_secs: u32,
    pub hostname: Vec<u8>,
    pub blob: Blob,
}

impl PlannedLease {
    /// The LEASES map's value for this lease, its blob stored under `opts_id`.
    pub fn map_value(&self, opts_id: u32) -> Lease {
        Lease::new(
            self.ip.octets(),
            self.server_ip.octets(),
            self.siaddr.octets(),
            self.lease_secs,
            opts_id,
            &self.hostname,
        )
    }
}

/// What one served network needs in the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedNet {
    pub network_id: String,
    pub dhcp_port_id: String,
    pub server_mac: [u8; 6],
    /// The DHCP port's IPv4 addresses with their subnets' prefixes.
    pub server_addrs: Vec<Ipv4Net>,
    /// The DHCP port also holds 169.254.169.254/32, as neutron-dhcp-agent
    /// gives it when a metadata proxy belongs in the namespace (isolated
    /// metadata on an isolated subnet, or force_metadata), so that one there
    /// (the haproxy neutron-dhcp-agent left behind, or the operator's) answers.
    pub metadata_addr: bool,
    pub mtu: Option<u32>,
    pub leases: Vec<PlannedLease>,
}

impl Model {
    /// Indexes a snapshot.
    pub fn from_snapshot(s: Snapshot) -> Self {
        let mut m = Model::default();
        for n in s.networks {
            m.networks.insert(n.id.clone(), n);
        }
        for sn in s.subnets {
            m.subnets.insert(sn.id.clone(), sn);
        }
        for p in s.ports {
            m.put_port(p);
        }
        m
    }

    /// Inserts or replaces a port.
    pub fn put_port(&mut self, p: Port) {
        self.remove_port(&p.id);
        let id: std::sync::Arc<str> = p.id.as_str().into();
        self.ports_by_net
            .entry(p.network_id.clone())
            .or_default()
            .insert(id.clone());
        self.ports.insert(id, p);
    }

    /// Removes a port; returns it.
    pub fn remove_port(&mut self, id: &str) -> Option<Port> {
        let old = self.ports.remove(id)?;
        if let Some(set) = self.ports_by_net.get_mut(&old.network_id) {
            set.remove(id);
            if set.is_empty() {
                self.ports_by_net.remove(&old.network_id);
            }
        }
        Some(old)
    }

    /// The ports of a network, in id order (deterministic plans).
    pub fn ports_of(&self, network_id: &str) -> Vec<&Port> {
        self.ports_by_net
            .get(network_id)
            .map(|ids| ids.iter().filter_map(|id| self.ports.get(id)).collect())
            .unwrap_or_default()
    }

    /// The network's IPv4 subnets with DHCP enabled, with their CIDRs.
    fn dhcp_subnets(&self, network_id: &str) -> Vec<(&Subnet, Ipv4Net)> {
        let mut v: Vec<_> = self
            .subnets
            .values()
            .filter(|s| s.network_id == network_id && s.ip_version == 4 && s.enable_dhcp)
            .filter_map(|s| match s.cidr {
                IpNet::V4(cidr) => Some((s, cidr)),
                IpNet::V6(_) => None,
            })
            .collect();
        v.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        v
    }

    /// The network's DHCP port: the first one (by id) that is up.
    pub fn dhcp_port(&self, network_id: &str) -> Option<&Port> {
        self.ports_of(network_id)
            .into_iter()
            .find(|p| p.is_dhcp() && p.admin_state_up)
    }

    /// Everything network `network_id` needs, or `None` when it is not served
    /// (no DHCP port, no DHCP-enabled IPv4 subnet). Ports that cannot be served
    /// (an extra option that does not encode, no server address on their
    /// subnet) are left out with a warning.
    pub fn plan(&self, network_id: &str, cfg: &AgentConfig) -> Option<PlannedNet> {
        let network = self.networks.get(network_id)?;
        let subnets = self.dhcp_subnets(network_id);
        if subnets.is_empty() {
            return None;
        }
        let dhcp = self.dhcp_port(network_id)?;
        let server_mac = dhcp.mac_address.0;
        let server_ip_on = |subnet_id: &str| {
            dhcp.fixed_ips
                .iter()
                .find(|f| f.subnet_id == subnet_id)
                .and_then(|f| v4(&f.ip_address))
        };
        let server_addrs = subnets
            .iter()
            .filter_map(|(s, cidr)| Ipv4Net::new(server_ip_on(&s.id)?, cidr.prefix_len()).ok())
            .collect();
        // Subnets a router is on are not isolated (Neutron's definition).
        let routed: HashSet<&str> = self
            .ports_of(network_id)
            .into_iter()
            .filter(|p| p.is_router())
            .flat_map(|p| p.fixed_ips.iter().map(|f| f.subnet_id.as_str()))
            .collect();
        let mut leases: Vec<PlannedLease> = Vec::new();
        // One copy of each distinct blob for the whole network.
        let mut blobs: HashSet<Blob> = HashSet::new();
        for port in self.ports_of(network_id) {
            if port.is_dhcp() || !port.admin_state_up {
                continue;
            }
            match self.plan_port(port, network, &subnets, &server_ip_on, &routed, cfg) {
                Ok(planned) => {
                    not_served_is_news(&port.id, None);
                    leases.extend(planned.map(|mut l| {
                        match blobs.get(&l.blob[..]) {
                            Some(shared) => l.blob = shared.clone(),
                            None => {
                                blobs.insert(l.blob.clone());
                            }
                        }
                        l
                    }));
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    if not_served_is_news(&port.id, Some(&why)) {
                        tracing::warn!(port = %port.id, network = %network_id, "not served: {why}")
                    }
                }
            }
        }
        Some(PlannedNet {
            network_id: network_id.to_string(),
            dhcp_port_id: dhcp.id.clone(),
            server_mac,
            server_addrs,
            metadata_addr: cfg.force_metadata
                || (cfg.enable_isolated_metadata
                    && subnets.iter().any(|(s, _)| !routed.contains(s.id.as_str()))),
            mtu: network.mtu.filter(|&m| m > 0),
            leases,
        })
    }

    fn plan_port(
        &self,
        port: &Port,
        network: &Network,
        subnets: &[(&Subnet, Ipv4Net)],
        server_ip_on: &dyn Fn(&str) -> Option<Ipv4Addr>,
        routed: &HashSet<&str>,
        cfg: &AgentConfig,
    ) -> Result<Option<PlannedLease>> {
        // The first IPv4 address on a DHCP-enabled subnet, as dnsmasq's hosts file has it.
        let Some((subnet, cidr, ip)) = port.fixed_ips.iter().find_map(|f| {
            let ip = v4(&f.ip_address)?;
            let (s, cidr) = subnets.iter().find(|(s, _)| s.id == f.subnet_id)?;
            Some((*s, *cidr, ip))
        }) else {
            return Ok(None);
        };
        let server_ip = server_ip_on(&subnet.id)
            .with_context(|| format!("the DHCP port has no address on subnet {}", subnet.id))?;
        let isolated = !routed.contains(subnet.id.as_str());
        let lease_secs = cfg.lease_secs();
        let siblings: Vec<Ipv4Net> = subnets.iter().map(|(_, c)| *c).collect();
        let (blob, siaddr) = port_options(
            port, network, subnet, cidr, &siblings, server_ip, isolated, cfg,
        )?;
        Ok(Some(PlannedLease {
            port_id: port.id.clone(),
            mac: port.mac_address.0,
            ip,
            server_ip,
            siaddr,
            lease_secs,
            hostname: hostname(port, ip),
            blob: blob.into(),
        }))
    }
}

/// A port's option blob and siaddr on `subnet` (of CIDR `cidr`, served from
/// `server_ip`; `siblings` the CIDRs of the network's DHCP-enabled IPv4
/// subnets, in the order Neutron lists them, `cidr` among them or not), or why
/// they cannot be encoded (an extra option that does not encode, more than the
/// fast path's blob holds). `xdhcp import` checks ports with it too.
#[allow(clippy::too_many_arguments)]
pub fn port_options(
    port: &Port,
    network: &Network,
    subnet: &Subnet,
    cidr: Ipv4Net,
    siblings: &[Ipv4Net],
    server_ip: Ipv4Addr,
    isolated: bool,
    cfg: &AgentConfig,
) -> Result<(Vec<u8>, Ipv4Addr)> {
    // As neutron/agent/linux/dhcp.py's _generate_opts_per_subnet: a host
    // route to 0.0.0.0/0 is the gateway when the subnet has none (and no
    // route); IPv6 routes have no place in option 121.
    let mut gateway = subnet.gateway_ip.as_ref().and_then(v4);
    let mut routes: Vec<Route> = Vec::new();
    for r in &subnet.host_routes {
        let (IpNet::V4(dest), Some(via)) = (r.destination, v4(&r.nexthop)) else {
            continue;
        };
        if dest.prefix_len() == 0 {
            gateway = gateway.or(Some(via));
        } else {
            routes.push(Route {
                dest: dest.network(),
                prefix: dest.prefix_len(),
                via,
            });
        }
    }
    // The metadata service: via the DHCP port on an isolated subnet, else
    // via the gateway.
    if cfg.force_metadata || (cfg.enable_isolated_metadata && isolated) {
        routes.push(Route {
            dest: METADATA_IP,
            prefix: 32,
            via: server_ip,
        });
    } else if let Some(gw) = gateway.filter(|_| !isolated) {
        routes.push(Route {
            dest: METADATA_IP,
            prefix: 32,
            via: gw,
        });
    }
    // The network's other DHCP subnets are on link: each inserted first.
    for s in siblings.iter().filter(|s| **s != cidr) {
        routes.insert(
            0,
            Route {
                dest: s.network(),
                prefix: s.prefix_len(),
                via: Ipv4Addr::UNSPECIFIED,
            },
        );
    }
    let mut dns: Vec<Ipv4Addr> = subnet.dns_nameservers.iter().filter_map(v4).collect();
    if dns.is_empty() {
        dns = cfg.dnsmasq_dns_servers.clone();
    }
    let mut siaddr = Ipv4Addr::UNSPECIFIED;
    let mut extra = Vec::new();
    // The agent's own options first: a port's of the same code replace them.
    for (name, value) in &cfg.extra_options {
        match extra_opts::encode(name, value)
            .with_context(|| format!("dnsmasq_config_file option {name},{value}"))?
        {
            Encoded::Option(code, value) => extra.push((code, value)),
            Encoded::Siaddr(a) => siaddr = a,
        }
    }
    for o in port.extra_dhcp_opts.iter().filter(|o| o.ip_version == 4) {
        match extra_opts::encode(&o.opt_name, &o.opt_value)
            .with_context(|| format!("extra_dhcp_opt {}={}", o.opt_name, o.opt_value))?
        {
            Encoded::Option(code, value) => extra.push((code, value)),
            Encoded::Siaddr(a) => siaddr = a,
        }
    }
    let blob = ReplyOptions {
        lease_secs: cfg.lease_secs(),
        prefix_len: cidr.prefix_len(),
        router: gateway,
        dns,
        // dnsmasq's --domain drops a trailing dot (Neutron's docs write one).
        domain: Some(cfg.dns_domain.trim_end_matches('.'))
            .filter(|d| !d.is_empty())
            .map(String::from),
        mtu: network
            .mtu
            .filter(|&m| m > 0)
            .and_then(|m| u16::try_from(m).ok()),
        broadcast: Some(cidr.broadcast()),
        routes,
        extra,
    }
    .encode()?;
    Ok((blob, siaddr))
}

/// Option 12 as Neutron's dnsmasq sends it: the dns_name's first label
/// (dnsmasq strips the domain), else `host-a-b-c-d`. A name that is no DNS
/// label (a row another writer put there: import refuses it) is not sent as
/// is: the port gets `host-a-b-c-d`, as if it had none. A label is ASCII and at
/// most 63 bytes, so it fits [`HOSTNAME_MAX`] whole.
pub fn hostname(port: &Port, ip: Ipv4Addr) -> Vec<u8> {
    let label = port
        .dns_name
        .as_deref()
        .and_then(|n| n.split('.').next())
        .filter(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    let name = match label {
        Some(l) => l.to_string(),
        None => format!("host-{}", ip.to_string().replace('.', "-")),
    };
    let mut b = name.into_bytes();
    b.truncate(HOSTNAME_MAX);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slowpath::reply::tlvs;

    const NETWORK_ID: &str = "net-1";

    /// A network with one subnet, a DHCP port, a VM port and (optionally) a router port.
    fn model(edit: impl FnOnce(&mut serde_json::Value)) -> Model {
        let mut doc = serde_json::json!({
            "networks": [{"id": NETWORK_ID, "name": "n", "mtu": 1450}],
            "subnets": [{"id": "sub-1", "network_id": NETWORK_ID, "ip_version": 4, "cidr": "10.0.0.0/24",
                         "gateway_ip": "10.0.0.1", "enable_dhcp": true, "dns_nameservers": ["10.0.0.53"],
                         "host_routes": [], "allocation_pools": []}],
            "ports": [
                {"id": "dhcp-1", "network_id": NETWORK_ID, "mac_address": "fa:16:3e:00:00:02", "device_owner": "network:dhcp",
                 "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "10.0.0.2"}]},
                {"id": "vm-1", "network_id": NETWORK_ID, "mac_address": "fa:16:3e:00:00:05", "device_owner": "compute:nova",
                 "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "10.0.0.5"}]}
            ]
        });
        edit(&mut doc);
        let d = crate::neutron::import::parse(&doc.to_string()).expect("test document");
        Model::from_snapshot(Snapshot {
            networks: d.networks,
            subnets: d.subnets,
            ports: d.ports,
        })
    }

    /// Log lines written while `f` runs on this thread.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_dhcp_port_holds_the_metadata_address_where_neutron_gives_it() {
        let isolated = AgentConfig {
            enable_isolated_metadata: true,
            ..AgentConfig::default()
        };
        let forced = AgentConfig {
            force_metadata: true,
            ..AgentConfig::default()
        };
        let def = AgentConfig::default();
        let has = |m: &Model, cfg: &AgentConfig| m.plan(NETWORK_ID, cfg).unwrap().metadata_addr;
        assert!(
            has(&model(|_| {}), &isolated),
            "isolated subnet, isolated metadata"
        );
        assert!(!has(&model(|_| {}), &def), "metadata off");
        assert!(
            !has(&model(router_port), &isolated),
            "the only subnet is routed"
        );
        assert!(has(&model(router_port), &forced), "force_metadata");
    }

    #[test]
    fn an_unservable_port_is_logged_once_per_change_not_per_replan() {
        let cfg = AgentConfig::default();
        let port_id = "vm-logged-once";
        let with_opts = |opts: serde_json::Value| {
            model(|d| {
                d["ports"][1]["id"] = serde_json::json!(port_id);
                d["ports"][1]["extra_dhcp_opts"] = opts;
            })
        };
        // 30 options of 250 bytes: far over the 1024-byte blob.
        let big: Vec<_> = (0..30)
            .map(|i| serde_json::json!({"opt_name": (200 + i).to_string(), "opt_value": "x".repeat(250)}))
            .collect();
        let broken = with_opts(serde_json::json!(big));
        let lines = |m: &Model, times: usize| {
            logged(|| {
                for _ in 0..times {
                    let net = m.plan(NETWORK_ID, &cfg).expect("the network is served");
                    assert!(net.leases.is_empty(), "the port is left out");
                }
            })
            .lines()
            .filter(|l| l.contains("not served") && l.contains(port_id))
            .count()
        };
        assert_eq!(lines(&broken, 5), 1, "five replans, one line");
        assert_eq!(lines(&broken, 3), 0, "still the same reason");
        // Another reason is news; so is the same one after the port was served.
        let other = with_opts(serde_json::json!(big[..20]));
        assert_eq!(lines(&other, 2), 1, "a changed reason is logged");
        let fixed = with_opts(serde_json::json!([]));
        let served = logged(|| {
            let net = fixed.plan(NETWORK_ID, &cfg).unwrap();
            assert_eq!(net.leases.len(), 1, "served again");
        });
        assert!(!served.contains("not served"), "{served}");
        assert_eq!(lines(&broken, 2), 1, "broken again after being served");
    }

    fn router_port(doc: &mut serde_json::Value) {
        doc["ports"].as_array_mut().unwrap().push(serde_json::json!(
            {"id": "rtr-1", "network_id": NETWORK_ID, "mac_address": "fa:16:3e:00:00:01",
             "device_owner": "network:router_interface", "fixed_ips": [{"subnet_id": "sub-1", "ip_address": "10.0.0.1"}]}));
    }

    fn option(l: &PlannedLease, code: u8) -> Option<Vec<u8>> {
        tlvs(&l.blob)
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.to_vec())
    }

    fn vm(m: &Model, cfg: &AgentConfig) -> Option<PlannedLease> {
        m.plan(NETWORK_ID, cfg)?
            .leases
            .into_iter()
            .find(|l| l.port_id == "vm-1")
    }

    const METADATA_ROUTE: [u8; 9] = [32, 169, 254, 169, 254, 10, 0, 0, 2];
    /// 121 on a routed subnet: the metadata route via the router, then the default route.
    const METADATA_VIA_ROUTER: &[u8] = &[32, 169, 254, 169, 254, 10, 0, 0, 1, 0, 10, 0, 0, 1];

    #[test]
    fn plans_follow_neutron_semantics() {
        let isolated = AgentConfig {
            enable_isolated_metadata: true,
            ..Default::default()
        };
        let forced = AgentConfig {
            force_metadata: true,
            ..Default::default()
        };
        let agent_dns = AgentConfig {
            dnsmasq_dns_servers: vec![Ipv4Addr::new(8, 8, 8, 8)],
            ..Default::default()
        };
        let def = AgentConfig::default();
        let infinite = AgentConfig {
            dhcp_lease_duration: -1,
            ..Default::default()
        };
        type Check = fn(Option<PlannedLease>) -> bool;
        let cases: Vec<(&str, Model, &AgentConfig, Check)> = vec![
            (
                "a VM port gets its fixed IP and the DHCP port's IP as server id",
                model(|_| {}),
                &def,
                |l| {
                    l.is_some_and(|l| {
                        l.ip == Ipv4Addr::new(10, 0, 0, 5)
                            && l.server_ip == Ipv4Addr::new(10, 0, 0, 2)
                    })
                },
            ),
            (
                "a port that is down is not answered",
                model(|d| d["ports"][1]["admin_state_up"] = false.into()),
                &def,
                |l| l.is_none(),
            ),
            (
                "a subnet with enable_dhcp false is not served",
                model(|d| d["subnets"][0]["enable_dhcp"] = false.into()),
                &def,
                |l| l.is_none(),
            ),
            (
                "a network without a DHCP port is not served",
                model(|d| {
                    d["ports"].as_array_mut().unwrap().remove(0);
                }),
                &def,
                |l| l.is_none(),
            ),
            (
                "the network's MTU goes out as option 26",
                model(|_| {}),
                &def,
                |l| option(&l.unwrap(), 26) == Some(vec![0x05, 0xaa]),
            ),
            (
                "mtu 0 (Neutron's unknown) sends no option 26, as the dnsmasq driver",
                model(|d| d["networks"][0]["mtu"] = serde_json::json!(0)),
                &def,
                |l| option(&l.unwrap(), 26).is_none(),
            ),
            (
                "a second DHCP subnet on the network is an on-link route, first in 121",
                model(|d| {
                    d["subnets"].as_array_mut().unwrap().push(serde_json::json!(
                        {"id": "sub-2", "network_id": NETWORK_ID, "ip_version": 4, "cidr": "10.1.0.0/24",
                         "gateway_ip": null, "enable_dhcp": true}));
                }),
                &isolated,
                |l| {
                    option(&l.unwrap(), 121)
                        == Some(
                            [
                                &[24, 10, 1, 0, 0, 0, 0, 0][..],
                                &[32, 169, 254, 169, 254, 10, 0, 0, 2],
                                &[0, 10, 0, 0, 1],
                            ]
                            .concat(),
                        )
                },
            ),
            (
                "a routed subnet: the metadata route goes via its gateway",
                model(router_port),
                &def,
                |l| option(&l.unwrap(), 121).as_deref() == Some(METADATA_VIA_ROUTER),
            ),
            (
                "a 0.0.0.0/0 host route is the router of a subnet without gateway_ip",
                model(|d| {
                    d["subnets"][0]["gateway_ip"] = serde_json::Value::Null;
                    d["subnets"][0]["host_routes"] =
                        serde_json::json!([{"destination": "0.0.0.0/0", "nexthop": "10.0.0.254"}]);
                }),
                &def,
                |l| {
                    let l = l.unwrap();
                    option(&l, 3) == Some(vec![10, 0, 0, 254]) && option(&l, 121).is_none()
                },
            ),
            (
                "the subnet's DNS servers go out as option 6",
                model(|_| {}),
                &def,
                |l| option(&l.unwrap(), 6) == Some(vec![10, 0, 0, 53]),
            ),
            (
                "dnsmasq_dns_servers when the subnet has none",
                model(|d| d["subnets"][0]["dns_nameservers"] = serde_json::json!([])),
                &agent_dns,
                |l| option(&l.unwrap(), 6) == Some(vec![8, 8, 8, 8]),
            ),
            (
                "isolated metadata: an isolated subnet gets 169.254.169.254/32 via the DHCP port",
                model(|_| {}),
                &isolated,
                |l| {
                    option(&l.unwrap(), 121)
                        .is_some_and(|v| v.windows(9).any(|w| w == METADATA_ROUTE))
                },
            ),
            (
                "isolated metadata: a routed subnet's metadata route is via its router",
                model(router_port),
                &isolated,
                |l| option(&l.unwrap(), 121).as_deref() == Some(METADATA_VIA_ROUTER),
            ),
            (
                "force_metadata: the route even with a router",
                model(router_port),
                &forced,
                |l| {
                    option(&l.unwrap(), 121)
                        .is_some_and(|v| v.windows(9).any(|w| w == METADATA_ROUTE))
                },
            ),
            (
                "121 carries the default route too (RFC 3442), and 249 the same",
                model(|_| {}),
                &isolated,
                |l| {
                    let l = l.unwrap();
                    option(&l, 121).is_some_and(|v| v.ends_with(&[0, 10, 0, 0, 1]))
                        && option(&l, 121) == option(&l, 249)
                },
            ),
            (
                "the subnet's IPv4 host routes go out in 121; an IPv6 one does not",
                model(|d| {
                    d["subnets"][0]["host_routes"] = serde_json::json!([
                        {"destination": "192.168.7.0/24", "nexthop": "10.0.0.254"},
                        {"destination": "fd00:7::/64", "nexthop": "fd00::1"}
                    ])
                }),
                &def,
                |l| {
                    option(&l.unwrap(), 121)
                        == Some(vec![24, 192, 168, 7, 10, 0, 0, 254, 0, 10, 0, 0, 1])
                },
            ),
            (
                "host name host-a-b-c-d without dns_name",
                model(|_| {}),
                &def,
                |l| l.unwrap().hostname == b"host-10-0-0-5",
            ),
            (
                "dns_name when set",
                model(|d| d["ports"][1]["dns_name"] = "web-1".into()),
                &def,
                |l| l.unwrap().hostname == b"web-1",
            ),
            (
                "an FQDN dns_name sends its first label, as dnsmasq strips the domain",
                model(|d| d["ports"][1]["dns_name"] = "web-1.cloud.example.".into()),
                &def,
                |l| l.unwrap().hostname == b"web-1",
            ),
            (
                "a dns_name Neutron refuses (;, newline, NUL: another writer's) is host-a-b-c-d",
                model(|d| d["ports"][1]["dns_name"] = "web;1\n\u{0}".into()),
                &def,
                |l| l.unwrap().hostname == b"host-10-0-0-5",
            ),
            (
                "a name that is no DNS label is never cut inside a UTF-8 character",
                model(|d| d["ports"][1]["dns_name"] = format!("{}é", "a".repeat(63)).into()),
                &def,
                |l| l.unwrap().hostname == b"host-10-0-0-5",
            ),
            (
                "extra_dhcp_opts: tftp-server is option 66, NUL-terminated as dnsmasq does",
                model(|d| {
                    d["ports"][1]["extra_dhcp_opts"] =
                        serde_json::json!([{"opt_name": "tftp-server", "opt_value": "10.0.0.9"}])
                }),
                &def,
                |l| option(&l.unwrap(), 66) == Some(b"10.0.0.9\0".to_vec()),
            ),
            (
                "extra_dhcp_opts: server-ip-address is siaddr",
                model(
                    |d| d["ports"][1]["extra_dhcp_opts"] = serde_json::json!([{"opt_name": "server-ip-address", "opt_value": "10.0.0.9"}]),
                ),
                &def,
                |l| l.unwrap().siaddr == Ipv4Addr::new(10, 0, 0, 9),
            ),
            (
                "dhcp_lease_duration -1 is an infinite lease",
                model(|_| {}),
                &infinite,
                |l| l.unwrap().lease_secs == dhcp_ebpf::LEASE_INFINITE,
            ),
        ];
        for (what, m, cfg, check) in cases {
            assert!(check(vm(&m, cfg)), "{what}: {:?}", vm(&m, cfg));
        }
    }
}
