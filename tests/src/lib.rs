//! Shared fixtures of the integration tests and benchmarks: a loaded fast path
//! with its maps, clients to put in them, and BPF_PROG_TEST_RUN of frames.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{TestRun, TestRunOptions};
use dhcp_ebpf::{stat, verdict, ClientKey, NetConfig, OptsBlob, NET_META_LEN};
use xdhcp::{
    loader::bpffs::TempPinDir,
    loader::{FastPath, Maps},
    plan::{
        options::{ReplyOptions, Route},
        PlannedLease,
    },
    slowpath::reply::{tlvs, LeaseView, OPTIONS_OFF},
};

/// The DHCP port of the test network.
pub const SERVER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xaa, 0x00, 0x02];
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// A VM port with a lease.
pub const CLIENT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// A MAC no port has.
pub const STRANGER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xde, 0xad, 0x00];

/// A client as the tests put it in the maps (and hand to the oracle): the
/// lease a plan would make of its port, and the options its blob encodes.
#[derive(Debug, Clone)]
pub struct Client {
    pub lease: PlannedLease,
    options: ReplyOptions,
}

impl Client {
    /// The usual VM port: /24, router, DNS, domain, MTU 1450, metadata route.
    pub fn typical(mac: [u8; 6], ip: Ipv4Addr) -> Self {
        Self::with_options(
            mac,
            ip,
            ReplyOptions {
                lease_secs: 86400,
                prefix_len: 24,
                router: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 2)],
                domain: Some("openstacklocal".into()),
                mtu: Some(1450),
                broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
                routes: vec![Route {
                    dest: Ipv4Addr::new(169, 254, 169, 254),
                    prefix: 32,
                    via: SERVER_IP,
                }],
                extra: Vec::new(),
            },
        )
    }

    /// A port with a large reply: 20 classless routes and 10 extra options.
    pub fn big(mac: [u8; 6], ip: Ipv4Addr) -> Self {
        let mut options = Self::typical(mac, ip).options;
        options.routes = (0..20)
            .map(|i| Route {
                dest: Ipv4Addr::new(172, 16, i, 0),
                prefix: 24,
                via: Ipv4Addr::new(10, 0, 0, 1),
            })
            .collect();
        options.extra = (0..10)
            .map(|i| (224 + i as u8, format!("extra-option-{i}").into_bytes()))
            .collect();
        Self::with_options(mac, ip, options)
    }

    /// A port on [`SERVER_IP`]'s subnet with Neutron's host name and these options.
    fn with_options(mac: [u8; 6], ip: Ipv4Addr, options: ReplyOptions) -> Self {
        let hostname = format!("host-{}", ip.to_string().replace('.', "-"));
        Self {
            lease: PlannedLease {
                port_id: format!("port-{ip}"),
                mac,
                ip,
                server_ip: SERVER_IP,
                siaddr: Ipv4Addr::UNSPECIFIED,
                lease_secs: options.lease_secs,
                hostname: hostname.into_bytes(),
                blob: options.encode().expect("encoding test options").into(),
            },
            options,
        }
    }

    /// The options `lease.blob` encodes.
    pub fn options(&self) -> &ReplyOptions {
        &self.options
    }

    /// What the oracle needs.
    pub fn view(&self) -> LeaseView<'_> {
        LeaseView {
            ip: self.lease.ip,
            server_ip: self.lease.server_ip,
            siaddr: self.lease.siaddr,
            hostname: &self.lease.hostname,
            blob: &self.lease.blob,
        }
    }
}

/// A loaded fast path with pinned maps, and entry programs per network.
pub struct Harness {
    pub fast: FastPath,
    pub maps: Maps,
    entries: Vec<(u32, aya::programs::Xdp)>,
    next_opts_id: u32,
    // Dropped last: the pins outlive the programs using them.
    _pins: TempPinDir,
}

