//! Network namespaces: the one rule for working inside one, and throwaway ones.
//!
//! setns(2) moves only the calling thread. The daemon's async runtime and its
//! worker threads must never change namespace (a task resumed on a thread
//! another task moved would act on the wrong devices), so daemon code does
//! namespace work only through [`run_in`], on a thread of its own. [`enter`]
//! is for tests and tools that own their thread; its guard cannot cross
//! threads.

pub mod plumb;

use std::{fs::File, marker::PhantomData, os::fd::AsFd, process::Command};

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// While alive, the current thread is in another network namespace; dropping
/// it returns the thread to the namespace it came from. It cannot be sent to
/// another thread:
///
/// ```compile_fail,E0277
/// fn send<T: Send>(_: T) {}
/// send(xdhcp::netns::enter("any").unwrap());
/// ```
pub struct Entered {
    home: File,
    /// Not Send: the guard must be dropped on the thread that entered.
    _thread_bound: PhantomData<*const ()>,
}

/// Moves the current thread into the named namespace (`/run/netns/NAME`).
pub fn enter(name: &str) -> Result<Entered> {
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    let target = File::open(path(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {name}"))?;
    Ok(Entered {
        home,
        _thread_bound: PhantomData,
    })
}

/// The path of a named namespace.
pub fn path(name: &str) -> String {
    format!("/run/netns/{name}")
}

/// Runs `f` on a fresh OS thread that has entered namespace `name`, and
/// returns its result: the caller's thread never changes namespace. `f` may
/// borrow from the caller (a scoped thread). A panic in `f` is re-raised.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let target = File::open(path(name))
        .with_context(|| format!("network namespace {name} does not exist"))?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(scope, move || {
                setns(target.as_fd(), CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("entering network namespace {name}"))?;
                drop(target);
                f()
            })
            .with_context(|| format!("spawning a thread for network namespace {name}"))?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Carrying on in the wrong namespace would act on the wrong devices.
            panic!("cannot return to the original network namespace: {e}");
        }
    }
}

/// A network namespace that is deleted, with everything in it, when dropped.
pub struct TempNs {
    pub name: String,
}

impl TempNs {
    /// Creates `PREFIX-<pid>-<n>` (unique across parallel runs) with lo up.
    pub fn new(prefix: &str) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates the namespace `name` itself (e.g. a `qdhcp-<network id>` for a
    /// test to lay out by hand); fails if it exists.
    pub fn named(name: &str) -> Result<Self> {
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Enters the namespace on this thread.
    pub fn enter(&self) -> Result<Entered> {
        enter(&self.name)
    }
}

impl Drop for TempNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `ip ARGS…`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
