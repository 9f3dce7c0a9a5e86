//! Installs what the build and the tests need on a Debian 12 machine.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

/// What a command is about to do.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Build the XDP object.
    EbpfBuild,
    /// Build, test, demo.
    Everything,
    /// Everything, and the benchmarks' tools.
    Bench,
    /// Everything, and qemu for `cargo xtask test-kernel`.
    KernelVm,
}

/// Debian packages for the eBPF build: the compiler with core's source, and
/// LLVM 22 for bpf-linker (rustc-web 1.96 is built on LLVM 22).
const BUILD_PACKAGES: &[&str] = &[
    "rustc-web",
    "rust-web-src",
    "cargo-web",
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// Debian packages the tests, the demo and operators use.
const RUN_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "procps",
    "ethtool",
    "isc-dhcp-client",
    "udhcpc",
    "dnsmasq-base",
    "tshark",
    "prometheus",
];

/// Debian packages for the tests against a real Neutron (tests/src/neutron.rs:
/// neutron-server with its own MariaDB, RabbitMQ and userspace Open
/// vSwitch, started by the tests; Debian's policy-rc.d keeps the packages'
/// system services from starting on install).
const NEUTRON_PACKAGES: &[&str] = &[
    "rabbitmq-server",
    "mariadb-server",
    "neutron-server",
    "neutron-openvswitch-agent",
    "neutron-dhcp-agent",
    "openvswitch-switch",
    "python3-openstackclient",
];

/// Debian packages of the fault tests: perfdhcp (kill -9 under load,
/// tests/tests/kill9_load.rs).
const FAULT_TEST_PACKAGES: &[&str] = &["kea-admin"];

/// `cargo xtask test-kernel` only: qemu (it fetches Debian 12's kernel itself,
/// once, into target/vm).
const KERNEL_VM_PACKAGES: &[&str] = &["qemu-system-x86"];

/// Debian packages only `cargo xtask bench` uses: perfdhcp, Kea's DHCPv4
/// server (the third server measured) and the plot.
const BENCH_PACKAGES: &[&str] = &["kea-admin", "kea-dhcp4-server", "gnuplot-nox"];

const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-fuzz, for `cargo xtask fuzz` and the short fuzz runs of `cargo xtask test`.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Ensures everything `need` requires is installed; quiet when it is.
pub fn ensure(need: Need) -> Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if need != Need::EbpfBuild {
        packages.extend_from_slice(RUN_PACKAGES);
        packages.extend_from_slice(NEUTRON_PACKAGES);
        packages.extend_from_slice(FAULT_TEST_PACKAGES);
    }
    if need == Need::KernelVm {
        packages.extend_from_slice(KERNEL_VM_PACKAGES);
    }
    if need == Need::Bench {
        packages.extend_from_slice(BENCH_PACKAGES);
    }
    let missing: Vec<&str> = packages.into_iter().filter(|p| !installed(p)).collect();
    let linker_missing = !bpf_linker_present();
    if missing.is_empty() && !linker_missing {
        return Ok(());
    }
    check_host()?;
    if !missing.is_empty() {
        eprintln!(
            "xtask setup: installing Debian packages: {}",
            missing.join(" ")
        );
        apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)?;
    }
    if linker_missing {
        eprintln!(
            "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (takes a few minutes)"
        );
        let status = Command::new("cargo")
            .env("PATH", path_with_cargo_bin())
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
            .args([
                "install",
                "--quiet",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .status()
            .context("starting `cargo install bpf-linker`")?;
        if !status.success() {
            bail!("`cargo install bpf-linker` failed: {status}");
        }
    }
    Ok(())
}

/// Refuses to install anything without root or off Debian.
fn check_host() -> Result<()> {
    if !std::path::Path::new("/etc/debian_version").exists() {
        bail!(
            "xtask setup installs with apt and supports Debian 12 only; on this host install \
             rustc-web, rust-web-src, llvm-22-dev and bpf-linker (LLVM 22) yourself"
        );
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("xtask setup must install packages: run it as root (sudo -E cargo xtask …)");
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn bpf_linker_present() -> bool {
    Command::new("bpf-linker")
        .env("PATH", path_with_cargo_bin())
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs apt-get, showing its output only when it fails.
fn apt(args: &[&str]) -> Result<()> {
    let out = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(args)
        .output()
        .context("starting apt-get")?;
    if !out.status.success() {
        bail!(
            "apt-get {} failed: {}\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// PATH with ~/.cargo/bin first, where `cargo install` puts bpf-linker.
pub fn path_with_cargo_bin() -> String {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", home.join("bin").display())
}

/// Installs cargo-fuzz when missing (libFuzzer itself comes with the
/// libfuzzer-sys crate; the targets build on rustup's nightly); quiet when present.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .env("PATH", path_with_cargo_bin())
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if present {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (takes a minute)");
    let status = Command::new("cargo")
        .env("PATH", path_with_cargo_bin())
        .args([
            "install",
            "--quiet",
            "--locked",
            "cargo-fuzz",
            "--version",
            CARGO_FUZZ_VERSION,
        ])
        .status()
        .context("starting `cargo install cargo-fuzz`")?;
    if !status.success() {
        bail!("`cargo install cargo-fuzz` failed: {status}");
    }
    Ok(())
}
