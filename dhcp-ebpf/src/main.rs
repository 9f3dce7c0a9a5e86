//! xdhcp's XDP fast path.
//!
//! Answers DHCPDISCOVER with OFFER and DHCPREQUEST with ACK or NAK straight from
//! the lease maps, rewriting the request into the reply and sending it back out
//! of the same device (XDP_TX). Whatever it cannot answer exactly right goes up
//! the stack (XDP_PASS) to the daemon's slow path, with a counter saying why.
//!
//! Two programs: `xdhcp`, a few instructions loaded once per network (its
//! load-time global `NET_ID` names the network, because the ingress ifindex
//! repeats across namespaces), which writes the network id into the frame's
//! XDP metadata and tail-calls `xdhcp_fast`, the fast path, loaded once.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_NO_PREALLOC},
    btf_maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray},
    helpers::generated::{
        bpf_csum_diff, bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_xdp_adjust_head,
        bpf_xdp_adjust_meta, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
    Global,
};
use dhcp_ebpf::{
    stat, AckRecord, ClientKey, Lease, NetConfig, NetStats, OptsBlob, Scratch, ACKS_MAX,
    EXPIRES_NEVER, LEASES_MAX, LEASE_INFINITE, NETS_MAX, NET_META_LEN, NET_RELAY_LISTED,
    NET_RELAY_OK, OPTS_MAX, OPTS_MAX_ENTRIES, RELAYS_MAX, SCRATCH_LEN,
};

/// The network an `xdhcp` entry instance serves (set by the loader).
#[no_mangle]
static NET_ID: Global<u32> = Global::new(0);

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

#[btf_map]
static LEASES: HashMap<ClientKey, Lease, { LEASES_MAX as usize }, NO_PREALLOC> = HashMap::new();
#[btf_map]
static OPTS: HashMap<u32, OptsBlob, { OPTS_MAX_ENTRIES as usize }, NO_PREALLOC> = HashMap::new();
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
/// Slot 0: `xdhcp_fast`, the target of every entry's tail call.
#[btf_map]
static JUMP: ProgramArray<1> = ProgramArray::new();

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const BOOTPS: u16 = 67;
const BOOTPC: u16 = 68;
/// op, htype … chaddr: the fixed fields before sname.
const BOOTP_FIXED: usize = 44;
/// Offset of the magic cookie (after sname and file).
const COOKIE_OFF: usize = 236;
/// Offset of the first option.
const OPTIONS_OFF: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const BROADCAST_FLAG: u16 = 0x8000;

/// Frames longer than this are not DHCP requests we answer (no jumbo DHCP).
const MAX_FRAME: usize = 1600;
/// Upper bound on options walked (PAD counts as one).
const MAX_OPTIONS: u32 = 64;
/// RFC 2131: a client accepts 576-byte IP packets unless option 57 says more.
const MIN_MAX_MSG: usize = 576;
/// RFC 951/1542: BOOTP messages are at least 300 bytes; relays and old clients insist.
const MIN_BOOTP: usize = 300;
/// Largest reply payload (BOOTP) we build: fits a 1500-byte IP packet.
const MAX_PAYLOAD: usize = 1500 - 28;
/// Zeros written after END: covers the way to MIN_BOOTP and to a 4-byte boundary.
const PAD_SPAN: usize = 64;

const DHCPDISCOVER: u8 = 1;
const DHCPOFFER: u8 = 2;
const DHCPREQUEST: u8 = 3;
const DHCPACK: u8 = 5;
const DHCPNAK: u8 = 6;

const OPT_PAD: u8 = 0;
const OPT_HOSTNAME: u8 = 12;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_OVERLOAD: u8 = 52;
const OPT_MSG_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_MAX_MSG_SIZE: u8 = 57;
const OPT_CLIENT_ID: u8 = 61;
const OPT_RELAY_AGENT: u8 = 82;
const OPT_END: u8 = 255;

/// Why a frame goes up instead of being answered: a `stat::PASS_*` index.
type Pass = u32;

