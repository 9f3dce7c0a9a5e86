//! The slow path: what the XDP program passes up in one served namespace.
//!
//! One thread for every namespace (an epoll over one AF_PACKET socket a DHCP
//! device) reads DHCP requests and answers per RFC 2131 from the same maps as the fast path,
//! with the same reply builder: RELEASE and DECLINE are recorded, INFORM gets
//! an ACK without lease time, DISCOVER/REQUEST the fast path's reply, unknown
//! clients nothing (and a rate-limited log line).

pub mod reply;

use std::{
    collections::HashMap,
    io::IoSliceMut,
    net::{Ipv4Addr, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::Sender,
        Arc, Mutex,
    },
};

use anyhow::{Context, Result};
use dhcp_ebpf::{
    csum, validate,
    wire::{self, opt, BOOTPS, ETH_SRC, ETH_TYPE},
    ClientKey, OPTS_MAX,
};
use nix::{
    net::if_::if_nametoindex,
    sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout},
    sys::socket::{
        recvmsg, send, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType,
    },
};

use crate::{
    loader::Maps,
    netns,
    neutron::model::format_mac,
    ratelimit::{suppressed, RateLimit},
    slowpath::reply::{Decision, LeaseView, Request},
};

/// Counters of the slow path (the JSON keys of `xdhcp stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Replies,
    Releases,
    Declines,
    Informs,
    Unknown,
    Dropped,
}

impl Counter {
    /// Every counter, in display order.
    pub const ALL: [Counter; 6] = [
        Counter::Replies,
        Counter::Releases,
        Counter::Declines,
        Counter::Informs,
        Counter::Unknown,
        Counter::Dropped,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Replies => "slow_replies",
            Counter::Releases => "slow_releases",
            Counter::Declines => "slow_declines",
            Counter::Informs => "slow_informs",
            Counter::Unknown => "slow_unknown_clients",
            Counter::Dropped => "slow_dropped",
        }
    }
}

/// What the slow path tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Count(Counter),
    /// The client gave its lease back.
    Released {
        net: u32,
        mac: [u8; 6],
        ip: Ipv4Addr,
    },
    /// The client found its address in use.
    Declined {
        net: u32,
        mac: [u8; 6],
        ip: Ipv4Addr,
    },
}

/// A network's slow path, served by the slow-path thread; stops when dropped.
pub struct SlowPath {
    token: u64,
    reactor: Arc<Reactor>,
}

impl SlowPath {
    /// Whether it is served: registered with a slow-path thread that runs
    /// (the thread ends only on a fatal error).
    pub fn alive(&self) -> bool {
        self.reactor.running.load(Ordering::Relaxed)
            && self.reactor.workers().contains_key(&self.token)
    }
}

impl Drop for SlowPath {
    fn drop(&mut self) {
        if let Some(w) = self.reactor.workers().remove(&self.token) {
            let _ = self.reactor.epoll.delete(&w.raw);
        }
    }
}

/// The one thread that serves every network's slow path: an epoll over the
/// packet sockets. Thousands of networks cost no thread, wake-up or
/// descriptor of their own beyond their two sockets.
struct Reactor {
    epoll: Epoll,
    /// Token (the epoll data) → the network's worker.
    workers: Mutex<HashMap<u64, Worker>>,
    next_token: AtomicU64,
    running: AtomicBool,
}

impl Reactor {
    /// The process's slow-path thread, started on first use.
    fn get() -> Result<Arc<Reactor>> {
        static REACTOR: Mutex<Option<Arc<Reactor>>> = Mutex::new(None);
        let mut slot = REACTOR.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = slot.as_ref().filter(|r| r.running.load(Ordering::Relaxed)) {
            return Ok(r.clone());
        }
        let reactor = Arc::new(Reactor {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create")?,
            workers: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            running: AtomicBool::new(true),
        });
        let r = reactor.clone();
        std::thread::Builder::new()
            .name("slow-path".into())
            .spawn(move || r.run())
            .context("starting the slow-path thread")?;
        *slot = Some(reactor.clone());
        Ok(reactor)
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Worker>> {
        // A worker that panicked was dropped (see `run`): the map is whole.
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        struct Ended<'a>(&'a AtomicBool);
        impl Drop for Ended<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Relaxed);
            }
        }
        let _ended = Ended(&self.running);
        let mut buf = vec![0u8; 9216];
        let mut drain = [0u8; 1500];
        let mut events = vec![EpollEvent::empty(); 256];
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("slow path: epoll_wait: {e}; the slow paths stop");
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                let mut workers = self.workers();
                let Some(w) = workers.get_mut(&token) else {
                    continue;
                };
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    w.on_readable(&mut buf, &mut drain)
                }));
                if served.is_err() {
                    // The panic message went to stderr; this network's slow
                    // path stops, the others go on.
                    let w = workers.remove(&token).expect("just found");
                    let _ = self.epoll.delete(&w.raw);
                    tracing::error!(net = w.net, "slow path panicked; it stops for this network");
                }
            }
        }
    }
}

