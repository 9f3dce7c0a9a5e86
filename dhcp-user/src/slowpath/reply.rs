//! The one reply builder (RFC 2131): what to answer a request with, the reply's
//! BOOTP payload and where it goes. The slow path sends what this builds; the
//! tests hold the XDP program's replies to it byte for byte.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};

pub const DHCPDISCOVER: u8 = 1;
pub const DHCPOFFER: u8 = 2;
pub const DHCPREQUEST: u8 = 3;
pub const DHCPDECLINE: u8 = 4;
pub const DHCPACK: u8 = 5;
pub const DHCPNAK: u8 = 6;
pub const DHCPRELEASE: u8 = 7;
pub const DHCPINFORM: u8 = 8;

pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BROADCAST_FLAG: u16 = 0x8000;
/// Offset of the first option in a BOOTP message.
pub const OPTIONS_OFF: usize = 240;
/// RFC 951/1542 minimum BOOTP message.
pub const MIN_BOOTP: usize = 300;
/// RFC 2131: what a client takes without option 57.
pub const MIN_MAX_MSG: usize = 576;

/// The request fields a reply is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub msg_type: u8,
    pub xid: [u8; 4],
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub max_msg_size: Option<u16>,
    /// Option 61 as a whole TLV, echoed (RFC 6842).
    pub client_id: Option<Vec<u8>>,
    /// Option 82 as a whole TLV, echoed (RFC 3046).
    pub relay_agent: Option<Vec<u8>>,
}

impl Request {
    /// The client's MAC (first six bytes of chaddr).
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.chaddr[..6]);
        mac
    }

    /// Parses a BOOTP/DHCP request (UDP payload), as strictly as the fast path.
    pub fn parse(p: &[u8]) -> Result<Self> {
        if p.len() < OPTIONS_OFF {
            bail!("{} bytes is shorter than a BOOTP message", p.len());
        }
        if p[0] != 1 {
            bail!("op {} is not BOOTREQUEST", p[0]);
        }
        if p[1] != 1 || p[2] != 6 {
            bail!("htype {} / hlen {} is not Ethernet", p[1], p[2]);
        }
        if p[236..240] != MAGIC_COOKIE {
            bail!("no DHCP magic cookie");
        }
        let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
        let mut r = Request {
            msg_type: 0,
            xid: [p[4], p[5], p[6], p[7]],
            flags: u16::from_be_bytes([p[10], p[11]]),
            ciaddr: ip(12),
            giaddr: ip(24),
            chaddr: p[28..44].try_into().unwrap(),
            requested_ip: None,
            server_id: None,
            max_msg_size: None,
            client_id: None,
            relay_agent: None,
        };
        let mut off = OPTIONS_OFF;
        loop {
            let Some(&code) = p.get(off) else {
                bail!("options end without END")
            };
            match code {
                255 => break,
                0 => {
                    off += 1;
                    continue;
                }
                _ => {}
            }
            let Some(&len) = p.get(off + 1) else {
                bail!("option {code} has no length")
            };
            let len = len as usize;
            let Some(val) = p.get(off + 2..off + 2 + len) else {
                bail!("option {code} runs past the end")
            };
            let exact = |n: usize| {
                if len == n {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("option {code} has length {len}, not {n}"))
                }
            };
            match code {
                53 => {
                    exact(1)?;
                    if r.msg_type != 0 {
                        bail!("option 53 repeated");
                    }
                    if val[0] == 0 {
                        bail!("message type 0");
                    }
                    r.msg_type = val[0];
                }
                50 => {
                    exact(4)?;
                    r.requested_ip = Some(ip_of(val));
                }
                54 => {
                    exact(4)?;
                    r.server_id = Some(ip_of(val));
                }
                57 => {
                    exact(2)?;
                    r.max_msg_size = Some(u16::from_be_bytes([val[0], val[1]]));
                }
                61 | 82 => {
                    if len == 0 {
                        bail!("option {code} is empty");
                    }
                    let slot = if code == 61 {
                        &mut r.client_id
                    } else {
                        &mut r.relay_agent
                    };
                    if slot.is_some() {
                        bail!("option {code} is split (RFC 3396)");
                    }
                    *slot = Some(p[off..off + 2 + len].to_vec());
                }
                52 => bail!("option overload (52) is not supported"),
                _ => {}
            }
            off += 2 + len;
        }
        if r.msg_type == 0 {
            bail!("no message type (option 53)");
        }
        Ok(r)
    }
}

