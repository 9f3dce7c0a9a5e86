//! PID 1 of the kernel-compatibility VM (`cargo xtask test-kernel`): mounts
//! what loading the fast path needs, prints the kernel's release and the
//! verifier's instruction counts, runs the fastpath test binary (`/fastpath`,
//! the fixture table and the rest of tests/tests/fastpath.rs, unchanged) and
//! powers the VM off. Its own lines on the console start with [`TAG`]; the
//! host reads them from the serial output.

use std::{path::Path, process::Command};

use anyhow::{Context, Result};
use xdhcp_tests::fixtures::{self, NET};

/// What starts every line the host parses.
const TAG: &str = "xdhcp-vm:";
/// The test binary the host packed into the initramfs.
const TESTS: &str = "/fastpath";

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            println!("{TAG} error: {e:#}");
            1
        }
    };
    println!("{TAG} exit {code}");
    // SAFETY: sync and reboot take no pointers; PID 1 powering off is the end.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Not PID 1 (run by hand): an ordinary exit.
    std::process::exit(code);
}

/// Mounts, reports, runs the tests; returns their exit code.
fn run() -> Result<i32> {
    for (kind, dir) in [
        ("proc", "/proc"),
        ("sysfs", "/sys"),
        ("bpf", "/sys/fs/bpf"),
        ("devtmpfs", "/dev"),
        ("tmpfs", "/tmp"),
    ] {
        mount(kind, dir)?;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?;
    println!("{TAG} kernel {}", release.trim());
    let mut h = fixtures::harness().context("loading the fast path with the fixture maps")?;
    let fast = xdhcp::loader::verified_insns(h.fast.program()?)?;
    let entry = xdhcp::loader::verified_insns(h.entry(NET)?)?;
    println!("{TAG} verified xdhcp_fast {fast} instructions, xdhcp (entry) {entry}");
    drop(h);
    let status = Command::new(TESTS)
        .arg("--test-threads=1")
        .status()
        .with_context(|| format!("starting {TESTS}"))?;
    Ok(status.code().unwrap_or(-1))
}

/// Mounts a `kind` filesystem on `dir`, creating the directory.
fn mount(kind: &str, dir: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    nix::mount::mount(
        Some(kind),
        Path::new(dir),
        Some(kind),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting {kind} on {dir}"))
}
