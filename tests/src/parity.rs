//! Comparing two DHCP replies the way the parity tests do: every header
//! field and every option, decoded by dhcproto, with the intended
//! differences (docs/parity.md) allowed only when each is exactly the
//! documented one. Used by tests/tests/parity.rs (against a dnsmasq set up as
//! neutron-dhcp-agent sets it up) and tests/tests/side_by_side.rs (against the
//! real neutron-dhcp-agent on the same neutron-server).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{Context, Result};
use dhcproto::{
    v4::{DhcpOption, Message, OptionCode, UnknownOption},
    Decodable, Decoder,
};

use crate::{bootp, reply_tlvs};

/// What a check of an allowed difference can rely on.
#[derive(Clone)]
pub struct Ctx {
    /// The DHCP port's address (dnsmasq's own address on the tap).
    pub server_ip: Ipv4Addr,
    /// The subnet has dns_nameservers.
    pub subnet_has_dns: bool,
    /// The client asked for the option (it is in option 55).
    pub requested: fn(u8) -> bool,
    /// The port's server-ip-address extra_dhcp_opt.
    pub siaddr_opt: Option<Ipv4Addr>,
    /// The request carried a client FQDN (option 81).
    pub client_fqdn: bool,
    /// The port's name as Neutron's hosts file has it: host-a-b-c-d.<dns_domain>.
    pub fqdn: String,
}

/// Holds when the observed difference is exactly the documented one.
pub type Check = fn(&Ctx, Option<&DhcpOption>, Option<&DhcpOption>) -> bool;

/// Intended differences: option code, why, and what exactly must be seen
/// (xdhcp's value, dnsmasq's value). Kept in step with docs/parity.md.
pub const ALLOWED: &[(u8, &str, Check)] = &[
    (
        6,
        "subnet without dns_nameservers: dnsmasq names itself (it is a DNS forwarder); \
         xdhcp runs no DNS and sends dnsmasq_dns_servers or nothing",
        |ctx, x, d| {
            !ctx.subnet_has_dns
                && x.is_none()
                && matches!(d, Some(DhcpOption::DomainNameServer(v))
                    if !v.is_empty() && v.iter().all(|a| *a == ctx.server_ip))
        },
    ),
    (
        81,
        "client FQDN (RFC 4702): dnsmasq answers a client's option 81 with the name from \
         its hosts file (flags S, rcodes 255); xdhcp does not implement option 81 and does \
         no DNS updates (neither does Neutron's dnsmasq); the same name goes out as 12 and 15",
        |ctx, x, d| {
            let want = [&[0x01, 255, 255][..], ctx.fqdn.as_bytes()].concat();
            ctx.client_fqdn
                && x.is_none()
                && matches!(d, Some(DhcpOption::Unknown(u)) if u.data() == want)
        },
    ),
];

/// Holds when a header field's difference (xdhcp's, dnsmasq's) is the documented one.
pub type FieldCheck = fn(&Ctx, &str, &str) -> bool;

/// Intended differences in header fields and addressing.
pub const ALLOWED_FIELDS: &[(&str, &str, FieldCheck)] = &[(
    "siaddr",
    "port without server-ip-address: dnsmasq puts its own address in siaddr (next server) \
     by default; xdhcp leaves it 0.0.0.0, as it serves no TFTP and neither does Neutron's dnsmasq",
    |ctx, x, d| ctx.siaddr_opt.is_none() && x == "0.0.0.0" && d == ctx.server_ip.to_string(),
)];

/// One difference between the two replies.
#[derive(Debug)]
pub struct Diff {
    pub port: String,
    pub msg: &'static str,
    pub what: String,
    pub xdhcp: String,
    pub dnsmasq: String,
    /// The allow-list's reason, when it explains this difference.
    pub allowed: Option<&'static str>,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  {:<6} {:<5} {:<12} xdhcp={} dnsmasq={} -> {}",
            self.port,
            self.msg,
            self.what,
            self.xdhcp,
            self.dnsmasq,
            self.allowed.unwrap_or("NOT ALLOWED")
        )
    }
}

/// Option codes in wire order (dhcproto keeps them in a map).
pub fn option_order(frame: &[u8]) -> Vec<u8> {
    reply_tlvs(frame)
        .into_iter()
        .map(|(code, _)| code)
        .collect()
}

/// A reply's options by code: its TLVs with repeated codes concatenated
/// (RFC 3396), each value decoded on its own by dhcproto. dhcproto's
/// whole-message decoder stops at the first option it cannot decode (e.g. an
/// FQDN option in ASCII form, as dnsmasq sends) and silently drops the rest;
/// an option it cannot decode is kept here as raw bytes instead.
pub type Options = BTreeMap<u8, DhcpOption>;

