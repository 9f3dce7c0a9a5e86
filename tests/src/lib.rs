//! Shared fixtures of the integration tests and benchmarks: a loaded fast path
//! with its maps, clients to put in them, and BPF_PROG_TEST_RUN of frames.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use aya::{Ebpf, TestRun, TestRunOptions};
use dhcp_ebpf::{
    stat, verdict, ClientKey, Lease, NetConfig, OptsBlob, ENTRY_PROGRAM, HOSTNAME_MAX,
    NET_META_LEN, OPTS_MAX,
};
use xdhcp::{
    bpffs::TempPinDir,
    ebpf::{self, FastPath, Maps},
    options::ReplyOptions,
    reply::LeaseView,
};

/// The DHCP port of the test network.
pub const SERVER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xaa, 0x00, 0x02];
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// A VM port with a lease.
pub const CLIENT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
/// A MAC no port has.
pub const STRANGER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xde, 0xad, 0x00];

/// A client as the tests put it in the maps (and hand to the oracle).
#[derive(Debug, Clone)]
pub struct Client {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub server_ip: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub lease_secs: u32,
    pub hostname: Vec<u8>,
    pub options: ReplyOptions,
}

impl Client {
    /// The usual VM port: /24, router, DNS, domain, MTU 1450, metadata route.
    pub fn typical(mac: [u8; 6], ip: Ipv4Addr) -> Self {
        Self {
            mac,
            ip,
            server_ip: SERVER_IP,
            siaddr: Ipv4Addr::UNSPECIFIED,
            lease_secs: 86400,
            hostname: format!("host-{}", ip.to_string().replace('.', "-")).into_bytes(),
            options: ReplyOptions {
                lease_secs: 86400,
                prefix_len: 24,
                router: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 2)],
                domain: Some("openstacklocal".into()),
                mtu: Some(1450),
                broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
                routes: vec![xdhcp::options::Route {
                    dest: Ipv4Addr::new(169, 254, 169, 254),
                    prefix: 32,
                    via: SERVER_IP,
                }],
                extra: Vec::new(),
            },
        }
    }

    /// The encoded option blob.
    pub fn blob(&self) -> Vec<u8> {
        self.options.encode().expect("encoding test options")
    }

    /// What the oracle needs; `blob` must outlive it.
    pub fn view<'a>(&'a self, blob: &'a [u8]) -> LeaseView<'a> {
        LeaseView {
            ip: self.ip,
            server_ip: self.server_ip,
            siaddr: self.siaddr,
            hostname: &self.hostname,
            blob,
        }
    }
}

/// A loaded fast path with pinned maps, and entry programs per network.
pub struct Harness {
    pub fast: FastPath,
    pub maps: Maps,
    entries: Vec<(u32, Ebpf)>,
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
        let blob = client.blob();
        let mut opts = OptsBlob {
            len: blob.len() as u16,
            _pad: [0; 2],
            bytes: [0; OPTS_MAX],
        };
        opts.bytes[..blob.len()].copy_from_slice(&blob);
        let id = self.next_opts_id;
        self.next_opts_id += 1;
        self.maps.opts.insert(id, opts, 0)?;
        let mut lease = Lease {
            ip: client.ip.octets(),
            server_ip: client.server_ip.octets(),
            siaddr: client.siaddr.octets(),
            lease_secs: client.lease_secs,
            opts_id: id,
            hostname_len: client.hostname.len() as u8,
            _pad: [0; 3],
            hostname: [0; HOSTNAME_MAX],
        };
        lease.hostname[..client.hostname.len()].copy_from_slice(&client.hostname);
        self.maps
            .leases
            .insert(ClientKey::new(net, client.mac), lease, 0)?;
        Ok(())
    }

    /// The entry program of network `net`.
    pub fn entry(&mut self, net: u32) -> Result<&mut aya::programs::Xdp> {
        let (_, ebpf) = self
            .entries
            .iter_mut()
            .find(|(n, _)| *n == net)
            .with_context(|| format!("network {net} has no entry program"))?;
        ebpf::program(ebpf, ENTRY_PROGRAM)
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
