//! The embedded XDP object: one program instance per network, attached to that
//! network's DHCP device.

mod batch;
pub mod bpffs;
mod entry;
pub mod links;
mod sys;

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{HashMap, Map, MapData, PerCpuArray, ProgramArray},
    programs::{links::FdLink, xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use batch::{lookup_all, lookup_each};
use dhcp_ebpf::{
    map_name, stat, AckRecord, ClientKey, HostName, Lease, NetConfig, NetStats, OptsBlob, Scratch,
    FAST_PROGRAM, NAME_STORED, PASS_PROGRAM,
};

/// The XDP object built by `cargo xtask build-ebpf` (checked fresh by build.rs).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dhcp-ebpf.o"));

/// The loaded fast path: every map pinned under `pin_dir`, `xdhcp_fast`
/// (installed in the tail-call table) and `xdhcp_pass` pinned there too, as
/// `fast-<object hash>` and `pass-<object hash>`.
pub struct FastPath {
    pub pin_dir: PathBuf,
    fast: Xdp,
    pass: Xdp,
    /// The pinned JUMP prog array, which every entry program tail-calls through.
    jump: OwnedFd,
}

/// A short hash of the embedded object: pinned programs of another build are
/// not adopted.
pub fn object_hash() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in OBJECT {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

impl FastPath {
    /// Loads and verifies the fast path, creating or reopening the pinned maps
    /// in `pin_dir` (a bpffs directory), makes it the tail-call target and
    /// pins the programs.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        check_pinned_layouts(pin_dir)?;
        let (fast_pin, pass_pin) = Self::program_pins(pin_dir);
        let mut ebpf = loader(pin_dir)
            .load(OBJECT)
            .context("loading the XDP object")?;
        for (name, pin) in [(FAST_PROGRAM, &fast_pin), (PASS_PROGRAM, &pass_pin)] {
            let prog = program(&mut ebpf, name)?;
            prog.load().with_context(|| format!("verifying {name}"))?;
            let _ = std::fs::remove_file(pin);
            prog.pin(pin)
                .with_context(|| format!("pinning {name} at {}", pin.display()))?;
        }
        drop(ebpf);
        let fast = Self::adopt(pin_dir)?;
        fast.install()?;
        Ok(fast)
    }

    /// Adopts the pinned programs of this build when they exist (a restart:
    /// nothing is loaded twice), else loads them; says which.
    pub fn open(pin_dir: &Path) -> Result<(Self, bool)> {
        let (fast_pin, pass_pin) = Self::program_pins(pin_dir);
        let (fast, adopted) = if fast_pin.exists() && pass_pin.exists() {
            let fast = Self::adopt(pin_dir)?;
            fast.install()?;
            (fast, true)
        } else {
            (Self::load(pin_dir)?, false)
        };
        remove_other_builds(pin_dir)?;
        Ok((fast, adopted))
    }

    fn program_pins(pin_dir: &Path) -> (PathBuf, PathBuf) {
        let hash = object_hash();
        (
            pin_dir.join(format!("fast-{hash}")),
            pin_dir.join(format!("pass-{hash}")),
        )
    }

    fn adopt(pin_dir: &Path) -> Result<Self> {
        let (fast_pin, pass_pin) = Self::program_pins(pin_dir);
        let open = |pin: &Path| {
            Xdp::from_pin(pin, XdpAttachType::Interface)
                .with_context(|| format!("opening pinned program {}", pin.display()))
        };
        let jump_pin = pin_dir.join(map_name::JUMP);
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            fast: open(&fast_pin)?,
            pass: open(&pass_pin)?,
            jump: sys::obj_get(&jump_pin)
                .with_context(|| format!("opening {}", jump_pin.display()))?,
        })
    }

    /// Points every entry's tail call at this fast path.
    fn install(&self) -> Result<()> {
        let path = self.pin_dir.join(map_name::JUMP);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut jump = ProgramArray::try_from(Map::ProgramArray(data))?;
        let fd = self.fast.fd()?.try_clone()?;
        jump.set(0, &fd, 0)
            .context("installing the fast path in JUMP")?;
        Ok(())
    }

    /// The pass-everything program, for veth peers of fast-path devices.
    pub fn pass_program(&mut self) -> Result<&mut Xdp> {
        Ok(&mut self.pass)
    }

    /// The fast path program itself.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        Ok(&mut self.fast)
    }

    /// Loads network `net`'s entry program (`xdhcp`, assembled: see
    /// `entry.rs`), which tail-calls this fast path.
    pub fn entry(&self, net: u32) -> Result<Xdp> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let fd = entry::load(net, &self.jump)?;
        // aya opens a program it did not load only from a pin: a moment's one.
        let tmp = self.pin_dir.join(format!(
            "entry-tmp-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&tmp);
        sys::obj_pin(&fd, &tmp)?;
        let prog = Xdp::from_pin(&tmp, XdpAttachType::Interface);
        let _ = std::fs::remove_file(&tmp);
        prog.with_context(|| format!("opening the entry program of network {net}"))
    }

    /// Typed handles on the shared maps (opened from their pins).
    pub fn maps(&self) -> Result<Maps> {
        Maps::open(&self.pin_dir)
    }
}