pub fn options(frame: &[u8]) -> Options {
    let mut raw: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    for (code, value) in reply_tlvs(frame) {
        raw.entry(code).or_default().extend_from_slice(value);
    }
    raw.into_iter()
        .map(|(code, value)| {
            let opt = (value.len() <= 255)
                .then(|| {
                    let tlv = [&[code, value.len() as u8][..], &value].concat();
                    DhcpOption::decode(&mut Decoder::new(&tlv)).ok()
                })
                .flatten()
                .filter(|o| u8::from(OptionCode::from(o)) == code)
                .unwrap_or_else(|| DhcpOption::Unknown(UnknownOption::new(code.into(), value)));
            (code, opt)
        })
        .collect()
}

/// Both replies, decoded with dhcproto: header fields, addressing, options.
pub fn compare(ctx: &Ctx, port: &str, msg: &'static str, x: &[u8], d: &[u8]) -> Result<Vec<Diff>> {
    let xm = Message::decode(&mut Decoder::new(bootp(x))).context("decoding xdhcp's reply")?;
    let dm = Message::decode(&mut Decoder::new(bootp(d))).context("decoding dnsmasq's reply")?;
    let ip = |f: &[u8], at: usize| {
        let o = 14 + at;
        Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3])
    };
    let mac = |f: &[u8]| xdhcp::neutron::model::format_mac(&f[..6].try_into().unwrap());
    let cstr = |b: Option<&[u8]>| {
        let b = b.unwrap_or_default();
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        format!("{:?}", String::from_utf8_lossy(&b[..end]))
    };
    let fields: Vec<(&str, String, String)> = vec![
        ("eth dst", mac(x), mac(d)),
        ("ip src", ip(x, 12).to_string(), ip(d, 12).to_string()),
        ("ip dst", ip(x, 16).to_string(), ip(d, 16).to_string()),
        (
            "op",
            format!("{:?}", xm.opcode()),
            format!("{:?}", dm.opcode()),
        ),
        ("hops", xm.hops().to_string(), dm.hops().to_string()),
        ("xid", xm.xid().to_string(), dm.xid().to_string()),
        (
            "flags",
            format!("{:?}", xm.flags()),
            format!("{:?}", dm.flags()),
        ),
        ("ciaddr", xm.ciaddr().to_string(), dm.ciaddr().to_string()),
        ("yiaddr", xm.yiaddr().to_string(), dm.yiaddr().to_string()),
        ("siaddr", xm.siaddr().to_string(), dm.siaddr().to_string()),
        ("giaddr", xm.giaddr().to_string(), dm.giaddr().to_string()),
        (
            "chaddr",
            format!("{:02x?}", xm.chaddr()),
            format!("{:02x?}", dm.chaddr()),
        ),
        ("sname", cstr(xm.sname()), cstr(dm.sname())),
        ("file", cstr(xm.fname()), cstr(dm.fname())),
    ];
    let mut diffs = Vec::new();
    for (what, xv, dv) in fields {
        if xv != dv {
            diffs.push(Diff {
                port: port.into(),
                msg,
                what: what.into(),
                allowed: ALLOWED_FIELDS
                    .iter()
                    .find(|(f, _, check)| *f == what && check(ctx, &xv, &dv))
                    .map(|(_, r, _)| *r),
                xdhcp: xv,
                dnsmasq: dv,
            });
        }
    }
    diffs.extend(compare_options(ctx, port, msg, &options(x), &options(d)));
    Ok(diffs)
}

/// Every option code either reply carries, compared by decoded value.
pub fn compare_options(
    ctx: &Ctx,
    port: &str,
    msg: &'static str,
    x: &Options,
    d: &Options,
) -> Vec<Diff> {
    let codes: BTreeSet<u8> = x.keys().chain(d.keys()).copied().collect();
    let show = |o: Option<&DhcpOption>| o.map_or("-".to_string(), |o| format!("{o:?}"));
    let mut diffs = Vec::new();
    for code in codes {
        let (xo, dopt) = (x.get(&code), d.get(&code));
        if xo == dopt {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(c, _, check)| *c == code && check(ctx, xo, dopt))
            .map(|(_, reason, _)| *reason);
        let asked = if (ctx.requested)(code) {
            ""
        } else {
            " (not requested)"
        };
        diffs.push(Diff {
            port: port.into(),
            msg,
            what: format!("option {code}{asked}"),
            xdhcp: show(xo),
            dnsmasq: show(dopt),
            allowed,
        });
    }
    diffs
}
