//! Neutron's data model, as xdhcp stores and serves it.
//!
//! Field names follow Neutron's API, so `xdhcp import` reads the JSON that
//! Neutron returns (see [`crate::neutron::import`]). Values are typed (MACs,
//! CIDRs, addresses), so they are parsed once, where they enter: import, or a
//! database row. Deserializing reads Neutron's JSON as Neutron writes it: a
//! `null` field is a missing one, an empty `dns_name` is none, and messages
//! name the bad value. IP versions other than 4 are stored but not served.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// `device_owner` of a network's DHCP port.
pub const DHCP_OWNER: &str = "network:dhcp";

/// An Ethernet MAC address. Written as Neutron writes it ("fa:16:3e:12:34:56",
/// lower case), in JSON and in the database alike; read case-insensitively,
/// with ':' or '-' between the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<MacAddr, BadMac> {
        let bad = || BadMac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut mac {
            // Two hex digits (from_str_radix alone would take "+a").
            let p = parts
                .next()
                .filter(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(bad)?;
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        match parts.next() {
            None => Ok(MacAddr(mac)),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> MacAddr {
        MacAddr(b)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        parsed(d)
    }
}

/// Formats a MAC the way [`MacAddr`] displays it, for raw map bytes.
pub fn format_mac(mac: &[u8; 6]) -> String {
    MacAddr(*mac).to_string()
}

/// A Neutron network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    #[serde(deserialize_with = "non_empty")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    /// Option 26 when set.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A static route of a subnet (Neutron's `host_routes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    #[serde(deserialize_with = "parsed")]
    pub destination: IpNet,
    #[serde(deserialize_with = "parsed")]
    pub nexthop: IpAddr,
}

/// An allocation pool of a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationPool {
    #[serde(deserialize_with = "parsed")]
    pub start: IpAddr,
    #[serde(deserialize_with = "parsed")]
    pub end: IpAddr,
}

/// A Neutron subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    #[serde(deserialize_with = "non_empty")]
    pub id: String,
    #[serde(deserialize_with = "non_empty")]
    pub network_id: String,
    /// 4 or 6 (4 when missing).
    #[serde(default = "four", deserialize_with = "ip_version")]
    pub ip_version: u8,
    /// "10.0.0.0/24"; of the family `ip_version` says (checked by import).
    #[serde(deserialize_with = "parsed")]
    pub cidr: IpNet,
    #[serde(default, deserialize_with = "parsed_opt")]
    pub gateway_ip: Option<IpAddr>,
    #[serde(default = "yes", deserialize_with = "null_true")]
    pub enable_dhcp: bool,
    #[serde(default, deserialize_with = "parsed_list")]
    pub dns_nameservers: Vec<IpAddr>,
    #[serde(default, deserialize_with = "null_default")]
    pub host_routes: Vec<HostRoute>,
    #[serde(default, deserialize_with = "null_default")]
    pub allocation_pools: Vec<AllocationPool>,
}

/// One of a port's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedIp {
    #[serde(deserialize_with = "non_empty")]
    pub subnet_id: String,
    #[serde(deserialize_with = "parsed")]
    pub ip_address: IpAddr,
}

/// A port's extra DHCP option (Neutron's `extra_dhcp_opts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDhcpOpt {
    /// A dnsmasq option name ("tftp-server", "bootfile-name", "server-ip-address", …) or a number.
    #[serde(deserialize_with = "non_empty")]
    pub opt_name: String,
    #[serde(deserialize_with = "non_empty")]
    pub opt_value: String,
    /// 4 or 6 (4 when missing).
    #[serde(default = "four", deserialize_with = "ip_version")]
    pub ip_version: u8,
}

/// A Neutron port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    #[serde(deserialize_with = "non_empty")]
    pub id: String,
    #[serde(deserialize_with = "non_empty")]
    pub network_id: String,
    pub mac_address: MacAddr,
    #[serde(default, deserialize_with = "null_default")]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(default, deserialize_with = "null_default")]
    pub device_owner: String,
    /// `None` also for Neutron's empty `dns_name`.
    #[serde(default, deserialize_with = "empty_none")]
    pub dns_name: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    #[serde(default = "yes", deserialize_with = "null_true")]
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
#[serde(deny_unknown_fields)]
pub struct ImportDoc {
    #[serde(default, deserialize_with = "null_default")]
    pub networks: Vec<Network>,
    #[serde(default, deserialize_with = "null_default")]
    pub subnets: Vec<Subnet>,
    #[serde(default, deserialize_with = "null_default")]
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

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Network, Kind::Subnet, Kind::Port];

    /// "network", "subnet", "port": the change log's and the messages' word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Network => "network",
            Kind::Subnet => "subnet",
            Kind::Port => "port",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not network, subnet or port"))
    }
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