/// What one BPF_PROG_TEST_RUN gave.
#[derive(Debug)]
pub struct Run {
    pub verdict: u32,
    /// The output frame (metadata stripped).
    pub frame: Vec<u8>,
}

impl Harness {
    /// Loads the fast path into a fresh pin directory.
    pub fn new() -> Result<Self> {
        let pins = TempPinDir::new("xdhcp-test")?;
        let fast = FastPath::load(&pins.path)?;
        let maps = fast.maps()?;
        Ok(Self {
            fast,
            maps,
            entries: Vec::new(),
            next_opts_id: 1,
            _pins: pins,
        })
    }

    /// Serves network `net` (DHCP port MAC `server_mac`); loads its entry program.
    pub fn add_net(&mut self, net: u32, server_mac: [u8; 6], relay_ok: bool) -> Result<()> {
        let flags = if relay_ok { dhcp_ebpf::NET_RELAY_OK } else { 0 };
        self.add_net_flags(net, server_mac, flags)
    }

    /// Serves network `net` with these `NET_*` flags; loads its entry program.
    pub fn add_net_flags(&mut self, net: u32, server_mac: [u8; 6], flags: u16) -> Result<()> {
        self.maps
            .nets
            .insert(net, NetConfig { server_mac, flags }, 0)?;
        if !self.entries.iter().any(|(n, _)| *n == net) {
            self.entries.push((net, self.fast.entry(net)?));
        }
        Ok(())
    }

    /// Puts `client` on network `net`.
    pub fn add_client(&mut self, net: u32, client: &Client) -> Result<()> {
        let lease = &client.lease;
        let id = self.next_opts_id;
        self.next_opts_id += 1;
        self.maps.opts.insert(id, OptsBlob::new(&lease.blob), 0)?;
        let key = ClientKey::new(net, lease.mac);
        let value = lease.map_value(id);
        if value.name == dhcp_ebpf::NAME_STORED {
            self.maps
                .names
                .insert(key, dhcp_ebpf::HostName::new(&lease.hostname), 0)?;
        }
        self.maps.leases.insert(key, value, 0)?;
        Ok(())
    }

    /// The entry program of network `net`.
    pub fn entry(&mut self, net: u32) -> Result<&mut aya::programs::Xdp> {
        let (_, prog) = self
            .entries
            .iter_mut()
            .find(|(n, _)| *n == net)
            .with_context(|| format!("network {net} has no entry program"))?;
        Ok(prog)
    }

    /// Runs `frame` through network `net`'s entry (and so the fast path).
    pub fn run(&mut self, net: u32, frame: &[u8]) -> Result<Run> {
        let mut out = vec![0u8; 4096];
        let r = self
            .entry(net)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .context("BPF_PROG_TEST_RUN")?;
        let size = r.data_size_out as usize;
        out.truncate(size);
        // The output starts at the metadata the entry program put in front.
        let frame = out
            .get(NET_META_LEN..)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Ok(Run {
            verdict: r.return_value,
            frame,
        })
    }

    /// Runs `frame` `repeat` times; returns the verdict and the kernel's ns per run.
    pub fn run_repeat(&mut self, net: u32, frame: &[u8], repeat: u32) -> Result<(u32, f64)> {
        let mut out = vec![0u8; 4096];
        let r = self.entry(net)?.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        // The kernel reports the mean duration of one run.
        Ok((r.return_value, r.duration.as_nanos() as f64))
    }

    /// The counters, by `stat` index.
    pub fn counters(&self) -> Result<[u64; stat::COUNT as usize]> {
        self.maps.counters()
    }
}

/// Human-readable verdict.
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        verdict::ABORTED => "XDP_ABORTED",
        verdict::DROP => "XDP_DROP",
        verdict::PASS => "XDP_PASS",
        verdict::TX => "XDP_TX",
        _ => "unknown",
    }
}

