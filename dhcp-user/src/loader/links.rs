//! Pinned XDP links: what device a pinned link is attached to.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    path::Path,
};

use anyhow::{bail, Context, Result};
use aya_obj::generated::{bpf_cmd, bpf_link_info, bpf_link_type};

use super::sys;

/// The ifindex the pinned XDP link at `path` is attached to; 0 when its
/// device went away (the kernel detaches the link but keeps the object).
pub fn ifindex(path: &Path) -> Result<u32> {
    let fd =
        sys::obj_get(path).with_context(|| format!("opening pinned link {}", path.display()))?;
    let info =
        link_info(&fd).with_context(|| format!("reading link info of {}", path.display()))?;
    if info.type_ != bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
        bail!(
            "pinned link {} is not an XDP link (link type {})",
            path.display(),
            info.type_
        );
    }
    // SAFETY: `xdp` is the member of the info union the kernel fills for
    // XDP links, checked just above.
    Ok(unsafe { info.__bindgen_anon_1.xdp.ifindex })
}

/// BPF_LINK_DETACH on the link pinned at `path`: its program comes off the
/// device now, whoever else still holds the link (a daemon that just exited
/// releases its descriptors a little later, from a kernel work queue).
pub fn detach(path: &Path) -> Result<()> {
    let fd =
        sys::obj_get(path).with_context(|| format!("opening pinned link {}", path.display()))?;
    let mut attr = sys::zeroed_attr();
    attr.link_detach.link_fd = fd.as_raw_fd() as u32;
    // SAFETY: the kernel reads the descriptor, open until the call returns.
    unsafe { sys::bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr) }
        .with_context(|| format!("detaching the link pinned at {}", path.display()))?;
    Ok(())
}

/// BPF_OBJ_GET_INFO_BY_FD on a link.
fn link_info(fd: &OwnedFd) -> Result<bpf_link_info> {
    // SAFETY: bpf_link_info is plain integers and unions of them.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = sys::zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    attr.info.info = &mut info as *mut bpf_link_info as u64;
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    unsafe { sys::bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        loader::{self, bpffs::TempPinDir, AttachMode, FastPath},
        netns::{self, TempNs},
    };

    #[test]
    fn ifindex_is_the_device_of_a_pinned_link_and_0_once_it_went() {
        let pins = TempPinDir::new("xdhcp-lk").unwrap();
        let mut fast = FastPath::load(&pins.path).unwrap();
        let ns = TempNs::new("xdhcp-lk").unwrap();
        ns.ip(&[
            "link", "add", "taplk", "type", "veth", "peer", "name", "vmlk",
        ])
        .unwrap();
        let pin = pins.path.join("link");
        let dev = netns::run_in(&ns.name, || {
            let (id, _) = loader::attach(fast.pass_program()?, "taplk", AttachMode::Native)?;
            loader::take_link(fast.pass_program()?, id)?.pin(&pin)?;
            Ok(nix::net::if_::if_nametoindex("taplk")?)
        })
        .unwrap();
        assert_eq!(ifindex(&pin).unwrap(), dev, "the attached device's ifindex");

        ns.ip(&["link", "del", "taplk"]).unwrap();
        assert_eq!(ifindex(&pin).unwrap(), 0, "the device went: 0");

        let missing = pins.path.join("no-such-link");
        let err = format!("{:#}", ifindex(&missing).unwrap_err());
        assert!(
            err.contains("no-such-link"),
            "the error names the pin: {err}"
        );
    }
}
