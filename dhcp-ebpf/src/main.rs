//! xdhcp's XDP fast path.
//!
//! Answers DHCPDISCOVER with OFFER and DHCPREQUEST with ACK or NAK straight from
//! the lease maps, rewriting the request into the reply and sending it back out
//! of the same device (XDP_TX). Whatever it cannot answer exactly right goes up
//! the stack (XDP_PASS) to the daemon's slow path, with a counter saying why.
//!
//! Each network's device runs `xdhcp`, an entry of a few instructions that
//! the daemon assembles with the network's id in it (the ingress ifindex
//! repeats across namespaces; dhcp-user/src/loader/entry.rs), which writes the
//! id into the frame's XDP metadata and tail-calls `xdhcp_fast`, this file's
//! fast path, loaded once.
//!
//! The DHCP numbers, the RFC 2131 rules and the checksum arithmetic come from
//! the crate's library (`dhcp_ebpf`), which the daemon's reply builder uses
//! too; this file reads the frame, looks the client up and writes the reply.
//!
//! Only a BPF build holds the program; on the host this is an empty binary,
//! so `cargo clippy --workspace` and `cargo test --workspace` build it there.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

/// The XDP program is built for bpfel-unknown-none only.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "dhcp-ebpf is an XDP program: `cargo xtask build-ebpf` builds it for bpfel-unknown-none"
    );
    std::process::exit(2);
}