/// An AF_PACKET socket on one device: sends and receives whole frames.
pub struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// Binds to `ifname` in the current thread's network namespace.
    pub fn bind(ifname: &str) -> Result<Self> {
        let fd = packet_socket(libc::ETH_P_ALL as u16, if_index(ifname)?)
            .with_context(|| format!("packet socket on {ifname}"))?;
        Ok(Self { fd })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        anyhow::ensure!(
            n == frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// The first frame for which `want` holds, within `timeout`.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
            if ready <= 0 {
                continue;
            }
            // SAFETY: the buffer is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 && want(&buf[..n as usize]) {
                return Some(buf[..n as usize].to_vec());
            }
        }
    }
}

/// The index of device `ifname` in the current thread's namespace.
pub(crate) fn if_index(ifname: &str) -> Result<i32> {
    let c_name = std::ffi::CString::new(ifname)?;
    // SAFETY: a valid C string; asks the current thread's namespace.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    anyhow::ensure!(index != 0, "no device {ifname}");
    Ok(index as i32)
}

/// An AF_PACKET raw socket for `protocol` (host order), bound to `ifindex`.
pub(crate) fn packet_socket(protocol: u16, ifindex: i32) -> Result<OwnedFd> {
    let proto = protocol.to_be();
    // SAFETY: plain socket call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    anyhow::ensure!(
        fd >= 0,
        "socket(AF_PACKET): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex;
    // SAFETY: a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    anyhow::ensure!(rc == 0, "bind: {}", std::io::Error::last_os_error());
    Ok(fd)
}

/// VmRSS of process `pid` in KiB (0 if it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Is `frame` an untagged IPv4/UDP frame to port 68 carrying a DHCP message
/// with transaction id `xid`?
pub fn is_dhcp_reply(frame: &[u8], xid: [u8; 4]) -> bool {
    if frame.len() < 14 + 20 + 8 + 240 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
        return false;
    }
    let ihl = ((frame[14] & 0x0f) as usize) * 4;
    let udp = 14 + ihl;
    frame.len() > udp + 12
        && frame[udp + 2..udp + 4] == [0, 68]
        && frame[udp + 8] == 2
        && frame[udp + 12..udp + 16] == xid
}

/// The BOOTP message (UDP payload) of a reply frame (untagged, any IHL).
pub fn bootp(frame: &[u8]) -> &[u8] {
    let ihl = ((frame[14] & 0x0f) as usize) * 4;
    &frame[14 + ihl + 8..]
}

/// yiaddr of a reply frame (untagged, any IHL).
pub fn yiaddr(frame: &[u8]) -> Ipv4Addr {
    let b = &bootp(frame)[16..20];
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// The options of a reply frame as they stand on the wire (the slow path's
/// walker: PADs skipped, up to END).
pub fn reply_tlvs(frame: &[u8]) -> Vec<(u8, &[u8])> {
    tlvs(bootp(frame).get(OPTIONS_OFF..).unwrap_or_default())
}

/// Polls `f` every 50 ms until it holds; the time it took. Panics naming
/// `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {timeout:?}");
}

/// A veth pair inside `ns`: `tap` (the DHCP side) and `vm`, both up.
pub fn veth_pair(ns: &xdhcp::netns::TempNs, tap: &str, vm: &str) -> Result<()> {
    ns.ip(&["link", "add", tap, "type", "veth", "peer", "name", vm])?;
    ns.ip(&["link", "set", tap, "up"])?;
    ns.ip(&["link", "set", vm, "up"])?;
    Ok(())
}

/// The ifindex of `dev` in namespace `ns`.
pub fn ifindex(ns: &xdhcp::netns::TempNs, dev: &str) -> Result<u32> {
    let _inside = ns.enter()?;
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: a valid C string; if_nametoindex asks the current netns.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(index != 0, "no device {dev} in {}", ns.name);
    Ok(index)
}

pub mod agent;
pub mod cloud;
pub mod craft;
pub mod dnsmasq;
pub mod fixtures;
pub mod loadgen;
pub mod measure;
pub mod neutron;
pub mod parity;
pub mod prober;
pub mod real_agent;
