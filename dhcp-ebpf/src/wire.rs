//! The wire: Ethernet, IPv4, UDP, BOOTP and DHCP numbers, and the IPv4 and UDP
//! headers every reply carries. Multi-byte values are as on the wire (network
//! byte order) where they are byte arrays, host order where they are integers.

use crate::csum;

/// Ethernet header: destination, source, ethertype.
pub const ETH_HLEN: usize = 14;
/// Offset of the Ethernet source address.
pub const ETH_SRC: usize = 6;
/// Offset of the ethertype (of the first VLAN tag, if tagged).
pub const ETH_TYPE: usize = 12;
/// An 802.1Q / 802.1ad tag: TCI, then the inner ethertype.
pub const VLAN_HLEN: usize = 4;
/// Ethertype IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethertype of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88a8;
/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Whether `ethertype` is a VLAN tag (802.1Q or 802.1ad) with another ethertype after it.
#[inline(always)]
pub fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// An IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// IPv4 protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// TTL of the replies.
pub const IPV4_TTL: u8 = 64;
/// Fragment offset and more-fragments bits of the IPv4 flags/offset field:
/// any of them set means a fragment.
pub const IPV4_FRAGMENT: u16 = 0x3fff;
/// The limited broadcast address.
pub const BROADCAST_IP: [u8; 4] = [255; 4];

/// Offsets in the IPv4 header.
pub mod ipv4 {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub const VERSION_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const FLAGS_FRAGMENT: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

/// The UDP header.
pub const UDP_HLEN: usize = 8;
/// Offsets in the UDP header.
pub mod udp {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
}
/// The DHCP server port.
pub const BOOTPS: u16 = 67;
/// The DHCP client port.
pub const BOOTPC: u16 = 68;

/// BOOTP `op` of a request.
pub const BOOTREQUEST: u8 = 1;
/// BOOTP `op` of a reply.
pub const BOOTREPLY: u8 = 2;
/// BOOTP `htype` of Ethernet.
pub const HTYPE_ETHER: u8 = 1;
/// BOOTP `hlen` of Ethernet.
pub const HLEN_ETHER: u8 = 6;
/// The `flags` bit asking for a broadcast reply (RFC 2131 §4.1).
pub const BROADCAST_FLAG: u16 = 0x8000;
/// The DHCP magic cookie, in front of the options.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// RFC 951/1542: BOOTP messages are at least 300 bytes; relays and old clients insist.
pub const MIN_BOOTP: usize = 300;
/// RFC 2131: a client accepts 576-byte IP packets unless option 57 says more.
pub const MIN_MAX_MSG: usize = 576;

/// Offsets in the BOOTP message (RFC 951, RFC 2131 §2).
pub mod bootp {
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    /// 16 bytes; an Ethernet client's MAC is the first six.
    pub const CHADDR: usize = 28;
    /// 64 bytes of server host name; also the end of the fixed fields.
    pub const SNAME: usize = 44;
    /// 128 bytes of boot file name.
    pub const FILE: usize = 108;
    pub const COOKIE: usize = 236;
    /// The first option.
    pub const OPTIONS: usize = 240;
}

/// DHCP message types (option 53, RFC 2132 §9.6).
pub const DHCPDISCOVER: u8 = 1;
pub const DHCPOFFER: u8 = 2;
pub const DHCPREQUEST: u8 = 3;
pub const DHCPDECLINE: u8 = 4;
pub const DHCPACK: u8 = 5;
pub const DHCPNAK: u8 = 6;
pub const DHCPRELEASE: u8 = 7;
pub const DHCPINFORM: u8 = 8;

/// The option codes either side reads or writes (RFC 2132 and the RFCs named).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const MTU: u8 = 26;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    /// Options continued in sname/file.
    pub const OVERLOAD: u8 = 52;
    pub const MSG_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MAX_MSG_SIZE: u8 = 57;
    pub const RENEWAL_T1: u8 = 58;
    pub const REBINDING_T2: u8 = 59;
    /// Echoed in replies (RFC 6842).
    pub const CLIENT_ID: u8 = 61;
    /// Echoed whole in replies (RFC 3046).
    pub const RELAY_AGENT: u8 = 82;
    /// RFC 3442.
    pub const CLASSLESS_ROUTES: u8 = 121;
    /// Microsoft's pre-standard copy of 121, which Neutron also sends.
    pub const MS_CLASSLESS_ROUTES: u8 = 249;
    pub const END: u8 = 255;
}

/// The reply's IPv4 header: no options, TTL 64, UDP, `udp_len` bytes of UDP
/// after it, checksum filled in.
#[inline(always)]
pub fn ipv4_header(src: [u8; 4], dst: [u8; 4], udp_len: u16) -> [u8; IPV4_HLEN] {
    let mut ip = [0u8; IPV4_HLEN];
    ip[ipv4::VERSION_IHL] = 0x40 | (IPV4_HLEN / 4) as u8;
    let total_len = (IPV4_HLEN as u16 + udp_len).to_be_bytes();
    ip[ipv4::TOTAL_LEN] = total_len[0];
    ip[ipv4::TOTAL_LEN + 1] = total_len[1];
    ip[ipv4::TTL] = IPV4_TTL;
    ip[ipv4::PROTOCOL] = IPPROTO_UDP;
    put4(&mut ip, ipv4::SRC, src);
    put4(&mut ip, ipv4::DST, dst);
    let sum = csum::checksum(csum::add(0, &ip)).to_be_bytes();
    ip[ipv4::CHECKSUM] = sum[0];
    ip[ipv4::CHECKSUM + 1] = sum[1];
    ip
}