fn ip_of(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// What the server knows of one client.
#[derive(Debug, Clone, Copy)]
pub struct LeaseView<'a> {
    pub ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub hostname: &'a [u8],
    /// The encoded options ([`crate::plan::options::ReplyOptions::encode`]).
    pub blob: &'a [u8],
}

/// The outcome of RFC 2131 §4.3 for a known client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send this message type (OFFER, ACK or NAK).
    Reply(u8),
    /// A SELECTING REQUEST naming another server: stay silent.
    NotOurServer,
    /// Nothing to answer (other message types, inconsistent REQUEST).
    Silent,
}

/// Which reply a DISCOVER or REQUEST gets.
pub fn decide(req: &Request, lease: &LeaseView) -> Decision {
    let ours = |ip: Ipv4Addr| Decision::Reply(if ip == lease.ip { DHCPACK } else { DHCPNAK });
    match req.msg_type {
        DHCPDISCOVER => Decision::Reply(DHCPOFFER),
        DHCPREQUEST => match (req.server_id, req.requested_ip) {
            (Some(server), Some(ip)) if server == lease.server_ip => ours(ip),
            (Some(_), Some(_)) => Decision::NotOurServer,
            (None, Some(ip)) => ours(ip),
            (None, None) if !req.ciaddr.is_unspecified() => ours(req.ciaddr),
            _ => Decision::Silent,
        },
        _ => Decision::Silent,
    }
}

/// The reply's BOOTP payload: options 53, 54, 12, the blob, 61 and 82 echoed,
/// END, padded to 300 bytes and to a multiple of four.
pub fn payload(req: &Request, lease: &LeaseView, reply: u8) -> Vec<u8> {
    let nak = reply == DHCPNAK;
    let mut flags = req.flags;
    if nak && !req.giaddr.is_unspecified() {
        flags |= BROADCAST_FLAG; // the relay must broadcast a NAK (§4.3.2)
    }
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut p = Vec::with_capacity(512);
    p.extend_from_slice(&[2, 1, 6, 0]);
    p.extend_from_slice(&req.xid);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&if reply == DHCPACK { req.ciaddr } else { zero }.octets());
    p.extend_from_slice(&if nak { zero } else { lease.ip }.octets());
    p.extend_from_slice(&if nak { zero } else { lease.siaddr }.octets());
    p.extend_from_slice(&req.giaddr.octets());
    p.extend_from_slice(&req.chaddr);
    p.resize(236, 0); // sname, file
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[53, 1, reply, 54, 4]);
    p.extend_from_slice(&lease.server_ip.octets());
    if !nak {
        if !lease.hostname.is_empty() {
            p.extend_from_slice(&[12, lease.hostname.len() as u8]);
            p.extend_from_slice(lease.hostname);
        }
        p.extend_from_slice(lease.blob);
    }
    for echo in [&req.client_id, &req.relay_agent].into_iter().flatten() {
        p.extend_from_slice(echo);
    }
    p.push(255);
    while p.len() < MIN_BOOTP || p.len() % 4 != 0 {
        p.push(0);
    }
    p
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub ip: Ipv4Addr,
    /// Ethernet destination; `None` means the request's Ethernet source.
    pub mac: Option<[u8; 6]>,
    pub port: u16,
}

/// giaddr → relay:67; NAK → broadcast; ciaddr → unicast; broadcast flag →
/// broadcast; else unicast to yiaddr at chaddr.
pub fn destination(req: &Request, lease_ip: Ipv4Addr, reply: u8) -> Destination {
    const BCAST: [u8; 6] = [0xff; 6];
    if !req.giaddr.is_unspecified() {
        Destination {
            ip: req.giaddr,
            mac: None,
            port: 67,
        }
    } else if reply == DHCPNAK || (req.ciaddr.is_unspecified() && req.flags & BROADCAST_FLAG != 0) {
        Destination {
            ip: Ipv4Addr::BROADCAST,
            mac: Some(BCAST),
            port: 68,
        }
    } else if !req.ciaddr.is_unspecified() {
        Destination {
            ip: req.ciaddr,
            mac: None,
            port: 68,
        }
    } else {
        Destination {
            ip: lease_ip,
            mac: Some(req.mac()),
            port: 68,
        }
    }
}

