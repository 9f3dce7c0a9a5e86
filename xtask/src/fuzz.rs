//! `cargo xtask fuzz`: every libFuzzer target of tests/fuzz, seeded from the
//! fixture table and the repository's documents, for a time or a number of
//! runs; `cargo xtask test` runs each briefly.

use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::setup;

/// The targets, as tests/fuzz/Cargo.toml names them.
pub const TARGETS: [&str; 4] = ["slowpath_request", "import", "config_toml", "config_oslo"];

/// How long each target runs.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// libFuzzer's -max_total_time.
    Seconds(u64),
    /// libFuzzer's -runs.
    Runs(u64),
}

/// What one target's run did.
pub struct Outcome {
    pub target: &'static str,
    pub runs: u64,
    pub per_sec: u64,
}

/// Builds the targets, writes the seeds, runs every target (or those of
/// `only`) for `budget`; fails naming the target and the input libFuzzer
/// saved on a crash, hang, leak or panic.
pub fn run(ws: &Path, budget: Budget, only: &[String]) -> Result<Vec<Outcome>> {
    if let Some(bad) = only.iter().find(|t| !TARGETS.contains(&t.as_str())) {
        bail!(
            "no fuzz target {bad:?}: the targets are {}",
            TARGETS.join(", ")
        );
    }
    setup::ensure_cargo_fuzz()?;
    let dir = ws.join("tests/fuzz");
    let status = Command::new("cargo")
        .args(["fmt", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--check")
        .status()
        .context("starting cargo fmt on tests/fuzz")?;
    if !status.success() {
        bail!("tests/fuzz is not formatted: run `cargo fmt --manifest-path tests/fuzz/Cargo.toml`");
    }
    // The seeds come from the tests crate (the fixture table), built as usual.
    let seeds = dir.join("seeds");
    crate::cargo(&[
        "run",
        "--release",
        "--quiet",
        "-p",
        "xdhcp-tests",
        "--bin",
        "fuzz_seeds",
        "--",
        seeds.to_str().context("a UTF-8 workspace path")?,
    ])?;
    let mut build = cargo_fuzz(ws);
    build.args(["build", "--fuzz-dir"]).arg(&dir);
    crate::run(&mut build).context("building the fuzz targets")?;

    let mut outcomes = Vec::new();
    for target in TARGETS
        .into_iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
    {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let limit = match budget {
            Budget::Seconds(s) => format!("-max_total_time={s}"),
            Budget::Runs(n) => format!("-runs={n}"),
        };
        let mut cmd = cargo_fuzz(ws);
        cmd.args(["run", "--fuzz-dir"])
            .arg(&dir)
            .arg(target)
            // New inputs go to the first directory; the seeds stay as written.
            .arg(&corpus)
            .arg(seeds.join(target))
            // Inputs that once failed (committed), kept passing.
            .args(Some(dir.join("regressions").join(target)).filter(|d| d.is_dir()))
            .args(["--", &limit, "-timeout=10", "-print_final_stats=1"]);
        let out = cmd
            .output()
            .with_context(|| format!("starting the fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let saved = log
                .lines()
                .find(|l| l.contains("Test unit written to"))
                .unwrap_or("no input saved");
            bail!(
                "fuzz target {target} failed ({}): {saved}\n{}\nreproduce: cargo +nightly fuzz run \
                 --fuzz-dir tests/fuzz {target} ARTIFACT",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let stat = |name: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let o = Outcome {
            target,
            runs: stat("stat::number_of_executed_units:"),
            per_sec: stat("stat::average_exec_per_sec:"),
        };
        println!(
            "fuzz {}: {} executions, {} exec/s, no crash",
            o.target, o.runs, o.per_sec
        );
        outcomes.push(o);
    }
    Ok(outcomes)
}

/// rustup's `cargo +nightly fuzz` (libFuzzer needs nightly's sanitizer
/// flags), outside whatever toolchain runs xtask; its own target directory.
fn cargo_fuzz(ws: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ws)
        .env("PATH", setup::path_with_cargo_bin())
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", ws.join("tests/fuzz/target"))
        .args(["+nightly", "fuzz"]);
    cmd
}
