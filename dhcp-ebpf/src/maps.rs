//! The maps' key and value types, names, capacities and flags.
//!
//! Every map value is `#[repr(C)]` and derives `bytemuck::Pod`, so padding is a
//! compile error and both sides agree on the layout byte for byte. Addresses
//! are kept in network byte order (`[u8; 4]`), counters and times in host order.

use bytemuck::{Pod, Zeroable};

/// Names of the maps as they appear in the object, in bpftool and under bpffs.
pub mod map_name {
    /// (network, MAC) → [`Lease`](super::Lease).
    pub const LEASES: &str = "LEASES";
    /// (network, MAC) → [`HostName`](super::HostName): option 12 of the
    /// leases whose name is [`NAME_STORED`](super::NAME_STORED).
    pub const NAMES: &str = "NAMES";
    /// options-blob id → [`OptsBlob`](super::OptsBlob).
    pub const OPTS: &str = "OPTS";
    /// network id → [`NetConfig`](super::NetConfig).
    pub const NETS: &str = "NETS";
    /// (network, MAC) → [`AckRecord`](super::AckRecord), written on each fast-path ACK.
    pub const ACKS: &str = "ACKS";
    /// Per-CPU counters indexed by [`stat`](super::stat).
    pub const STATS: &str = "STATS";
    /// network id → [`NetStats`](super::NetStats): the [`stat`](super::stat)
    /// counters of one network (entries made by the daemon with the network's
    /// NETS entry; the program only counts into them).
    pub const NET_STATS: &str = "NET_STATS";
    /// Relay addresses (giaddr, network order as u32) answered under `NET_RELAY_LISTED`.
    pub const RELAYS: &str = "RELAYS";
    /// Per-CPU scratch buffer the program builds a reply in.
    pub const SCRATCH: &str = "SCRATCH";
    /// Per-CPU scratch the options walk writes its findings to.
    pub const PARSED: &str = "PARSED";
    /// Tail-call table: slot 0 holds the fast path.
    pub const JUMP: &str = "JUMP";
    /// Every map, shared through bpffs pins by the fast path and all entries.
    pub const ALL: [&str; 11] = [
        LEASES, NAMES, OPTS, NETS, ACKS, STATS, NET_STATS, SCRATCH, PARSED, JUMP, RELAYS,
    ];
}

/// Capacity of [`map_name::LEASES`]: one entry per answered port.
pub const LEASES_MAX: u32 = 1_048_576;
/// Capacity of [`map_name::OPTS`]: distinct option blobs (shared by ports alike).
pub const OPTS_MAX_ENTRIES: u32 = 65_536;
/// Capacity of [`map_name::NETS`]: networks served by one daemon.
pub const NETS_MAX: u32 = 16_384;
/// Capacity of [`map_name::RELAYS`]: `relay_addresses` of the agent config.
pub const RELAYS_MAX: u32 = 256;
/// Capacity of [`map_name::ACKS`] (LRU: the oldest records go first).
pub const ACKS_MAX: u32 = 131_072;

/// Longest pre-encoded option blob (TLVs, no END).
pub const OPTS_MAX: usize = 1024;
/// Longest host name sent as option 12 (one DNS label).
pub const HOSTNAME_MAX: usize = 64;
/// Size of the per-CPU scratch buffer the reply payload is built in.
pub const SCRATCH_LEN: usize = 4096;

/// `Lease::lease_secs` value for an infinite lease (dhcp_lease_duration = -1).
pub const LEASE_INFINITE: u32 = u32::MAX;
/// `AckRecord::expires_ns` value for an infinite lease.
pub const EXPIRES_NEVER: u64 = u64::MAX;

/// `NetConfig::flags`: answer requests relayed through giaddr (never from a
/// port of the network itself).
pub const NET_RELAY_OK: u16 = 1;
/// `NetConfig::flags`, with `NET_RELAY_OK`: only relays whose giaddr is in
/// [`map_name::RELAYS`].
pub const NET_RELAY_LISTED: u16 = 2;

/// A client: the network it is on (daemon-assigned id) and its MAC address.
/// The network is part of the key because ifindex repeats across namespaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct ClientKey {
    pub net: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl ClientKey {
    /// The key for `mac` on network `net`.
    pub const fn new(net: u32, mac: [u8; 6]) -> Self {
        Self {
            net,
            mac,
            _pad: [0; 2],
        }
    }
}

/// `Lease::name`: no option 12.
pub const NAME_NONE: u8 = 0;
/// `Lease::name`: option 12 is `host-a-b-c-d` of `Lease::ip`, Neutron's name
/// for a port without a dns_name, written by the program
/// ([`ip_host_name`]): most ports need no stored name.
pub const NAME_FROM_IP: u8 = 1;
/// `Lease::name`: option 12 is the client's entry in [`map_name::NAMES`].
pub const NAME_STORED: u8 = 2;
/// Longest `host-a-b-c-d` name ("host-255-255-255-255").
pub const IP_NAME_MAX: usize = 20;