/// Entry point attached to one network's DHCP device.
#[xdp]
pub fn xdhcp(ctx: XdpContext) -> u32 {
    let net = NET_ID.load();
    // SAFETY: the helper checks the headroom itself.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(NET_META_LEN as i32)) } == 0 {
        let meta = ctx.metadata();
        if meta + NET_META_LEN <= ctx.data() {
            // SAFETY: [meta, meta + 4) was just checked to lie before data.
            unsafe { (meta as *mut u32).write_unaligned(net) };
            // SAFETY: on success the tail call does not return.
            unsafe { JUMP.tail_call(&ctx, 0) };
        }
    }
    // No room for metadata, or the fast path is not loaded: the slow path answers.
    xdp_action::XDP_PASS
}

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
fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize, reason: Pass) -> Result<[u8; N], Pass> {
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
    _pad: u8,
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
    let payload_len = build_payload(ctx, &req, lease, reply)?;
    let max_ip_len = if req.opts.max_msg_size as usize > MIN_MAX_MSG {
        req.opts.max_msg_size as usize
    } else {
        MIN_MAX_MSG
    };
    if 28 + payload_len > max_ip_len {
        return Err(stat::PASS_TOO_BIG);
    }
    emit(ctx, &req, cfg, lease, reply, payload_len)?;
    if reply == DHCPACK {
        record_ack(&key, lease);
    }
    Ok(reply)
}

/// Parses Ethernet (with up to two VLAN tags), IPv4, UDP, BOOTP and the options.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Request, Pass> {
    // Opaque to LLVM: otherwise it proves later bounds checks redundant from
    // the length checks below, and drops them; the verifier needs every one.
    let frame_len = core::hint::black_box(ctx.data_end() - ctx.data());
    if frame_len > MAX_FRAME {
        return Err(stat::PASS_MALFORMED);
    }
    let eth: [u8; ETH_HLEN] = bytes_at(ctx, 0, stat::PASS_NOT_DHCP)?;
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut l3 = ETH_HLEN;
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let tag: [u8; 4] = bytes_at(ctx, l3, stat::PASS_NOT_DHCP)?;
            ethertype = be16([tag[2], tag[3]]);
            l3 += 4;
        }
    }
    if ethertype != ETH_P_IP {
        return Err(stat::PASS_NOT_DHCP);
    }
    let ip: [u8; 20] = bytes_at(ctx, l3, stat::PASS_NOT_DHCP)?;
    if ip[0] >> 4 != 4 || ip[9] != IPPROTO_UDP {
        return Err(stat::PASS_NOT_DHCP);
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(stat::PASS_NOT_DHCP);
    }
    let l4 = l3 + ihl;
    let udp: [u8; 8] = bytes_at(ctx, l4, stat::PASS_NOT_DHCP)?;
    if be16([udp[2], udp[3]]) != BOOTPS {
        return Err(stat::PASS_NOT_DHCP);
    }
    // Fragments: the first may look whole; the slow path reassembles.
    if be16([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(stat::PASS_OTHER);
    }
    let total_len = be16([ip[2], ip[3]]) as usize;
    let udp_len = be16([udp[4], udp[5]]) as usize;
    if total_len < ihl + 8 + OPTIONS_OFF || l3 + total_len > frame_len {
        return Err(stat::PASS_MALFORMED);
    }
    if udp_len < 8 + OPTIONS_OFF || udp_len > total_len - ihl {
        return Err(stat::PASS_MALFORMED);
    }
    let bootp = l4 + 8;
    let end = l4 + udp_len;

    let fixed: [u8; BOOTP_FIXED] = bytes_at(ctx, bootp, stat::PASS_MALFORMED)?;
    if fixed[0] != 1 {
        // A BOOTREPLY sent to port 67 is not for us to answer.
        return Err(stat::PASS_OTHER);
    }
    if fixed[1] != 1 || fixed[2] != 6 {
        return Err(stat::PASS_MALFORMED);
    }
    let cookie: [u8; 4] = bytes_at(ctx, bootp + COOKIE_OFF, stat::PASS_MALFORMED)?;
    if cookie != MAGIC_COOKIE {
        return Err(stat::PASS_MALFORMED);
    }
    let opts = parse_options(ctx, bootp + OPTIONS_OFF, end)?;

    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&fixed[28..44]);
    Ok(Request {
        l3,
        eth_src: [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]],
        xid: [fixed[4], fixed[5], fixed[6], fixed[7]],
        flags: be16([fixed[10], fixed[11]]),
        ciaddr: [fixed[12], fixed[13], fixed[14], fixed[15]],
        giaddr: [fixed[24], fixed[25], fixed[26], fixed[27]],
        chaddr,
        opts,
    })
}

