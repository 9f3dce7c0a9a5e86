//! bpffs directories: where maps, programs and links are pinned.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::{
    mount::{mount, MsFlags},
    sys::statfs::statfs,
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The conventional bpffs mount point.
pub const SYSTEM_BPFFS: &str = "/sys/fs/bpf";

/// Is `path` on a bpf filesystem?
pub fn is_bpffs(path: &Path) -> bool {
    statfs(path)
        .map(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
        .unwrap_or(false)
}

fn mount_bpffs(at: &Path) -> Result<()> {
    mount(Some("bpf"), at, Some("bpf"), MsFlags::empty(), None::<&str>)
        .with_context(|| format!("mounting bpffs on {}", at.display()))
}

/// Makes `dir` a directory on bpffs: mounts /sys/fs/bpf when `dir` lies
/// below it and it is not mounted yet, else mounts bpffs on `dir` itself.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    let system = Path::new(SYSTEM_BPFFS);
    if dir.starts_with(system) && system.is_dir() && !is_bpffs(system) {
        mount_bpffs(system)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !is_bpffs(dir) {
        mount_bpffs(dir)?;
    }
    Ok(())
}

/// Removes every pin in `dir` and `dir` itself (unmounting it if it is a
/// bpffs mount of its own).
pub fn remove_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
    }
    let parent_is_bpffs = dir.parent().is_some_and(is_bpffs);
    if !parent_is_bpffs {
        let _ = nix::mount::umount(dir);
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// A uniquely named pin directory under /sys/fs/bpf, removed with its pins when dropped.
pub struct TempPinDir {
    pub path: PathBuf,
}

impl TempPinDir {
    /// Creates `/sys/fs/bpf/PREFIX-<pid>-<n>`.
    pub fn new(prefix: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = Path::new(SYSTEM_BPFFS).join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        ensure_dir(&path)?;
        Ok(Self { path })
    }
}

impl Drop for TempPinDir {
    fn drop(&mut self) {
        if let Err(e) = remove_dir(&self.path) {
            eprintln!("warning: {e:#}");
        }
    }
}
