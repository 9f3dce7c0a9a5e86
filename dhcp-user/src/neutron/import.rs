//! Reading and checking what `xdhcp import FILE` reads: the JSON that
//! Neutron's API returns, `{"networks": [...], "subnets": [...], "ports": [...]}`.
//!
//! `parse` walks a `serde_json::Value` by hand (rather than deriving) so that
//! every error names the object (`ports[2] (id …)`) and the field. Fields of
//! Neutron's objects that xdhcp does not use are ignored; unknown top-level
//! keys are an error. `validate` then checks references and containment
//! against the database plus the document.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::neutron::model::{
    format_mac, parse_mac, AllocationPool, ExtraDhcpOpt, FixedIp, HostRoute, ImportDoc, Network,
    Port, Snapshot, Subnet,
};
use crate::plan::extra_opts;

/// The top-level keys an import document may have.
const TOP_KEYS: [&str; 3] = ["networks", "subnets", "ports"];

/// Parses an import document, checking each field's type and format.
///
/// MAC addresses are normalised to Neutron's form (lower case, ':'), and an
/// empty `dns_name` (as Neutron returns for ports without one) becomes `None`.
pub fn parse(json: &str) -> Result<ImportDoc> {
    let value: Value = serde_json::from_str(json).context("the document is not valid JSON")?;
    let top = value
        .as_object()
        .ok_or_else(|| anyhow!("the document is not a JSON object"))?;
    for key in top.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            bail!("unknown top-level key {key:?} (expected networks, subnets, ports)");
        }
    }
    Ok(ImportDoc {
        networks: list(top, "networks")?
            .iter()
            .map(parse_network)
            .collect::<Result<_>>()?,
        subnets: list(top, "subnets")?
            .iter()
            .map(parse_subnet)
            .collect::<Result<_>>()?,
        ports: list(top, "ports")?
            .iter()
            .map(parse_port)
            .collect::<Result<_>>()?,
    })
}

/// Checks a document against the database contents plus the document itself.
///
/// Objects of the document replace those of the database with the same id,
/// so the checks see the state the import would leave.
pub fn validate(doc: &ImportDoc, existing: &Snapshot) -> Result<()> {
    let net_names = names("networks", doc.networks.iter().map(|n| n.id.as_str()))?;
    let subnet_names = names("subnets", doc.subnets.iter().map(|s| s.id.as_str()))?;
    let port_names = names("ports", doc.ports.iter().map(|p| p.id.as_str()))?;

    let networks: HashSet<&str> = existing
        .networks
        .iter()
        .chain(&doc.networks)
        .map(|n| n.id.as_str())
        .collect();
    let subnets: HashMap<&str, &Subnet> = existing
        .subnets
        .iter()
        .chain(&doc.subnets)
        .map(|s| (s.id.as_str(), s))
        .collect();

    for (n, name) in doc.networks.iter().zip(&net_names) {
        if n.mtu == Some(0) {
            bail!("{name}: mtu 0 is not an MTU");
        }
    }
    for (s, name) in doc.subnets.iter().zip(&subnet_names) {
        check_subnet(name, s, &networks)?;
    }
    for (p, name) in doc.ports.iter().zip(&port_names) {
        check_port(name, p, &networks, &subnets)?;
    }

    // Ports already stored stay valid only if the subnets this document changes still hold them.
    let doc_ports: HashSet<&str> = doc.ports.iter().map(|p| p.id.as_str()).collect();
    let doc_subnets: HashSet<&str> = doc.subnets.iter().map(|s| s.id.as_str()).collect();
    let kept_ports: Vec<&Port> = existing
        .ports
        .iter()
        .filter(|p| !doc_ports.contains(p.id.as_str()))
        .collect();
    for p in &kept_ports {
        if p.fixed_ips
            .iter()
            .any(|f| doc_subnets.contains(f.subnet_id.as_str()))
        {
            check_fixed_ips(&format!("port {} (in the database)", p.id), p, &subnets)?;
        }
    }

    // One MAC per network: the stored ports the document keeps, then the document's.
    let mut macs: HashMap<(&str, [u8; 6]), String> = HashMap::new();
    for p in kept_ports {
        if let Some(mac) = parse_mac(&p.mac_address) {
            macs.insert((&p.network_id, mac), format!("port {}", p.id));
        }
    }
    for (p, name) in doc.ports.iter().zip(&port_names) {
        let mac = parse_mac(&p.mac_address).expect("checked by check_port");
        if let Some(other) = macs.insert((&p.network_id, mac), name.clone()) {
            bail!(
                "{name}: mac_address {} is already used by {other} on network {}",
                p.mac_address,
                p.network_id
            );
        }
    }
    Ok(())
}