/// Starts the slow path for network `net` on device `ifname` in namespace
/// `ns`, reading the fast path's `maps` (one set of descriptors shared by
/// every slow path: ten thousand networks must not take eight each).
pub fn spawn(
    ns: &str,
    ifname: &str,
    net: u32,
    maps: Arc<Maps>,
    events: Sender<Event>,
) -> Result<SlowPath> {
    // Sockets belong to the namespace they are created in.
    let (raw, udp) = netns::run_in(ns, || {
        let raw =
            packet_socket(ifname).with_context(|| format!("packet socket on {ifname} in {ns}"))?;
        // Holds port 67 so the stack does not answer passed-up unicast
        // requests with ICMP port unreachable. Another server on the port
        // (dnsmasq during a migration) is no reason not to serve.
        let udp = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BOOTPS)) {
            Ok(udp) => {
                udp.set_nonblocking(true)?;
                Some(udp)
            }
            Err(e) => {
                tracing::warn!(
                    namespace = ns,
                    "UDP port 67 is taken ({e}); serving without holding it"
                );
                None
            }
        };
        Ok((raw, udp))
    })?;
    let reactor = Reactor::get()?;
    let token = reactor.next_token.fetch_add(1, Ordering::Relaxed);
    let mut workers = reactor.workers();
    reactor
        .epoll
        .add(&raw, EpollEvent::new(EpollFlags::EPOLLIN, token))
        .context("adding the packet socket to the slow path's epoll")?;
    workers.insert(
        token,
        Worker {
            raw,
            udp,
            maps,
            net,
            events,
            log_limit: RateLimit::default(),
        },
    );
    drop(workers);
    Ok(SlowPath { token, reactor })
}

fn packet_socket(ifname: &str) -> Result<OwnedFd> {
    let ifindex = if_nametoindex(ifname).with_context(|| format!("no device {ifname}"))?;
    // Protocol 0 first, so the socket sees no frame until bound: created with
    // ETH_P_ALL it would hook every device at once, and bind() would unhook it
    // with a wait for an RCU grace period (~15 ms a device, minutes for
    // thousands of networks).
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::empty(),
        None,
    )
    .context("socket")?;
    // libc: nix 0.30 has no way to build the LinkAddr (sockaddr_ll) to bind to.
    // SAFETY: a zeroed sockaddr_ll is valid; bind reads it for the size passed.
    let rc = unsafe {
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = SockProtocol::EthAll as u16; // network byte order
        addr.sll_ifindex = ifindex as i32;
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    anyhow::ensure!(rc == 0, "bind: {}", std::io::Error::last_os_error());
    Ok(fd)
}

struct Worker {
    raw: OwnedFd,
    udp: Option<UdpSocket>,
    maps: Arc<Maps>,
    net: u32,
    events: Sender<Event>,
    /// Per-client lines, per kind and source MAC (a flood must not fill the log).
    log_limit: RateLimit<(SlowLine, [u8; 6])>,
}

/// The kinds of per-client line the slow path writes, each limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SlowLine {
    Dropped,
    Unknown,
}

