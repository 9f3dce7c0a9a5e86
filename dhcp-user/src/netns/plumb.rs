//! Per-network plumbing, laid out the way neutron-dhcp-agent (with the linuxbridge agent)
//! lays it out, so the XDP program has a device to attach to:
//!
//! ```text
//!  host netns                         | netns qdhcp-<NET>
//!  brq<NET[:11]> ── ns-<PORT[:11]> ═══ veth ═══ tap<PORT[:11]> (port MAC, port IPs)
//! ```
//!
//! Everything goes through rtnetlink (rtnl.rs; a device changes namespace by
//! IFLA_NET_NS_FD) and threads that [`crate::netns`] moves; nothing shells out
//! to `ip`. The names are names.rs's, the OVS parts ovs.rs's.
//! "Host" means the network namespace of the thread that calls [`plumb`]/[`unplumb`].

use std::{
    fs::{File, OpenOptions},
    io::ErrorKind,
    net::IpAddr,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, OpenOptionsExt},
    },
};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::{
    errno::Errno,
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::statfs::{fstatfs, NSFS_MAGIC},
};
use rtnetlink::{
    packet_route::link::{
        InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
    },
    Handle, LinkBridge, LinkUnspec, LinkVeth,
};
use tracing::{debug, info, warn};

use super::{
    self as netns,
    names::{bridge_name, check_ifname, host_side_name, namespace_name, tap_name},
    ovs::{self, OvsBridge},
    rtnl::{
        blocking, connect, delete_link, in_netns, ipv4_addresses, is_errno, link_by_index,
        link_by_name, must_link, nsid_of, set_link, Observed,
    },
    NETNS_DIR,
};

/// One network's DHCP port, as Neutron describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumbSpec {
    pub network_id: String,
    pub port_id: String,
    pub mac: [u8; 6],
    pub addresses: Vec<Ipv4Net>,
    pub mtu: Option<u32>,
    /// `None` = `brq<NET[:11]>`, the linuxbridge agent's name.
    pub bridge: Option<String>,
    /// Plug into this Open vSwitch bridge instead, as neutron's
    /// OVSInterfaceDriver does: with `ovs_use_veth = True`, `ns-<PORT[:11]>`
    /// in the namespace and `tap<PORT[:11]>` an OVS port; with False,
    /// `tap<PORT[:11]>` an OVS internal port moved into the namespace. The
    /// OVS port has the port's external_ids, so that the L2 agent wires it.
    pub ovs: Option<OvsBridge>,
}

/// The names of what [`plumb`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plumbed {
    pub namespace: String,
    pub tap: String,
    pub host_side: String,
    pub bridge: String,
}

/// Creates or repairs the namespace, veth pair and bridge for `spec`; safe to repeat.
pub async fn plumb(spec: &PlumbSpec) -> Result<Plumbed> {
    let names = match &spec.ovs {
        None => Plumbed {
            namespace: namespace_name(&spec.network_id),
            tap: tap_name(&spec.port_id),
            host_side: host_side_name(&spec.port_id),
            bridge: spec
                .bridge
                .clone()
                .unwrap_or_else(|| bridge_name(&spec.network_id)),
        },
        Some(ovs) if ovs.use_veth => Plumbed {
            namespace: namespace_name(&spec.network_id),
            tap: host_side_name(&spec.port_id),
            host_side: tap_name(&spec.port_id),
            bridge: ovs.bridge.clone(),
        },
        // One device: the internal port, by the same name on the bridge and
        // in the namespace.
        Some(ovs) => Plumbed {
            namespace: namespace_name(&spec.network_id),
            tap: tap_name(&spec.port_id),
            host_side: tap_name(&spec.port_id),
            bridge: ovs.bridge.clone(),
        },
    };
    for dev in [&names.tap, &names.host_side, &names.bridge] {
        check_ifname(dev)?;
    }
    let net = &spec.network_id;
    let ns = names.namespace.clone();
    blocking(move || ensure_namespace(&ns))
        .await
        .with_context(|| format!("network {net}: namespace {}", names.namespace))?;

    let host = connect().context("host netns")?;
    if let Some(ovs) = spec.ovs.as_ref().filter(|o| !o.use_veth) {
        ovs::ensure_internal_port(&host, spec, ovs, &names)
            .await
            .with_context(|| {
                format!(
                    "network {net}: OVS internal port {} on {} into {}",
                    names.tap, ovs.bridge, names.namespace
                )
            })?;
        configure_tap(spec, &names)
            .await
            .with_context(|| format!("network {net}: {} in {}", names.tap, names.namespace))?;
        return Ok(names);
    }
    let bridge = match &spec.ovs {
        Some(_) => None,
        None => Some(
            ensure_bridge(&host, &names.bridge)
                .await
                .with_context(|| format!("network {net}: bridge {}", names.bridge))?
                .index,
        ),
    };
    ensure_veth(&host, &names).await.with_context(|| {
        format!(
            "network {net}: veth {} / {} in {}",
            names.host_side, names.tap, names.namespace
        )
    })?;
    configure_tap(spec, &names)
        .await
        .with_context(|| format!("network {net}: {} in {}", names.tap, names.namespace))?;
    configure_host_side(&host, &names.host_side, bridge, spec.mtu)
        .await
        .with_context(|| format!("network {net}: {} on {}", names.host_side, names.bridge))?;
    if let Some(ovs) = &spec.ovs {
        ovs::add_ovs_port(spec, ovs, &names.host_side, false)
            .await
            .with_context(|| {
                format!(
                    "network {net}: OVS port {} on {}",
                    names.host_side, ovs.bridge
                )
            })?;
    }
    Ok(names)
}

