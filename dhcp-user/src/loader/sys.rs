//! The one raw bpf(2) call, for what aya 0.14 does not offer: the XDP
//! ifindex of a pinned link (its `LinkInfo` hides that part of
//! `bpf_link_info`, and `FdLink` its descriptor), batch map lookups, and
//! loading the assembled entry program. The
//! attribute and info layouts are aya-obj's kernel bindings.

use std::{
    ffi::CString,
    io,
    os::fd::{FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use anyhow::Context;

use aya_obj::generated::{bpf_attr, bpf_cmd};
use std::os::fd::AsRawFd;

/// bpf(2) `cmd` on a whole `union bpf_attr`; its non-negative result (a new
/// descriptor for BPF_OBJ_GET, else 0).
///
/// # Safety
///
/// Every pointer in `attr` must be valid for what the kernel does with it
/// under `cmd` (read a path, write `info_len` bytes, `count` keys, …).
pub(super) unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // libc: nix has no bpf(2) wrapper and aya keeps its own private.
    // SAFETY: `attr` is a whole bpf_attr (the size passed); the caller
    // vouches for the pointers in it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An all-zero `bpf_attr`, as the kernel wants every field a command does
/// not use.
pub(super) fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a union of plain integer structs: all-zero bytes
    // are a valid value of each.
    unsafe { std::mem::zeroed() }
}

/// BPF_OBJ_GET: a descriptor of the object pinned at `path`.
pub(super) fn obj_get(path: &Path) -> anyhow::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} holds a NUL byte", path.display()))?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c_path.as_ptr() as u64;
    // SAFETY: the kernel reads the NUL-terminated path, alive until the call returns.
    let fd = unsafe { bpf(bpf_cmd::BPF_OBJ_GET, &mut attr) }?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// BPF_OBJ_PIN: pins the object `fd` at `path`.
pub(super) fn obj_pin(fd: &OwnedFd, path: &Path) -> anyhow::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} holds a NUL byte", path.display()))?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c_path.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    // SAFETY: the kernel reads the path (alive until the call returns) and the descriptor.
    unsafe { bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr) }
        .with_context(|| format!("pinning at {}", path.display()))?;
    Ok(())
}
