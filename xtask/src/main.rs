//! `cargo xtask`: set-up, eBPF build, tests, demo and benchmarks of xdhcp.
//!
//! Set-up is part of the commands: the first command that needs a tool installs
//! it (Debian packages, bpf-linker built against LLVM 22), says so, and is quiet
//! when everything is present.

mod fuzz;
mod package;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

include!("../../dhcp-ebpf/source_hash.rs");

#[derive(Parser)]
#[command(about = "Build, test, demo and benchmark xdhcp")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, bpf-linker).
    Setup,
    /// Build the XDP object (release, with BTF) into target/ebpf.
    BuildEbpf,
    /// Build the eBPF object and the xdhcp binary (release).
    Build,
    /// The demo: build, then two networks and four VMs served by the fast path (needs root).
    Demo,
    /// Benchmarks: perfdhcp against xdhcp and dnsmasq, the responder's ceiling with the
    /// project's load generator, ns per fast-path reply, daemon start-up, change-to-answer
    /// under load, memory; writes docs/benchmarks.md and docs/benchmarks.png (needs root).
    Bench,
    /// The Debian package: build (release), then target/debian/xdhcp_<version>_<arch>.deb.
    Package {
        /// Package target/release/xdhcp as it is, without building.
        #[arg(long)]
        no_build: bool,
        /// Where the .deb goes [default: target/debian].
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// The XDP object on Debian 12's kernel (6.1) under qemu: it verifies and the
    /// fastpath tests pass there (needs root; downloads the kernel once).
    TestKernel,
    /// Fuzz the slow path's request parser and reply builder, the import parser and
    /// both config readers (cargo-fuzz, libFuzzer, nightly), seeded from the fixture
    /// table and the repository's documents [default: 60 seconds per target].
    Fuzz {
        /// Seconds per target.
        #[arg(long, conflicts_with = "runs")]
        seconds: Option<u64>,
        /// Executions per target.
        #[arg(long)]
        runs: Option<u64>,
        /// Only this target (repeatable) [default: every one].
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Run every test: formatting, lints, unit, kernel and integration tests (needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::ensure(setup::Need::Everything),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build => {
            build_ebpf()?;
            cargo(&["build", "--release", "-p", "dhcp-user"])
        }
        Cmd::Demo => {
            setup::ensure(setup::Need::Everything)?;
            build_ebpf()?;
            // The demo drives the `xdhcp` binary; both are built first, the
            // demo (a harness, not part of the daemon) from the tests crate.
            build_xdhcp()?;
            cargo(&[
                "run",
                "--release",
                "--quiet",
                "-p",
                "xdhcp-tests",
                "--bin",
                "demo",
            ])
        }
        Cmd::Fuzz {
            seconds,
            runs,
            targets,
        } => {
            build_ebpf()?;
            let budget = match (seconds, runs) {
                (_, Some(n)) => fuzz::Budget::Runs(n),
                (s, None) => fuzz::Budget::Seconds(s.unwrap_or(60)),
            };
            fuzz::run(&workspace(), budget, &targets).map(|_| ())
        }
        Cmd::Test { args } => test(&args),
        Cmd::TestKernel => {
            setup::ensure(setup::Need::KernelVm)?;
            build_ebpf()?;
            vm::test_kernel(&workspace()).map(drop)
        }
        Cmd::Bench => bench(),
        Cmd::Package { no_build, out_dir } => {
            if !no_build {
                build_ebpf()?;
                cargo(&["build", "--release", "--quiet", "-p", "dhcp-user"])?;
            }
            let ws = workspace();
            let out_dir = out_dir.unwrap_or_else(|| ws.join("target/debian"));
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let deb = package::build_deb(&ws, &ws.join("target/release/xdhcp"), &out_dir)?;
            println!("{}", deb.display());
            Ok(())
        }
    }
}

/// Runs the bench binaries; bench_perf writes the document from their
/// output and its own measurements.
fn bench() -> Result<()> {
    setup::ensure(setup::Need::Bench)?;
    build_ebpf()?;
    // The daemon benches run the xdhcp binary: build it too.
    cargo(&["build", "--release", "--quiet", "-p", "dhcp-user"])?;
    cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        "xdhcp-tests",
        "--bins",
    ])?;
    let ws = workspace();
    let out_dir = ws.join("target/bench");
    std::fs::create_dir_all(&out_dir).context("creating target/bench")?;
    let mut outputs = Vec::new();
    // The control plane at scale: 100 ports a network over as many networks
    // (up to 10,000) as the open-files limit lets the daemon serve (two
    // sockets a device), every one of them attached.
    let scale_networks = (open_files_hard_limit().saturating_sub(100) / 2 / 100 * 100).min(10_000);
    let scale = [
        ("BENCH_NETWORKS", scale_networks.to_string()),
        ("BENCH_ATTACH_ALL", "1".to_string()),
    ];
    for (bin, name, env) in [
        ("bench", "bench", &[][..]),
        ("bench_daemon", "bench_daemon", &[][..]),
        ("bench_daemon", "bench_daemon_scale", &scale[..]),
        ("bench_agents", "bench_agents", &[][..]),
    ] {
        let text = run_echoed(
            Command::new(ws.join("target/release").join(bin))
                .env("BENCH_AGENTS_PLOT", ws.join("docs/benchmarks-agents.png"))
                .env("BENCH_AGENTS_LOGS", &out_dir)
                .envs(env.iter().map(|(k, v)| (k, v))),
        )?;
        let file = out_dir.join(format!("{name}.txt"));
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        outputs.push(file);
    }
    run(Command::new(ws.join("target/release/bench_perf"))
        .env("BENCH_FASTPATH_OUT", &outputs[0])
        .env("BENCH_DAEMON_OUT", &outputs[1])
        .env("BENCH_DAEMON_SCALE_OUT", &outputs[2])
        .env("BENCH_AGENTS_OUT", &outputs[3])
        .env("BENCH_DOCS", ws.join("docs")))
}