/// Undoes [`plumb`] of a DHCP port that went (or moved to another port):
/// its OVS port if any, its veth pair, and with `whole` the namespace and
/// (Linux bridge) the bridge if nothing else uses it.
pub async fn unplug(
    network_id: &str,
    port_id: &str,
    ovs: Option<&OvsBridge>,
    whole: bool,
) -> Result<()> {
    remove_devices(network_id, port_id, ovs, whole, whole).await
}

/// Removes the veth pair and the namespace, and the bridge if asked and it has no other
/// ports; whatever is already gone is skipped.
///
/// The bridge removed is the one the host side was enslaved to, else `brq<NET[:11]>`.
pub async fn unplumb(network_id: &str, port_id: &str, remove_bridge: bool) -> Result<()> {
    // A tap that slipped out of its namespace would block the next plumb's veth.
    let host = connect().context("host netns")?;
    let tap = tap_name(port_id);
    if let Some(link) = link_by_name(&host, &tap).await? {
        delete_link(&host, &link, &tap).await?;
    }
    remove_devices(network_id, port_id, None, true, remove_bridge).await
}

/// [`unplug`] and [`unplumb`]: the OVS port (with `ovs`), the host side, the
/// device in the namespace; with `whole` the namespace; with `remove_bridge`
/// (Linux bridge only) the bridge the host side was on, else `brq<NET[:11]>`,
/// if nothing else uses it.
async fn remove_devices(
    network_id: &str,
    port_id: &str,
    ovs: Option<&OvsBridge>,
    whole: bool,
    remove_bridge: bool,
) -> Result<()> {
    let host = connect().context("host netns")?;
    let ns = namespace_name(network_id);
    let (inside, outside) = match ovs {
        Some(ovs) => {
            let port = tap_name(port_id);
            ovs::ovs_vsctl(&ovs.db, &["--if-exists", "del-port", &ovs.bridge, &port]).await?;
            if ovs.use_veth {
                (host_side_name(port_id), port)
            } else {
                // The internal port itself (gone with del-port on most
                // datapaths; removed here where it is not).
                (port.clone(), port)
            }
        }
        None => (tap_name(port_id), host_side_name(port_id)),
    };
    let mut master = None;
    if let Some(link) = link_by_name(&host, &outside).await? {
        master = Observed::of(&link).controller;
        delete_link(&host, &link, &outside).await?;
    }
    if namespace_exists(&ns) {
        // Explicitly, as the namespace outlives its file while anyone holds it open.
        let name = inside.clone();
        in_netns(&ns, move |h| async move {
            if let Some(link) = link_by_name(&h, &name).await? {
                delete_link(&h, &link, &name).await?;
            }
            Ok(())
        })
        .await
        .with_context(|| format!("deleting {inside} in {ns}"))?;
    }
    if whole {
        let ns_in = ns.clone();
        blocking(move || remove_namespace(&ns_in)).await?;
    }
    if remove_bridge && ovs.is_none() {
        let bridge = match master {
            Some(index) => link_by_index(&host, index).await?,
            None => link_by_name(&host, &bridge_name(network_id)).await?,
        };
        if let Some(bridge) = bridge {
            remove_bridge_link_if_unused(&host, &bridge).await?;
        }
    }
    Ok(())
}

