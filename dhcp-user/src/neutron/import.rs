//! Reading and checking what `xdhcp import FILE` reads: the JSON that
//! Neutron's API returns, `{"networks": [...], "subnets": [...], "ports": [...]}`.
//!
//! `parse` deserializes into the model's types (their serde derives check each
//! field's type and format); an error names the object (`ports[2] (id …)`), the
//! field's path inside it and the bad value. Fields of Neutron's objects that
//! xdhcp does not use are ignored; unknown top-level keys are an error.
//! `validate` then checks references and containment against the database
//! plus the document.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde_json::Value;
use serde_path_to_error::Segment;

use std::net::IpAddr;

use crate::config::AgentConfig;
use crate::neutron::model::{ImportDoc, MacAddr, Network, Port, Snapshot, Subnet};
use crate::plan::{self, extra_opts};

/// The smallest MTU an IPv4 network may have (RFC 791; Neutron refuses less on IPv4 subnets).
pub const MTU_MIN: u32 = 68;

/// The top-level keys an import document may have.
const TOP_KEYS: [&str; 3] = ["networks", "subnets", "ports"];

/// Parses an import document, checking each field's type and format.
///
/// MAC addresses are normalised to Neutron's form (lower case, ':'), and an
/// empty `dns_name` (as Neutron returns for ports without one) becomes `None`.
pub fn parse(json: &str) -> Result<ImportDoc> {
    let mut de = serde_json::Deserializer::from_str(json);
    let doc: ImportDoc = match serde_path_to_error::deserialize(&mut de) {
        // A struct deserializes from a JSON array too: only an object is a document.
        Ok(_) if !json.trim_start().starts_with('{') => {
            bail!("the document is not a JSON object")
        }
        Ok(doc) => {
            de.end().context("the document is not valid JSON")?;
            doc
        }
        Err(e) => return Err(explain(json, e)),
    };
    for (i, s) in doc.subnets.iter().enumerate() {
        check_family(s).map_err(|e| anyhow!("{}: {e}", name("subnets", i, &s.id)))?;
    }
    Ok(doc)
}

/// Why a document did not deserialize: its syntax, its shape, or the object
/// and field `e` is about, as "ports[1] (id 5e1c): fixed_ips[0].ip_address: …".
fn explain(json: &str, e: serde_path_to_error::Error<serde_json::Error>) -> anyhow::Error {
    let value: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(syntax) => return anyhow!(syntax).context("the document is not valid JSON"),
    };
    let Some(top) = value.as_object() else {
        return anyhow!("the document is not a JSON object");
    };
    if let Some(key) = top.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
        return anyhow!("unknown top-level key {key:?} (expected networks, subnets, ports)");
    }
    let segments: Vec<&Segment> = e.path().iter().collect();
    let (object, field) = match segments.as_slice() {
        [Segment::Map { key: list }, Segment::Seq { index }, rest @ ..] => {
            let id = value[list.as_str()][*index]["id"]
                .as_str()
                .unwrap_or_default();
            (name(list, *index, id), field_path(rest))
        }
        rest => (String::new(), field_path(rest)),
    };
    let at: Vec<String> = [object, field]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    anyhow!("{}: {}", at.join(": "), e.into_inner())
}

/// "fixed_ips[0].ip_address".
fn field_path(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(if out.is_empty() { "?" } else { ".?" }),
        }
    }
    out
}

/// How errors name object `i` of a list: "ports[2] (id 5e1c)", or "ports[2]" without an id.
fn name(list: &str, i: usize, id: &str) -> String {
    if id.is_empty() {
        format!("{list}[{i}]")
    } else {
        format!("{list}[{i}] (id {id})")
    }
}