#[cfg(target_arch = "bpf")]
mod xdp {
    use aya_ebpf::{
        bindings::{xdp_action, BPF_F_NO_PREALLOC},
        btf_maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray},
        helpers::generated::{
            bpf_csum_diff, bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_xdp_adjust_head,
            bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
        },
        macros::{btf_map, xdp},
        programs::XdpContext,
    };
    use dhcp_ebpf::{
        csum,
        rfc2131::{self, Decision},
        stat, validate,
        wire::{
            self, bootp, ipv4, opt, udp, BOOTREPLY, BOOTREQUEST, DHCPACK, DHCPNAK, DHCPOFFER,
            ETH_HLEN, ETH_P_IP, ETH_SRC, ETH_TYPE, HLEN_ETHER, HTYPE_ETHER, IPV4_HLEN,
            MAGIC_COOKIE, MIN_BOOTP, UDP_HLEN, VLAN_HLEN,
        },
        write_ip_host_name, AckRecord, ClientKey, HostName, Lease, NetConfig, NetStats, OptsBlob,
        Scratch, ACKS_MAX, EXPIRES_NEVER, HOSTNAME_MAX, IP_NAME_MAX, LEASES_MAX, LEASE_INFINITE,
        NAME_FROM_IP, NAME_STORED, NETS_MAX, NET_META_LEN, NET_RELAY_LISTED, NET_RELAY_OK,
        OPTS_MAX, OPTS_MAX_ENTRIES, RELAYS_MAX, SCRATCH_LEN,
    };

    const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

    #[btf_map]
    static LEASES: HashMap<ClientKey, Lease, { LEASES_MAX as usize }, NO_PREALLOC> = HashMap::new();
    #[btf_map]
    static NAMES: HashMap<ClientKey, HostName, { LEASES_MAX as usize }, NO_PREALLOC> =
        HashMap::new();
    #[btf_map]
    static OPTS: HashMap<u32, OptsBlob, { OPTS_MAX_ENTRIES as usize }, NO_PREALLOC> =
        HashMap::new();
    #[btf_map]
    static NETS: HashMap<u32, NetConfig, { NETS_MAX as usize }> = HashMap::new();
    /// giaddr (network byte order, as a u32) → 1: the relays answered when a
    /// network has NET_RELAY_LISTED.
    #[btf_map]
    static RELAYS: HashMap<u32, u8, { RELAYS_MAX as usize }> = HashMap::new();
    #[btf_map]
    static ACKS: LruHashMap<ClientKey, AckRecord, { ACKS_MAX as usize }> = LruHashMap::new();
    #[btf_map]
    static STATS: PerCpuArray<u64, { stat::COUNT as usize }> = PerCpuArray::new();
    #[btf_map]
    static NET_STATS: HashMap<u32, NetStats, { NETS_MAX as usize }> = HashMap::new();
    #[btf_map]
    static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();
    #[btf_map]
    static PARSED: PerCpuArray<Options, 1> = PerCpuArray::new();
    /// Slot 0: `xdhcp_fast`, the target of every entry's tail call (the entry
    /// programs are assembled by the loader: dhcp-user/src/loader/entry.rs).
    #[btf_map]
    static JUMP: ProgramArray<1> = ProgramArray::new();

    /// The longest L2 header parsed: Ethernet and two VLAN tags.
    const MAX_L2: usize = ETH_HLEN + validate::MAX_VLAN_TAGS * VLAN_HLEN;
    /// IPv4 and UDP headers of a reply.
    const IP_UDP_HLEN: usize = IPV4_HLEN + UDP_HLEN;
    /// Frames longer than this are not DHCP requests we answer (no jumbo DHCP).
    const MAX_FRAME: usize = 1600;
    /// Upper bound on options walked (PAD counts as one).
    const MAX_OPTIONS: u32 = 64;
    /// Largest reply payload (BOOTP) we build: fits a 1500-byte IP packet.
    const MAX_PAYLOAD: usize = 1500 - IP_UDP_HLEN;
    /// Zeros written after END: covers the way to MIN_BOOTP and to a 4-byte boundary.
    const PAD_SPAN: usize = 64;

    /// Why a frame goes up instead of being answered: a `stat::PASS_*` index.
    type Pass = u32;

    /// The fast path, entered by tail call with the network id in the metadata.
    #[xdp]
    pub fn xdhcp_fast(ctx: XdpContext) -> u32 {
        count(stat::RECEIVED);
        let (outcome, action) = match try_xdhcp(&ctx) {
            Ok(reply) => (
                match reply {
                    DHCPOFFER => stat::OFFERS,
                    DHCPACK => stat::ACKS,
                    _ => stat::NAKS,
                },
                xdp_action::XDP_TX,
            ),
            Err(reason) => (reason, xdp_action::XDP_PASS),
        };
        count(outcome);
        if let Ok(net) = network(&ctx) {
            count_network(net, outcome);
        }
        action
    }

    /// RECEIVED and `outcome` in the network's NET_STATS entry, if it has one.
    #[inline(always)]
    fn count_network(net: u32, outcome: u32) {
        let Some(entry) = NET_STATS.get_ptr_mut(&net) else {
            return;
        };
        // SAFETY: a map value lives as long as the program runs; other CPUs add
        // to it too, hence the atomic adds.
        let counters = unsafe { &(*entry).counters };
        for index in [stat::RECEIVED, outcome] {
            if let Some(c) = counters.get(index as usize) {
                // SAFETY: an aligned u64 inside the map value. (core's AtomicU64
                // has no fetch_add on this target; the intrinsic is BPF's atomic
                // add, its result unused.)
                unsafe {
                    core::intrinsics::atomic_xadd::<
                        u64,
                        u64,
                        { core::intrinsics::AtomicOrdering::Relaxed },
                    >(c as *const u64 as *mut u64, 1)
                };
            }
        }
    }

    /// Passes every frame. Attached to the peer of a veth whose other end runs
    /// the fast path: veth hands XDP_TX frames only to a peer that runs XDP.
    #[xdp]
    pub fn xdhcp_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    /// The network id the entry program put in front of the frame.
    #[inline(always)]
    fn network(ctx: &XdpContext) -> Result<u32, Pass> {
        let meta = ctx.metadata();
        let read_end = core::hint::black_box(meta + NET_META_LEN);
        if read_end > ctx.data() {
            return Err(stat::PASS_OTHER);
        }
        // SAFETY: [meta, meta + 4) lies inside the metadata area.
        Ok(unsafe { (meta as *const u32).read_unaligned() })
    }

    #[inline(always)]
    fn count(index: u32) {
        if let Some(counter) = STATS.get_ptr_mut(index) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *counter += 1 };
        }
    }

    /// The one bounds-checked packet access: `N` bytes at `off`, or `reason`.
    #[inline(always)]
    fn bytes_at<const N: usize>(
        ctx: &XdpContext,
        off: usize,
        reason: Pass,
    ) -> Result<[u8; N], Pass> {
        let start = ctx.data() + off;
        // Opaque so LLVM keeps this exact comparison: it would turn a 1-byte
        // check into `start >= end`, from which the verifier learns no range.
        let read_end = core::hint::black_box(start + N);
        if read_end > ctx.data_end() {
            return Err(reason);
        }
        // SAFETY: [start, start + N) was just checked to lie inside the frame.
        Ok(unsafe { *(start as *const [u8; N]) })
    }

    #[inline(always)]
    fn be16(b: [u8; 2]) -> u16 {
        u16::from_be_bytes(b)
    }

    /// What the options walk found. Written to a per-CPU map during the walk and
    /// read back after it: the verifier then sees unknown scalars instead of one
    /// state per (options count × options seen), which would not fit its budget.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Options {
        msg_type: u8,
        has_requested_ip: u8,
        has_server_id: u8,
        has_max_msg_size: u8,
        requested_ip: [u8; 4],
        server_id: [u8; 4],
        max_msg_size: u16,
        _pad2: u16,
        /// Offset and whole TLV length of option 61 (length 0: absent).
        client_id_off: u32,
        client_id_len: u32,
        /// Offset and whole TLV length of option 82 (length 0: absent).
        relay_agent_off: u32,
        relay_agent_len: u32,
    }

    /// Request fields the reply is built from.
    struct Request {
        l3: usize,
        eth_src: [u8; 6],
        xid: [u8; 4],
        flags: u16,
        ciaddr: [u8; 4],
        giaddr: [u8; 4],
        chaddr: [u8; 16],
        opts: Options,
    }

    impl Request {
        /// The client's MAC: the first six bytes of chaddr.
        #[inline(always)]
        fn mac(&self) -> [u8; 6] {
            let c = &self.chaddr;
            [c[0], c[1], c[2], c[3], c[4], c[5]]
        }
    }

    /// The relay rule. Its map keys live in the (not yet used) reply scratch:
    /// the program's stack has no room left for them.
    #[inline(always)]
    fn relay_allowed(net: u32, flags: u16, req: &Request) -> Result<(), Pass> {
        if flags & NET_RELAY_OK == 0 {
            return Err(stat::PASS_OTHER);
        }
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
        // SAFETY: the scratch value is 4096 bytes, this program's alone on this
        // CPU, and written again from the start when the reply is built.
        let (relay, giaddr) = unsafe {
            let base = (*scratch).buf.as_mut_ptr();
            (
                &mut *(base as *mut ClientKey),
                &mut *(base.add(16) as *mut u32),
            )
        };
        *giaddr = u32::from_ne_bytes(req.giaddr);
        if flags & NET_RELAY_LISTED != 0 && RELAYS.get_ptr(&*giaddr).is_none() {
            return Err(stat::PASS_OTHER);
        }
        // A port of this network is a VM, not a relay.
        *relay = ClientKey::new(net, req.eth_src);
        if LEASES.get_ptr(&*relay).is_some() {
            return Err(stat::PASS_SPOOFED);
        }
        Ok(())
    }

    #[inline(always)]
    fn try_xdhcp(ctx: &XdpContext) -> Result<u8, Pass> {
        let req = parse(ctx)?;
        let mac = req.mac();
        let relayed = req.giaddr != [0; 4];
        // A relay forwards with its own MAC; everyone else must send as chaddr.
        if !relayed && req.eth_src != mac {
            return Err(stat::PASS_SPOOFED);
        }
        let net = network(ctx)?;
        // SAFETY: values are read once, before any map update in this run.
        let cfg = unsafe { NETS.get(net) }.ok_or(stat::PASS_UNKNOWN)?;
        // Relayed requests prove nothing about who asks (the Ethernet source is
        // the relay's): answered only when relaying is on, from a listed relay if
        // there is a list, and never from a port of this network (a VM).
        if relayed {
            relay_allowed(net, cfg.flags, &req)?;
        }
        let key = ClientKey::new(net, mac);
        let lease = unsafe { LEASES.get(key) }.ok_or(stat::PASS_UNKNOWN)?;
        let reply = decide(&req, lease)?;
        let payload_len = build_payload(ctx, &req, &key, lease, reply)?;
        if IP_UDP_HLEN + payload_len > rfc2131::max_reply_ip_len(req.opts.max_msg_size) {
            return Err(stat::PASS_TOO_BIG);
        }
        emit(ctx, &req, cfg, lease, reply, payload_len)?;
        if reply == DHCPACK {
            record_ack(&key, lease);
        }
        Ok(reply)
    }

    /// Reads the request in steps, each checking its own layer: L2, L3, L4,
    /// BOOTP, then the options.
    #[inline(always)]
    fn parse(ctx: &XdpContext) -> Result<Request, Pass> {
        // Opaque to LLVM: otherwise it proves later bounds checks redundant from
        // the length checks below, and drops them; the verifier needs every one.
        let frame_len = core::hint::black_box(ctx.data_end() - ctx.data());
        if frame_len > MAX_FRAME {
            return Err(stat::PASS_MALFORMED);
        }
        let l2 = parse_l2(ctx)?;
        let ip = parse_l3(ctx, l2.l3)?;
        let (msg, end) = parse_l4(ctx, l2.l3, &ip, frame_len)?;
        let fixed = parse_bootp(ctx, msg)?;
        let opts = parse_options(ctx, msg + bootp::OPTIONS, end)?;
        Ok(Request {
            l3: l2.l3,
            eth_src: l2.eth_src,
            xid: fixed.xid,
            flags: fixed.flags,
            ciaddr: fixed.ciaddr,
            giaddr: fixed.giaddr,
            chaddr: fixed.chaddr,
            opts,
        })
    }

    /// What the L2 step found.
    struct L2 {
        /// Offset of the IPv4 header.
        l3: usize,
        eth_src: [u8; 6],
    }

    /// L2: Ethernet with up to two VLAN tags (802.1Q, 802.1ad), carrying IPv4.
    #[inline(always)]
    fn parse_l2(ctx: &XdpContext) -> Result<L2, Pass> {
        let eth: [u8; ETH_HLEN] = bytes_at(ctx, 0, stat::PASS_NOT_DHCP)?;
        let mut ethertype = be16([eth[ETH_TYPE], eth[ETH_TYPE + 1]]);
        let mut l3 = ETH_HLEN;
        for _ in 0..validate::MAX_VLAN_TAGS {
            if wire::is_vlan(ethertype) {
                let tag: [u8; VLAN_HLEN] = bytes_at(ctx, l3, stat::PASS_NOT_DHCP)?;
                ethertype = be16([tag[2], tag[3]]);
                l3 += VLAN_HLEN;
            }
        }
        if ethertype != ETH_P_IP {
            return Err(stat::PASS_NOT_DHCP);
        }
        let s = ETH_SRC;
        Ok(L2 {
            l3,
            eth_src: [
                eth[s],
                eth[s + 1],
                eth[s + 2],
                eth[s + 3],
                eth[s + 4],
                eth[s + 5],
            ],
        })
    }

    /// What the L3 step found.
    struct L3 {
        /// Header length (IHL × 4).
        ihl: usize,
        total_len: usize,
        flags_fragment: u16,
    }

    /// L3: an IPv4 header (options allowed: IHL honoured) carrying UDP.
    #[inline(always)]
    fn parse_l3(ctx: &XdpContext, l3: usize) -> Result<L3, Pass> {
        let ip: [u8; IPV4_HLEN] = bytes_at(ctx, l3, stat::PASS_NOT_DHCP)?;
        let ihl = validate::ipv4_header(ip[ipv4::VERSION_IHL], ip[ipv4::PROTOCOL])?;
        let (t, f) = (ipv4::TOTAL_LEN, ipv4::FLAGS_FRAGMENT);
        Ok(L3 {
            ihl,
            total_len: be16([ip[t], ip[t + 1]]) as usize,
            flags_fragment: be16([ip[f], ip[f + 1]]),
        })
    }

    /// L4: UDP to port 67, a whole datagram whose lengths agree with the IPv4
    /// header's and the frame's, long enough for BOOTP, with checksums that
    /// verify (`validate`, the slow path's rule too). Fragments are refused,
    /// not reassembled: the slow path drops them as well. Returns where the
    /// BOOTP message starts and ends.
    #[inline(always)]
    fn parse_l4(
        ctx: &XdpContext,
        l3: usize,
        ip: &L3,
        frame_len: usize,
    ) -> Result<(usize, usize), Pass> {
        let l4 = l3 + ip.ihl;
        let h: [u8; UDP_HLEN] = bytes_at(ctx, l4, stat::PASS_NOT_DHCP)?;
        validate::udp_port(be16([h[udp::DST_PORT], h[udp::DST_PORT + 1]]))?;
        let udp_len = be16([h[udp::LEN], h[udp::LEN + 1]]) as usize;
        validate::datagram(
            ip.flags_fragment,
            ip.ihl,
            ip.total_len,
            udp_len,
            frame_len - l3,
        )?;
        verify_checksums(
            ctx,
            l3,
            ip.ihl,
            udp_len,
            be16([h[udp::CHECKSUM], h[udp::CHECKSUM + 1]]),
        )?;
        Ok((l4 + UDP_HLEN, l4 + udp_len))
    }

    /// The IPv4 header and UDP checksums (`validate`). The header and the
    /// datagram are copied into the scratch buffer (not yet used by this run)
    /// and summed there by `bpf_csum_diff`: a few helper calls instead of a
    /// loop over up to 1600 bytes the verifier would have to walk.
    #[inline(always)]
    fn verify_checksums(
        ctx: &XdpContext,
        l3: usize,
        ihl: usize,
        udp_len: usize,
        udp_field: u16,
    ) -> Result<(), Pass> {
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
        // Opaque, so the bounds below reach the verifier (it needs a non-zero size).
        let n = core::hint::black_box(ihl + udp_len);
        if n == 0 || n > MAX_FRAME || ihl > 60 {
            return Err(stat::PASS_MALFORMED);
        }
        // 6.1's verifier does not carry the check above to the copy of n
        // spilled before it: give the size a bound it computes itself,
        // 1..=2048, which is n again for n in 1..=MAX_FRAME.
        let n = (core::hint::black_box(n - 1) & 0x7ff) + 1;
        // SAFETY: n ≤ MAX_FRAME; the copy and the 4 zeros after it stay inside
        // the 4096-byte per-CPU buffer, which this run alone uses.
        let (src, dst) = unsafe {
            let buf = (*scratch).buf.as_mut_ptr();
            if bpf_xdp_load_bytes(ctx.ctx, l3 as u32, buf.cast(), n as u32) != 0 {
                return Err(stat::PASS_MALFORMED);
            }
            // The helper sums whole 32-bit words: zeros after the datagram.
            (buf.add(n & 0x7ff) as *mut [u8; 4]).write_unaligned([0; 4]);
            let at = |o: usize| *(buf.add(o) as *const [u8; 4]);
            (at(ipv4::SRC), at(ipv4::DST))
        };
        validate::ipv4_checksum(scratch_sum(0, ihl)?)?;
        let pseudo = validate::pseudo_header_sum(src, dst, udp_len as u16);
        validate::udp_checksum(udp_field, pseudo, scratch_sum(ihl, (udp_len + 3) & !3)?)
    }

    /// The BOOTP fields a reply is built from.
    struct Fixed {
        xid: [u8; 4],
        flags: u16,
        ciaddr: [u8; 4],
        giaddr: [u8; 4],
        chaddr: [u8; 16],
    }

    /// BOOTP: a BOOTREQUEST of an Ethernet client, with the DHCP magic cookie.
    #[inline(always)]
    fn parse_bootp(ctx: &XdpContext, msg: usize) -> Result<Fixed, Pass> {
        let fixed: [u8; bootp::SNAME] = bytes_at(ctx, msg, stat::PASS_MALFORMED)?;
        if fixed[bootp::OP] != BOOTREQUEST {
            // A BOOTREPLY sent to port 67 is not for us to answer.
            return Err(stat::PASS_OTHER);
        }
        if fixed[bootp::HTYPE] != HTYPE_ETHER || fixed[bootp::HLEN] != HLEN_ETHER {
            return Err(stat::PASS_MALFORMED);
        }
        let cookie: [u8; 4] = bytes_at(ctx, msg + bootp::COOKIE, stat::PASS_MALFORMED)?;
        if cookie != MAGIC_COOKIE {
            return Err(stat::PASS_MALFORMED);
        }
        let four = |o: usize| [fixed[o], fixed[o + 1], fixed[o + 2], fixed[o + 3]];
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&fixed[bootp::CHADDR..bootp::SNAME]);
        Ok(Fixed {
            xid: four(bootp::XID),
            flags: be16([fixed[bootp::FLAGS], fixed[bootp::FLAGS + 1]]),
            ciaddr: four(bootp::CIADDR),
            giaddr: four(bootp::GIADDR),
            chaddr,
        })
    }

    /// Walks the options from `start` to `end` (UDP payload end); requires END.
    #[inline(always)]
    fn parse_options(ctx: &XdpContext, start: usize, end: usize) -> Result<Options, Pass> {
        const BAD: Pass = stat::PASS_MALFORMED;
        // An option in several instances (RFC 3396): the slow path joins them.
        const SPLIT: Pass = stat::PASS_OTHER;
        let o = PARSED.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
        // SAFETY: per-CPU slot used by this run only. Volatile accesses keep LLVM
        // from carrying the fields in registers across iterations (see `Options`).
        unsafe {
            zero_words(o.cast(), core::mem::size_of::<Options>() / 4);
            let mut off = start;
            for _ in 0..MAX_OPTIONS {
                // Widen `off` to the same range every iteration (opaque to LLVM,
                // which would drop the mask): the verifier then finds each
                // iteration's state already explored and prunes it.
                off = core::hint::black_box(off) & 0x7ff;
                if off >= end || off > MAX_FRAME {
                    return Err(BAD); // no END before the payload ends
                }
                let [code]: [u8; 1] = bytes_at(ctx, off, BAD)?;
                if code == opt::END {
                    let found = core::ptr::read_volatile(o);
                    if found.msg_type == 0 {
                        return Err(BAD);
                    }
                    return Ok(found);
                }
                if code == opt::PAD {
                    off += 1;
                    continue;
                }
                let [len]: [u8; 1] = bytes_at(ctx, off + 1, BAD)?;
                let len = len as usize;
                let val = off + 2;
                if val + len > end {
                    return Err(BAD);
                }
                match code {
                    opt::MSG_TYPE => {
                        if len != 1 || core::ptr::read_volatile(&(*o).msg_type) != 0 {
                            return Err(BAD);
                        }
                        let [t]: [u8; 1] = bytes_at(ctx, val, BAD)?;
                        if t == 0 {
                            return Err(BAD);
                        }
                        core::ptr::write_volatile(&mut (*o).msg_type, t);
                    }
                    opt::REQUESTED_IP => {
                        if len != 4 {
                            return Err(BAD);
                        }
                        if core::ptr::read_volatile(&(*o).has_requested_ip) != 0 {
                            return Err(SPLIT);
                        }
                        core::ptr::write_volatile(&mut (*o).requested_ip, bytes_at(ctx, val, BAD)?);
                        core::ptr::write_volatile(&mut (*o).has_requested_ip, 1);
                    }
                    opt::SERVER_ID => {
                        if len != 4 {
                            return Err(BAD);
                        }
                        if core::ptr::read_volatile(&(*o).has_server_id) != 0 {
                            return Err(SPLIT);
                        }
                        core::ptr::write_volatile(&mut (*o).server_id, bytes_at(ctx, val, BAD)?);
                        core::ptr::write_volatile(&mut (*o).has_server_id, 1);
                    }
                    opt::MAX_MSG_SIZE => {
                        if len != 2 {
                            return Err(BAD);
                        }
                        if core::ptr::read_volatile(&(*o).has_max_msg_size) != 0 {
                            return Err(SPLIT);
                        }
                        core::ptr::write_volatile(&mut (*o).has_max_msg_size, 1);
                        core::ptr::write_volatile(
                            &mut (*o).max_msg_size,
                            be16(bytes_at(ctx, val, BAD)?),
                        );
                    }
                    opt::CLIENT_ID | opt::RELAY_AGENT => {
                        if len == 0 {
                            return Err(BAD);
                        }
                        let (slot_off, slot_len) = if code == opt::CLIENT_ID {
                            (&mut (*o).client_id_off, &mut (*o).client_id_len)
                        } else {
                            (&mut (*o).relay_agent_off, &mut (*o).relay_agent_len)
                        };
                        if core::ptr::read_volatile(slot_len) != 0 {
                            return Err(SPLIT);
                        }
                        core::ptr::write_volatile(slot_off, off as u32);
                        core::ptr::write_volatile(slot_len, (len + 2) as u32);
                    }
                    // Options continued in sname/file: the slow path handles overload.
                    opt::OVERLOAD => return Err(BAD),
                    _ => {}
                }
                off = val + len;
            }
        }
        Err(BAD)
    }

    /// RFC 2131 §4.3: which reply, if any, the fast path gives; otherwise why not.
    #[inline(always)]
    fn decide(req: &Request, lease: &Lease) -> Result<u8, Pass> {
        let o = &req.opts;
        let ask = rfc2131::Ask {
            msg_type: o.msg_type,
            ciaddr: req.ciaddr,
            requested_ip: (o.has_requested_ip != 0).then_some(o.requested_ip),
            server_id: (o.has_server_id != 0).then_some(o.server_id),
        };
        match rfc2131::decide(&ask, lease.ip, lease.server_ip) {
            Decision::Reply(t) => Ok(t),
            Decision::NotOurServer => Err(stat::PASS_NOT_OUR_SERVER),
            Decision::Inconsistent => Err(stat::PASS_MALFORMED),
            Decision::OtherType => Err(stat::PASS_OTHER),
        }
    }

    /// Writes `bytes` at `off` of the scratch buffer (`off` constant-bounded).
    #[inline(always)]
    unsafe fn put(buf: *mut u8, off: usize, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            *buf.add(off + i) = bytes[i];
            i += 1;
        }
    }

    /// Builds the reply's BOOTP payload in the per-CPU scratch buffer; returns its length.
    #[inline(always)]
    fn build_payload(
        ctx: &XdpContext,
        req: &Request,
        key: &ClientKey,
        lease: &Lease,
        reply: u8,
    ) -> Result<usize, Pass> {
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
        // SAFETY: per-CPU buffer, used by this run only; every offset below is
        // checked against SCRATCH_LEN (constants, or `pos` after its own check).
        unsafe {
            let buf = (*scratch).buf.as_mut_ptr();
            let nak = reply == DHCPNAK;
            let f = rfc2131::reply_fields(
                reply,
                req.flags,
                req.ciaddr,
                req.giaddr,
                lease.ip,
                lease.siaddr,
            );
            // op, htype, hlen, hops 0; xid; secs 0.
            put(buf, bootp::OP, &[BOOTREPLY, HTYPE_ETHER, HLEN_ETHER, 0]);
            put(buf, bootp::XID, &req.xid);
            put(buf, bootp::SECS, &[0, 0]);
            put(buf, bootp::FLAGS, &f.flags.to_be_bytes());
            put(buf, bootp::CIADDR, &f.ciaddr);
            put(buf, bootp::YIADDR, &f.yiaddr);
            put(buf, bootp::SIADDR, &f.siaddr);
            put(buf, bootp::GIADDR, &req.giaddr);
            put(buf, bootp::CHADDR, &req.chaddr);
            // sname and file (SNAME is a multiple of 4).
            zero_words(
                buf.add(bootp::SNAME).cast(),
                (bootp::COOKIE - bootp::SNAME) / 4,
            );
            put(buf, bootp::COOKIE, &MAGIC_COOKIE);
            put(
                buf,
                bootp::OPTIONS,
                &[opt::MSG_TYPE, 1, reply, opt::SERVER_ID, 4],
            );
            put(buf, bootp::OPTIONS + 5, &lease.server_ip);
            let mut pos = bootp::OPTIONS + 9;

            if !nak {
                if lease.name == NAME_FROM_IP {
                    // host-a-b-c-d, made here: no stored name to look up.
                    // pos is a constant here, the index masked: in bounds.
                    let at = buf.add(pos + 2);
                    let n = write_ip_host_name(lease.ip, |i, b| *at.add(i & 0x1f) = b);
                    let n = if n > IP_NAME_MAX { IP_NAME_MAX } else { n };
                    *buf.add(pos) = opt::HOSTNAME;
                    *buf.add(pos + 1) = n as u8;
                    pos += 2 + n;
                } else if lease.name == NAME_STORED {
                    let name = NAMES.get(key).ok_or(stat::PASS_OTHER)?;
                    let n = name.len as usize;
                    if n == 0 || n > HOSTNAME_MAX {
                        return Err(stat::PASS_OTHER);
                    }
                    *buf.add(pos) = opt::HOSTNAME;
                    *buf.add(pos + 1) = n as u8;
                    copy_kernel(buf.add(pos + 2), name.bytes.as_ptr(), n)?;
                    pos += 2 + n;
                }
                let blob = OPTS.get(lease.opts_id).ok_or(stat::PASS_OTHER)?;
                let n = blob.len as usize;
                if n > OPTS_MAX {
                    return Err(stat::PASS_OTHER);
                }
                if pos > 512 {
                    return Err(stat::PASS_TOO_BIG);
                }
                copy_kernel(buf.add(pos), blob.bytes.as_ptr(), n)?;
                pos += n;
            }
            let echoes = [
                (
                    req.opts.client_id_off as usize,
                    req.opts.client_id_len as usize,
                ),
                (
                    req.opts.relay_agent_off as usize,
                    req.opts.relay_agent_len as usize,
                ),
            ];
            for (off, n) in echoes {
                if n == 0 {
                    continue;
                }
                // The size as 1 + an opaque 0..=256: older verifiers (6.1)
                // learn no lower bound from `n == 0` and refuse a size that
                // may be 0; an upper bound on n - 1 they do keep.
                let less_one = core::hint::black_box(n.wrapping_sub(1));
                if pos > 2048 || less_one > 256 {
                    return Err(stat::PASS_TOO_BIG);
                }
                let n = less_one + 1;
                let rc = bpf_xdp_load_bytes(ctx.ctx, off as u32, buf.add(pos).cast(), n as u32);
                if rc != 0 {
                    return Err(stat::PASS_MALFORMED);
                }
                pos += n;
            }
            if pos > MAX_PAYLOAD {
                return Err(stat::PASS_TOO_BIG);
            }
            *buf.add(pos) = opt::END;
            pos += 1;
            // PAD up to the BOOTP minimum and to a multiple of 4 (the checksum
            // helper takes 32-bit words): zero a fixed span instead of looping,
            // which keeps the verifier's path count flat. The 4 bytes after
            // END one by one, then whole words from the next word boundary:
            // together at least PAD_SPAN zeros from pos on.
            for i in 0..4 {
                core::ptr::write_volatile(buf.add(pos + i), 0);
            }
            zero_words(buf.add((pos + 4) & !3).cast(), PAD_SPAN / 4);
            pos = if pos < MIN_BOOTP {
                MIN_BOOTP
            } else {
                (pos + 3) & !3
            };
            Ok(pos)
        }
    }

    /// Zeros `n` 32-bit words at `p` (4-aligned), one store each: volatile,
    /// so LLVM does not make a call to the BPF `memset` of the loop, which
    /// stores a byte at a time (four instructions a byte).
    #[inline(always)]
    unsafe fn zero_words(p: *mut u32, n: usize) {
        for i in 0..n {
            core::ptr::write_volatile(p.add(i), 0);
        }
    }

    /// memcpy of `n` (≤ 1024) bytes from a map value into the scratch buffer.
    #[inline(always)]
    unsafe fn copy_kernel(dst: *mut u8, src: *const u8, n: usize) -> Result<(), Pass> {
        if n == 0 {
            return Ok(());
        }
        if n > OPTS_MAX {
            return Err(stat::PASS_TOO_BIG);
        }
        if bpf_probe_read_kernel(dst.cast(), n as u32, src.cast()) != 0 {
            return Err(stat::PASS_OTHER);
        }
        Ok(())
    }

    /// Ones'-complement sum ([`csum::add`] order) of the scratch buffer's
    /// `len` bytes from `start` (`start` ≤ 60 and `len` multiples of 4, `len`
    /// ≤ 2048), in helper calls of at most 512 bytes.
    #[inline(always)]
    fn scratch_sum(start: usize, len: usize) -> Result<u64, Pass> {
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
        if start > 60 {
            return Err(stat::PASS_OTHER);
        }
        if len > 4 * 512 {
            return Err(stat::PASS_TOO_BIG);
        }
        let mut sum: u64 = 0;
        // Chunks at constant offsets, each offset and size behind a mask
        // the verifier computes itself: 6.1's verifier lost the bounds of a
        // running offset (it ended with umin > umax and refused the pointer).
        for i in 0..4usize {
            let off = i * 512;
            if off >= len {
                break;
            }
            let rest = len - off;
            let n = if rest > 512 { 512 } else { rest };
            // No-ops for n ≤ 512 and start ≤ 60.
            let n = core::hint::black_box(n) & 0x3ff;
            let at = (core::hint::black_box(start) & 0x3f) + off;
            // SAFETY: at ≤ 63 + 1536 and n ≤ 1023 stay inside the 4096-byte
            // buffer.
            let part = unsafe {
                let p = (*scratch).buf.as_mut_ptr().add(at);
                bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), n as u32, 0)
            };
            if part < 0 {
                return Err(stat::PASS_OTHER);
            }
            // The helper sums 16-bit words in memory order (little-endian here);
            // the rest of the sum is in network order: swap the folded part.
            sum += u16::from_be(csum::fold(part as u32 as u64)) as u64;
        }
        Ok(sum)
    }

    /// Resizes the frame and writes Ethernet, IPv4, UDP and the payload (RFC 2131 §4.1 addressing).
    #[inline(always)]
    fn emit(
        ctx: &XdpContext,
        req: &Request,
        cfg: &NetConfig,
        lease: &Lease,
        reply: u8,
        payload_len: usize,
    ) -> Result<(), Pass> {
        let dst = rfc2131::destination(
            reply,
            req.flags,
            req.ciaddr,
            req.giaddr,
            lease.ip,
            req.mac(),
        );
        let dst_mac = match dst.mac {
            Some(mac) => mac,
            None => req.eth_src,
        };
        let src_ip = lease.server_ip;
        let udp_len = UDP_HLEN + payload_len;
        let ip_len = IPV4_HLEN + udp_len;
        let ip = wire::ipv4_header(src_ip, dst.ip, udp_len as u16);
        let udp = wire::udp_header(
            src_ip,
            dst.ip,
            dst.port,
            udp_len as u16,
            scratch_sum(0, payload_len)?,
        );

        let l3 = req.l3;
        if l3 > MAX_L2 {
            return Err(stat::PASS_OTHER);
        }
        // Opaque: the verifier forbids arithmetic on data_end, which LLVM would
        // otherwise fold this subtraction into.
        let old_len = core::hint::black_box(ctx.data_end() - ctx.data()) as i32;
        let new_len = (l3 + ip_len) as i32;
        let delta = new_len - old_len;
        // The L2 header (addresses, VLAN tags, ethertype) survives a move of the
        // frame's start; keep a copy.
        let l2: [u8; MAX_L2] = bytes_at(ctx, 0, stat::PASS_MALFORMED)?;
        // Grow at the tail; where the tail has no room (a small skb on veth),
        // grow into the headroom instead; shrinking always works at the tail.
        // SAFETY: both helpers check the frame's room themselves.
        let resized = unsafe {
            delta <= 0 && bpf_xdp_adjust_tail(ctx.ctx, delta) == 0
                || delta > 0
                    && (bpf_xdp_adjust_tail(ctx.ctx, delta) == 0
                        || bpf_xdp_adjust_head(ctx.ctx, -delta) == 0)
        };
        if !resized {
            return Err(stat::PASS_TOO_BIG);
        }
        let start = ctx.data();
        let write_end = core::hint::black_box(start + MAX_L2 + IP_UDP_HLEN);
        if write_end > ctx.data_end() {
            return Err(stat::PASS_TOO_BIG);
        }
        // SAFETY: [start, start + MAX_L2 + IP_UDP_HLEN) was checked above and l3 ≤ MAX_L2.
        unsafe {
            let p = start as *mut u8;
            put(p, 0, &l2);
            put(p, 0, &dst_mac);
            put(p, ETH_SRC, &cfg.server_mac);
            put(p, l3, &ip);
            put(p, l3 + IPV4_HLEN, &udp);
        }
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
        // The size as MIN_BOOTP + an opaque, bounded rest: the verifier needs
        // a non-zero size, and older ones (6.1) keep no bounds that a range
        // check compiled to `len - MIN_BOOTP > …` puts on a copy of len.
        let over_min = core::hint::black_box(payload_len.wrapping_sub(MIN_BOOTP));
        if over_min > SCRATCH_LEN / 2 - MIN_BOOTP {
            return Err(stat::PASS_TOO_BIG);
        }
        let payload_len = over_min + MIN_BOOTP;
        // SAFETY: payload_len ≤ 2048 < SCRATCH_LEN; the helper checks the frame.
        let rc = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                (l3 + IP_UDP_HLEN) as u32,
                (*scratch).buf.as_mut_ptr().cast(),
                payload_len as u32,
            )
        };
        if rc != 0 {
            return Err(stat::PASS_TOO_BIG);
        }
        Ok(())
    }

    #[inline(always)]
    fn record_ack(key: &ClientKey, lease: &Lease) {
        // SAFETY: plain helper call.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        let expires_ns = if lease.lease_secs == LEASE_INFINITE {
            EXPIRES_NEVER
        } else {
            now + lease.lease_secs as u64 * 1_000_000_000
        };
        let record = AckRecord {
            ip: lease.ip,
            _pad: [0; 4],
            acked_ns: now,
            expires_ns,
        };
        // A renewal rewrites the record in place: no LRU allocation on the hot path.
        match ACKS.get_ptr_mut(key) {
            // SAFETY: a map value of the right type; a racing ACK for the same
            // client writes the same fields.
            Some(slot) => unsafe { slot.write(record) },
            None => {
                let _ = ACKS.insert(key, record, 0);
            }
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[no_mangle]
    static LICENSE: [u8; 4] = *b"GPL\0";
}
