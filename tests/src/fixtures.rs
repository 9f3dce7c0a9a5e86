//! The fast path's specification as a Katran-style fixture table: each row is
//! one input frame and what the XDP program must do with it, stated in the row:
//! XDP_TX with the reply's key fields, or XDP_PASS with the reason it counts.
//!
//! `tests/tests/fastpath.rs` runs every row through BPF_PROG_TEST_RUN and holds
//! the reply to what the row states (then to the userspace reply builder, byte
//! for byte); `src/bin/bench.rs` times the rows named in [`BENCH_ROWS`].

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use dhcp_ebpf::stat;
use dhcproto::v4::MessageType;
use xdhcp::slowpath::reply::{DHCPDECLINE, DHCPINFORM, DHCPRELEASE};

use crate::craft::{Lies, RequestFrame};
use crate::{Client, Harness, CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC, STRANGER_MAC};

/// A network with relaying off.
pub const NET: u32 = 1;
/// A network whose relayed requests the fast path may answer.
pub const RELAY_NET: u32 = 2;
/// A network that answers only the relays listed in RELAYS (RELAY_IP).
pub const LISTED_NET: u32 = 3;
pub const RELAY_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x99];
pub const RELAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// A relay that is not in RELAYS.
pub const UNLISTED_RELAY_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 7);
pub const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
/// An address no client on the networks holds.
pub const WRONG_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);
/// A client whose reply is large: 20 classless routes and 10 extra options.
pub const BIG_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0xb1, 0x90];
pub const BIG_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 6);
/// A client whose port sets dnsmasq's server-ip-address (BOOTP siaddr).
pub const PXE_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x0b, 0x07];
pub const PXE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);
pub const NEXT_SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// A client whose port has a dns_name: its option 12 is stored (NAMES), not
/// made from its IP.
pub const NAMED_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x00, 0x0e, 0x01];
pub const NAMED_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 8);
pub const NAMED_HOST: &str = "web-frontend-01";
/// The lease time of every client (`Client::typical`).
pub const LEASE_SECS: u32 = 86400;
/// Option 61 as a client sends it: hardware type 1 and a MAC.
pub const CLIENT_ID: [u8; 7] = [1, 0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
/// Option 82 as a relay adds it: circuit id "eth0", remote id 0xabcd.
pub const AGENT_INFO: [u8; 10] = [1, 4, b'e', b't', b'h', b'0', 2, 2, 0xab, 0xcd];
/// Option 57 (maximum DHCP message size) of the big client's requests.
pub const MAX_MSG_1500: [u8; 2] = 1500u16.to_be_bytes();
/// 0.0.0.0: a BOOTP address field left unset.
pub const ZERO: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
pub const BROADCAST_IP: Ipv4Addr = Ipv4Addr::BROADCAST;
/// The DHCP client port (replies to clients go here).
pub const BOOTPC: u16 = 68;
/// The DHCP server port (replies to relays go here).
pub const BOOTPS: u16 = 67;
/// VLAN tag protocol ids: 802.1Q (C-tag) and 802.1ad (S-tag).
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// The rows `bench` times, by name: DISCOVER→OFFER and REQUEST→ACK of a
/// typical port and of one with a large reply, all on [`NET`].
pub const BENCH_ROWS: [&str; 4] = [
    "DISCOVER → OFFER, unicast to yiaddr at chaddr",
    "SELECTING REQUEST naming us → ACK",
    "option 57 (1500) lets 20 routes and 10 extra options through",
    "option 57 (1500) lets the same big reply through in an ACK",
];

/// The ports every network of the table has a lease for.
pub fn clients() -> Vec<Client> {
    let mut pxe = Client::typical(PXE_MAC, PXE_IP);
    pxe.lease.siaddr = NEXT_SERVER;
    let mut named = Client::typical(NAMED_MAC, NAMED_IP);
    named.lease.hostname = NAMED_HOST.as_bytes().to_vec();
    vec![
        Client::typical(CLIENT_MAC, CLIENT_IP),
        Client::big(BIG_MAC, BIG_IP),
        pxe,
        named,
    ]
}

/// The client (as put in the maps) with MAC `mac`, if any.
pub fn client(mac: [u8; 6]) -> Option<Client> {
    clients().into_iter().find(|c| c.lease.mac == mac)
}

/// A fast path with the table's networks, relay list and clients in its maps.
pub fn harness() -> Result<Harness> {
    let mut h = Harness::new().context("loading the fast path")?;
    h.add_net(NET, SERVER_MAC, false)?;
    h.add_net(RELAY_NET, SERVER_MAC, true)?;
    h.add_net_flags(
        LISTED_NET,
        SERVER_MAC,
        dhcp_ebpf::NET_RELAY_OK | dhcp_ebpf::NET_RELAY_LISTED,
    )?;
    h.maps
        .relays
        .insert(u32::from_ne_bytes(RELAY_IP.octets()), 1, 0)
        .with_context(|| format!("listing relay {RELAY_IP}"))?;
    for net in [NET, RELAY_NET, LISTED_NET] {
        for c in clients() {
            h.add_client(net, &c)
                .with_context(|| format!("adding client {} to network {net}", c.lease.ip))?;
        }
    }
    Ok(h)
}

/// INIT: a broadcast DISCOVER from the client.
pub fn discover() -> RequestFrame {
    RequestFrame::discover(CLIENT_MAC)
}

/// SELECTING: a broadcast REQUEST for `ip` naming `server` (options 54, 50).
pub fn selecting(server: Ipv4Addr, ip: Ipv4Addr) -> RequestFrame {
    RequestFrame::request(CLIENT_MAC, ip, server)
}

/// INIT-REBOOT: a broadcast REQUEST for `ip` (option 50), no server named.
pub fn init_reboot(ip: Ipv4Addr) -> RequestFrame {
    selecting(SERVER_IP, ip).without_option(54)
}

/// RENEWING: unicast to the server from `ciaddr`, no option 50 or 54.
pub fn renewing(ciaddr: Ipv4Addr) -> RequestFrame {
    let mut f = selecting(SERVER_IP, CLIENT_IP)
        .without_option(54)
        .without_option(50);
    f.ciaddr = ciaddr;
    f.ip_src = ciaddr;
    f.ip_dst = SERVER_IP;
    f.eth_dst = SERVER_MAC;
    f
}

/// REBINDING: like RENEWING, but broadcast.
pub fn rebinding(ciaddr: Ipv4Addr) -> RequestFrame {
    let mut f = renewing(ciaddr);
    f.ip_dst = BROADCAST_IP;
    f.eth_dst = BROADCAST_MAC;
    f
}

/// `f` as the relay RELAY_IP forwards it: giaddr set, hops 1, unicast from 67.
pub fn relayed(mut f: RequestFrame) -> RequestFrame {
    f.giaddr = RELAY_IP;
    f.hops = 1;
    f.eth_src = RELAY_MAC;
    f.ip_src = RELAY_IP;
    f.ip_dst = SERVER_IP;
    f.udp_src = BOOTPS;
    f
}

/// `f` with the broadcast flag set.
pub fn broadcast_flag(mut f: RequestFrame) -> RequestFrame {
    f.flags = 0x8000;
    f
}

/// `f` carrying 802.1Q tags with these VLAN ids, outermost first.
pub fn vlans(mut f: RequestFrame, ids: &[u16]) -> RequestFrame {
    f.vlans = ids.to_vec();
    f
}

/// `f` with these header lies (see [`Lies`]).
pub fn lying(mut f: RequestFrame, lies: Lies) -> RequestFrame {
    f.lies = lies;
    f
}

/// The UDP checksum field a same-host sender's stack leaves for offload
/// (CHECKSUM_PARTIAL): the folded pseudo-header sum of `f`.
pub fn offload_seed(f: &RequestFrame) -> u16 {
    let udp_len = (dhcp_ebpf::wire::UDP_HLEN + f.bootp().len()) as u16;
    let sum = dhcp_ebpf::validate::pseudo_header_sum(f.ip_src.octets(), f.ip_dst.octets(), udp_len);
    dhcp_ebpf::csum::fold(sum)
}

/// One row: an input frame on a network, and what the fast path does with it.
#[derive(Debug, Clone)]
pub struct Row {
    /// One line: the rule the row shows.
    pub name: &'static str,
    /// The network whose entry program receives the frame.
    pub net: u32,
    pub input: RequestFrame,
    /// TPIDs of the input's VLAN tags, outermost first; empty: all 802.1Q.
    pub tpids: Vec<u16>,
    pub expect: Expect,
}

impl Row {
    /// The input as it is put on the wire.
    pub fn bytes(&self) -> Vec<u8> {
        if self.tpids.is_empty() {
            self.input.bytes()
        } else {
            self.input.bytes_with_tpids(&self.tpids)
        }
    }
}

/// The verdict a row expects.
#[derive(Debug, Clone)]
pub enum Expect {
    /// XDP_TX: the frame is rewritten into this reply.
    Tx(Reply),
    /// XDP_PASS, frame unchanged, counted under this `stat` index.
    Pass(u32),
}

/// The key fields of a reply, as the row states them.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Option 53.
    pub msg: MessageType,
    pub yiaddr: Ipv4Addr,
    pub ciaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The broadcast bit of the BOOTP flags (the only flag bit there is).
    pub broadcast: bool,
    pub eth_dst: [u8; 6],
    pub ip_dst: Ipv4Addr,
    pub udp_dst: u16,
    /// Options present (exactly once, with exactly these bytes) or absent,
    /// and the VLAN tags, where the row is about them.
    pub has: Vec<Has>,
}

