//! The one raw bpf(2) call, for what aya 0.14 does not offer: the XDP
//! ifindex of a pinned link (its `LinkInfo` hides that part of
//! `bpf_link_info`, and `FdLink` its descriptor) and batch map lookups. The
//! attribute and info layouts are aya-obj's kernel bindings.

use std::io;

use aya_obj::generated::{bpf_attr, bpf_cmd};

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