/// Deletes bridge `name` if it exists and has no ports; returns whether it was deleted.
pub async fn remove_bridge_if_unused(name: &str) -> Result<bool> {
    let host = connect().context("host netns")?;
    match link_by_name(&host, name).await? {
        Some(link) => remove_bridge_link_if_unused(&host, &link).await,
        None => Ok(false),
    }
}

// ---- namespaces -------------------------------------------------------------------------

/// Whether `/run/netns/<ns>` is a mounted namespace (not a file left by a failed create).
fn namespace_exists(ns: &str) -> bool {
    File::open(netns::path(ns))
        .and_then(|f| fstatfs(&f).map_err(Into::into))
        .is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// `ip netns add`, but repairing instead of failing when the name exists.
fn ensure_namespace(ns: &str) -> Result<()> {
    if namespace_exists(ns) {
        return Ok(());
    }
    make_netns_dir_shared()?;
    let path = netns::path(ns);
    // O_EXCL-less: a file left by an interrupted create is reused, not an error.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o000)
        .open(&path)
        .with_context(|| format!("creating {path}"))?;
    let made = super::run_in_new(|| {
        mount(
            Some("/proc/thread-self/ns/net"),
            path.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the new namespace on {path}"))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&path);
    } else {
        info!(namespace = ns, "created network namespace");
    }
    made
}

/// As iproute2 does: namespace mounts under /run/netns propagate to other mount
/// namespaces only if the directory is a shared mount point.
fn make_netns_dir_shared() -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_DIR)
        .with_context(|| format!("creating {NETNS_DIR}"))?;
    let shared = || {
        mount(
            Some(""),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet; make it one.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(e).with_context(|| format!("making {NETNS_DIR} a shared mount")),
    }
    mount(
        Some(NETNS_DIR),
        NETNS_DIR,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {NETNS_DIR} on itself"))?;
    shared().with_context(|| format!("making {NETNS_DIR} a shared mount"))
}

/// `ip netns del`, quiet about what is already gone.
fn remove_namespace(ns: &str) -> Result<()> {
    let path = netns::path(ns);
    match umount2(path.as_str(), MntFlags::MNT_DETACH) {
        Ok(()) => info!(namespace = ns, "removed network namespace"),
        // EINVAL: not mounted (a stale file); ENOENT: no file.
        Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmounting {path}")),
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {path}"))
        }
        _ => Ok(()),
    }
}

/// The bridge exists, is a bridge, and is up.
async fn ensure_bridge(host: &Handle, name: &str) -> Result<Observed> {
    if link_by_name(host, name).await?.is_none() {
        // forward delay 0 as the linuxbridge agent sets it: ports forward at once.
        let add = host
            .link()
            .add(LinkBridge::new(name).forward_delay(0).up().build())
            .execute()
            .await;
        match add {
            Ok(()) => info!(bridge = name, "created bridge"),
            // Created meanwhile by someone else: fine, checked below.
            Err(e) if is_errno(&e, Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("creating bridge {name}")),
        }
    }
    let bridge = must_link(host, name).await?;
    if !bridge.is_bridge {
        bail!("link {name} exists but is not a bridge");
    }
    if !bridge.up {
        debug!(bridge = name, "setting bridge up");
        set_link(
            host,
            LinkUnspec::new_with_index(bridge.index).up().build(),
            name,
            "up",
        )
        .await?;
    }
    Ok(bridge)
}

/// The tap is in the namespace, the host side in the host, and they are each other's peer.
async fn ensure_veth(host: &Handle, names: &Plumbed) -> Result<()> {
    let ns_file = File::open(netns::path(&names.namespace))
        .with_context(|| format!("opening namespace {}", names.namespace))?;
    let tap_in_ns = || {
        let tap = names.tap.clone();
        in_netns(&names.namespace, move |h| async move {
            Ok(link_by_name(&h, &tap).await?.map(|l| Observed::of(&l)))
        })
    };

    let mut tap = tap_in_ns().await?;
    if tap.is_none() {
        if let Some(stray) = link_by_name(host, &names.tap).await? {
            info!(link = %names.tap, namespace = %names.namespace, "moving tap into namespace");
            let msg = LinkUnspec::new_with_index(stray.header.index)
                .setns_by_fd(ns_file.as_raw_fd())
                .build();
            set_link(host, msg, &names.tap, "moving into the namespace").await?;
            tap = tap_in_ns().await?;
        }
    }
    let host_side = link_by_name(host, &names.host_side)
        .await?
        .map(|l| Observed::of(&l));
    if let (Some(t), Some(h)) = (&tap, &host_side) {
        if h.peer == Some(t.index) {
            return Ok(());
        }
    }

    // A half or mismatched pair: start over.
    if tap.is_some() {
        warn!(link = %names.tap, "tap without its host side; recreating the pair");
        let name = names.tap.clone();
        in_netns(&names.namespace, move |h| async move {
            match link_by_name(&h, &name).await? {
                Some(link) => delete_link(&h, &link, &name).await,
                None => Ok(()),
            }
        })
        .await?;
    }
    if let Some(link) = link_by_name(host, &names.host_side).await? {
        warn!(link = %names.host_side, "host side without its tap; recreating the pair");
        delete_link(host, &link, &names.host_side).await?;
    }
    // The peer is created straight in the namespace, as `ip link add … peer … netns NS`.
    let peer = LinkUnspec::new_with_name(&names.tap)
        .setns_by_fd(ns_file.as_raw_fd())
        .build();
    let veth = LinkVeth::new(&names.host_side, &names.tap)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(veth)
        .execute()
        .await
        .context("creating the veth pair")?;
    info!(host_side = %names.host_side, tap = %names.tap, namespace = %names.namespace, "created veth pair");
    Ok(())
}

/// Inside the namespace: lo up; the tap with the port's MAC, MTU and exactly its IPv4
/// addresses, up.
async fn configure_tap(spec: &PlumbSpec, names: &Plumbed) -> Result<()> {
    let (tap_name, mac, mtu, want) = (
        names.tap.clone(),
        spec.mac,
        spec.mtu,
        spec.addresses.clone(),
    );
    in_netns(&names.namespace, move |h| async move {
        let lo = must_link(&h, "lo").await?;
        if !lo.up {
            set_link(
                &h,
                LinkUnspec::new_with_index(lo.index).up().build(),
                "lo",
                "up",
            )
            .await?;
        }

        let tap = must_link(&h, &tap_name).await?;
        if tap.mac != mac {
            debug!(link = %tap_name, "setting MAC");
            if tap.up {
                // Not every driver takes a MAC change while up.
                let down = LinkUnspec::new_with_index(tap.index).down().build();
                set_link(&h, down, &tap_name, "down").await?;
            }
            let msg = LinkUnspec::new_with_index(tap.index)
                .address(mac.to_vec())
                .build();
            set_link(&h, msg, &tap_name, "setting the MAC").await?;
        }
        if let Some(mtu) = mtu.filter(|m| tap.mtu != Some(*m)) {
            let msg = LinkUnspec::new_with_index(tap.index).mtu(mtu).build();
            set_link(&h, msg, &tap_name, &format!("setting MTU {mtu}")).await?;
        }

        for (net, msg) in ipv4_addresses(&h, tap.index).await? {
            if !want.contains(&net) {
                debug!(link = %tap_name, %net, "removing address");
                match h.address().del(msg).execute().await {
                    // Went with a primary address it was secondary to.
                    Err(e) if is_errno(&e, Errno::EADDRNOTAVAIL) => {}
                    r => r.with_context(|| format!("removing {net} from {tap_name}"))?,
                }
            }
        }
        // Listed again: removing a primary address can take its secondaries with it.
        let have: Vec<Ipv4Net> = ipv4_addresses(&h, tap.index)
            .await?
            .into_iter()
            .map(|(net, _)| net)
            .collect();
        for net in want.iter().filter(|n| !have.contains(n)) {
            debug!(link = %tap_name, %net, "adding address");
            h.address()
                .add(tap.index, IpAddr::V4(net.addr()), net.prefix_len())
                .execute()
                .await
                .with_context(|| format!("adding {net} to {tap_name}"))?;
        }

        if !must_link(&h, &tap_name).await?.up {
            set_link(
                &h,
                LinkUnspec::new_with_index(tap.index).up().build(),
                &tap_name,
                "up",
            )
            .await?;
        }
        Ok(())
    })
    .await
}

/// In the host: the host side has the MTU, is a port of the Linux bridge
/// (when there is one: an OVS port is added by OVSDB), and is up.
async fn configure_host_side(
    host: &Handle,
    name: &str,
    bridge: Option<u32>,
    mtu: Option<u32>,
) -> Result<()> {
    let link = must_link(host, name).await?;
    let mut msg = LinkUnspec::new_with_index(link.index);
    let mut changes = Vec::new();
    if let Some(mtu) = mtu.filter(|m| link.mtu != Some(*m)) {
        msg = msg.mtu(mtu);
        changes.push("mtu");
    }
    if let Some(bridge) = bridge.filter(|b| link.controller != Some(*b)) {
        msg = msg.controller(bridge);
        changes.push("master");
    }
    if !link.up {
        msg = msg.up();
        changes.push("up");
    }
    if !changes.is_empty() {
        debug!(link = name, ?changes, "fixing host side");
        set_link(host, msg.build(), name, &changes.join(", ")).await?;
    }
    Ok(())
}

async fn remove_bridge_link_if_unused(host: &Handle, bridge: &LinkMessage) -> Result<bool> {
    let seen = Observed::of(bridge);
    let name = bridge
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("#{}", seen.index));
    if !seen.is_bridge {
        bail!("link {name} is not a bridge; not removing it");
    }
    let links: Vec<LinkMessage> = host
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("listing links")?;
    let ports = links
        .iter()
        .filter(|l| Observed::of(l).controller == Some(seen.index))
        .count();
    if ports > 0 {
        debug!(bridge = %name, ports, "bridge still has ports; keeping it");
        return Ok(false);
    }
    delete_link(host, bridge, &name).await?;
    Ok(true)
}

/// Where the other end of a DHCP device is, as far as XDP cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VethPeer {
    /// The device is no veth: native XDP_TX needs nothing of a peer.
    NotVeth,
    /// A veth whose peer is this device in the caller's (the daemon's) namespace.
    InHost(String),
    /// A veth whose peer lies in another namespace (`nsid` as the device's
    /// namespace numbers it; `None`: the device's own namespace), at `index` there.
    Elsewhere { index: u32, nsid: Option<i32> },
}

