//! Builds client request frames byte by byte: for the demo, the benchmarks and
//! the tests (which bend them into every malformed shape).

use std::net::Ipv4Addr;

use dhcp_ebpf::wire::{
    bootp, ipv4, opt, BOOTPC, BOOTPS, BOOTREQUEST, DHCPDISCOVER, DHCPREQUEST, ETH_HLEN,
    ETH_P_8021Q, ETH_P_IP, HLEN_ETHER, HTYPE_ETHER, IPPROTO_UDP, IPV4_HLEN, IPV4_TTL, MAGIC_COOKIE,
    UDP_HLEN, VLAN_HLEN,
};
use xdhcp::slowpath::reply::checksum;

/// What dhclient asks for (option 55).
const PARAMETERS: [u8; 6] = [
    opt::SUBNET_MASK,
    opt::ROUTER,
    opt::DNS,
    opt::DOMAIN,
    opt::MTU,
    opt::CLASSLESS_ROUTES,
];

/// A DHCP request as a client (or relay) puts it on the wire.
#[derive(Debug, Clone)]
pub struct RequestFrame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// 802.1Q tags (VLAN ids), outermost first.
    pub vlans: Vec<u16>,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    /// IPv4 options (padded to a multiple of 4 by the caller).
    pub ip_options: Vec<u8>,
    pub udp_src: u16,
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: [u8; 4],
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub cookie: [u8; 4],
    /// Options in order, without END.
    pub options: Vec<(u8, Vec<u8>)>,
    /// Append END (255).
    pub end: bool,
    /// Pad the BOOTP message with zeros to this length (dhclient sends 300).
    pub pad_to: usize,
    /// Header fields that disagree with the frame (none by default).
    pub lies: Lies,
}

/// Header fields a hostile or broken sender gets wrong. The checksums are
/// computed over the other lies, so each lie is the only thing wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lies {
    /// The IPv4 version nibble, instead of 4.
    pub ip_version: Option<u8>,
    /// The IPv4 flags / fragment offset field (0: a whole datagram).
    pub ip_flags_fragment: u16,
    /// Added to the IPv4 total length.
    pub ip_total_len_extra: u16,
    /// Added to the UDP length.
    pub udp_len_extra: u16,
    /// XORed into the IPv4 header checksum once computed.
    pub ip_checksum_xor: u16,
    /// The UDP checksum field, instead of the right one.
    pub udp_checksum: Option<u16>,
}

impl RequestFrame {
    /// A broadcast DHCPDISCOVER from `mac`.
    pub fn discover(mac: [u8; 6]) -> Self {
        Self {
            eth_dst: [0xff; 6],
            eth_src: mac,
            vlans: Vec::new(),
            ip_src: Ipv4Addr::UNSPECIFIED,
            ip_dst: Ipv4Addr::BROADCAST,
            ip_options: Vec::new(),
            udp_src: BOOTPC,
            op: BOOTREQUEST,
            htype: HTYPE_ETHER,
            hlen: HLEN_ETHER,
            hops: 0,
            xid: [0x12, 0x34, 0x56, 0x78],
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            cookie: MAGIC_COOKIE,
            options: vec![
                (opt::MSG_TYPE, vec![DHCPDISCOVER]),
                (opt::PARAMETER_REQUEST_LIST, PARAMETERS.to_vec()),
            ],
            end: true,
            pad_to: 300,
            lies: Lies::default(),
        }
    }

    /// A SELECTING DHCPREQUEST for `ip` from server `server`.
    pub fn request(mac: [u8; 6], ip: Ipv4Addr, server: Ipv4Addr) -> Self {
        let mut f = Self::discover(mac);
        f.options = vec![
            (opt::MSG_TYPE, vec![DHCPREQUEST]),
            (opt::SERVER_ID, server.octets().to_vec()),
            (opt::REQUESTED_IP, ip.octets().to_vec()),
            (opt::PARAMETER_REQUEST_LIST, PARAMETERS.to_vec()),
        ];
        f
    }

    /// Sets message type `t` (option 53), keeping the other options.
    pub fn with_type(mut self, t: u8) -> Self {
        for (code, value) in &mut self.options {
            if *code == opt::MSG_TYPE {
                *value = vec![t];
            }
        }
        self
    }

    /// Appends option `code`.
    pub fn with_option(mut self, code: u8, value: &[u8]) -> Self {
        self.options.push((code, value.to_vec()));
        self
    }

    /// As a client with address `ip` sends it (RENEWING, INFORM, RELEASE):
    /// ciaddr and IP source `ip`, unicast to the server's `server_ip` and
    /// `server_mac`.
    pub fn unicast_from(mut self, ip: Ipv4Addr, server_ip: Ipv4Addr, server_mac: [u8; 6]) -> Self {
        self.ciaddr = ip;
        self.ip_src = ip;
        self.ip_dst = server_ip;
        self.eth_dst = server_mac;
        self
    }

    /// Removes every option `code`.
    pub fn without_option(mut self, code: u8) -> Self {
        self.options.retain(|(c, _)| *c != code);
        self
    }

    /// Length of the L2 header (Ethernet and VLAN tags).
    pub fn l2_len(&self) -> usize {
        ETH_HLEN + VLAN_HLEN * self.vlans.len()
    }

    /// Offset of the BOOTP message in the frame.
    pub fn bootp_offset(&self) -> usize {
        self.l2_len() + IPV4_HLEN + self.ip_options.len() + UDP_HLEN
    }