/// How errors name the objects of one list; an error when an id appears twice.
fn names<'a>(list: &str, ids: impl Iterator<Item = &'a str>) -> Result<Vec<String>> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, id) in ids.enumerate() {
        let name = format!("{list}[{i}] (id {id})");
        if id.is_empty() {
            bail!("{list}[{i}]: id is empty");
        }
        if let Some(j) = first.insert(id, i) {
            bail!("{name}: id is also that of {list}[{j}]");
        }
        out.push(name);
    }
    Ok(out)
}

fn check_subnet(name: &str, s: &Subnet, networks: &HashSet<&str>) -> Result<()> {
    if !networks.contains(s.network_id.as_str()) {
        bail!(
            "{name}: network_id {:?} is not a known network",
            s.network_id
        );
    }
    let net = subnet_cidr(s).map_err(|e| anyhow!("{name}: {e}"))?;
    if let Some(gw) = s.gateway_ip {
        if !net.contains(&gw) {
            bail!("{name}: gateway_ip {gw} is outside cidr {net}");
        }
    }
    for (i, pool) in s.allocation_pools.iter().enumerate() {
        for (field, ip) in [("start", pool.start), ("end", pool.end)] {
            if !net.contains(&ip) {
                bail!("{name}: allocation_pools[{i}].{field} {ip} is outside cidr {net}");
            }
        }
        if pool.start > pool.end {
            bail!(
                "{name}: allocation_pools[{i}] start {} is after end {}",
                pool.start,
                pool.end
            );
        }
    }
    for (i, route) in s.host_routes.iter().enumerate() {
        if route.destination.parse::<IpNet>().is_err() {
            bail!(
                "{name}: host_routes[{i}].destination {:?} is not a CIDR",
                route.destination
            );
        }
    }
    Ok(())
}

/// A subnet's CIDR, checked against its ip_version; errors name the field.
fn subnet_cidr(s: &Subnet) -> Result<IpNet> {
    let net: IpNet = s
        .cidr
        .parse()
        .map_err(|_| anyhow!("cidr {:?} is not a CIDR", s.cidr))?;
    match (s.ip_version, net) {
        (4, IpNet::V4(_)) | (6, IpNet::V6(_)) => {}
        (4 | 6, _) => bail!(
            "cidr {:?} is not an IPv{} network (ip_version {})",
            s.cidr,
            s.ip_version,
            s.ip_version
        ),
        (v, _) => bail!("ip_version {v} is not 4 or 6"),
    }
    if net.trunc() != net {
        bail!(
            "cidr {:?} has host bits set (the network is {})",
            s.cidr,
            net.trunc()
        );
    }
    Ok(net)
}

fn check_port(
    name: &str,
    p: &Port,
    networks: &HashSet<&str>,
    subnets: &HashMap<&str, &Subnet>,
) -> Result<()> {
    if !networks.contains(p.network_id.as_str()) {
        bail!(
            "{name}: network_id {:?} is not a known network",
            p.network_id
        );
    }
    if parse_mac(&p.mac_address).is_none() {
        bail!(
            "{name}: mac_address {:?} is not a MAC address",
            p.mac_address
        );
    }
    check_fixed_ips(name, p, subnets)?;
    for (i, opt) in p.extra_dhcp_opts.iter().enumerate() {
        match opt.ip_version {
            4 => {
                extra_opts::encode(&opt.opt_name, &opt.opt_value).map_err(|e| {
                    anyhow!(
                        "{name}: extra_dhcp_opts[{i}] ({}={:?}): {e:#}",
                        opt.opt_name,
                        opt.opt_value
                    )
                })?;
            }
            // Stored but not served: nothing to encode them with.
            6 => {}
            v => bail!("{name}: extra_dhcp_opts[{i}].ip_version {v} is not 4 or 6"),
        }
    }
    Ok(())
}