/// Refuses maps pinned under `pin_dir` whose key or value size is not this
/// build's (pinned by another version of xdhcp): the new program would read
/// them with the wrong layout (the verifier only checks that an access fits).
/// Checked before anything is loaded, so nothing changes on a refusal.
pub fn check_pinned_layouts(pin_dir: &Path) -> Result<()> {
    use std::mem::size_of;
    let layouts: [(&str, usize, usize); 9] = [
        (map_name::LEASES, size_of::<ClientKey>(), size_of::<Lease>()),
        (
            map_name::NAMES,
            size_of::<ClientKey>(),
            size_of::<HostName>(),
        ),
        (map_name::OPTS, 4, size_of::<OptsBlob>()),
        (map_name::NETS, 4, size_of::<NetConfig>()),
        (
            map_name::ACKS,
            size_of::<ClientKey>(),
            size_of::<AckRecord>(),
        ),
        (map_name::STATS, 4, 8),
        (map_name::NET_STATS, 4, size_of::<NetStats>()),
        (map_name::RELAYS, 4, 1),
        (map_name::SCRATCH, 4, size_of::<Scratch>()),
    ];
    for (name, key, value) in layouts {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        let (k, v) = (info.key_size() as usize, info.value_size() as usize);
        anyhow::ensure!(
            (k, v) == (key, value),
            "{} holds a {name} map of another layout (key {k} and value {v} bytes, this build's \
             are {key} and {value}): it was pinned by another version of xdhcp. Stop that \
             daemon and run `xdhcp down` (which removes the pins), then start this one",
            path.display()
        );
        // Same layout, another capacity (pinned by a build before LEASES
        // held 1,048,576 clients): served as pinned, with its capacity.
        if (name == map_name::LEASES || name == map_name::NAMES)
            && info.max_entries() != dhcp_ebpf::LEASES_MAX
        {
            tracing::warn!(
                map = name,
                pinned = info.max_entries(),
                this_build = dhcp_ebpf::LEASES_MAX,
                "{} was pinned by an earlier build and holds at most {} clients; `xdhcp down` \
                 and a start give it this build's capacity",
                path.display(),
                info.max_entries()
            );
        }
    }
    Ok(())
}

/// Is `name` a program pin of some build (`fast-<hash>`, `pass-<hash>`)?
pub fn is_program_pin(name: &str) -> bool {
    ["fast-", "pass-"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// Unpins the programs of earlier builds once this build's fast path is in
/// JUMP (links still using one keep it alive until they go).
fn remove_other_builds(pin_dir: &Path) -> Result<()> {
    let (fast_pin, pass_pin) = FastPath::program_pins(pin_dir);
    for entry in
        std::fs::read_dir(pin_dir).with_context(|| format!("listing {}", pin_dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if is_program_pin(&name) && path != fast_pin && path != pass_pin {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
            tracing::info!(pin = %path.display(), "removed a program pinned by an earlier build");
        }
    }
    Ok(())
}

fn loader(pin_dir: &Path) -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    for name in map_name::ALL {
        loader.map_pin_path(name, pin_dir.join(name));
    }
    loader
}

/// A program of a loaded object.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
        .try_into()
        .with_context(|| format!("program {name} is not an XDP program"))
}

/// How a program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

/// Attaches in `want` mode: native falls back to generic with a log line;
/// generic is generic only.
pub fn attach(prog: &mut Xdp, ifname: &str, want: AttachMode) -> Result<(XdpLinkId, AttachMode)> {
    if want == AttachMode::Generic {
        let id = prog
            .attach(ifname, XdpMode::Skb)
            .with_context(|| format!("attaching XDP to {ifname} in generic mode"))?;
        return Ok((id, AttachMode::Generic));
    }
    match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => Ok((id, AttachMode::Native)),
        Err(native) => {
            tracing::warn!(
                device = ifname,
                error = %native,
                "native XDP attach failed; falling back to generic (skb) mode"
            );
            let id = prog
                .attach(ifname, XdpMode::Skb)
                .with_context(|| format!("attaching XDP to {ifname} (native: {native})"))?;
            Ok((id, AttachMode::Generic))
        }
    }
}

/// Turns an attachment into a link that outlives this process once pinned.
pub fn take_link(prog: &mut Xdp, id: XdpLinkId) -> Result<FdLink> {
    let link = prog.take_link(id).context("taking the XDP link")?;
    FdLink::try_from(link).map_err(|e| anyhow!("the XDP attachment is not a bpf_link: {e}"))
}