/// What the daemon needs to know of a DHCP device before attaching XDP to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpDevice {
    pub peer: VethPeer,
    /// An XDP program is attached to it in generic (skb) mode.
    pub generic_xdp: bool,
}

/// Finds the other end of `dev` in namespace `ns`. An ifindex means something
/// only inside its own namespace: the peer's namespace comes from
/// IFLA_LINK_NETNSID, compared with the id `ns` gives the caller's namespace.
/// (veth hands native XDP_TX frames only to a peer that runs XDP, so the daemon
/// puts `xdhcp_pass` on a peer in its own namespace.)
pub async fn dhcp_device(ns: &str, dev: &str) -> Result<DhcpDevice> {
    let host = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    let name = dev.to_owned();
    let (dev_index, generic_xdp, found) = in_netns(ns, move |h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("link {name} is missing"))?;
        let generic_xdp = link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::Xdp(xdp)
                if xdp.iter().any(|x| matches!(x, LinkXdp::Attached(XdpAttached::SocketBuffer))))
        });
        let is_veth = link.attributes.iter().any(|a| {
            matches!(a, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth))))
        });
        let seen = Observed::of(&link);
        if !is_veth {
            return Ok((seen.index, generic_xdp, VethPeer::NotVeth));
        }
        let index = seen
            .peer
            .ok_or_else(|| anyhow!("veth {name} reports no peer (IFLA_LINK)"))?;
        let nsid = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkNetNsId(id) => Some(*id),
            _ => None,
        });
        let host_id = nsid_of(&h, &host).await?;
        let peer = if nsid.is_some() && nsid == host_id {
            // Its index there, to look it up by: filled in below.
            VethPeer::InHost(index.to_string())
        } else {
            VethPeer::Elsewhere { index, nsid }
        };
        Ok((seen.index, generic_xdp, peer))
    })
    .await?;
    let peer = match found {
        VethPeer::InHost(index) => peer_in_host(&connect()?, dev_index, index.parse()?, ns).await?,
        other => other,
    };
    Ok(DhcpDevice { peer, generic_xdp })
}