fn check_fixed_ips(name: &str, p: &Port, subnets: &HashMap<&str, &Subnet>) -> Result<()> {
    for (i, f) in p.fixed_ips.iter().enumerate() {
        let Some(s) = subnets.get(f.subnet_id.as_str()) else {
            bail!(
                "{name}: fixed_ips[{i}].subnet_id {:?} is not a known subnet",
                f.subnet_id
            );
        };
        if s.network_id != p.network_id {
            bail!(
                "{name}: fixed_ips[{i}].subnet_id {:?} is a subnet of network {}, not of the port's network {}",
                f.subnet_id,
                s.network_id,
                p.network_id
            );
        }
        let net =
            subnet_cidr(s).map_err(|e| anyhow!("{name}: fixed_ips[{i}]: subnet {}: {e}", s.id))?;
        if !net.contains(&f.ip_address) {
            bail!(
                "{name}: fixed_ips[{i}].ip_address {} is outside cidr {net} of subnet {}",
                f.ip_address,
                s.id
            );
        }
    }
    Ok(())
}

/// The objects of one top-level list; a missing or null list is empty.
fn list<'a>(top: &'a Map<String, Value>, key: &str) -> Result<Vec<Obj<'a>>> {
    match top.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Obj::top(key, i, v))
            .collect(),
        Some(_) => bail!("{key} is not a list"),
    }
}

fn parse_network(o: &Obj) -> Result<Network> {
    Ok(Network {
        id: o.req_str("id")?,
        name: o.opt_str("name")?.unwrap_or_default(),
        mtu: o.opt_u32("mtu")?,
    })
}