/// Checks a document against the database contents plus the document itself.
///
/// Objects of the document replace those of the database with the same id,
/// so the checks see the state the import would leave.
pub fn validate(doc: &ImportDoc, existing: &Snapshot) -> Result<()> {
    let network_names = names("networks", doc.networks.iter().map(|n| n.id.as_str()))?;
    let subnet_names = names("subnets", doc.subnets.iter().map(|s| s.id.as_str()))?;
    let port_names = names("ports", doc.ports.iter().map(|p| p.id.as_str()))?;

    let networks: HashMap<&str, &Network> = existing
        .networks
        .iter()
        .chain(&doc.networks)
        .map(|n| (n.id.as_str(), n))
        .collect();
    let subnets: HashMap<&str, &Subnet> = existing
        .subnets
        .iter()
        .chain(&doc.subnets)
        .map(|s| (s.id.as_str(), s))
        .collect();

    for (n, name) in doc.networks.iter().zip(&network_names) {
        match n.mtu {
            // 0 is Neutron's "unknown" (its API default): the dnsmasq
            // driver then sends no option 26, and neither does the plan.
            Some(m) if m != 0 && m < MTU_MIN => {
                bail!("{name}: mtu {m} is below {MTU_MIN}, the minimum for IPv4")
            }
            Some(m) if m > u32::from(u16::MAX) => {
                bail!("{name}: mtu {m} is above 65535, more than option 26 holds")
            }
            _ => {}
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

    // One MAC and one port per address per network: the stored ports the
    // document keeps, then the document's (Neutron's IPAM allocates an address once).
    let mut macs: HashMap<(&str, MacAddr), String> = HashMap::new();
    let mut ips: HashMap<(&str, IpAddr), String> = HashMap::new();
    for p in kept_ports {
        macs.insert((&p.network_id, p.mac_address), format!("port {}", p.id));
        for f in &p.fixed_ips {
            ips.insert((&p.network_id, f.ip_address), format!("port {}", p.id));
        }
    }
    for (p, name) in doc.ports.iter().zip(&port_names) {
        for (i, f) in p.fixed_ips.iter().enumerate() {
            if let Some(other) = ips.insert((&p.network_id, f.ip_address), name.clone()) {
                if &other != name {
                    bail!(
                        "{name}: fixed_ips[{i}].ip_address {} is already that of {other} on network {}",
                        f.ip_address,
                        p.network_id
                    );
                }
            }
        }
    }
    for (p, name) in doc.ports.iter().zip(&port_names) {
        if let Some(other) = macs.insert((&p.network_id, p.mac_address), name.clone()) {
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
        if id.is_empty() {
            bail!("{list}[{i}]: id is empty");
        }
        check_id(id).map_err(|e| anyhow!("{list}[{i}]: id {e}"))?;
        let name = name(list, i, id);
        if let Some(j) = first.insert(id, i) {
            bail!("{name}: id is also that of {list}[{j}]");
        }
        out.push(name);
    }
    Ok(out)
}

/// An id `xdhcp delete` can be given on a command line: no control characters.
fn check_id(id: &str) -> Result<()> {
    if id.chars().any(char::is_control) {
        bail!("{id:?} holds a control character");
    }
    Ok(())
}

/// A port's `dns_name` as neutron-lib's validator takes it: at most 255
/// characters (a trailing dot allowed), labels of 1 to 63 letters, digits or
/// hyphens, not starting or ending with a hyphen, a TLD not all digits.
pub fn check_dns_name(dns_name: &str) -> Result<()> {
    let d = dns_name.strip_suffix('.').unwrap_or(dns_name);
    if d.len() > 255 {
        bail!("{dns_name:?} exceeds the 255 character FQDN limit");
    }
    let labels: Vec<&str> = d.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            bail!("{dns_name:?} has an empty label");
        }
        let legal = label.len() <= 63
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !legal {
            bail!(
                "{dns_name:?}: label {label:?} must be 1-63 letters, digits or hyphens, not starting or ending with a hyphen"
            );
        }
    }
    if let [_, .., tld] = labels.as_slice() {
        if tld.bytes().all(|c| c.is_ascii_digit()) {
            bail!("{dns_name:?}: the TLD {tld:?} must not be all numeric");
        }
    }
    Ok(())
}

fn check_subnet(name: &str, s: &Subnet, networks: &HashMap<&str, &Network>) -> Result<()> {
    check_id(&s.network_id).map_err(|e| anyhow!("{name}: network_id {e}"))?;
    if !networks.contains_key(s.network_id.as_str()) {
        bail!(
            "{name}: network_id {:?} is not a known network",
            s.network_id
        );
    }
    let cidr = subnet_cidr(s).map_err(|e| anyhow!("{name}: {e}"))?;
    if let Some(gw) = s.gateway_ip {
        if !cidr.contains(&gw) {
            bail!("{name}: gateway_ip {gw} is outside cidr {cidr}");
        }
    }
    for (i, pool) in s.allocation_pools.iter().enumerate() {
        for (field, ip) in [("start", pool.start), ("end", pool.end)] {
            if !cidr.contains(&ip) {
                bail!("{name}: allocation_pools[{i}].{field} {ip} is outside cidr {cidr}");
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
    Ok(())
}

/// A subnet's `ip_version` is 4 or 6 and its CIDR of that family; errors name the field.
fn check_family(s: &Subnet) -> Result<()> {
    match (s.ip_version, s.cidr) {
        (4, IpNet::V4(_)) | (6, IpNet::V6(_)) => Ok(()),
        (4 | 6, _) => bail!(
            "cidr \"{}\" is not an IPv{} network (ip_version {})",
            s.cidr,
            s.ip_version,
            s.ip_version
        ),
        (v, _) => bail!("ip_version {v} is not 4 or 6"),
    }
}

/// A subnet's CIDR, checked against its ip_version and for host bits; errors name the field.
fn subnet_cidr(s: &Subnet) -> Result<IpNet> {
    check_family(s)?;
    let cidr = s.cidr;
    if cidr.trunc() != cidr {
        bail!(
            "cidr \"{cidr}\" has host bits set (the network is {})",
            cidr.trunc()
        );
    }
    Ok(cidr)
}

fn check_port(
    name: &str,
    p: &Port,
    networks: &HashMap<&str, &Network>,
    subnets: &HashMap<&str, &Subnet>,
) -> Result<()> {
    check_id(&p.network_id).map_err(|e| anyhow!("{name}: network_id {e}"))?;
    let Some(network) = networks.get(p.network_id.as_str()) else {
        bail!(
            "{name}: network_id {:?} is not a known network",
            p.network_id
        );
    };
    check_fixed_ips(name, p, subnets)?;
    if let Some(d) = &p.dns_name {
        check_dns_name(d).map_err(|e| anyhow!("{name}: dns_name {e}"))?;
    }
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
    // The whole blob, as the default agent config plans it on each IPv4 subnet
    // (the server's address is a stand-in of the same size).
    // The network's other DHCP subnets are on-link routes in the blob.
    let siblings: Vec<ipnet::Ipv4Net> = subnets
        .values()
        .filter(|s| s.network_id == p.network_id && s.enable_dhcp)
        .filter_map(|s| match s.cidr {
            IpNet::V4(c) => Some(c),
            IpNet::V6(_) => None,
        })
        .collect();
    for f in &p.fixed_ips {
        let Some(s) = subnets.get(f.subnet_id.as_str()) else {
            continue;
        };
        if let IpNet::V4(cidr) = s.cidr {
            plan::port_options(
                p,
                network,
                s,
                cidr,
                &siblings,
                cidr.network(),
                true,
                &AgentConfig::default(),
            )
            .map_err(|e| anyhow!("{name}: extra_dhcp_opts: {e:#}"))?;
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
        let cidr =
            subnet_cidr(s).map_err(|e| anyhow!("{name}: fixed_ips[{i}]: subnet {}: {e}", s.id))?;
        if !cidr.contains(&f.ip_address) {
            bail!(
                "{name}: fixed_ips[{i}].ip_address {} is outside cidr {cidr} of subnet {}",
                f.ip_address,
                s.id
            );
        }
        // Neutron's IPAM (check_subnet_ip) gives an IPv4 port neither.
        if let IpNet::V4(c) = cidr {
            for (what, a) in [("network", c.network()), ("broadcast", c.broadcast())] {
                if f.ip_address == IpAddr::V4(a) {
                    bail!(
                        "{name}: fixed_ips[{i}].ip_address {a} is the {what} address of subnet {} ({cidr})",
                        s.id
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neutron::model::ExtraDhcpOpt;

    const NETWORK_ID: &str = "4a1b7c3e-0000-4000-8000-000000000001";
    const SUB: &str = "9d2c0f1a-0000-4000-8000-000000000002";

    /// A good document in Neutron's shape, with fields xdhcp ignores.
    fn good_json() -> String {
        format!(
            r#"{{
  "networks": [{{"id": "{NETWORK_ID}", "name": "private", "mtu": 1450, "status": "ACTIVE", "shared": false}}],
  "subnets": [{{"id": "{SUB}", "network_id": "{NETWORK_ID}", "ip_version": 4, "cidr": "10.0.0.0/24",
               "gateway_ip": "10.0.0.1", "enable_dhcp": true, "dns_nameservers": ["8.8.8.8"],
               "host_routes": [{{"destination": "192.168.7.0/24", "nexthop": "10.0.0.254"}}],
               "allocation_pools": [{{"start": "10.0.0.2", "end": "10.0.0.200"}}],
               "ipv6_ra_mode": null, "tenant_id": "t"}},
              {{"id": "v6sub", "network_id": "{NETWORK_ID}", "ip_version": 6, "cidr": "fd00::/64",
               "gateway_ip": null}}],
  "ports": [{{"id": "port-a", "network_id": "{NETWORK_ID}", "mac_address": "FA:16:3E:00:00:01",
             "fixed_ips": [{{"subnet_id": "{SUB}", "ip_address": "10.0.0.5"}},
                           {{"subnet_id": "v6sub", "ip_address": "fd00::5"}}],
             "device_owner": "compute:nova", "dns_name": "",
             "extra_dhcp_opts": [{{"opt_name": "tftp-server", "opt_value": "10.0.0.9", "ip_version": 4}},
                                 {{"opt_name": "bootfile-name", "opt_value": "pxelinux.0"}}],
             "admin_state_up": true, "binding:host_id": "h1"}},
            {{"id": "port-dhcp", "network_id": "{NETWORK_ID}", "mac_address": "fa:16:3e:00:00:02",
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
        assert_eq!(s.host_routes[0].destination.to_string(), "192.168.7.0/24");
        assert_eq!(doc.subnets[1].gateway_ip, None);
        let p = &doc.ports[0];
        assert_eq!(
            p.mac_address.to_string(),
            "fa:16:3e:00:00:01",
            "MAC is normalised"
        );
        assert_eq!(p.dns_name, None, "empty dns_name is None");
        assert_eq!(
            p.extra_dhcp_opts[1].ip_version, 4,
            "ip_version defaults to 4"
        );
        assert!(doc.ports[1].is_dhcp());
        assert_eq!(doc.ports[1].dns_name.as_deref(), Some("host-2"));
        validate(&doc, &Snapshot::default()).unwrap();
    }

    /// Neutron writes null for unset fields: each is read as missing.
    #[test]
    fn null_is_missing() {
        let doc = parse(
            r#"{"networks": [{"id": "n", "name": null, "mtu": null}],
                "subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "ip_version": null,
                             "gateway_ip": null, "enable_dhcp": null, "dns_nameservers": null,
                             "host_routes": null, "allocation_pools": null}],
                "ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01",
                           "fixed_ips": null, "device_owner": null, "dns_name": null,
                           "extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": "1400", "ip_version": null}],
                           "admin_state_up": null}]}"#,
        )
        .unwrap();
        let missing = parse(
            r#"{"networks": [{"id": "n"}],
                "subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24"}],
                "ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01",
                           "extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": "1400"}]}]}"#,
        )
        .unwrap();
        assert_eq!(doc, missing);
        assert!(doc.subnets[0].enable_dhcp && doc.ports[0].admin_state_up);
        assert_eq!(doc.subnets[0].ip_version, 4);
        assert_eq!(
            parse(r#"{"networks": null, "subnets": null, "ports": null}"#).unwrap(),
            ImportDoc::default()
        );
    }

    #[test]
    fn any_subset_of_keys() {
        assert_eq!(parse("{}").unwrap(), ImportDoc::default());
        let doc = parse(r#"{"networks": [{"id": "n"}]}"#).unwrap();
        assert_eq!(doc.networks[0].name, "");
        assert!(doc.ports.is_empty());
    }

    #[test]
    fn mtu_0_is_neutrons_unknown_and_accepted() {
        let mut doc = parse(&good_json()).unwrap();
        doc.networks[0].mtu = Some(0);
        validate(&doc, &Snapshot::default()).expect("mtu 0 as the API's default");
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
                "cidr of the other family",
                |d| d.subnets[1].cidr = "10.0.0.0/24".parse().unwrap(),
                r#"subnets[1] (id v6sub): cidr "10.0.0.0/24" is not an IPv6 network (ip_version 6)"#,
            ),
            (
                "cidr with host bits",
                |d| d.subnets[1].cidr = "fd00::5/64".parse().unwrap(),
                r#"subnets[1] (id v6sub): cidr "fd00::5/64" has host bits set (the network is fd00::/64)"#,
            ),
            (
                "a port's address outside its subnet",
                |d| d.ports[0].fixed_ips[0].ip_address = "10.0.1.5".parse().unwrap(),
                "ports[0] (id port-a): fixed_ips[0].ip_address 10.0.1.5 is outside cidr 10.0.0.0/24",
            ),
            (
                "the same MAC twice on a network",
                |d| d.ports[1].mac_address = d.ports[0].mac_address,
                "ports[1] (id port-dhcp): mac_address fa:16:3e:00:00:01 is already used by ports[0] (id port-a)",
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
            (
                "one IP on two ports of a network",
                |d| d.ports[1].fixed_ips[0].ip_address = "10.0.0.5".parse().unwrap(),
                "ports[1] (id port-dhcp): fixed_ips[0].ip_address 10.0.0.5 is already that of ports[0] (id port-a)",
            ),
            (
                "the network address",
                |d| d.ports[0].fixed_ips[0].ip_address = "10.0.0.0".parse().unwrap(),
                "ports[0] (id port-a): fixed_ips[0].ip_address 10.0.0.0 is the network address of subnet",
            ),
            (
                "the broadcast address",
                |d| d.ports[0].fixed_ips[0].ip_address = "10.0.0.255".parse().unwrap(),
                "ports[0] (id port-a): fixed_ips[0].ip_address 10.0.0.255 is the broadcast address of subnet",
            ),
            (
                "mtu 1 (udhcpc applies it)",
                |d| d.networks[0].mtu = Some(1),
                "networks[0] (id 4a1b7c3e-0000-4000-8000-000000000001): mtu 1 is below 68",
            ),
            (
                "mtu beyond option 26",
                |d| d.networks[0].mtu = Some(70000),
                "mtu 70000 is above 65535",
            ),
            (
                "extra_dhcp_opts over the 1024-byte blob",
                |d| {
                    d.ports[0].extra_dhcp_opts = (0..5)
                        .map(|i| ExtraDhcpOpt {
                            opt_name: format!("{}", 224 + i),
                            opt_value: "x".repeat(250),
                            ip_version: 4,
                        })
                        .collect()
                },
                "ports[0] (id port-a): extra_dhcp_opts: the encoded options take",
            ),
            (
                "a dns_name cut in a UTF-8 character at 64 bytes would be sent",
                |d| d.ports[0].dns_name = Some(format!("{}é", "a".repeat(63))),
                "ports[0] (id port-a): dns_name",
            ),
            (
                "a dns_name with a semicolon",
                |d| d.ports[0].dns_name = Some("web;1".into()),
                r#"ports[0] (id port-a): dns_name "web;1""#,
            ),
            (
                "a dns_name with a newline",
                |d| d.ports[0].dns_name = Some("web\n1".into()),
                "ports[0] (id port-a): dns_name",
            ),
            (
                "a dns_name with NUL",
                |d| d.ports[0].dns_name = Some("web\0-1".into()),
                "ports[0] (id port-a): dns_name",
            ),
            (
                "an id holding NUL",
                |d| d.ports[0].id = "port\0a".into(),
                r#"ports[0]: id "port\0a" holds a control character"#,
            ),
            (
                "a network_id holding a newline",
                |d| d.subnets[0].network_id = "n\n".into(),
                "holds a control character",
            ),
        ];
        for (what, edit, want) in cases {
            let mut doc = good.clone();
            edit(&mut doc);
            let err = match validate(&doc, &Snapshot::default()) {
                Ok(()) => panic!("{what}: accepted"),
                Err(e) => format!("{e:#}"),
            };
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
                "ports: invalid type: map, expected a sequence",
            ),
            (
                "network without id",
                r#"{"networks": [{"name": "x"}]}"#,
                "networks[0]: missing field `id`",
            ),
            (
                "network id not a string",
                r#"{"networks": [{"id": 5}]}"#,
                "networks[0]: id: invalid type: integer `5`, expected a string",
            ),
            (
                "bad mtu",
                r#"{"networks": [{"id": "n", "mtu": -1}]}"#,
                "networks[0] (id n): mtu: invalid value: integer `-1`, expected u32",
            ),
            (
                "subnet without cidr",
                r#"{"subnets": [{"id": "s", "network_id": "n"}]}"#,
                "subnets[0] (id s): missing field `cidr`",
            ),
            (
                "subnet without network_id",
                r#"{"subnets": [{"id": "s", "cidr": "10.0.0.0/24"}]}"#,
                "subnets[0] (id s): missing field `network_id`",
            ),
            (
                "malformed cidr",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/33"}]}"#,
                r#"subnets[0] (id s): cidr: "10.0.0.0/33" is not a CIDR"#,
            ),
            (
                "cidr of the other family",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "fd00::/64"}]}"#,
                r#"subnets[0] (id s): cidr "fd00::/64" is not an IPv4 network (ip_version 4)"#,
            ),
            (
                "ip_version 5",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "ip_version": 5}]}"#,
                "subnets[0] (id s): ip_version: 5 is not 4 or 6",
            ),
            (
                "malformed gateway",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.300"}]}"#,
                r#"subnets[0] (id s): gateway_ip: "10.0.0.300" is not an IP address"#,
            ),
            (
                "malformed DNS server",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "dns_nameservers": ["1.1.1.1", "dns"]}]}"#,
                r#"subnets[0] (id s): dns_nameservers[1]: "dns" is not an IP address"#,
            ),
            (
                "malformed route destination",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "host_routes": [{"destination": "x", "nexthop": "10.0.0.1"}]}]}"#,
                r#"subnets[0] (id s): host_routes[0].destination: "x" is not a CIDR"#,
            ),
            (
                "pool without end",
                r#"{"subnets": [{"id": "s", "network_id": "n", "cidr": "10.0.0.0/24", "allocation_pools": [{"start": "10.0.0.2"}]}]}"#,
                "subnets[0] (id s): allocation_pools[0]: missing field `end`",
            ),
            (
                "malformed MAC",
                r#"{"ports": [{"id": "p0", "network_id": "n", "mac_address": "fa:16:3e:00:00:01"}, {"id": "5e1c", "network_id": "n", "mac_address": "zz:16:3e:00:00:01"}]}"#,
                r#"ports[1] (id 5e1c): mac_address: "zz:16:3e:00:00:01" is not a MAC address"#,
            ),
            (
                "port without MAC",
                r#"{"ports": [{"id": "p", "network_id": "n"}]}"#,
                "ports[0] (id p): missing field `mac_address`",
            ),
            (
                "malformed fixed IP",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0"}]}]}"#,
                r#"ports[0] (id p): fixed_ips[0].ip_address: "10.0.0" is not an IP address"#,
            ),
            (
                "fixed IP without subnet",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.1"}]}]}"#,
                "ports[0] (id p): fixed_ips[0]: missing field `subnet_id`",
            ),
            (
                "extra option ip_version 5",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "extra_dhcp_opts": [{"opt_name": "router", "opt_value": "10.0.0.1", "ip_version": 5}]}]}"#,
                "ports[0] (id p): extra_dhcp_opts[0].ip_version: 5 is not 4 or 6",
            ),
            (
                "admin_state_up not a bool",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "admin_state_up": "yes"}]}"#,
                r#"ports[0] (id p): admin_state_up: invalid type: string "yes", expected a boolean"#,
            ),
            (
                "an array of three lists",
                "[[], [], []]",
                "the document is not a JSON object",
            ),
            (
                "trailing characters",
                "{} x",
                "the document is not valid JSON",
            ),
            (
                "an empty id",
                r#"{"networks": [{"id": ""}]}"#,
                "networks[0]: id: must not be empty",
            ),
            (
                "an empty network_id",
                r#"{"subnets": [{"id": "s", "network_id": "", "cidr": "10.0.0.0/24"}]}"#,
                "subnets[0] (id s): network_id: must not be empty",
            ),
            (
                "an empty opt_value (dnsmasq would send an empty option)",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "extra_dhcp_opts": [{"opt_name": "mtu", "opt_value": ""}]}]}"#,
                "ports[0] (id p): extra_dhcp_opts[0].opt_value: must not be empty",
            ),
            (
                "a required field that is null",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": null}]}"#,
                "ports[0] (id p): mac_address: invalid type: null, expected a string",
            ),
            (
                "an object that is not one",
                r#"{"ports": [{"id": "p", "network_id": "n", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.5"]}]}"#,
                r#"ports[0] (id p): fixed_ips[0]: invalid type: string "10.0.0.5", expected struct FixedIp"#,
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