/// RFC 1071 ones'-complement sum, folded.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in chunks {
        for pair in chunk.chunks(2) {
            let hi = pair[0] as u64;
            let lo = pair.get(1).copied().unwrap_or(0) as u64;
            sum += (hi << 8) | lo;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The complete reply frame: the request's L2 header (VLAN tags kept) with new
/// addresses, a 20-byte IPv4 header, UDP with checksum, and [`payload`].
pub fn frame(
    request_l2: &[u8],
    server_mac: [u8; 6],
    req: &Request,
    lease: &LeaseView,
    reply: u8,
) -> Vec<u8> {
    let body = payload(req, lease, reply);
    let dst = destination(req, lease.ip, reply);
    wrap(request_l2, server_mac, lease.server_ip, dst, &body)
}

/// Puts a BOOTP payload into Ethernet (the request's L2 header, new
/// addresses), IPv4 and UDP, with both checksums.
pub fn wrap(
    request_l2: &[u8],
    server_mac: [u8; 6],
    server_ip: Ipv4Addr,
    dst: Destination,
    body: &[u8],
) -> Vec<u8> {
    let mut f = request_l2.to_vec();
    let eth_src: [u8; 6] = request_l2[6..12].try_into().unwrap();
    f[0..6].copy_from_slice(&dst.mac.unwrap_or(eth_src));
    f[6..12].copy_from_slice(&server_mac);
    let udp_len = (8 + body.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&server_ip.octets());
    ip[16..20].copy_from_slice(&dst.ip.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&67u16.to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let pseudo = [
        &server_ip.octets()[..],
        &dst.ip.octets(),
        &[0, 17],
        &udp_len.to_be_bytes(),
    ]
    .concat();
    let mut c = checksum(&[&pseudo, &udp, body]);
    if c == 0 {
        c = 0xffff;
    }
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f.extend_from_slice(body);
    f
}

/// The TLVs of an option blob, in order.
pub fn tlvs(blob: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 2 <= blob.len() {
        let (code, len) = (blob[off], blob[off + 1] as usize);
        let Some(value) = blob.get(off + 2..off + 2 + len) else {
            break;
        };
        out.push((code, value));
        off += 2 + len;
    }
    out
}

/// The blob without the options in `drop`.
pub fn without(blob: &[u8], drop: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blob.len());
    for (code, value) in tlvs(blob) {
        if !drop.contains(&code) {
            out.push(code);
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
    }
    out
}

/// The DHCPACK to a DHCPINFORM (§3.4, §4.3.5): no lease time, yiaddr zero,
/// sent to ciaddr.
pub fn inform_payload(req: &Request, lease: &LeaseView) -> Vec<u8> {
    let blob = without(lease.blob, &[51, 58, 59]);
    let view = LeaseView {
        blob: &blob,
        ..*lease
    };
    let mut p = payload(req, &view, DHCPACK);
    p[16..20].copy_from_slice(&[0; 4]);
    p
}

/// The largest IP packet the client takes (RFC 2131: 576 unless option 57 says more).
pub fn max_reply_ip_len(req: &Request) -> usize {
    req.max_msg_size
        .map_or(MIN_MAX_MSG, |m| (m as usize).max(MIN_MAX_MSG))
}

/// The relay rule, the same as the XDP program's `relay_allowed`: a request
/// relayed through giaddr is answered only when relaying is on (`NET_RELAY_OK`),
/// from a listed relay when the network has `NET_RELAY_LISTED`, and never when
/// its Ethernet source is a port of the network (a VM is no relay).
pub fn relay_allowed(
    flags: u16,
    giaddr_listed: impl FnOnce() -> bool,
    source_is_port: impl FnOnce() -> bool,
) -> bool {
    flags & dhcp_ebpf::NET_RELAY_OK != 0
        && (flags & dhcp_ebpf::NET_RELAY_LISTED == 0 || giaddr_listed())
        && !source_is_port()
}