/// Walks the options from `start` to `end` (UDP payload end); requires END.
#[inline(always)]
fn parse_options(ctx: &XdpContext, start: usize, end: usize) -> Result<Options, Pass> {
    const BAD: Pass = stat::PASS_MALFORMED;
    let o = PARSED.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
    // SAFETY: per-CPU slot used by this run only. Volatile accesses keep LLVM
    // from carrying the fields in registers across iterations (see `Options`).
    unsafe {
        core::ptr::write_volatile(o, core::mem::zeroed());
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
            if code == OPT_END {
                let found = core::ptr::read_volatile(o);
                if found.msg_type == 0 {
                    return Err(BAD);
                }
                return Ok(found);
            }
            if code == OPT_PAD {
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
                OPT_MSG_TYPE => {
                    if len != 1 || core::ptr::read_volatile(&(*o).msg_type) != 0 {
                        return Err(BAD);
                    }
                    let [t]: [u8; 1] = bytes_at(ctx, val, BAD)?;
                    if t == 0 {
                        return Err(BAD);
                    }
                    core::ptr::write_volatile(&mut (*o).msg_type, t);
                }
                OPT_REQUESTED_IP => {
                    if len != 4 {
                        return Err(BAD);
                    }
                    core::ptr::write_volatile(&mut (*o).requested_ip, bytes_at(ctx, val, BAD)?);
                    core::ptr::write_volatile(&mut (*o).has_requested_ip, 1);
                }
                OPT_SERVER_ID => {
                    if len != 4 {
                        return Err(BAD);
                    }
                    core::ptr::write_volatile(&mut (*o).server_id, bytes_at(ctx, val, BAD)?);
                    core::ptr::write_volatile(&mut (*o).has_server_id, 1);
                }
                OPT_MAX_MSG_SIZE => {
                    if len != 2 {
                        return Err(BAD);
                    }
                    core::ptr::write_volatile(
                        &mut (*o).max_msg_size,
                        be16(bytes_at(ctx, val, BAD)?),
                    );
                }
                OPT_CLIENT_ID | OPT_RELAY_AGENT => {
                    if len == 0 {
                        return Err(BAD);
                    }
                    let (slot_off, slot_len) = if code == OPT_CLIENT_ID {
                        (&mut (*o).client_id_off, &mut (*o).client_id_len)
                    } else {
                        (&mut (*o).relay_agent_off, &mut (*o).relay_agent_len)
                    };
                    if core::ptr::read_volatile(slot_len) != 0 {
                        // Split long option (RFC 3396): let the slow path concatenate.
                        return Err(stat::PASS_OTHER);
                    }
                    core::ptr::write_volatile(slot_off, off as u32);
                    core::ptr::write_volatile(slot_len, (len + 2) as u32);
                }
                // Options continued in sname/file: the slow path handles overload.
                OPT_OVERLOAD => return Err(BAD),
                _ => {}
            }
            off = val + len;
        }
    }
    Err(BAD)
}

