//! The one reply builder (RFC 2131): what to answer a request with, the reply's
//! BOOTP payload and where it goes. The slow path sends what this builds; the
//! tests hold the XDP program's replies to it byte for byte.
//!
//! The rules themselves (the §4.3 decision, the reply's header fields, the
//! §4.1 destination, the IPv4/UDP headers and checksums) and the wire numbers
//! are `dhcp_ebpf`'s, the same functions the XDP program calls; this module
//! puts them together over byte vectors.

use std::net::Ipv4Addr;

use anyhow::{bail, Result};
use dhcp_ebpf::{
    csum, rfc2131,
    wire::{self, bootp, opt, BOOTREPLY, BOOTREQUEST, HLEN_ETHER, HTYPE_ETHER},
};

pub use dhcp_ebpf::rfc2131::Decision;
pub use dhcp_ebpf::wire::{
    bootp::OPTIONS as OPTIONS_OFF, DHCPACK, DHCPDECLINE, DHCPDISCOVER, DHCPINFORM, DHCPNAK,
    DHCPOFFER, DHCPRELEASE, DHCPREQUEST, MAGIC_COOKIE, MIN_BOOTP, MIN_MAX_MSG,
};

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
    /// Option 61 as it is echoed (RFC 6842): its value (joined, if the
    /// request split it, RFC 3396) as one TLV, or several for a value over
    /// 255 bytes.
    pub client_id: Option<Vec<u8>>,
    /// Option 82 as a whole TLV, echoed (RFC 3046).
    pub relay_agent: Option<Vec<u8>>,
    /// Option 55: the codes the client asks for (empty if absent).
    pub parameters: Vec<u8>,
}

impl Request {
    /// The client's MAC (first six bytes of chaddr).
    pub fn mac(&self) -> [u8; 6] {
        let mut mac = [0; 6];
        mac.copy_from_slice(&self.chaddr[..6]);
        mac
    }

    /// Parses a BOOTP/DHCP request (UDP payload), as strictly as the fast
    /// path, but with repeated options joined (RFC 3396), which the fast path
    /// passes up.
    pub fn parse(p: &[u8]) -> Result<Self> {
        if p.len() < OPTIONS_OFF {
            bail!("{} bytes is shorter than a BOOTP message", p.len());
        }
        let (op, htype, hlen) = (p[bootp::OP], p[bootp::HTYPE], p[bootp::HLEN]);
        if op != BOOTREQUEST {
            bail!("op {op} is not BOOTREQUEST");
        }
        if htype != HTYPE_ETHER || hlen != HLEN_ETHER {
            bail!("htype {htype} / hlen {hlen} is not Ethernet");
        }
        if p[bootp::COOKIE..OPTIONS_OFF] != MAGIC_COOKIE {
            bail!("no DHCP magic cookie");
        }
        let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
        let x = bootp::XID;
        let mut r = Request {
            msg_type: 0,
            xid: [p[x], p[x + 1], p[x + 2], p[x + 3]],
            flags: u16::from_be_bytes([p[bootp::FLAGS], p[bootp::FLAGS + 1]]),
            ciaddr: ip(bootp::CIADDR),
            giaddr: ip(bootp::GIADDR),
            chaddr: p[bootp::CHADDR..bootp::SNAME].try_into().unwrap(),
            requested_ip: None,
            server_id: None,
            max_msg_size: None,
            client_id: None,
            relay_agent: None,
            parameters: Vec::new(),
        };
        for (code, val) in joined_options(&p[OPTIONS_OFF..])? {
            let len = val.len();
            let exact = |n: usize| {
                if len == n {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("option {code} has length {len}, not {n}"))
                }
            };
            match code {
                opt::MSG_TYPE => {
                    exact(1)?;
                    if val[0] == 0 {
                        bail!("message type 0");
                    }
                    r.msg_type = val[0];
                }
                opt::REQUESTED_IP => {
                    exact(4)?;
                    r.requested_ip = Some(ip_of(&val));
                }
                opt::SERVER_ID => {
                    exact(4)?;
                    r.server_id = Some(ip_of(&val));
                }
                opt::MAX_MSG_SIZE => {
                    exact(2)?;
                    r.max_msg_size = Some(u16::from_be_bytes([val[0], val[1]]));
                }
                opt::PARAMETER_REQUEST_LIST => r.parameters = val,
                opt::CLIENT_ID | opt::RELAY_AGENT => {
                    if len == 0 {
                        bail!("option {code} is empty");
                    }
                    let echo = Some(encode_long(code, &val));
                    if code == opt::CLIENT_ID {
                        r.client_id = echo;
                    } else {
                        r.relay_agent = echo;
                    }
                }
                opt::OVERLOAD => bail!("option overload (52) is not supported"),
                _ => {}
            }
        }
        if r.msg_type == 0 {
            bail!("no message type (option 53)");
        }
        Ok(r)
    }
}

