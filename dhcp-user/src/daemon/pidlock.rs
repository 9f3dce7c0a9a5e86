//! The daemon's lock (an flock on its pid file) and `xdhcp down`, which
//! stops the lock's holder and removes what xdhcp pinned.

use std::{
    fs::File,
    io::{Read, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use dhcp_ebpf::map_name;

use crate::{
    daemon::{health, links_dir},
    loader::{self, bpffs},
};

/// The pid file of the daemon that owns `bpffs`.
pub fn pid_file(bpffs: &Path) -> PathBuf {
    let flat = bpffs
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "_");
    PathBuf::from("/run/xdhcp").join(format!("{flat}.pid"))
}

/// The daemon's lock: an flock on its pid file, held for the daemon's whole
/// life. A second daemon on the same bpffs is refused; `xdhcp down` signals
/// only a process that holds it (a stale pid file names nobody).
pub struct PidLock {
    /// Held open, never read: the flock lives as long as this descriptor.
    _file: File,
    path: PathBuf,
}

/// Takes an exclusive lock (flock(2) on Linux) on `file` without waiting;
/// false if another holds it.
fn try_flock(file: &File) -> Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("flock"),
    }
}

fn read_pid(file: &mut File) -> Option<i32> {
    let mut raw = String::new();
    file.read_to_string(&mut raw).ok()?;
    raw.trim().parse().ok()
}

impl PidLock {
    /// Takes the lock of the daemon serving `bpffs`, or says who holds it.
    pub fn acquire(bpffs: &Path) -> Result<PidLock> {
        let path = pid_file(bpffs);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if !try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
                let holder = read_pid(&mut file).map_or("unknown".to_string(), |p| p.to_string());
                bail!(
                    "another xdhcp daemon (pid {holder}) is serving {}: it holds the lock on {}",
                    bpffs.display(),
                    path.display()
                );
            }
            // A daemon that was exiting may have removed the file we locked:
            // the lock counts only on the file at the path.
            let here = std::fs::metadata(&path).ok().map(|m| m.ino());
            if here == Some(file.metadata()?.ino()) {
                break file;
            }
        };
        file.set_len(0)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidLock { _file: file, path })
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // Removed while still locked: a daemon starting now locks a new file.
        // The status file goes first: it describes the lock holder.
        let _ = std::fs::remove_file(self.path.with_extension("status.json"));
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `xdhcp down`: stops a running daemon, then detaches and unpins what xdhcp
/// pinned (nothing else: a bpffs mount root holds the kernel's own entries).
pub fn down(bpffs_dir: &Path) -> Result<()> {
    stop_daemon(bpffs_dir)?;
    // Left by a daemon killed with SIGKILL.
    let _ = std::fs::remove_file(health::status_file(bpffs_dir));
    if !bpffs_dir.exists() {
        println!("nothing pinned under {}", bpffs_dir.display());
        return Ok(());
    }
    let links = links_dir(bpffs_dir);
    let pinned: Vec<PathBuf> = std::fs::read_dir(&links)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    // Detached first: unpinning alone leaves the program on the device until
    // the last descriptor of the link goes, which for a daemon that just
    // exited happens a moment later. A link whose device went is detached
    // already (the kernel says ENOLINK or EINVAL): unpinning is enough.
    for link in &pinned {
        if let Err(e) = loader::links::detach(link) {
            tracing::debug!("{e:#}");
        }
    }
    let n = pinned.len();
    let left = remove_pins(bpffs_dir)?;
    println!(
        "detached {n} attachment(s) and removed xdhcp's pins under {}{}",
        bpffs_dir.display(),
        if left.is_empty() {
            String::new()
        } else {
            format!(" (left what xdhcp did not pin: {})", left.join(", "))
        }
    );
    Ok(())
}

/// Signals the daemon holding `bpffs_dir`'s lock and waits for it to let go.
/// A pid file nobody holds the lock of is stale: nobody is signalled.
fn stop_daemon(bpffs_dir: &Path) -> Result<()> {
    let path = pid_file(bpffs_dir);
    let Ok(mut file) = File::open(&path) else {
        return Ok(());
    };
    if try_flock(&file).with_context(|| format!("locking {}", path.display()))? {
        let _ = std::fs::remove_file(&path);
        println!(
            "removed a stale pid file {} (no daemon holds its lock)",
            path.display()
        );
        return Ok(());
    }
    let pid = read_pid(&mut file).ok_or_else(|| {
        anyhow!(
            "a daemon holds the lock on {} but the file names no pid",
            path.display()
        )
    })?;
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("signalling the daemon (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !try_flock(&file)? {
        if Instant::now() > deadline {
            bail!(
                "the daemon (pid {pid}) still runs 10 s after SIGTERM: nothing unpinned under it"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("stopped the daemon (pid {pid})");
    Ok(())
}

/// Removes what xdhcp pins in `dir` (its maps, programs of any build, the
/// links directory) and `dir` itself when that leaves it empty and it is not
/// a mount point. Returns the names of what it left there.
fn remove_pins(dir: &Path) -> Result<Vec<String>> {
    let ours = |name: &str| {
        map_name::ALL.contains(&name) || loader::is_program_pin(name) || name == "links"
    };
    let mut left = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !ours(&name) {
            left.push(name);
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            bpffs::remove_dir(&path)?;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("unpinning {}", path.display()))?;
        }
    }
    let mount_point = dir
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .zip(std::fs::metadata(dir).ok())
        .is_none_or(|(parent, here)| parent.dev() != here.dev());
    if left.is_empty() && !mount_point {
        std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    left.sort();
    Ok(left)
}