/// The caller's-namespace veth at `index`, checked to point back at ifindex
/// `dev_index` in `ns` (by IFLA_LINK and IFLA_LINK_NETNSID).
async fn peer_in_host(host: &Handle, dev_index: u32, index: u32, ns: &str) -> Result<VethPeer> {
    let target = File::open(netns::path(ns)).with_context(|| format!("opening {ns}"))?;
    let ns_id = nsid_of(host, &target).await?;
    let link = link_by_index(host, index)
        .await?
        .ok_or_else(|| anyhow!("the veth peer (ifindex {index}) of a device in {ns} is gone"))?;
    let nsid = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkNetNsId(id) => Some(*id),
        _ => None,
    });
    if Observed::of(&link).peer != Some(dev_index) || nsid.is_none() || nsid != ns_id {
        bail!("ifindex {index} here is not the veth peer of ifindex {dev_index} in {ns}");
    }
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(VethPeer::InHost(n.clone())),
            _ => None,
        })
        .ok_or_else(|| anyhow!("ifindex {index} has no name"))
}

#[cfg(test)]
mod tests {
    use std::{
        collections::hash_map::RandomState,
        hash::{BuildHasher, Hasher},
    };

    use super::*;
    use crate::netns::rtnl::netlink_in_netns;
    use std::future::Future;