/// The reply's UDP header, from port 67 to `dst_port`, with the checksum over
/// the pseudo header, this header and a payload whose ones'-complement sum
/// ([`csum::add`]) is `payload_sum`.
#[inline(always)]
pub fn udp_header(
    src: [u8; 4],
    dst: [u8; 4],
    dst_port: u16,
    udp_len: u16,
    payload_sum: u64,
) -> [u8; UDP_HLEN] {
    let mut h = [0u8; UDP_HLEN];
    let [s0, s1] = BOOTPS.to_be_bytes();
    let [d0, d1] = dst_port.to_be_bytes();
    let [l0, l1] = udp_len.to_be_bytes();
    h[udp::SRC_PORT] = s0;
    h[udp::SRC_PORT + 1] = s1;
    h[udp::DST_PORT] = d0;
    h[udp::DST_PORT + 1] = d1;
    h[udp::LEN] = l0;
    h[udp::LEN + 1] = l1;
    let mut sum = csum::add(payload_sum, &src);
    sum = csum::add(sum, &dst);
    sum += IPPROTO_UDP as u64 + udp_len as u64;
    sum = csum::add(sum, &h);
    let [c0, c1] = csum::udp_checksum(sum).to_be_bytes();
    h[udp::CHECKSUM] = c0;
    h[udp::CHECKSUM + 1] = c1;
    h
}

#[inline(always)]
fn put4(buf: &mut [u8; IPV4_HLEN], off: usize, v: [u8; 4]) {
    buf[off] = v[0];
    buf[off + 1] = v[1];
    buf[off + 2] = v[2];
    buf[off + 3] = v[3];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootp_offsets_follow_rfc951_field_sizes() {
        // (field, offset, size): each field starts where the previous ends.
        let fields = [
            ("op", bootp::OP, 1),
            ("htype", bootp::HTYPE, 1),
            ("hlen", bootp::HLEN, 1),
            ("hops", bootp::HOPS, 1),
            ("xid", bootp::XID, 4),
            ("secs", bootp::SECS, 2),
            ("flags", bootp::FLAGS, 2),
            ("ciaddr", bootp::CIADDR, 4),
            ("yiaddr", bootp::YIADDR, 4),
            ("siaddr", bootp::SIADDR, 4),
            ("giaddr", bootp::GIADDR, 4),
            ("chaddr", bootp::CHADDR, 16),
            ("sname", bootp::SNAME, 64),
            ("file", bootp::FILE, 128),
            ("cookie", bootp::COOKIE, 4),
        ];
        let mut next = 0;
        for (name, off, size) in fields {
            assert_eq!(off, next, "{name} starts after the previous field");
            next = off + size;
        }
        assert_eq!(next, bootp::OPTIONS, "options follow the cookie");
    }

    #[test]
    fn vlan_ethertypes_are_tags_and_ipv4_is_not() {
        let cases = [
            ("802.1Q", ETH_P_8021Q, true),
            ("802.1ad", ETH_P_8021AD, true),
            ("IPv4", ETH_P_IP, false),
            ("ARP", 0x0806, false),
            ("IPv6", 0x86dd, false),
        ];
        for (what, ethertype, tag) in cases {
            assert_eq!(is_vlan(ethertype), tag, "{what}");
        }
    }

    /// A DHCPOFFER's IPv4 header (10.0.0.2 → broadcast, 300-byte payload),
    /// its checksum worked out by hand per RFC 1071.
    #[test]
    fn ipv4_header_matches_a_known_one() {
        let h = ipv4_header([10, 0, 0, 2], BROADCAST_IP, 308);
        assert_eq!(
            h,
            [
                0x45, 0, 0x01, 0x48, 0, 0, 0, 0, 64, 17, 0x6f, 0xa4, 10, 0, 0, 2, 255, 255, 255,
                255
            ]
        );
        assert_eq!(csum::fold(csum::add(0, &h)), 0xffff, "verifies to all ones");
    }

    #[test]
    fn udp_checksum_verifies_over_pseudo_header_and_payload() {
        let cases: [(&str, &[u8]); 3] = [
            ("zeros", &[0; 300]),
            ("bytes", &[1, 2, 3, 4, 5, 6, 7, 8]),
            ("odd payload", &[0xab; 301]),
        ];
        for (what, payload) in cases {
            let (src, dst) = ([10, 0, 0, 2], [10, 0, 0, 5]);
            let len = (UDP_HLEN + payload.len()) as u16;
            let h = udp_header(src, dst, BOOTPC, len, csum::add(0, payload));
            assert_eq!(
                &h[..6],
                &[0, 67, 0, 68, (len >> 8) as u8, len as u8],
                "{what}"
            );
            // The receiver's check: everything, checksum included, sums to all ones.
            let mut s = csum::add(0, &src);
            s = csum::add(s, &dst);
            s += IPPROTO_UDP as u64 + len as u64;
            s = csum::add(s, &h);
            s = csum::add(s, payload);
            assert_eq!(csum::fold(s), 0xffff, "{what}");
        }
    }
}