/// The IPv4 address of an `IpAddr`, if it is one.
pub fn v4(ip: &IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

/// What a value parsed from a string is, for messages: "an IP address".
trait Described {
    const WHAT: &'static str;
}

impl Described for IpAddr {
    const WHAT: &'static str = "an IP address";
}

impl Described for IpNet {
    const WHAT: &'static str = "a CIDR";
}

impl Described for MacAddr {
    const WHAT: &'static str = "a MAC address";
}

fn parse_str<T: FromStr + Described, E: de::Error>(s: &str) -> Result<T, E> {
    s.parse()
        .map_err(|_| E::custom(format!("{s:?} is not {}", T::WHAT)))
}

/// A value written as a string, parsed with a message naming the string
/// (serde's own say only "invalid IP address syntax").
fn parsed<'de, D: Deserializer<'de>, T: FromStr + Described>(d: D) -> Result<T, D::Error> {
    parse_str(&String::deserialize(d)?)
}

/// [`parsed`], `null` being none.
fn parsed_opt<'de, D: Deserializer<'de>, T: FromStr + Described>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse_str(&s))
        .transpose()
}

/// A list of [`parsed`] values, `null` being empty.
fn parsed_list<'de, D: Deserializer<'de>, T: FromStr + Described>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    /// One element, parsed as it is read so that an error's path names its index.
    struct Item<T>(T);
    impl<'de, T: FromStr + Described> Deserialize<'de> for Item<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Item<T>, D::Error> {
            parsed(d).map(Item)
        }
    }
    Ok(Option::<Vec<Item<T>>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.0)
        .collect())
}

/// `null` as the field's default (Neutron writes null for unset fields).
fn null_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A flag that is true when missing or `null`.
fn null_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

/// A required string that must not be empty.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(de::Error::custom("must not be empty"));
    }
    Ok(s)
}

/// An optional string, empty or `null` being none.
fn empty_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

/// `ip_version`: 4 when `null`, else 4 or 6.
fn ip_version<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match Option::<i64>::deserialize(d)? {
        None => Ok(4),
        Some(v @ (4 | 6)) => Ok(v as u8),
        Some(v) => Err(de::Error::custom(format!("{v} is not 4 or 6"))),
    }
}

fn four() -> u8 {
    4
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MAC strings: (input, what it reads as, or None when it is no MAC).
    #[test]
    fn macs_read_as_neutron_writes_them() {
        let cases: &[(&str, Option<[u8; 6]>)] = &[
            (
                "fa:16:3e:12:34:56",
                Some([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            ),
            (
                "FA:16:3E:AB:cd:0F",
                Some([0xfa, 0x16, 0x3e, 0xab, 0xcd, 0x0f]),
            ),
            (
                "fa-16-3e-12-34-56",
                Some([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            ),
            ("fa:16:3e:12:34", None),
            ("fa:16:3e:12:34:56:78", None),
            ("fa:16:3e:12:34:5", None),
            ("fa:16:3e:12:34:567", None),
            ("zz:16:3e:12:34:56", None),
            ("+a:16:3e:12:34:56", None),
            ("fa:16:3e:12:34:56:", None),
            ("", None),
        ];
        for (s, want) in cases {
            match (s.parse::<MacAddr>(), want) {
                (Ok(m), Some(w)) => assert_eq!(m.0, *w, "{s:?}"),
                (Err(e), None) => assert_eq!(e.to_string(), format!("{s:?} is not a MAC address")),
                (got, _) => panic!("{s:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_mac_is_written_lower_case_with_colons_in_json_too() {
        let mac: MacAddr = "FA-16-3E-0A-0B-0C".parse().unwrap();
        assert_eq!(mac.to_string(), "fa:16:3e:0a:0b:0c");
        assert_eq!(format_mac(&mac.0), "fa:16:3e:0a:0b:0c");
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            r#""fa:16:3e:0a:0b:0c""#
        );
        let back: MacAddr = serde_json::from_str(r#""fa:16:3e:0a:0b:0c""#).unwrap();
        assert_eq!(back, mac);
        let err = serde_json::from_str::<MacAddr>(r#""fa:16""#).unwrap_err();
        assert!(
            err.to_string().contains(r#""fa:16" is not a MAC address"#),
            "{err}"
        );
    }

    #[test]
    fn kinds_round_trip_as_text() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
        let err = "router".parse::<Kind>().unwrap_err().to_string();
        assert!(
            err.contains(r#""router" is not network, subnet or port"#),
            "{err}"
        );
    }

    /// The JSON of the database's list columns is what it was with string fields.
    #[test]
    fn typed_fields_serialize_as_the_strings_they_were() {
        let route = HostRoute {
            destination: "192.168.7.0/24".parse().unwrap(),
            nexthop: "10.0.0.254".parse().unwrap(),
        };
        assert_eq!(
            serde_json::to_string(std::slice::from_ref(&route)).unwrap(),
            r#"[{"destination":"192.168.7.0/24","nexthop":"10.0.0.254"}]"#
        );
        let back: Vec<HostRoute> =
            serde_json::from_str(r#"[{"destination":"192.168.7.0/24","nexthop":"10.0.0.254"}]"#)
                .unwrap();
        assert_eq!(back, [route]);
    }
}