    /// A made-up network no parallel run shares; unplumbed (with its bridge) on drop.
    struct TestNet {
        spec: PlumbSpec,
    }

    impl TestNet {
        fn new() -> Self {
            let r = RandomState::new().build_hasher().finish();
            let tag = format!("{:08x}", r as u32);
            Self {
                spec: PlumbSpec {
                    network_id: format!("xdt{tag}-0000-4000-8000-000000000001"),
                    port_id: format!("{tag}-feed-4000-8000-000000000002"),
                    mac: [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56],
                    addresses: vec![
                        "10.77.0.2/24".parse().unwrap(),
                        "10.78.0.2/16".parse().unwrap(),
                    ],
                    mtu: Some(1450),
                    bridge: Some(format!("xdtbr{tag}")),
                    ovs: None,
                },
            }
        }

        fn bridge(&self) -> String {
            self.spec.bridge.clone().unwrap()
        }
    }

    impl Drop for TestNet {
        fn drop(&mut self) {
            let (net, port, bridge) = (
                self.spec.network_id.clone(),
                self.spec.port_id.clone(),
                self.bridge(),
            );
            // Drop may run inside the test's runtime, which cannot be blocked on.
            let done = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    unplumb(&net, &port, true).await?;
                    remove_bridge_if_unused(&bridge).await
                })
            })
            .join();
            if !matches!(done, Ok(Ok(_))) {
                eprintln!("cleanup of {} failed: {done:?}", self.spec.network_id);
            }
        }
    }

    /// The tap as seen from inside its namespace, with its IPv4 addresses, and lo's state.
    fn inside(ns: &str, tap: &str) -> (Option<Observed>, Vec<Ipv4Net>, bool) {
        let tap = tap.to_owned();
        netlink_in_netns(ns, move |h| async move {
            let lo_up = must_link(&h, "lo").await?.up;
            let Some(link) = link_by_name(&h, &tap).await? else {
                return Ok((None, vec![], lo_up));
            };
            let seen = Observed::of(&link);
            let mut addrs: Vec<Ipv4Net> = ipv4_addresses(&h, seen.index)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            addrs.sort();
            Ok((Some(seen), addrs, lo_up))
        })
        .expect("reading the namespace")
    }

    /// Asserts the whole layout matches `spec`.
    async fn assert_plumbed(spec: &PlumbSpec, got: &Plumbed) {
        assert!(
            namespace_exists(&got.namespace),
            "namespace {} exists",
            got.namespace
        );
        let host = connect().unwrap();

        let (tap, addrs, lo_up) = inside(&got.namespace, &got.tap);
        let tap = tap.unwrap_or_else(|| panic!("{} is in {}", got.tap, got.namespace));
        assert!(lo_up, "lo is up in the namespace");
        assert_eq!(tap.mac, spec.mac, "tap MAC");
        assert!(tap.up, "tap is up");
        assert_eq!(tap.mtu, spec.mtu, "tap MTU");
        let mut want = spec.addresses.clone();
        want.sort();
        assert_eq!(addrs, want, "tap addresses");
        assert!(
            link_by_name(&host, &got.tap).await.unwrap().is_none(),
            "no tap in the host namespace"
        );

        let bridge = must_link(&host, &got.bridge).await.expect("bridge in host");
        assert!(
            bridge.is_bridge && bridge.up,
            "bridge is a bridge and up: {bridge:?}"
        );
        let hs = must_link(&host, &got.host_side)
            .await
            .expect("host side in host");
        assert!(hs.up, "host side is up");
        assert_eq!(
            hs.controller,
            Some(bridge.index),
            "host side is a port of the bridge"
        );
        assert_eq!(hs.mtu, spec.mtu, "host side MTU");
        assert_eq!(hs.peer, Some(tap.index), "host side is the tap's peer");
    }

    async fn assert_gone(spec: &PlumbSpec, bridge: &str) {
        let host = connect().unwrap();
        let ns = namespace_name(&spec.network_id);
        assert!(!namespace_exists(&ns), "namespace {ns} is gone");
        assert!(
            !std::path::Path::new(&netns::path(&ns)).exists(),
            "{} is gone",
            netns::path(&ns)
        );
        for dev in [
            host_side_name(&spec.port_id),
            tap_name(&spec.port_id),
            bridge.to_owned(),
        ] {
            assert!(
                link_by_name(&host, &dev).await.unwrap().is_none(),
                "{dev} is gone"
            );
        }
    }

    /// Runs `f` with a handle inside the test network's namespace (to break things).
    fn in_ns<F, Fut>(spec: &PlumbSpec, f: F)
    where
        F: FnOnce(Handle, Observed) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>>,
    {
        let tap = tap_name(&spec.port_id);
        netlink_in_netns(&namespace_name(&spec.network_id), move |h| async move {
            let link = must_link(&h, &tap).await?;
            f(h, link).await
        })
        .expect("changing the namespace");
    }

    #[tokio::test]
    async fn plumb_builds_repairs_and_unplumb_removes() {
        let net = TestNet::new();
        let spec = net.spec.clone();

        let got = plumb(&spec).await.expect("first plumb");
        assert_eq!(
            got,
            Plumbed {
                namespace: namespace_name(&spec.network_id),
                tap: tap_name(&spec.port_id),
                host_side: host_side_name(&spec.port_id),
                bridge: net.bridge(),
            }
        );
        assert_plumbed(&spec, &got).await;

        assert_eq!(
            plumb(&spec).await.expect("second plumb"),
            got,
            "plumbing again"
        );
        assert_plumbed(&spec, &got).await;

        // Break what plumb owns, one way per line, then let plumb repair it all at once.
        let host = connect().unwrap();
        in_ns(&spec, |h, tap| async move {
            // wrong MAC, tap down, one address gone, a stray address, lo down
            let msg = LinkUnspec::new_with_index(tap.index)
                .address(vec![2, 0, 0, 0, 0, 1])
                .down()
                .build();
            h.link().set(msg).execute().await?;
            let (_, first) = ipv4_addresses(&h, tap.index).await?.remove(0);
            h.address().del(first).execute().await?;
            h.address()
                .add(tap.index, "192.0.2.9".parse()?, 28)
                .execute()
                .await?;
            let lo = must_link(&h, "lo").await?;
            h.link()
                .set(LinkUnspec::new_with_index(lo.index).down().build())
                .execute()
                .await?;
            Ok(())
        });
        let hs = must_link(&host, &got.host_side).await.unwrap();
        // host side: down, no master, other MTU; bridge down
        host.link()
            .set(
                LinkUnspec::new_with_index(hs.index)
                    .down()
                    .nocontroller()
                    .mtu(1400)
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        let br = must_link(&host, &got.bridge).await.unwrap();
        host.link()
            .set(LinkUnspec::new_with_index(br.index).down().build())
            .execute()
            .await
            .unwrap();
        let broken = inside(&got.namespace, &got.tap);
        assert!(
            !broken.0.as_ref().unwrap().up && !broken.2,
            "the breakage took: {broken:?}"
        );
        plumb(&spec).await.expect("plumb repairing state");
        assert_plumbed(&spec, &got).await;

        // The tap moved out to the host namespace: plumb moves it back.
        let home = File::open("/proc/thread-self/ns/net").unwrap();
        in_ns(&spec, move |h, tap| async move {
            let msg = LinkUnspec::new_with_index(tap.index)
                .setns_by_fd(home.as_raw_fd())
                .build();
            h.link().set(msg).execute().await?;
            Ok(())
        });
        assert!(
            link_by_name(&host, &got.tap).await.unwrap().is_some(),
            "tap moved out"
        );
        plumb(&spec).await.expect("plumb moving the tap back");
        assert_plumbed(&spec, &got).await;

        // The veth pair deleted: plumb recreates it.
        let hs = link_by_name(&host, &got.host_side).await.unwrap().unwrap();
        host.link().del(hs.header.index).execute().await.unwrap();
        assert!(
            inside(&got.namespace, &got.tap).0.is_none(),
            "tap went with its peer"
        );
        plumb(&spec).await.expect("plumb recreating the pair");
        assert_plumbed(&spec, &got).await;

        // Changed port data (new address set, no MTU change): applied.
        let mut changed = spec.clone();
        changed.addresses = vec!["10.77.0.3/24".parse().unwrap()];
        changed.mac = [0xfa, 0x16, 0x3e, 0, 0, 7];
        plumb(&changed).await.expect("plumb with changed port");
        assert_plumbed(&changed, &got).await;

        // unplumb finds the custom bridge through the host side's master.
        unplumb(&spec.network_id, &spec.port_id, true)
            .await
            .expect("unplumb");
        assert_gone(&spec, &net.bridge()).await;
        unplumb(&spec.network_id, &spec.port_id, true)
            .await
            .expect("unplumb of nothing");
    }

    #[tokio::test]
    async fn default_bridge_is_brq_and_kept_while_it_has_ports() {
        let mut net = TestNet::new();
        net.spec.bridge = None;
        net.spec.mtu = None;
        let spec = net.spec.clone();
        // The guard removes the default bridge.
        net.spec.bridge = Some(bridge_name(&spec.network_id));

        let got = plumb(&spec).await.expect("plumb");
        assert_eq!(got.bridge, bridge_name(&spec.network_id));
        let host = connect().unwrap();
        let tap = inside(&got.namespace, &got.tap)
            .0
            .expect("tap in namespace");
        assert_eq!(tap.mtu, Some(1500), "veth default MTU left alone");

        // Another port on the bridge keeps it alive through unplumb.
        // (a veth: this kernel may lack the dummy driver)
        let other = format!(
            "xdtd{:08x}",
            RandomState::new().build_hasher().finish() as u32
        );
        let br = must_link(&host, &got.bridge).await.unwrap();
        host.link()
            .add(
                LinkVeth::new(&other, &format!("{other}p"))
                    .controller(br.index)
                    .build(),
            )
            .execute()
            .await
            .unwrap();

        unplumb(&spec.network_id, &spec.port_id, true)
            .await
            .expect("unplumb");
        assert!(!namespace_exists(&got.namespace), "namespace gone");
        assert!(
            link_by_name(&host, &got.bridge).await.unwrap().is_some(),
            "bridge kept"
        );

        let o = link_by_name(&host, &other).await.unwrap().unwrap();
        host.link().del(o.header.index).execute().await.unwrap();
        assert!(
            remove_bridge_if_unused(&got.bridge).await.unwrap(),
            "bridge removed"
        );
        assert_gone(&spec, &got.bridge).await;
    }
}