/// What the fast path needs to answer one client (24 bytes: a LEASES entry
/// stays small, so a million of them stay cache- and memory-friendly).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Lease {
    /// The client's fixed IP (yiaddr).
    pub ip: [u8; 4],
    /// The DHCP port's IP on the client's subnet: option 54 and IP source.
    pub server_ip: [u8; 4],
    /// siaddr (dnsmasq's `server-ip-address`), zero when unset.
    pub siaddr: [u8; 4],
    /// Lease time in seconds, [`LEASE_INFINITE`] for infinite.
    pub lease_secs: u32,
    /// Key of the client's option blob in [`map_name::OPTS`].
    pub opts_id: u32,
    /// Where option 12 comes from: [`NAME_NONE`], [`NAME_FROM_IP`] or
    /// [`NAME_STORED`].
    pub name: u8,
    pub _pad: [u8; 3],
}

impl Lease {
    /// A lease whose option 12 is `hostname` (empty: none): [`NAME_FROM_IP`]
    /// when that is the IP's `host-a-b-c-d`, else [`NAME_STORED`], and the
    /// name then goes in NAMES ([`HostName::new`]).
    pub fn new(
        ip: [u8; 4],
        server_ip: [u8; 4],
        siaddr: [u8; 4],
        lease_secs: u32,
        opts_id: u32,
        hostname: &[u8],
    ) -> Self {
        Lease {
            ip,
            server_ip,
            siaddr,
            lease_secs,
            opts_id,
            name: name_kind(ip, hostname),
            _pad: [0; 3],
        }
    }
}

/// How a lease for `ip` carries option 12 `hostname` (see [`Lease::name`]).
pub fn name_kind(ip: [u8; 4], hostname: &[u8]) -> u8 {
    if hostname.is_empty() {
        return NAME_NONE;
    }
    let mut own = [0u8; IP_NAME_MAX];
    let n = ip_host_name(ip, &mut own);
    if own.get(..n) == Some(hostname) {
        NAME_FROM_IP
    } else {
        NAME_STORED
    }
}

/// Writes `host-a-b-c-d` of `ip` (decimal, no leading zeros) into `out`;
/// its length.
pub fn ip_host_name(ip: [u8; 4], out: &mut [u8; IP_NAME_MAX]) -> usize {
    write_ip_host_name(ip, |i, b| {
        if let Some(slot) = out.get_mut(i) {
            *slot = b;
        }
    })
}

/// `host-a-b-c-d` of `ip`, byte by byte: `put(i, byte)` for i from 0 (at
/// most [`IP_NAME_MAX`] bytes); its length. Straight-line code, no indexing
/// by a variable, for the program, which writes the bytes into its reply
/// buffer.
#[inline(always)]
pub fn write_ip_host_name(ip: [u8; 4], mut put: impl FnMut(usize, u8)) -> usize {
    let mut n = 0;
    let mut push = |b: u8| {
        put(n, b);
        n += 1;
    };
    for b in *b"host-" {
        push(b);
    }
    let [a, b, c, d] = ip;
    let mut octet = |o: u8, last: bool| {
        if o >= 100 {
            push(b'0' + o / 100);
        }
        if o >= 10 {
            push(b'0' + (o / 10) % 10);
        }
        push(b'0' + o % 10);
        if !last {
            push(b'-');
        }
    };
    octet(a, false);
    octet(b, false);
    octet(c, false);
    octet(d, true);
    n
}

/// A stored option 12 value ([`NAME_STORED`]): a dns_name's first label.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct HostName {
    pub len: u8,
    pub bytes: [u8; HOSTNAME_MAX],
}

impl HostName {
    /// `name`, cut to [`HOSTNAME_MAX`] bytes.
    pub fn new(name: &[u8]) -> Self {
        let n = name.len().min(HOSTNAME_MAX);
        let mut h = HostName {
            len: n as u8,
            bytes: [0; HOSTNAME_MAX],
        };
        h.bytes[..n].copy_from_slice(&name[..n]);
        h
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..(self.len as usize).min(HOSTNAME_MAX)]
    }
}

/// Pre-encoded reply options (TLVs: 51, 58, 59, 1, 3, 6, 15, 26, 28, 121, 249,
/// extra_dhcp_opts …), copied verbatim into OFFER and ACK.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct OptsBlob {
    pub len: u16,
    pub _pad: [u8; 2],
    pub bytes: [u8; OPTS_MAX],
}

impl OptsBlob {
    /// A blob holding `bytes` (at most [`OPTS_MAX`]; the rest is cut).
    pub fn new(bytes: &[u8]) -> Self {
        let n = bytes.len().min(OPTS_MAX);
        let mut blob = OptsBlob {
            len: n as u16,
            _pad: [0; 2],
            bytes: [0; OPTS_MAX],
        };
        blob.bytes[..n].copy_from_slice(&bytes[..n]);
        blob
    }
}

/// Per-network configuration of the fast path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetConfig {
    /// MAC of the DHCP port: Ethernet source of every reply.
    pub server_mac: [u8; 6],
    /// `NET_*` flags.
    pub flags: u16,
}

