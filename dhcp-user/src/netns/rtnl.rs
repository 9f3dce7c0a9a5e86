//! The rtnetlink calls of the plumbing: a handle in a namespace, link lookups
//! and changes, IPv4 addresses, namespace ids. A netlink socket belongs to
//! the namespace of the thread that opened it, so a handle for another
//! namespace is opened on a [`super::run_in`] thread.

use std::{
    fs::File,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
    pin::pin,
};

use anyhow::{anyhow, bail, Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        AddressFamily,
    },
    Handle,
};
use tracing::info;

/// Runs `f` with an rtnetlink handle bound to namespace `ns`, on a current-thread runtime
/// inside a [`super::run_in`] thread (a netlink socket belongs to its creator's netns).
pub(super) fn netlink_in_netns<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let name = ns.to_owned();
    super::run_in(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime")?;
        rt.block_on(async move {
            let handle = connect().with_context(|| format!("network namespace {name}"))?;
            f(handle).await
        })
    })
}

/// [`netlink_in_netns`] without blocking the caller's runtime.
pub(super) async fn in_netns<T, F, Fut>(ns: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let ns = ns.to_owned();
    blocking(move || netlink_in_netns(&ns, f)).await
}

/// Runs `f` on the runtime's blocking pool (namespace threads, mounts); re-raises its panic.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow!("blocking task: {e}")),
    }
}

/// An rtnetlink handle in the calling thread's netns, its connection driven by the
/// current runtime (it ends when the last handle clone is dropped).
pub(super) fn connect() -> Result<Handle> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// What plumbing cares about in a link.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Observed {
    pub(super) index: u32,
    pub(super) up: bool,
    pub(super) mac: Vec<u8>,
    pub(super) mtu: Option<u32>,
    pub(super) controller: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's netns).
    pub(super) peer: Option<u32>,
    pub(super) is_bridge: bool,
}

impl Observed {
    pub(super) fn of(link: &LinkMessage) -> Self {
        let mut seen = Observed {
            index: link.header.index,
            up: link.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Address(mac) => seen.mac = mac.clone(),
                LinkAttribute::Mtu(mtu) => seen.mtu = Some(*mtu),
                LinkAttribute::Controller(index) => seen.controller = Some(*index),
                LinkAttribute::Link(index) => seen.peer = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    seen.is_bridge = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)))
                }
                _ => {}
            }
        }
        seen
    }
}

/// Is `e` the kernel's answer `errno`?
pub(super) fn is_errno(e: &rtnetlink::Error, errno: Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -(errno as i32))
}

pub(super) async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = pin!(handle.link().get().match_name(name).execute());
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
    }
}

pub(super) async fn link_by_index(handle: &Handle, index: u32) -> Result<Option<LinkMessage>> {
    let mut links = pin!(handle.link().get().match_index(index).execute());
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link #{index}")),
    }
}

pub(super) async fn must_link(handle: &Handle, name: &str) -> Result<Observed> {
    link_by_name(handle, name)
        .await?
        .map(|l| Observed::of(&l))
        .ok_or_else(|| anyhow!("link {name} is missing"))
}

pub(super) async fn set_link(
    handle: &Handle,
    msg: LinkMessage,
    name: &str,
    what: &str,
) -> Result<()> {
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .with_context(|| format!("{what} on {name}"))
}

pub(super) async fn delete_link(handle: &Handle, link: &LinkMessage, name: &str) -> Result<()> {
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => {
            info!(link = name, "deleted link");
            Ok(())
        }
        // Gone meanwhile, e.g. with its veth peer.
        Err(e) if is_errno(&e, Errno::ENODEV) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting link {name}")),
    }
}

/// The IPv4 addresses on link `index`, with the messages that delete them.
pub(super) async fn ipv4_addresses(
    h: &Handle,
    index: u32,
) -> Result<Vec<(Ipv4Net, rtnetlink::packet_route::address::AddressMessage)>> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .with_context(|| format!("listing addresses of link #{index}"))?;
    let mut out = Vec::new();
    for msg in msgs {
        if msg.header.family != AddressFamily::Inet || msg.header.index != index {
            continue;
        }
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on p2p links).
        let addr = msg
            .attributes
            .iter()
            .fold(None::<Ipv4Addr>, |found, a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) => found.or(Some(*ip)),
                _ => found,
            });
        if let Some(net) = addr.and_then(|a| Ipv4Net::new(a, msg.header.prefix_len).ok()) {
            out.push((net, msg));
        }
    }
    Ok(out)
}

/// The id the namespace of `handle` gives the namespace `target` (RTM_GETNSID);
/// `None` when it has given it none.
pub(super) async fn nsid_of(handle: &Handle, target: &File) -> Result<Option<i32>> {
    use futures::StreamExt;
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use rtnetlink::packet_route::{
        nsid::{NsidAttribute, NsidMessage},
        RouteNetlinkMessage,
    };
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(target.as_raw_fd() as u32));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut replies = handle
        .clone()
        .request(req)
        .map_err(|e| anyhow!("RTM_GETNSID: {e}"))?;
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                let id = m.attributes.iter().find_map(|a| match a {
                    NsidAttribute::Id(id) => Some(*id),
                    _ => None,
                });
                return Ok(id.filter(|id| *id >= 0));
            }
            NetlinkPayload::Error(e) => bail!("RTM_GETNSID: {e}"),
            _ => {}
        }
    }
    bail!("RTM_GETNSID: no answer")
}