    /// The BOOTP message (UDP payload).
    pub fn bootp(&self) -> Vec<u8> {
        let mut p = vec![self.op, self.htype, self.hlen, self.hops];
        p.extend_from_slice(&self.xid);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.flags.to_be_bytes());
        p.extend_from_slice(&self.ciaddr.octets());
        p.extend_from_slice(&[0; 8]); // yiaddr, siaddr
        p.extend_from_slice(&self.giaddr.octets());
        p.extend_from_slice(&self.chaddr);
        p.resize(bootp::COOKIE, 0);
        p.extend_from_slice(&self.cookie);
        for (code, value) in &self.options {
            p.push(*code);
            p.push(value.len() as u8);
            p.extend_from_slice(value);
        }
        if self.end {
            p.push(opt::END);
        }
        if p.len() < self.pad_to {
            p.resize(self.pad_to, 0);
        }
        p
    }

    /// The whole frame, with correct lengths and checksums (unless [`Lies`] says otherwise).
    pub fn bytes(&self) -> Vec<u8> {
        let body = self.bootp();
        let mut f = self.l2();
        let (ip, udp) = self.headers(&body, self.lies.ip_flags_fragment);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&udp);
        f.extend_from_slice(&body);
        f
    }

    /// The request as two IPv4 fragments, the first carrying the UDP header
    /// and the first `first_len` bytes of the BOOTP message (rounded down to
    /// a multiple of 8), the second the rest: what a sender with a small MTU
    /// puts on the wire.
    pub fn fragments(&self, first_len: usize) -> [Vec<u8>; 2] {
        let body = self.bootp();
        let (ip, udp) = self.headers(&body, 0);
        let ihl = ip.len();
        let mut datagram = udp.clone();
        datagram.extend_from_slice(&body);
        let cut = ((UDP_HLEN + first_len) / 8 * 8).min(datagram.len());
        let piece = |bytes: &[u8], flags_fragment: u16| {
            let mut h = ip.clone();
            h[ipv4::TOTAL_LEN..ipv4::TOTAL_LEN + 2]
                .copy_from_slice(&((ihl + bytes.len()) as u16).to_be_bytes());
            h[ipv4::FLAGS_FRAGMENT..ipv4::FLAGS_FRAGMENT + 2]
                .copy_from_slice(&flags_fragment.to_be_bytes());
            h[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&[0, 0]);
            let c = checksum(&[&h]);
            h[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
            let mut f = self.l2();
            f.extend_from_slice(&h);
            f.extend_from_slice(bytes);
            f
        };
        const MORE_FRAGMENTS: u16 = 0x2000;
        [
            piece(&datagram[..cut], MORE_FRAGMENTS),
            piece(&datagram[cut..], (cut / 8) as u16),
        ]
    }

    /// Ethernet and VLAN tags.
    fn l2(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(1600);
        f.extend_from_slice(&self.eth_dst);
        f.extend_from_slice(&self.eth_src);
        for vid in &self.vlans {
            f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ETH_P_IP.to_be_bytes());
        f
    }

    /// The IPv4 header (with this flags / fragment field) and UDP header of `body`.
    fn headers(&self, body: &[u8], flags_fragment: u16) -> (Vec<u8>, Vec<u8>) {
        let lies = &self.lies;
        let ihl = IPV4_HLEN + self.ip_options.len();
        let udp_len = (UDP_HLEN + body.len()) as u16 + lies.udp_len_extra;
        let total_len = (ihl + UDP_HLEN + body.len()) as u16 + lies.ip_total_len_extra;
        let version = lies.ip_version.unwrap_or(4);
        let mut ip = vec![version << 4 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&total_len.to_be_bytes());
        // id, flags/fragment offset, TTL, protocol, checksum (filled in below).
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&flags_fragment.to_be_bytes());
        ip.extend_from_slice(&[IPV4_TTL, IPPROTO_UDP, 0, 0]);
        ip.extend_from_slice(&self.ip_src.octets());
        ip.extend_from_slice(&self.ip_dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let c = checksum(&[&ip]) ^ lies.ip_checksum_xor;
        ip[ipv4::CHECKSUM..ipv4::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
        let mut udp = Vec::with_capacity(UDP_HLEN);
        udp.extend_from_slice(&self.udp_src.to_be_bytes());
        udp.extend_from_slice(&BOOTPS.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        let pseudo = [
            &self.ip_src.octets()[..],
            &self.ip_dst.octets(),
            &[0, IPPROTO_UDP],
            &udp_len.to_be_bytes(),
        ]
        .concat();
        let c = match checksum(&[&pseudo, &udp, &[0, 0], body]) {
            0 => 0xffff, // 0 means "no checksum" (RFC 768)
            c => c,
        };
        udp.extend_from_slice(&lies.udp_checksum.unwrap_or(c).to_be_bytes());
        (ip, udp)
    }
}

impl RequestFrame {
    /// The frame with its VLAN tags carrying these TPIDs, outermost first, one
    /// per tag: `[0x88a8, 0x8100]` on two tags is 802.1ad QinQ (an S-tag over a
    /// C-tag). [`RequestFrame::bytes`] makes every tag 802.1Q (0x8100).
    pub fn bytes_with_tpids(&self, tpids: &[u16]) -> Vec<u8> {
        assert_eq!(
            tpids.len(),
            self.vlans.len(),
            "TPIDs {tpids:04x?} given for VLAN tags {:?}: one per tag",
            self.vlans
        );
        let mut f = self.bytes();
        for (i, tpid) in tpids.iter().enumerate() {
            let at = 12 + 4 * i;
            f[at..at + 2].copy_from_slice(&tpid.to_be_bytes());
        }
        f
    }
}