/// RFC 2131 §4.3: which reply, if any, the fast path gives.
#[inline(always)]
fn decide(req: &Request, lease: &Lease) -> Result<u8, Pass> {
    let o = &req.opts;
    match o.msg_type {
        DHCPDISCOVER => Ok(DHCPOFFER),
        DHCPREQUEST => {
            let ours = |ip: [u8; 4]| if ip == lease.ip { DHCPACK } else { DHCPNAK };
            let server_id = (o.has_server_id != 0).then_some(o.server_id);
            let requested_ip = (o.has_requested_ip != 0).then_some(o.requested_ip);
            match (server_id, requested_ip) {
                // SELECTING: answer only the client that chose us.
                (Some(server), Some(ip)) => {
                    if server != lease.server_ip {
                        Err(stat::PASS_NOT_OUR_SERVER)
                    } else {
                        Ok(ours(ip))
                    }
                }
                (Some(_), None) => Err(stat::PASS_MALFORMED),
                // INIT-REBOOT.
                (None, Some(ip)) => Ok(ours(ip)),
                // RENEWING / REBINDING.
                (None, None) if req.ciaddr != [0; 4] => Ok(ours(req.ciaddr)),
                (None, None) => Err(stat::PASS_MALFORMED),
            }
        }
        _ => Err(stat::PASS_OTHER),
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
fn build_payload(ctx: &XdpContext, req: &Request, lease: &Lease, reply: u8) -> Result<usize, Pass> {
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
    // SAFETY: per-CPU buffer, used by this run only; every offset below is
    // checked against SCRATCH_LEN (constants, or `pos` after its own check).
    unsafe {
        let buf = (*scratch).buf.as_mut_ptr();
        let nak = reply == DHCPNAK;
        let zero4 = [0u8; 4];
        let mut flags = req.flags;
        if nak && req.giaddr != zero4 {
            flags |= BROADCAST_FLAG; // so the relay broadcasts the NAK (§4.3.2)
        }
        put(buf, 0, &[2, 1, 6, 0]);
        put(buf, 4, &req.xid);
        put(buf, 8, &[0, 0]);
        put(buf, 10, &flags.to_be_bytes());
        put(
            buf,
            12,
            if reply == DHCPACK {
                &req.ciaddr
            } else {
                &zero4
            },
        );
        put(buf, 16, if nak { &zero4 } else { &lease.ip });
        put(buf, 20, if nak { &zero4 } else { &lease.siaddr });
        put(buf, 24, &req.giaddr);
        put(buf, 28, &req.chaddr);
        let words = buf.add(BOOTP_FIXED) as *mut u64;
        for i in 0..(COOKIE_OFF - BOOTP_FIXED) / 8 {
            *words.add(i) = 0; // sname and file
        }
        put(buf, COOKIE_OFF, &MAGIC_COOKIE);
        put(
            buf,
            OPTIONS_OFF,
            &[OPT_MSG_TYPE, 1, reply, OPT_SERVER_ID, 4],
        );
        put(buf, OPTIONS_OFF + 5, &lease.server_ip);
        let mut pos = OPTIONS_OFF + 9;

        if !nak {
            let n = lease.hostname_len as usize;
            if n > 0 && n <= dhcp_ebpf::HOSTNAME_MAX {
                *buf.add(pos) = OPT_HOSTNAME;
                *buf.add(pos + 1) = n as u8;
                copy_kernel(buf.add(pos + 2), lease.hostname.as_ptr(), n)?;
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
            // Opaque, so the verifier sees the size bounds (it needs n > 0).
            let n = core::hint::black_box(n);
            if pos > 2048 || n == 0 || n > 257 {
                return Err(stat::PASS_TOO_BIG);
            }
            let rc = bpf_xdp_load_bytes(ctx.ctx, off as u32, buf.add(pos).cast(), n as u32);
            if rc != 0 {
                return Err(stat::PASS_MALFORMED);
            }
            pos += n;
        }
        if pos > MAX_PAYLOAD {
            return Err(stat::PASS_TOO_BIG);
        }
        *buf.add(pos) = OPT_END;
        pos += 1;
        // PAD up to the BOOTP minimum and to a multiple of 4 (the checksum
        // helper takes 32-bit words): zero a fixed span instead of looping,
        // which keeps the verifier's path count flat.
        let words = buf.add(pos) as *mut u64;
        for i in 0..PAD_SPAN / 8 {
            words.add(i).write_unaligned(0);
        }
        pos = if pos < MIN_BOOTP {
            MIN_BOOTP
        } else {
            (pos + 3) & !3
        };
        Ok(pos)
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

/// Folds a 32-bit ones'-complement sum into 16 bits.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    // Four fixed rounds fold any u64 (a loop until no carry is unbounded to the verifier).
    for _ in 0..4 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Ones'-complement sum of the scratch payload (`len` a multiple of 4).
#[inline(always)]
fn payload_sum(len: usize) -> Result<u64, Pass> {
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
    let mut sum: u64 = 0;
    let mut done = 0usize;
    for _ in 0..3 {
        if done >= len || done > 1024 {
            break;
        }
        let mut n = len - done;
        if n > 512 {
            n = 512;
        }
        // SAFETY: done ≤ 1024 and n ≤ 512 stay inside the 4096-byte buffer.
        let part = unsafe {
            let p = (*scratch).buf.as_mut_ptr().add(done);
            bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), n as u32, 0)
        };
        if part < 0 {
            return Err(stat::PASS_OTHER);
        }
        // The helper sums 16-bit words in memory order (little-endian here);
        // the rest of the sum is in network order: swap the folded part.
        sum += u16::from_be(fold(part as u32 as u64)) as u64;
        done += n;
    }
    if done != len {
        return Err(stat::PASS_TOO_BIG);
    }
    Ok(sum)
}

#[inline(always)]
fn sum_words(sum: &mut u64, bytes: &[u8]) {
    let mut i = 0;
    while i + 1 < bytes.len() {
        *sum += ((bytes[i] as u64) << 8) | bytes[i + 1] as u64;
        i += 2;
    }
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
    const BROADCAST_IP: [u8; 4] = [255; 4];
    const BROADCAST_MAC: [u8; 6] = [0xff; 6];
    let zero4 = [0u8; 4];
    let mac = req.mac();
    let (dst_ip, dst_mac, dst_port) = if req.giaddr != zero4 {
        (req.giaddr, req.eth_src, BOOTPS)
    } else if reply == DHCPNAK {
        (BROADCAST_IP, BROADCAST_MAC, BOOTPC)
    } else if req.ciaddr != zero4 {
        (req.ciaddr, req.eth_src, BOOTPC)
    } else if req.flags & BROADCAST_FLAG != 0 {
        (BROADCAST_IP, BROADCAST_MAC, BOOTPC)
    } else {
        (lease.ip, mac, BOOTPC)
    };
    let src_ip = lease.server_ip;
    let udp_len = 8 + payload_len;
    let ip_len = 20 + udp_len;

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&dst_ip);
    let mut s = 0u64;
    sum_words(&mut s, &ip);
    let ip_csum = !fold(s);
    ip[10..12].copy_from_slice(&ip_csum.to_be_bytes());

    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&BOOTPS.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let mut s = payload_sum(payload_len)?;
    sum_words(&mut s, &src_ip);
    sum_words(&mut s, &dst_ip);
    s += IPPROTO_UDP as u64 + udp_len as u64;
    sum_words(&mut s, &udp);
    let mut udp_csum = !fold(s);
    if udp_csum == 0 {
        udp_csum = 0xffff;
    }
    udp[6..8].copy_from_slice(&udp_csum.to_be_bytes());

    let l3 = req.l3;
    if l3 > ETH_HLEN + 8 {
        return Err(stat::PASS_OTHER);
    }
    // Opaque: the verifier forbids arithmetic on data_end, which LLVM would
    // otherwise fold this subtraction into.
    let old_len = core::hint::black_box(ctx.data_end() - ctx.data()) as i32;
    let new_len = (l3 + ip_len) as i32;
    let delta = new_len - old_len;
    // The L2 header (addresses, VLAN tags, ethertype) survives a move of the
    // frame's start; keep a copy.
    let l2: [u8; ETH_HLEN + 8] = bytes_at(ctx, 0, stat::PASS_MALFORMED)?;
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
    let write_end = core::hint::black_box(start + ETH_HLEN + 8 + 28);
    if write_end > ctx.data_end() {
        return Err(stat::PASS_TOO_BIG);
    }
    // SAFETY: [start, start + 50) was checked above and l3 ≤ 22.
    unsafe {
        let p = start as *mut u8;
        put(p, 0, &l2);
        put(p, 0, &dst_mac);
        put(p, 6, &cfg.server_mac);
        put(p, l3, &ip);
        put(p, l3 + 20, &udp);
    }
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(stat::PASS_OTHER)?;
    // Opaque, so the bounds below reach the verifier (it needs a non-zero size).
    let payload_len = core::hint::black_box(payload_len);
    if !(MIN_BOOTP..=SCRATCH_LEN / 2).contains(&payload_len) {
        return Err(stat::PASS_TOO_BIG);
    }
    // SAFETY: payload_len ≤ 2048 < SCRATCH_LEN; the helper checks the frame.
    let rc = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            (l3 + 28) as u32,
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