/// A lease the fast path granted (written on every ACK).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct AckRecord {
    pub ip: [u8; 4],
    pub _pad: [u8; 4],
    /// When the ACK was sent (CLOCK_BOOTTIME, ns).
    pub acked_ns: u64,
    /// When the lease expires (CLOCK_BOOTTIME, ns), or [`EXPIRES_NEVER`].
    pub expires_ns: u64,
}

/// The scratch buffer's layout (one per CPU).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Scratch {
    pub buf: [u8; SCRATCH_LEN],
}

/// One network's counters, by [`stat`] index: shared by the CPUs (the
/// program adds atomically), so one entry per network whatever the CPU count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetStats {
    pub counters: [u64; stat::COUNT as usize],
}

/// Indices of the per-CPU counters in [`map_name::STATS`].
pub mod stat {
    /// Frames the program saw.
    pub const RECEIVED: u32 = 0;
    pub const OFFERS: u32 = 1;
    pub const ACKS: u32 = 2;
    pub const NAKS: u32 = 3;
    /// Passed up: not a DHCP request to port 67.
    pub const PASS_NOT_DHCP: u32 = 4;
    /// Passed up: a DHCP packet that does not parse.
    pub const PASS_MALFORMED: u32 = 5;
    /// Passed up: no lease for (network, MAC).
    pub const PASS_UNKNOWN: u32 = 6;
    /// Passed up: Ethernet source differs from chaddr.
    pub const PASS_SPOOFED: u32 = 7;
    /// Passed up: a SELECTING REQUEST for another server.
    pub const PASS_NOT_OUR_SERVER: u32 = 8;
    /// Passed up: the reply would exceed what the client or the frame takes.
    pub const PASS_TOO_BIG: u32 = 9;
    /// Passed up: anything else (RELEASE, DECLINE, INFORM, relay switched off, …).
    pub const PASS_OTHER: u32 = 10;
    /// Passed up (and dropped by the slow path): an IPv4 fragment.
    pub const PASS_FRAGMENT: u32 = 11;
    /// Passed up (and dropped by the slow path): an IPv4 header or UDP
    /// checksum that does not verify.
    pub const PASS_BAD_CHECKSUM: u32 = 12;
    /// Number of counters.
    pub const COUNT: u32 = 13;
    /// Counter names, by index (the JSON keys of `xdhcp stats`).
    pub const NAMES: [&str; COUNT as usize] = [
        "fast_received",
        "fast_offers",
        "fast_acks",
        "fast_naks",
        "pass_not_dhcp",
        "pass_malformed",
        "pass_unknown_client",
        "pass_spoofed",
        "pass_not_our_server",
        "pass_reply_too_big",
        "pass_other",
        "pass_fragment",
        "pass_bad_checksum",
    ];
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are #[repr(C)] and Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for super::ClientKey {}
    unsafe impl aya::Pod for super::Lease {}
    unsafe impl aya::Pod for super::HostName {}
    unsafe impl aya::Pod for super::OptsBlob {}
    unsafe impl aya::Pod for super::NetConfig {}
    unsafe impl aya::Pod for super::AckRecord {}
    unsafe impl aya::Pod for super::NetStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn ip_host_names_are_neutrons() {
        let name = |ip: [u8; 4]| {
            let mut out = [0u8; IP_NAME_MAX];
            let n = ip_host_name(ip, &mut out);
            std::string::String::from_utf8(out[..n].to_vec()).unwrap()
        };
        assert_eq!(name([10, 0, 0, 5]), "host-10-0-0-5");
        assert_eq!(name([255, 255, 255, 255]), "host-255-255-255-255");
        assert_eq!(name([0, 9, 10, 100]), "host-0-9-10-100");
        assert_eq!(name([192, 168, 99, 1]), "host-192-168-99-1");
        // Every octet value round-trips.
        for o in 0..=255u8 {
            assert_eq!(name([o, 1, 2, 3]), format!("host-{o}-1-2-3"));
        }
        assert_eq!(name_kind([10, 0, 0, 5], b"host-10-0-0-5"), NAME_FROM_IP);
        assert_eq!(name_kind([10, 0, 0, 5], b"host-10-0-0-6"), NAME_STORED);
        assert_eq!(name_kind([10, 0, 0, 5], b"web-1"), NAME_STORED);
        assert_eq!(name_kind([10, 0, 0, 5], b""), NAME_NONE);
    }

    #[test]
    fn layouts_match_what_the_program_expects() {
        assert_eq!(size_of::<ClientKey>(), 12);
        assert_eq!(size_of::<Lease>(), 24);
        assert_eq!(size_of::<HostName>(), 1 + HOSTNAME_MAX);
        assert_eq!(size_of::<OptsBlob>(), 4 + OPTS_MAX);
        assert_eq!(size_of::<NetConfig>(), 8);
        assert_eq!(size_of::<AckRecord>(), 24);
        assert_eq!(size_of::<NetStats>(), 8 * stat::COUNT as usize);
    }
}