impl Worker {
    /// Its packet socket is readable: answers what is queued (a bounded
    /// number of frames, so one busy network cannot starve the others; epoll
    /// reports the rest again).
    fn on_readable(&mut self, buf: &mut [u8], drain: &mut [u8]) {
        // What the UDP socket holding port 67 receives is thrown away: every
        // request is answered from its frame on the packet socket. That
        // includes datagrams the stack reassembled from fragments, whose
        // fragments the packet socket saw and `dhcp_payload` refused:
        // fragmented requests are dropped, by both paths.
        while self
            .udp
            .as_ref()
            .is_some_and(|u| u.recv_from(drain).is_ok())
        {}
        for _ in 0..64 {
            let received = recvmsg::<LinkAddr>(
                self.raw.as_raw_fd(),
                &mut [IoSliceMut::new(buf)],
                None,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|m| (m.bytes, m.address));
            let n = match received {
                Ok((n, from)) if n > 0 => {
                    if from.is_some_and(|a| a.pkttype() == libc::PACKET_OUTGOING) {
                        continue;
                    }
                    n
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // Drained (EAGAIN), or an error the read just cleared
                // (ENETDOWN when the device went down).
                _ => return,
            };
            if let Err(e) = self.handle(&buf[..n]) {
                let src: [u8; 6] = buf[..n]
                    .get(ETH_SRC..ETH_TYPE)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default();
                if let Some(k) = self.log_limit.allow((SlowLine::Dropped, src)) {
                    tracing::debug!(net = self.net, src = %format_mac(&src), "slow path dropped a request: {e:#}{}", suppressed(k));
                }
                self.count(Counter::Dropped);
            }
        }
    }

    fn count(&self, c: Counter) {
        let _ = self.events.send(Event::Count(c));
    }

    /// Answers one frame; `Ok` also for frames that are not for us.
    fn handle(&mut self, frame: &[u8]) -> Result<()> {
        let Some((l2_len, payload)) = dhcp_payload(frame) else {
            return Ok(());
        };
        // Our own strict parser only: dhcproto panics on some malformed
        // options (debug assertions on their lengths; found by fuzzing).
        if payload.get(wire::bootp::OP) != Some(&wire::BOOTREQUEST) {
            return Ok(());
        }
        let req = Request::parse(payload)?;
        let mac = req.mac();
        let relayed = !req.giaddr.is_unspecified();
        if !relayed && frame[ETH_SRC..ETH_TYPE] != mac {
            anyhow::bail!("Ethernet source differs from chaddr {}", format_mac(&mac));
        }
        let key = ClientKey::new(self.net, mac);
        let lease = self.maps.leases.get(&key, 0).ok();
        let cfg = self
            .maps
            .nets
            .get(&self.net, 0)
            .context("network not configured")?;
        if relayed {
            let source = ClientKey::new(self.net, frame[ETH_SRC..ETH_TYPE].try_into()?);
            let allowed = reply::relay_allowed(
                cfg.flags,
                || {
                    let giaddr = u32::from_ne_bytes(req.giaddr.octets());
                    self.maps.relays.get(&giaddr, 0).is_ok()
                },
                || self.maps.leases.get(&source, 0).is_ok(),
            );
            if !allowed {
                self.count(Counter::Dropped);
                return Ok(());
            }
        }
        let Some(lease) = lease else {
            self.count(Counter::Unknown);
            if let Some(k) = self.log_limit.allow((SlowLine::Unknown, mac)) {
                tracing::info!(net = self.net, mac = %format_mac(&mac), "no port for this client: not answered{}", suppressed(k));
            }
            return Ok(());
        };
        let blob = self
            .maps
            .opts
            .get(&lease.opts_id, 0)
            .context("the lease's options are missing")?;
        let blob = &blob.bytes[..(blob.len as usize).min(OPTS_MAX)];
        let hostname = self
            .maps
            .hostname(&key, &lease)
            .context("the lease's host name is missing")?;
        let view = LeaseView {
            ip: Ipv4Addr::from(lease.ip),
            server_ip: Ipv4Addr::from(lease.server_ip),
            siaddr: Ipv4Addr::from(lease.siaddr),
            hostname: &hostname,
            blob,
        };
        let l2 = &frame[..l2_len];
        match req.msg_type {
            reply::DHCPDISCOVER | reply::DHCPREQUEST => {
                let Decision::Reply(t) = reply::decide(&req, &view) else {
                    return Ok(());
                };
                let mut out = reply::frame(l2, cfg.server_mac, &req, &view, t);
                if out.len() - l2_len > reply::max_reply_ip_len(&req) {
                    // Too big for the client: keep what it asked for (option 55).
                    let asked = &req.parameters;
                    let drop: Vec<u8> = reply::tlvs(blob)
                        .iter()
                        .map(|(c, _)| *c)
                        .filter(|c| !KEPT_WHEN_TRIMMED.contains(c) && !asked.contains(c))
                        .collect();
                    let trimmed = reply::without(blob, &drop);
                    out = reply::frame(
                        l2,
                        cfg.server_mac,
                        &req,
                        &LeaseView {
                            blob: &trimmed,
                            ..view
                        },
                        t,
                    );
                    anyhow::ensure!(
                        out.len() - l2_len <= reply::max_reply_ip_len(&req),
                        "the reply to {} does not fit the client's {} bytes",
                        format_mac(&mac),
                        reply::max_reply_ip_len(&req)
                    );
                }
                self.send(&out)?;
                self.count(Counter::Replies);
            }
            reply::DHCPRELEASE => {
                let _ = self.events.send(Event::Released {
                    net: self.net,
                    mac,
                    ip: req.ciaddr,
                });
                self.count(Counter::Releases);
            }
            reply::DHCPDECLINE => {
                let ip = req.requested_ip.unwrap_or(view.ip);
                let _ = self.events.send(Event::Declined {
                    net: self.net,
                    mac,
                    ip,
                });
                self.count(Counter::Declines);
            }
            reply::DHCPINFORM => {
                let body = reply::inform_payload(&req, &view);
                let dst = reply::destination(&req, view.ip, reply::DHCPACK);
                self.send(&reply::wrap(l2, cfg.server_mac, view.server_ip, dst, &body))?;
                self.count(Counter::Informs);
                self.count(Counter::Replies);
            }
            _ => {}
        }
        Ok(())
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        let n = send(self.raw.as_raw_fd(), frame, MsgFlags::empty()).context("send")?;
        anyhow::ensure!(n == frame.len(), "send: {n} of {} bytes", frame.len());
        Ok(())
    }
}

/// Options a reply too big for the client keeps whether asked for or not:
/// the subnet mask and the lease times.
const KEPT_WHEN_TRIMMED: [u8; 4] = [
    opt::SUBNET_MASK,
    opt::LEASE_TIME,
    opt::RENEWAL_T1,
    opt::REBINDING_T2,
];

/// The L2 header length and UDP payload of an IPv4/UDP frame to port 67, if
/// the frame passes the rule the XDP program applies too
/// ([`dhcp_ebpf::validate`]: at most two VLAN tags, IPv4 with UDP, no
/// fragment, lengths that agree with each other and the frame, checksums that
/// verify). Fragments are dropped, not reassembled (docs/fastpath.md).
pub fn dhcp_payload(frame: &[u8]) -> Option<(usize, &[u8])> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    let mut l3 = wire::ETH_HLEN;
    let mut ethertype = be16(ETH_TYPE)?;
    for _ in 0..validate::MAX_VLAN_TAGS {
        if wire::is_vlan(ethertype) {
            ethertype = be16(l3 + 2)?;
            l3 += wire::VLAN_HLEN;
        }
    }
    if ethertype != wire::ETH_P_IP {
        return None;
    }
    let ip = frame.get(l3..l3 + wire::IPV4_HLEN)?;
    let ihl = validate::ipv4_header(ip[wire::ipv4::VERSION_IHL], ip[wire::ipv4::PROTOCOL]).ok()?;
    let udp = l3 + ihl;
    let udp_header = frame.get(udp..udp + wire::UDP_HLEN)?;
    let field = |at: usize, h: &[u8]| u16::from_be_bytes([h[at], h[at + 1]]);
    validate::udp_port(field(wire::udp::DST_PORT, udp_header)).ok()?;
    let udp_len = field(wire::udp::LEN, udp_header) as usize;
    validate::datagram(
        field(wire::ipv4::FLAGS_FRAGMENT, ip),
        ihl,
        field(wire::ipv4::TOTAL_LEN, ip) as usize,
        udp_len,
        frame.len() - l3,
    )
    .ok()?;
    validate::ipv4_checksum(csum::add(0, &frame[l3..udp])).ok()?;
    let four = |at: usize| [ip[at], ip[at + 1], ip[at + 2], ip[at + 3]];
    let pseudo =
        validate::pseudo_header_sum(four(wire::ipv4::SRC), four(wire::ipv4::DST), udp_len as u16);
    let datagram = &frame[udp..udp + udp_len];
    validate::udp_checksum(
        field(wire::udp::CHECKSUM, udp_header),
        pseudo,
        csum::add(0, datagram),
    )
    .ok()?;
    Some((l3, &datagram[wire::UDP_HLEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the worker reads of option 55 (to trim a reply too big for the
    /// client) comes from the strict parser, whatever else the request holds.
    #[test]
    fn option_55_is_read_by_the_strict_parser() {
        let mut head = vec![0u8; reply::OPTIONS_OFF];
        head[wire::bootp::OP] = wire::BOOTREQUEST;
        head[wire::bootp::HTYPE] = wire::HTYPE_ETHER;
        head[wire::bootp::HLEN] = wire::HLEN_ETHER;
        head[reply::OPTIONS_OFF - 4..].copy_from_slice(&reply::MAGIC_COOKIE);
        let cases: [(&str, &[u8], &[u8]); 4] = [
            (
                "one option 55",
                &[53, 1, 1, 55, 3, 1, 3, 6, 255],
                &[1, 3, 6],
            ),
            ("none", &[53, 1, 1, 255], &[]),
            (
                "split (RFC 3396): the parts in order",
                &[53, 1, 1, 55, 1, 1, 0, 55, 2, 3, 6, 255],
                &[1, 3, 6],
            ),
            // dhcproto panicked on this one (a 151..=157 option whose
            // length is not 4) in builds with debug assertions.
            (
                "a malformed bulk leasequery option",
                &[53, 1, 1, 152, 0, 55, 1, 6, 255],
                &[6],
            ),
        ];
        for (what, options, want) in cases {
            let payload = [head.as_slice(), options].concat();
            let req = Request::parse(&payload).unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_eq!(req.parameters, want, "{what}");
        }
    }
}