/// The options field's options, each once, in the order of their first
/// instance, the values of repeated instances joined (RFC 3396 §7); PADs
/// skipped, up to END, which must be there.
fn joined_options(field: &[u8]) -> Result<Vec<(u8, Vec<u8>)>> {
    let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut off = 0;
    loop {
        let Some(&code) = field.get(off) else {
            bail!("options end without END")
        };
        match code {
            opt::END => return Ok(out),
            opt::PAD => {
                off += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = field.get(off + 1) else {
            bail!("option {code} has no length")
        };
        let Some(val) = field.get(off + 2..off + 2 + len as usize) else {
            bail!("option {code} runs past the end")
        };
        match out.iter_mut().find(|(c, _)| *c == code) {
            Some((_, joined)) => joined.extend_from_slice(val),
            None => out.push((code, val.to_vec())),
        }
        off += 2 + val.len();
    }
}

/// Option `code` with `value` as TLVs: one, or as many 255-byte pieces as a
/// longer value needs (RFC 3396 §6).
fn encode_long(code: u8, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    for piece in value.chunks(255) {
        out.push(code);
        out.push(piece.len() as u8);
        out.extend_from_slice(piece);
    }
    out
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

/// Which reply a DISCOVER or REQUEST gets (RFC 2131 §4.3, [`rfc2131::decide`]).
pub fn decide(req: &Request, lease: &LeaseView) -> Decision {
    let ask = rfc2131::Ask {
        msg_type: req.msg_type,
        ciaddr: req.ciaddr.octets(),
        requested_ip: req.requested_ip.map(|ip| ip.octets()),
        server_id: req.server_id.map(|ip| ip.octets()),
    };
    rfc2131::decide(&ask, lease.ip.octets(), lease.server_ip.octets())
}

/// The reply's BOOTP payload: options 53, 54, 12, the blob, 61 and 82 echoed,
/// END, padded to 300 bytes and to a multiple of four.
pub fn payload(req: &Request, lease: &LeaseView, reply: u8) -> Vec<u8> {
    let f = rfc2131::reply_fields(
        reply,
        req.flags,
        req.ciaddr.octets(),
        req.giaddr.octets(),
        lease.ip.octets(),
        lease.siaddr.octets(),
    );
    let mut p = Vec::with_capacity(512);
    // op, htype, hlen, hops 0; xid; secs 0.
    p.extend_from_slice(&[BOOTREPLY, HTYPE_ETHER, HLEN_ETHER, 0]);
    p.extend_from_slice(&req.xid);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&f.flags.to_be_bytes());
    p.extend_from_slice(&f.ciaddr);
    p.extend_from_slice(&f.yiaddr);
    p.extend_from_slice(&f.siaddr);
    p.extend_from_slice(&req.giaddr.octets());
    p.extend_from_slice(&req.chaddr);
    p.resize(bootp::COOKIE, 0); // sname, file
    p.extend_from_slice(&MAGIC_COOKIE);
    p.extend_from_slice(&[opt::MSG_TYPE, 1, reply, opt::SERVER_ID, 4]);
    p.extend_from_slice(&lease.server_ip.octets());
    if reply != DHCPNAK {
        if !lease.hostname.is_empty() {
            p.extend_from_slice(&[opt::HOSTNAME, lease.hostname.len() as u8]);
            p.extend_from_slice(lease.hostname);
        }
        p.extend_from_slice(lease.blob);
    }
    for echo in [&req.client_id, &req.relay_agent].into_iter().flatten() {
        p.extend_from_slice(echo);
    }
    p.push(opt::END);
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

/// Where `reply` to `req` goes (RFC 2131 §4.1, [`rfc2131::destination`]).
pub fn destination(req: &Request, lease_ip: Ipv4Addr, reply: u8) -> Destination {
    let d = rfc2131::destination(
        reply,
        req.flags,
        req.ciaddr.octets(),
        req.giaddr.octets(),
        lease_ip.octets(),
        req.mac(),
    );
    Destination {
        ip: Ipv4Addr::from(d.ip),
        mac: d.mac,
        port: d.port,
    }
}

/// RFC 1071 checksum over `chunks` (each odd one padded with a zero byte).
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    csum::checksum(chunks.iter().fold(0, |sum, chunk| csum::add(sum, chunk)))
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
    let eth_src: [u8; 6] = request_l2[wire::ETH_SRC..wire::ETH_TYPE]
        .try_into()
        .unwrap();
    f[..wire::ETH_SRC].copy_from_slice(&dst.mac.unwrap_or(eth_src));
    f[wire::ETH_SRC..wire::ETH_TYPE].copy_from_slice(&server_mac);
    let udp_len = (wire::UDP_HLEN + body.len()) as u16;
    let (src_ip, dst_ip) = (server_ip.octets(), dst.ip.octets());
    let ip = wire::ipv4_header(src_ip, dst_ip, udp_len);
    let udp = wire::udp_header(src_ip, dst_ip, dst.port, udp_len, csum::add(0, body));
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f.extend_from_slice(body);
    f
}

/// The TLVs of an option blob or of a message's options field, in order, as
/// they stand (an option split by RFC 3396 is several): PADs are skipped, the
/// walk stops at END or at an option that runs past the end. (A blob has
/// neither PAD nor END: [`crate::plan::options::push_tlv`] refuses those codes.)
pub fn tlvs(options: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(&code) = options.get(off) {
        match code {
            opt::END => break,
            opt::PAD => off += 1,
            _ => {
                let Some(value) = options
                    .get(off + 1)
                    .and_then(|&len| options.get(off + 2..off + 2 + len as usize))
                else {
                    break;
                };
                out.push((code, value));
                off += 2 + value.len();
            }
        }
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
    let blob = without(
        lease.blob,
        &[opt::LEASE_TIME, opt::RENEWAL_T1, opt::REBINDING_T2],
    );
    let view = LeaseView {
        blob: &blob,
        ..*lease
    };
    let mut p = payload(req, &view, DHCPACK);
    p[bootp::YIADDR..bootp::YIADDR + 4].copy_from_slice(&[0; 4]);
    p
}

/// The largest IP packet the client takes (RFC 2131: 576 unless option 57 says more).
pub fn max_reply_ip_len(req: &Request) -> usize {
    rfc2131::max_reply_ip_len(req.max_msg_size.unwrap_or(0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlvs_walks_blobs_and_options_fields() {
        type Want = &'static [(u8, &'static [u8])];
        let cases: [(&str, &[u8], Want); 7] = [
            (
                "a blob: TLVs back to back",
                &[1, 1, 9, 3, 0],
                &[(1, &[9]), (3, &[])],
            ),
            ("nothing", &[], &[]),
            ("PADs are skipped", &[0, 0, 53, 1, 2, 0], &[(53, &[2])]),
            (
                "END ends the walk",
                &[53, 1, 2, 255, 6, 1, 9],
                &[(53, &[2])],
            ),
            (
                "a split option stays two TLVs",
                &[12, 1, b'a', 12, 1, b'b'],
                &[(12, b"a"), (12, b"b")],
            ),
            (
                "an option past the end ends the walk",
                &[53, 1, 2, 6, 4, 10, 0],
                &[(53, &[2])],
            ),
            (
                "a code without a length ends the walk",
                &[53, 1, 2, 6],
                &[(53, &[2])],
            ),
        ];
        for (what, options, want) in cases {
            assert_eq!(tlvs(options), want, "{what}");
        }
    }
}
