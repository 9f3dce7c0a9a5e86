//! Neutron's data model, as xdhcp stores and serves it.
//!
//! Field names follow Neutron's API, so `xdhcp import` reads the JSON that
//! Neutron returns. IP versions other than 4 are stored but not served.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// `device_owner` of a network's DHCP port.
pub const DHCP_OWNER: &str = "network:dhcp";

/// A Neutron network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Option 26 when set.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A static route of a subnet (Neutron's `host_routes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    /// A CIDR, e.g. "192.168.7.0/24".
    pub destination: String,
    pub nexthop: IpAddr,
}

/// An allocation pool of a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    pub start: IpAddr,
    pub end: IpAddr,
}

/// A Neutron subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    #[serde(default = "four")]
    pub ip_version: u8,
    /// A CIDR, e.g. "10.0.0.0/24".
    pub cidr: String,
    #[serde(default)]
    pub gateway_ip: Option<IpAddr>,
    #[serde(default = "yes")]
    pub enable_dhcp: bool,
    #[serde(default)]
    pub dns_nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub host_routes: Vec<HostRoute>,
    #[serde(default)]
    pub allocation_pools: Vec<AllocationPool>,
}

/// One of a port's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    pub subnet_id: String,
    pub ip_address: IpAddr,
}

/// A port's extra DHCP option (Neutron's `extra_dhcp_opts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDhcpOpt {
    /// A dnsmasq option name ("tftp-server", "bootfile-name", "server-ip-address", …) or a number.
    pub opt_name: String,
    pub opt_value: String,
    #[serde(default = "four")]
    pub ip_version: u8,
}

/// A Neutron port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub id: String,
    pub network_id: String,
    /// "fa:16:3e:12:34:56".
    pub mac_address: String,
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub dns_name: Option<String>,
    #[serde(default)]
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    #[serde(default = "yes")]
    pub admin_state_up: bool,
}

impl Port {
    /// Is this the network's DHCP port?
    pub fn is_dhcp(&self) -> bool {
        self.device_owner == DHCP_OWNER
    }

    /// Is this a router's port (its subnets are not isolated)?
    pub fn is_router(&self) -> bool {
        self.device_owner.starts_with("network:router_interface")
            || self.device_owner == "network:ha_router_replicated_interface"
    }
}

/// The document `xdhcp import` reads: any subset of the three lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportDoc {
    #[serde(default)]
    pub networks: Vec<Network>,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub ports: Vec<Port>,
}

/// Everything in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub networks: Vec<Network>,
    pub subnets: Vec<Subnet>,
    pub ports: Vec<Port>,
}

/// What kind of object a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Network,
    Subnet,
    Port,
}

/// One committed change: the object `id` of `kind` was inserted, updated or
/// deleted (read the object to know which).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the change log (increasing).
    pub seq: u64,
    pub kind: Kind,
    pub id: String,
}

/// Parses "fa:16:3e:12:34:56" (case-insensitive, ':' or '-').
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Formats a MAC as Neutron does (lower case, ':').
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The IPv4 address of an `IpAddr`, if it is one.
pub fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

fn four() -> u8 {
    4
}

fn yes() -> bool {
    true
}