impl Reply {
    /// The `stat` counter one such reply bumps.
    pub fn counter(&self) -> u32 {
        match self.msg {
            MessageType::Offer => stat::OFFERS,
            MessageType::Ack => stat::ACKS,
            _ => stat::NAKS,
        }
    }
}

/// A property of the reply a row states.
#[derive(Debug, Clone, PartialEq)]
pub enum Has {
    /// Option `code` once, with this value.
    Opt(u8, Vec<u8>),
    /// No option `code`.
    NoOpt(u8),
    /// The reply's VLAN tags as (TPID, VLAN id), outermost first.
    Tags(Vec<(u16, u16)>),
}

/// An option value as it goes on the wire.
pub trait OptValue {
    /// The value's bytes (network order).
    fn wire(self) -> Vec<u8>;
}

impl OptValue for Ipv4Addr {
    fn wire(self) -> Vec<u8> {
        self.octets().to_vec()
    }
}

impl OptValue for u32 {
    fn wire(self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
}

impl<const N: usize> OptValue for [u8; N] {
    fn wire(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl<const N: usize> OptValue for &[u8; N] {
    fn wire(self) -> Vec<u8> {
        self.to_vec()
    }
}

/// The reply carries option `code` with `value`.
pub fn opt(code: u8, value: impl OptValue) -> Has {
    Has::Opt(code, value.wire())
}

/// The reply carries no option `code`.
pub fn no(code: u8) -> Has {
    Has::NoOpt(code)
}

/// The reply's VLAN tags, (TPID, VLAN id) outermost first.
pub fn tags(tags: &[(u16, u16)]) -> Has {
    Has::Tags(tags.to_vec())
}

/// The first half of a row: its network, name and input.
pub struct Given {
    name: &'static str,
    net: u32,
    input: RequestFrame,
    tpids: Vec<u16>,
}

/// Starts a row: `input` arrives on network `net`.
pub fn row(net: u32, name: &'static str, input: RequestFrame) -> Given {
    Given {
        name,
        net,
        input,
        tpids: Vec::new(),
    }
}

impl Given {
    /// The input's VLAN tags carry these TPIDs, outermost first.
    pub fn tpids(mut self, tpids: &[u16]) -> Self {
        self.tpids = tpids.to_vec();
        self
    }

    /// The fast path answers (XDP_TX) with `reply`.
    pub fn answers(self, reply: Reply) -> Row {
        self.expect(Expect::Tx(reply))
    }

    /// The fast path passes the frame up (XDP_PASS), counted as `reason`.
    pub fn passes_up(self, reason: u32) -> Row {
        self.expect(Expect::Pass(reason))
    }

    fn expect(self, expect: Expect) -> Row {
        Row {
            name: self.name,
            net: self.net,
            input: self.input,
            tpids: self.tpids,
            expect,
        }
    }
}

/// The row named `name`.
pub fn find(name: &str) -> Result<Row> {
    rows()
        .into_iter()
        .find(|r| r.name == name)
        .with_context(|| format!("no fixture row is named {name:?}"))
}

/// The table. Replies: RFC 2131 §4.1 addressing (giaddr → relay:67; NAK →
/// broadcast; ciaddr → unicast; broadcast flag → broadcast; else yiaddr at
/// chaddr), §4.3 states, table 3 options (54 always, 51 not in a NAK),
/// RFC 6842 (61 echoed) and RFC 3046 (82 echoed).
pub fn rows() -> Vec<Row> {
    use dhcproto::v4::MessageType::{Ack, Nak, Offer};

    let mut big_with_57 = RequestFrame::discover(BIG_MAC).with_option(57, &MAX_MSG_1500);
    big_with_57.xid = [9, 9, 9, 9];
    let big_request_with_57 =
        RequestFrame::request(BIG_MAC, BIG_IP, SERVER_IP).with_option(57, &MAX_MSG_1500);
    let mut spoofed = discover();
    spoofed.eth_src = STRANGER_MAC;
    let mut ip_options = discover();
    ip_options.ip_options = vec![0x94, 0x04, 0x00, 0x00]; // router alert
    let mut relayed_82 = relayed(discover()).with_option(82, &AGENT_INFO);
    relayed_82.xid = [1, 2, 3, 4];
    let mut from_a_vm = relayed(discover());
    from_a_vm.eth_src = BIG_MAC;
    let mut unlisted = relayed(discover());
    unlisted.giaddr = UNLISTED_RELAY_IP;
    unlisted.ip_src = UNLISTED_RELAY_IP;
    let pxe_reboot = RequestFrame::request(PXE_MAC, WRONG_IP, SERVER_IP).without_option(54);
    let seeded = lying(
        discover(),
        Lies {
            udp_checksum: Some(offload_seed(&discover())),
            ..Lies::default()
        },
    );
    let lie = |lies: Lies| lying(discover(), lies);
    // RFC 3396: option 61 in two pieces, 4 + 3 bytes of CLIENT_ID.
    let split_61 = discover()
        .with_option(61, &CLIENT_ID[..4])
        .with_option(61, &CLIENT_ID[4..]);
    let split_82 = relayed(discover())
        .with_option(82, &AGENT_INFO[..6])
        .with_option(82, &AGENT_INFO[6..]);
    let split_50 = selecting(SERVER_IP, CLIENT_IP)
        .without_option(50)
        .with_option(50, &CLIENT_IP.octets()[..2])
        .with_option(50, &CLIENT_IP.octets()[2..]);

    vec![
        // INIT: DISCOVER → OFFER.
        row(
            NET,
            "DISCOVER → OFFER, unicast to yiaddr at chaddr",
            discover(),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS), no(61), no(82)],
        }),
        row(
            NET,
            "DISCOVER with the broadcast flag → broadcast OFFER",
            broadcast_flag(discover()),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: true,
            eth_dst: BROADCAST_MAC,
            ip_dst: BROADCAST_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "option 61 is echoed (RFC 6842)",
            discover().with_option(61, &CLIENT_ID),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS), opt(61, CLIENT_ID)],
        }),
        row(
            NET,
            "a port's server-ip-address goes in siaddr",
            RequestFrame::discover(PXE_MAC),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: PXE_IP,
            ciaddr: ZERO,
            siaddr: NEXT_SERVER,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: PXE_MAC,
            ip_dst: PXE_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "a port's dns_name is its option 12 (a stored name)",
            RequestFrame::discover(NAMED_MAC),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: NAMED_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: NAMED_MAC,
            ip_dst: NAMED_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        // Layer 2 and 3 shapes.
        row(
            NET,
            "802.1Q-tagged DISCOVER is answered with the tag kept",
            vlans(discover(), &[100]),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![
                opt(54, SERVER_IP),
                opt(51, LEASE_SECS),
                tags(&[(TPID_8021Q, 100)]),
            ],
        }),
        row(
            NET,
            "two stacked 802.1Q tags (0x8100 outside and inside) are kept",
            vlans(discover(), &[200, 100]),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![
                opt(54, SERVER_IP),
                opt(51, LEASE_SECS),
                tags(&[(TPID_8021Q, 200), (TPID_8021Q, 100)]),
            ],
        }),
        row(
            NET,
            "802.1ad QinQ (S-tag 0x88a8 over C-tag 0x8100) is answered with both tags kept",
            vlans(discover(), &[200, 100]),
        )
        .tpids(&[TPID_8021AD, TPID_8021Q])
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![
                opt(54, SERVER_IP),
                opt(51, LEASE_SECS),
                tags(&[(TPID_8021AD, 200), (TPID_8021Q, 100)]),
            ],
        }),
        row(
            NET,
            "IPv4 options (IHL 6) are honoured; the reply has IHL 5",
            ip_options,
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        // One validation rule for both paths (crate `dhcp_ebpf::validate`):
        // what the fast path refuses here, the slow path refuses too.
        row(
            NET,
            "IPv4 header checksum wrong → up",
            lie(Lies {
                ip_checksum_xor: 0x0100,
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_BAD_CHECKSUM),
        row(
            NET,
            "UDP checksum wrong → up",
            lie(Lies {
                udp_checksum: Some(0x1234),
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_BAD_CHECKSUM),
        row(
            NET,
            "UDP checksum zero (none sent, RFC 768) is answered",
            lie(Lies {
                udp_checksum: Some(0),
                ..Lies::default()
            }),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "UDP checksum left as the offload seed (a same-host sender) is answered",
            seeded,
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "IPv4 total length past the frame → up",
            lie(Lies {
                ip_total_len_extra: 40,
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_MALFORMED),
        row(
            NET,
            "IP version 6 under the IPv4 ethertype → up",
            lie(Lies {
                ip_version: Some(6),
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_NOT_DHCP),
        row(
            NET,
            "an IPv4 fragment (more fragments set) → up",
            lie(Lies {
                ip_flags_fragment: 0x2000,
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_FRAGMENT),
        row(
            NET,
            "an IPv4 fragment (offset set) → up",
            lie(Lies {
                ip_flags_fragment: 0x0010,
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_FRAGMENT),
        row(
            NET,
            "three VLAN tags → up",
            vlans(discover(), &[300, 200, 100]),
        )
        .passes_up(stat::PASS_NOT_DHCP),
        row(
            NET,
            "UDP length past the IPv4 payload → up",
            lie(Lies {
                udp_len_extra: 8,
                ..Lies::default()
            }),
        )
        .passes_up(stat::PASS_MALFORMED),
        // RFC 3396: an option in several instances is one option, their
        // values joined; the fast path leaves the joining to the slow path.
        row(NET, "option 61 split in two (RFC 3396) → up", split_61).passes_up(stat::PASS_OTHER),
        row(
            RELAY_NET,
            "option 82 split in two (RFC 3396) → up",
            split_82,
        )
        .passes_up(stat::PASS_OTHER),
        row(
            NET,
            "option 50 split in two 2-byte pieces (RFC 3396) → up",
            split_50,
        )
        .passes_up(stat::PASS_MALFORMED),
        row(
            NET,
            "option 50 twice (RFC 3396: one 8-byte option) → up",
            selecting(SERVER_IP, CLIENT_IP).with_option(50, &WRONG_IP.octets()),
        )
        .passes_up(stat::PASS_OTHER),
        row(
            NET,
            "option 54 twice (RFC 3396: one 8-byte option) → up",
            selecting(SERVER_IP, CLIENT_IP).with_option(54, &SERVER_IP.octets()),
        )
        .passes_up(stat::PASS_OTHER),
        row(
            NET,
            "option 57 twice (RFC 3396: one 4-byte option) → up",
            discover()
                .with_option(57, &MAX_MSG_1500)
                .with_option(57, &MAX_MSG_1500),
        )
        .passes_up(stat::PASS_OTHER),
        // REQUEST, by client state (§4.3.2).
        row(
            NET,
            "SELECTING REQUEST naming us → ACK",
            selecting(SERVER_IP, CLIENT_IP),
        )
        .answers(Reply {
            msg: Ack,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "SELECTING REQUEST naming us for another address → NAK",
            selecting(SERVER_IP, WRONG_IP),
        )
        .answers(Reply {
            msg: Nak,
            yiaddr: ZERO,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: BROADCAST_MAC,
            ip_dst: BROADCAST_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), no(51)],
        }),
        row(
            NET,
            "SELECTING REQUEST naming another server → no reply",
            selecting(OTHER_SERVER, CLIENT_IP),
        )
        .passes_up(stat::PASS_NOT_OUR_SERVER),
        row(
            NET,
            "INIT-REBOOT for the client's address → ACK",
            init_reboot(CLIENT_IP),
        )
        .answers(Reply {
            msg: Ack,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "INIT-REBOOT for another address → NAK (broadcast)",
            init_reboot(WRONG_IP),
        )
        .answers(Reply {
            msg: Nak,
            yiaddr: ZERO,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: BROADCAST_MAC,
            ip_dst: BROADCAST_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), no(51)],
        }),
        row(
            NET,
            "a NAK carries no siaddr, even for a port that has one",
            pxe_reboot,
        )
        .answers(Reply {
            msg: Nak,
            yiaddr: ZERO,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: BROADCAST_MAC,
            ip_dst: BROADCAST_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), no(51)],
        }),
        row(
            NET,
            "RENEWING (unicast, ciaddr) → ACK unicast to ciaddr",
            renewing(CLIENT_IP),
        )
        .answers(Reply {
            msg: Ack,
            yiaddr: CLIENT_IP,
            ciaddr: CLIENT_IP,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "REBINDING (broadcast, ciaddr) → ACK unicast to ciaddr",
            rebinding(CLIENT_IP),
        )
        .answers(Reply {
            msg: Ack,
            yiaddr: CLIENT_IP,
            ciaddr: CLIENT_IP,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: CLIENT_MAC,
            ip_dst: CLIENT_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            NET,
            "RENEWING with a stale ciaddr → NAK",
            renewing(WRONG_IP),
        )
        .answers(Reply {
            msg: Nak,
            yiaddr: ZERO,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: BROADCAST_MAC,
            ip_dst: BROADCAST_IP,
            udp_dst: BOOTPC,
            has: vec![opt(54, SERVER_IP), no(51)],
        }),
        // Reply size: 576 bytes unless option 57 allows more.
        row(
            NET,
            "option 57 (1500) lets 20 routes and 10 extra options through",
            big_with_57,
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: BIG_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: BIG_MAC,
            ip_dst: BIG_IP,
            udp_dst: BOOTPC,
            has: vec![
                opt(54, SERVER_IP),
                opt(51, LEASE_SECS),
                opt(233, b"extra-option-9"),
                no(57),
            ],
        }),
        row(
            NET,
            "option 57 (1500) lets the same big reply through in an ACK",
            big_request_with_57,
        )
        .answers(Reply {
            msg: Ack,
            yiaddr: BIG_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: ZERO,
            broadcast: false,
            eth_dst: BIG_MAC,
            ip_dst: BIG_IP,
            udp_dst: BOOTPC,
            has: vec![
                opt(54, SERVER_IP),
                opt(51, LEASE_SECS),
                opt(233, b"extra-option-9"),
                no(57),
            ],
        }),
        row(
            NET,
            "without option 57 that reply exceeds 576 bytes → up",
            RequestFrame::discover(BIG_MAC),
        )
        .passes_up(stat::PASS_TOO_BIG),
        // Who is answered.
        row(
            NET,
            "unknown MAC → no fast-path reply",
            RequestFrame::discover(STRANGER_MAC),
        )
        .passes_up(stat::PASS_UNKNOWN),
        row(NET, "Ethernet source ≠ chaddr → up", spoofed).passes_up(stat::PASS_SPOOFED),
        // Relays.
        row(
            NET,
            "a relayed DISCOVER on a network with relaying off goes up",
            relayed(discover()),
        )
        .passes_up(stat::PASS_OTHER),
        row(
            RELAY_NET,
            "relayed DISCOVER → OFFER unicast to giaddr:67",
            relayed(discover()),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: RELAY_IP,
            broadcast: false,
            eth_dst: RELAY_MAC,
            ip_dst: RELAY_IP,
            udp_dst: BOOTPS,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS), no(82)],
        }),
        row(
            RELAY_NET,
            "a relayed DISCOVER sent from a port of the network (a VM is no relay) goes up",
            from_a_vm,
        )
        .passes_up(stat::PASS_SPOOFED),
        row(
            LISTED_NET,
            "relay list: a listed giaddr is answered",
            relayed(discover()),
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: RELAY_IP,
            broadcast: false,
            eth_dst: RELAY_MAC,
            ip_dst: RELAY_IP,
            udp_dst: BOOTPS,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            LISTED_NET,
            "relay list: a giaddr not listed goes up",
            unlisted,
        )
        .passes_up(stat::PASS_OTHER),
        row(
            RELAY_NET,
            "relayed DISCOVER: option 82 is echoed whole (RFC 3046)",
            relayed_82,
        )
        .answers(Reply {
            msg: Offer,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: RELAY_IP,
            broadcast: false,
            eth_dst: RELAY_MAC,
            ip_dst: RELAY_IP,
            udp_dst: BOOTPS,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS), opt(82, AGENT_INFO)],
        }),
        row(
            RELAY_NET,
            "relayed REQUEST → ACK to giaddr",
            relayed(selecting(SERVER_IP, CLIENT_IP)),
        )
        .answers(Reply {
            msg: Ack,
            yiaddr: CLIENT_IP,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: RELAY_IP,
            broadcast: false,
            eth_dst: RELAY_MAC,
            ip_dst: RELAY_IP,
            udp_dst: BOOTPS,
            has: vec![opt(54, SERVER_IP), opt(51, LEASE_SECS)],
        }),
        row(
            RELAY_NET,
            "relayed NAK goes to giaddr with the broadcast bit set",
            relayed(init_reboot(WRONG_IP)),
        )
        .answers(Reply {
            msg: Nak,
            yiaddr: ZERO,
            ciaddr: ZERO,
            siaddr: ZERO,
            giaddr: RELAY_IP,
            broadcast: true,
            eth_dst: RELAY_MAC,
            ip_dst: RELAY_IP,
            udp_dst: BOOTPS,
            has: vec![opt(54, SERVER_IP), no(51)],
        }),
        // What only the slow path does.
        row(
            NET,
            "RELEASE goes to the slow path",
            discover().with_type(DHCPRELEASE),
        )
        .passes_up(stat::PASS_OTHER),
        row(
            NET,
            "DECLINE goes to the slow path",
            discover().with_type(DHCPDECLINE),
        )
        .passes_up(stat::PASS_OTHER),
        row(
            NET,
            "INFORM goes to the slow path",
            discover().with_type(DHCPINFORM),
        )
        .passes_up(stat::PASS_OTHER),
    ]
}