/// Instructions the verifier processed for this program.
pub fn verified_insns(prog: &Xdp) -> Result<u32> {
    prog.info()
        .context("reading program info")?
        .verified_instruction_count()
        .ok_or_else(|| anyhow!("the kernel does not report verified instruction counts"))
}

/// Entries in the maps (their capacities are `dhcp_ebpf::*_MAX`).
#[derive(Debug, Default, Clone)]
pub struct MapFill {
    pub leases: u64,
    pub opts: u64,
    pub nets: u64,
    pub acks: u64,
    /// LEASES entries per network number.
    pub leases_by_net: std::collections::HashMap<u32, u64>,
    /// ACKS entries (clients the fast path ACKed) per network number.
    pub acks_by_net: std::collections::HashMap<u32, u64>,
}

/// Typed handles on the shared maps.
pub struct Maps {
    pub leases: HashMap<MapData, ClientKey, Lease>,
    pub names: HashMap<MapData, ClientKey, HostName>,
    pub opts: HashMap<MapData, u32, OptsBlob>,
    pub nets: HashMap<MapData, u32, NetConfig>,
    pub acks: HashMap<MapData, ClientKey, AckRecord>,
    pub stats: PerCpuArray<MapData, u64>,
    pub net_stats: HashMap<MapData, u32, NetStats>,
    pub relays: HashMap<MapData, u32, u8>,
}

impl Maps {
    /// Opens the maps pinned in `pin_dir`.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let open = |name: &str| {
            let path = pin_dir.join(name);
            MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))
        };
        Ok(Self {
            leases: HashMap::try_from(Map::HashMap(open(map_name::LEASES)?))?,
            names: HashMap::try_from(Map::HashMap(open(map_name::NAMES)?))?,
            opts: HashMap::try_from(Map::HashMap(open(map_name::OPTS)?))?,
            nets: HashMap::try_from(Map::HashMap(open(map_name::NETS)?))?,
            acks: HashMap::try_from(Map::LruHashMap(open(map_name::ACKS)?))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(map_name::STATS)?))?,
            net_stats: HashMap::try_from(Map::HashMap(open(map_name::NET_STATS)?))?,
            relays: HashMap::try_from(Map::HashMap(open(map_name::RELAYS)?))?,
        })
    }

    /// Option 12 of `lease` (the client `key`'s), as the fast path sends it:
    /// empty for none; None when its stored name is missing.
    pub fn hostname(&self, key: &ClientKey, lease: &Lease) -> Option<Vec<u8>> {
        match lease.name {
            dhcp_ebpf::NAME_FROM_IP => {
                let mut name = [0u8; dhcp_ebpf::IP_NAME_MAX];
                let n = dhcp_ebpf::ip_host_name(lease.ip, &mut name);
                Some(name[..n].to_vec())
            }
            NAME_STORED => self.names.get(key, 0).ok().map(|h| h.as_bytes().to_vec()),
            _ => Some(Vec::new()),
        }
    }

    /// Every ACK record, read in batches (BPF_MAP_LOOKUP_BATCH): a few
    /// syscalls for the whole map, where iterating takes two per entry and the
    /// daemon reads the map every second.
    pub fn all_acks(&self) -> Result<Vec<(ClientKey, AckRecord)>> {
        lookup_all(aya::maps::IterableMap::map(&self.acks)).context("reading ACKS")
    }

    /// How full the maps are, read when asked (a few batch reads per map).
    pub fn fill(&self) -> Result<MapFill> {
        use aya::maps::IterableMap;
        let mut fill = MapFill::default();
        lookup_each(self.leases.map(), |k: &ClientKey, _: &Lease| {
            fill.leases += 1;
            *fill.leases_by_net.entry(k.net).or_default() += 1;
        })
        .context("reading LEASES")?;
        lookup_each(self.acks.map(), |k: &ClientKey, _: &AckRecord| {
            fill.acks += 1;
            *fill.acks_by_net.entry(k.net).or_default() += 1;
        })
        .context("reading ACKS")?;
        lookup_each(self.opts.map(), |_: &u32, _: &OptsBlob| fill.opts += 1)
            .context("reading OPTS")?;
        lookup_each(self.nets.map(), |_: &u32, _: &NetConfig| fill.nets += 1)
            .context("reading NETS")?;
        Ok(fill)
    }

    /// Each network's counters (by net id), read when asked.
    pub fn network_counters(&self) -> Result<std::collections::HashMap<u32, NetStats>> {
        use aya::maps::IterableMap;
        let mut out = std::collections::HashMap::new();
        lookup_each(self.net_stats.map(), |k: &u32, v: &NetStats| {
            out.insert(*k, *v);
        })
        .context("reading NET_STATS")?;
        Ok(out)
    }

    /// The counters summed over CPUs, by `stat` index.
    pub fn counters(&self) -> Result<[u64; stat::COUNT as usize]> {
        let mut out = [0u64; stat::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = self.stats.get(&(i as u32), 0).context("reading STATS")?;
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }
}