/// This process's hard limit on open files (what a daemon it starts can
/// raise its soft limit to without CAP_SYS_RESOURCE).
fn open_files_hard_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(4)?.parse().ok()
        })
        .unwrap_or(1024)
}

/// Runs `cmd`, echoing its stdout, and returns that output.
fn run_echoed(cmd: &mut Command) -> Result<String> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(text)
}

/// The workspace root (xtask lives one level below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where `build-ebpf` leaves the object; dhcp-user's build.rs reads it from here.
fn ebpf_object() -> PathBuf {
    workspace().join("target/ebpf/bpfel-unknown-none/release/dhcp-ebpf")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs the rustup cargo (the one running xtask) in the workspace.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(workspace()))
}

fn build_ebpf() -> Result<()> {
    setup::ensure(setup::Need::EbpfBuild)?;
    let ws = workspace();
    // Hash before building: an edit made during the build makes the stamp stale.
    let hash = ebpf_source_hash(&ws.join("dhcp-ebpf")).context("hashing dhcp-ebpf sources")?;
    // Debian's rustc-web ships the core source that -Z build-std needs; the
    // rustup toolchains here have none. bpf-linker links with BTF.
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(&ws)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC_WRAPPER")
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", ws.join("target/ebpf"))
        .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf")
        .env("PATH", setup::path_with_cargo_bin())
        .args([
            "build",
            "--quiet",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "--release",
            "-p",
            "dhcp-ebpf",
            "--bin",
            "dhcp-ebpf",
        ]);
    run(&mut cmd).context("building the XDP object")?;
    let object = ebpf_object();
    if !object.exists() {
        bail!(
            "the eBPF build succeeded but left no object at {}",
            object.display()
        );
    }
    std::fs::write(object.with_extension("srchash"), format!("{hash:016x}\n"))
        .context("writing the object's source stamp")?;
    Ok(())
}

/// The release `xdhcp` binary, which the demo and the end-to-end tests run.
fn build_xdhcp() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        "dhcp-user",
        "--bin",
        "xdhcp",
    ])
}

fn test(extra: &[String]) -> Result<()> {
    setup::ensure(setup::Need::Everything)?;
    build_ebpf()?;
    cargo(&["fmt", "--all", "--check"])
        .context("`cargo fmt --all --check`: run `cargo fmt --all`")?;
    // --workspace: dhcp-ebpf is no default member, and its library's tests
    // (and the bin's host stub) are linted only when named.
    cargo(&[
        "clippy",
        "--quiet",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The end-to-end tests run the `xdhcp` binary found next to them
    // (tests::cloud::xdhcp_bin); cargo builds a package's binary for its own
    // integration tests only, and these live in another package: build it
    // here, so no test runs an older daemon than the sources.
    build_xdhcp()?;
    let mut totals = Totals::default();
    let mut args = vec!["test", "--release"];
    args.extend(extra.iter().map(String::as_str));
    // The shared library's host tests: map layouts, wire numbers, RFC 2131
    // rules, checksums (dhcp-ebpf is no default member; its bin has no tests).
    if extra.is_empty() {
        cargo_test(
            &["test", "--release", "-p", "dhcp-ebpf", "--lib"],
            &mut totals,
        )?;
    }
    let mut result = cargo_test(&args, &mut totals);
    if extra.is_empty() {
        // Debian 12's kernel under qemu, when the qemu package is here
        // (`cargo xtask test-kernel` installs it); its tests count as ours.
        if vm::qemu_present() {
            match vm::test_kernel(&workspace()) {
                Ok(o) => {
                    totals.passed += o.passed;
                    totals.failed += o.failed;
                }
                Err(e) => {
                    eprintln!("test-kernel: {e:#}");
                    totals.failed += 1;
                    result = result.and(Err(e));
                }
            }
        } else {
            println!(
                "test-kernel: skipped, {} is not installed (`cargo xtask test-kernel` installs it)",
                vm::QEMU
            );
            totals.ignored += 1;
        }
        // A short, bounded run of every fuzz target (the seeds, the saved
        // regressions, then new inputs); `cargo xtask fuzz` runs longer.
        match fuzz::run(&workspace(), fuzz::Budget::Runs(FUZZ_RUNS_IN_TEST), &[]) {
            Ok(outcomes) => totals.passed += outcomes.len() as u64,
            Err(e) => {
                eprintln!("fuzz: {e:#}");
                totals.failed += 1;
                result = result.and(Err(e));
            }
        }
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    result
}

/// Executions of each fuzz target in `cargo xtask test` (seconds once built).
const FUZZ_RUNS_IN_TEST: u64 = 20_000;

/// Test counts summed over every `test result:` line cargo printed.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test …`, echoing its output and adding up its results.
/// The number before `word` in what follows a libtest `test result: ` (e.g.
/// `ok. 7 passed; 0 failed; …`), 0 when absent.
fn result_count(result: &str, word: &str) -> u64 {
    result
        .split(';')
        .find_map(|part| {
            part.trim()
                .strip_suffix(word)?
                .trim()
                .rsplit(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn cargo_test(args: &[&str], totals: &mut Totals) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(args)
        .current_dir(workspace())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += result_count(rest, "passed");
            totals.failed += result_count(rest, "failed");
            totals.ignored += result_count(rest, "ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