fn parse_subnet(o: &Obj) -> Result<Subnet> {
    let ip_version = o.ip_version()?;
    let cidr = o.req_str("cidr")?;
    let net: IpNet = cidr
        .parse()
        .map_err(|_| o.err("cidr", format!("{cidr:?} is not a CIDR")))?;
    if matches!((ip_version, net), (4, IpNet::V6(_)) | (6, IpNet::V4(_))) {
        return Err(o.err(
            "cidr",
            format!("{cidr:?} is not an IPv{ip_version} network (ip_version {ip_version})"),
        ));
    }
    let dns_nameservers = o
        .array("dns_nameservers")?
        .iter()
        .enumerate()
        .map(|(i, v)| ip_of(v).ok_or_else(|| o.err(&format!("dns_nameservers[{i}]"), bad_ip(v))))
        .collect::<Result<_>>()?;
    let host_routes = o
        .objects("host_routes")?
        .iter()
        .map(|r| {
            let destination = r.req_str("destination")?;
            if destination.parse::<IpNet>().is_err() {
                return Err(r.err("destination", format!("{destination:?} is not a CIDR")));
            }
            Ok(HostRoute {
                destination,
                nexthop: r.req_ip("nexthop")?,
            })
        })
        .collect::<Result<_>>()?;
    let allocation_pools = o
        .objects("allocation_pools")?
        .iter()
        .map(|p| {
            Ok(AllocationPool {
                start: p.req_ip("start")?,
                end: p.req_ip("end")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Subnet {
        id: o.req_str("id")?,
        network_id: o.req_str("network_id")?,
        ip_version,
        cidr,
        gateway_ip: o.opt_ip("gateway_ip")?,
        enable_dhcp: o.bool_or("enable_dhcp", true)?,
        dns_nameservers,
        host_routes,
        allocation_pools,
    })
}

fn parse_port(o: &Obj) -> Result<Port> {
    let mac = o.req_str("mac_address")?;
    let mac_address = parse_mac(&mac)
        .map(|m| format_mac(&m))
        .ok_or_else(|| o.err("mac_address", format!("{mac:?} is not a MAC address")))?;
    let fixed_ips = o
        .objects("fixed_ips")?
        .iter()
        .map(|f| {
            Ok(FixedIp {
                subnet_id: f.req_str("subnet_id")?,
                ip_address: f.req_ip("ip_address")?,
            })
        })
        .collect::<Result<_>>()?;
    let extra_dhcp_opts = o
        .objects("extra_dhcp_opts")?
        .iter()
        .map(|x| {
            Ok(ExtraDhcpOpt {
                opt_name: x.req_str("opt_name")?,
                opt_value: x.req_str("opt_value")?,
                ip_version: x.ip_version()?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Port {
        id: o.req_str("id")?,
        network_id: o.req_str("network_id")?,
        mac_address,
        fixed_ips,
        device_owner: o.opt_str("device_owner")?.unwrap_or_default(),
        dns_name: o.opt_str("dns_name")?.filter(|s| !s.is_empty()),
        extra_dhcp_opts,
        admin_state_up: o.bool_or("admin_state_up", true)?,
    })
}

fn ip_of(v: &Value) -> Option<IpAddr> {
    v.as_str()?.parse().ok()
}

fn bad_ip(v: &Value) -> String {
    format!("{v} is not an IP address")
}

/// One JSON object of the document, and how errors name it and its fields.
struct Obj<'a> {
    /// "ports[2] (id 5e1c…)".
    name: String,
    /// Path of a nested object inside its top-level one: "fixed_ips[0].".
    prefix: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn top(list: &str, i: usize, v: &'a Value) -> Result<Obj<'a>> {
        let map = v
            .as_object()
            .ok_or_else(|| anyhow!("{list}[{i}] is not an object"))?;
        let name = match map.get("id").and_then(Value::as_str) {
            Some(id) => format!("{list}[{i}] (id {id})"),
            None => format!("{list}[{i}]"),
        };
        Ok(Obj {
            name,
            prefix: String::new(),
            map,
        })
    }

    fn err(&self, field: &str, msg: impl Display) -> anyhow::Error {
        anyhow!("{}: {}{field} {msg}", self.name, self.prefix)
    }

    /// A field's value; null counts as missing.
    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn req_str(&self, field: &str) -> Result<String> {
        match self.opt_str(field)? {
            None => Err(self.err(field, "is missing")),
            Some(s) if s.is_empty() => Err(self.err(field, "is empty")),
            Some(s) => Ok(s),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<String>> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.err(field, format!("{v} is not a string"))),
        }
    }

    fn bool_or(&self, field: &str, default: bool) -> Result<bool> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(field, format!("{v} is not true or false"))),
        }
    }

    fn opt_u32(&self, field: &str) -> Result<Option<u32>> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(field, format!("{v} is not a number in 0..=4294967295"))),
        }
    }

    /// `ip_version`: 4 when missing, else 4 or 6.
    fn ip_version(&self) -> Result<u8> {
        match self.get("ip_version") {
            None => Ok(4),
            Some(v) => match v.as_u64() {
                Some(4) => Ok(4),
                Some(6) => Ok(6),
                _ => Err(self.err("ip_version", format!("{v} is not 4 or 6"))),
            },
        }
    }

    fn opt_ip(&self, field: &str) -> Result<Option<IpAddr>> {
        self.get(field)
            .map(|v| ip_of(v).ok_or_else(|| self.err(field, bad_ip(v))))
            .transpose()
    }

    fn req_ip(&self, field: &str) -> Result<IpAddr> {
        self.opt_ip(field)?
            .ok_or_else(|| self.err(field, "is missing"))
    }

    /// A list field; missing or null is empty.
    fn array(&self, field: &str) -> Result<&'a [Value]> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(v) => Err(self.err(field, format!("{v} is not a list"))),
        }
    }

    /// A list field of objects, each named by its path.
    fn objects(&self, field: &str) -> Result<Vec<Obj<'a>>> {
        self.array(field)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let path = format!("{}{field}[{i}]", self.prefix);
                let map = v
                    .as_object()
                    .ok_or_else(|| anyhow!("{}: {path} is not an object", self.name))?;
                Ok(Obj {
                    name: self.name.clone(),
                    prefix: format!("{path}."),
                    map,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = "4a1b7c3e-0000-4000-8000-000000000001";
    const SUB: &str = "9d2c0f1a-0000-4000-8000-000000000002";

    /// A good document in Neutron's shape, with fields xdhcp ignores.
    fn good_json() -> String {
        format!(
            r#"{{
  "networks": [{{"id": "{NET}", "name": "private", "mtu": 1450, "status": "ACTIVE", "shared": false}}],
  "subnets": [{{"id": "{SUB}", "network_id": "{NET}", "ip_version": 4, "cidr": "10.0.0.0/24",
               "gateway_ip": "10.0.0.1", "enable_dhcp": true, "dns_nameservers": ["8.8.8.8"],
               "host_routes": [{{"destination": "192.168.7.0/24", "nexthop": "10.0.0.254"}}],
               "allocation_pools": [{{"start": "10.0.0.2", "end": "10.0.0.200"}}],
               "ipv6_ra_mode": null, "tenant_id": "t"}},
              {{"id": "v6sub", "network_id": "{NET}", "ip_version": 6, "cidr": "fd00::/64",
               "gateway_ip": null}}],
  "ports": [{{"id": "port-a", "network_id": "{NET}", "mac_address": "FA:16:3E:00:00:01",
             "fixed_ips": [{{"subnet_id": "{SUB}", "ip_address": "10.0.0.5"}},
                           {{"subnet_id": "v6sub", "ip_address": "fd00::5"}}],
             "device_owner": "compute:nova", "dns_name": "",
             "extra_dhcp_opts": [{{"opt_name": "tftp-server", "opt_value": "10.0.0.9", "ip_version": 4}},
                                 {{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}}],
             "admin_state_up": true, "binding:host_id": "h1"}},
            {{"id": "port-dhcp", "network_id": "{NET}", "mac_address": "fa:16:3e:00:00:02",
             "fixed_ips": [{{"subnet_id": "{SUB}", "ip_address": "10.0.0.2"}}],
             "device_owner": "network:dhcp", "dns_name": "host-2"}}]
}}"#
        )
    }

    #[test]
    fn parses_neutron_json() {
        let doc = parse(&good_json()).unwrap();
        assert_eq!(doc.networks.len(), 1);
        assert_eq!(doc.networks[0].mtu, Some(1450));
        assert_eq!(doc.subnets.len(), 2);
        let s = &doc.subnets[0];
        assert_eq!(s.gateway_ip, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(s.host_routes[0].destination, "192.168.7.0/24");
        assert_eq!(doc.subnets[1].gateway_ip, None);
        let p = &doc.ports[0];
        assert_eq!(p.mac_address, "fa:16:3e:00:00:01", "MAC is normalised");
        assert_eq!(p.dns_name, None, "empty dns_name is None");
        assert_eq!(
            p.extra_dhcp_opts[1].ip_version, 4,
            "ip_version defaults to 4"
        );
        assert!(doc.ports[1].is_dhcp());
        assert_eq!(doc.ports[1].dns_name.as_deref(), Some("host-2"));
        validate(&doc, &Snapshot::default()).unwrap();
    }

    #[test]
    fn any_subset_of_keys() {
        assert_eq!(parse("{}").unwrap(), ImportDoc::default());
        let doc = parse(r#"{"networks": [{"id": "n"}]}"#).unwrap();
        assert_eq!(doc.networks[0].name, "");
        assert!(doc.ports.is_empty());
    }

    /// `validate` also checks the formats `parse` checks, for documents built in code.
    #[test]
    fn validate_rejects_built_documents() {
        let good = parse(&good_json()).unwrap();
        type Edit = fn(&mut ImportDoc);
        let cases: &[(&str, Edit, &str)] = &[
            (
                "ip_version 7",
                |d| d.subnets[0].ip_version = 7,
                "ip_version 7 is not 4 or 6",
            ),
            (
                "malformed MAC",
                |d| d.ports[1].mac_address = "fa:16".into(),
                r#"ports[1] (id port-dhcp): mac_address "fa:16" is not a MAC address"#,
            ),
            (
                "malformed CIDR",
                |d| d.subnets[1].cidr = "fd00::".into(),
                r#"subnets[1] (id v6sub): cidr "fd00::" is not a CIDR"#,
            ),
            (
                "extra option ip_version 5",
                |d| d.ports[0].extra_dhcp_opts[0].ip_version = 5,
                "ports[0] (id port-a): extra_dhcp_opts[0].ip_version 5 is not 4 or 6",
            ),
            (
                "empty id",
                |d| d.networks[0].id.clear(),
                "networks[0]: id is empty",
            ),
        ];
        for (what, edit, want) in cases {
            let mut doc = good.clone();
            edit(&mut doc);
            let err = format!("{:#}", validate(&doc, &Snapshot::default()).unwrap_err());
            assert!(
                err.contains(want),
                "{what}: error {err:?} does not contain {want:?}"
            );
        }
    }

    /// Documents `parse` must reject: (what is wrong, JSON, text the error must contain).
    #[test]
    fn parse_rejects() {
        let cases: &[(&str, &str, &str)] = &[
            ("not JSON", "{", "not valid JSON"),
            ("not an object", "[]", "not a JSON object"),
            (
                "unknown top-level key",
                r#"{"routers": []}"#,
                r#"unknown top-level key "routers""#,
            ),
            (
                "list is not a list",
                r#"{"ports": {}}"#,
                "ports is not a list",
            ),
            (
                "network without id",
                r#"{"networks": [{"name": "x"}]}"#,
                "networks[0]: id is missing",
            ),
            (
                "network id not a string",
                r#"{"networks": [{"id": 5}]}"#,
                "networks[0]: id 5 is not a string",
            ),
            (
                "bad mtu",
                r#"{"networks": [{"id": "n", "mtu": -1}]}"#,
                "networks[0] (id n): mtu -1 is not a number",
            ),
            (
                "subnet without cidr",
                r#"{"subnets": [{"id": "s", "network_id": "n"}]}"#,
                "subnets[0] (id s): cidr is missing",
            ),
            (
                "subnet without network_id",
                r#"{"subnets": [{"id": "s", "cidr": "10.0.0.0/24"}]}"#,
                "subnets[0] (id s): network_id is missing",
            ),
            (
                "malformed cidr",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/33"}]}"#,
                r#"subnets[0] (id s): cidr "10.0.0.0/33" is not a CIDR"#,
            ),
            (
                "cidr of the other family",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "fd00::/64"}]}"#,
                r#"subnets[0] (id s): cidr "fd00::/64" is not an IPv4 network"#,
            ),
            (
                "ip_version 5",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "ip_version": 5}]}"#,
                "subnets[0] (id s): ip_version 5 is not 4 or 6",
            ),
            (
                "malformed gateway",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.300"}]}"#,
                r#"subnets[0] (id s): gateway_ip "10.0.0.300" is not an IP address"#,
            ),
            (
                "malformed DNS server",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "dns_nameservers": ["1.1.1.1", "dns"]}]}"#,
                r#"subnets[0] (id s): dns_nameservers[1] "dns" is not an IP address"#,
            ),
            (
                "malformed route destination",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "host_routes": [{"destination": "x", "nexthop": "10.0.0.1"}]}]}"#,
                r#"subnets[0] (id s): host_routes[0].destination "x" is not a CIDR"#,
            ),
            (
                "pool without end",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2"}]}]}"#,
                "subnets[0] (id s): allocation_pools[0].end is missing",
            ),
            (
                "malformed MAC",
                r#"{"ports": [{"id": "p0", "network_id": "n", "mac_address": "fa:16:3e:00:00:01"}, {"id": "5e1c", "network_id": "n", "mac_address": "zz:16:3e:00:00:01"}]}"#,
                r#"ports[1] (id 5e1c): mac_address "zz:16:3e:00:00:01" is not a MAC address"#,
            ),
            (
                "port without MAC",
                r#"{"ports": [{"id": "p", "network_id": "n"}]}"#,
                "ports[0] (id p): mac_address is missing",
            ),
            (
                "malformed fixed IP",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0"}]}]}"#,
                r#"ports[0] (id p): fixed_ips[0].ip_address "10.0.0" is not an IP address"#,
            ),
            (
                "fixed IP without subnet",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.1"}]}]}"#,
                "ports[0] (id p): fixed_ips[0].subnet_id is missing",
            ),
            (
                "extra option ip_version 5",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "extra_dhcp_opts": [{"opt_name": "router", "opt_value": "10.0.0.1", "ip_version": 5}]}]}"#,
                "ports[0] (id p): extra_dhcp_opts[0].ip_version 5 is not 4 or 6",
            ),
            (
                "admin_state_up not a bool",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "admin_state_up": "yes"}]}"#,
                r#"ports[0] (id p): admin_state_up "yes" is not true or false"#,
            ),
        ];
        for (what, json, want) in cases {
            let err = match parse(json) {
                Ok(doc) => panic!("{what}: parsed as {doc:?}"),
                Err(e) => format!("{e:#}"),
            };
            assert!(
                err.contains(want),
                "{what}: error {err:?} does not contain {want:?}"
            );
        }
    }
}
