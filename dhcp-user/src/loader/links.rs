//! Pinned XDP links: what device a pinned link is attached to.

use std::{ffi::CString, os::fd::FromRawFd, os::unix::ffi::OsStrExt, path::Path};

use anyhow::{bail, Context, Result};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offset of `xdp.ifindex` in `struct bpf_link_info` (after type, id, prog_id, padding).
const XDP_IFINDEX_OFF: usize = 16;

/// The ifindex the pinned XDP link at `path` is attached to; 0 when its
/// device went away (the kernel detaches the link but keeps the object).
pub fn ifindex(path: &Path) -> Result<u32> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let get = ObjGet {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: a valid attr of the size passed; the kernel reads it only.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &get as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("opening pinned link {}", path.display()));
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut info = [0u8; 128];
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoByFd {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        bail!(
            "reading link info of {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(u32::from_ne_bytes(
        info[XDP_IFINDEX_OFF..XDP_IFINDEX_OFF + 4]
            .try_into()
            .unwrap(),
    ))
}
