//! What the benchmarks read off the machine: BPF objects (bpftool), process
//! trees' memory and CPU, and the plots (gnuplot).

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// `bpftool -j ARGS…`: its JSON.
pub fn bpftool(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("running bpftool")?;
    ensure!(
        out.status.success(),
        "bpftool {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("bpftool's JSON")
}

/// bytes_memlock summed over the distinct maps pinned under `dir`.
pub fn pinned_map_bytes(dir: &Path) -> Result<u64> {
    let mut ids = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // Pins of programs and links are not maps: bpftool refuses them.
            let Ok(v) = bpftool(&["map", "show", "pinned", &path.display().to_string()]) else {
                continue;
            };
            if let (Some(id), Some(bytes)) = (v["id"].as_u64(), v["bytes_memlock"].as_u64()) {
                ids.insert(id, bytes);
            }
        }
    }
    ensure!(!ids.is_empty(), "no pinned maps under {}", dir.display());
    Ok(ids.values().sum())
}

/// utime + stime of the processes, in seconds (children they reaped included).
pub fn cpu_secs(pids: &[i32]) -> f64 {
    let tick = 100.0; // USER_HZ
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = s.rsplit_once(") ")?.1.split(' ').collect::<Vec<_>>();
            // Fields after the name: utime 14, stime 15, cutime 16, cstime 17 (1-based overall).
            let f = |i: usize| rest.get(i - 3)?.parse::<f64>().ok();
            Some(f(14)? + f(15)? + f(16)? + f(17)?)
        })
        .sum::<f64>()
        / tick
}

/// (RSS, PSS) in KiB summed over the processes (smaps_rollup).
pub fn memory_kib(pids: &[i32]) -> (u64, u64) {
    let mut rss = 0;
    let mut pss = 0;
    for p in pids {
        let Ok(text) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) else {
            continue;
        };
        for line in text.lines() {
            let kib = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            };
            if let Some(v) = kib("Rss:") {
                rss += v;
            }
            if let Some(v) = kib("Pss:") {
                pss += v;
            }
        }
    }
    (rss, pss)
}

/// A 900×560 PNG at `png`: `title`, a grid, `axes` (gnuplot set commands:
/// scales, labels, key) and `plots` (plot clauses, `$DATA` standing for
/// `data`).
pub fn plot_png(png: &Path, title: &str, axes: &str, plots: &[String], data: &str) -> Result<()> {
    let script = format!(
        "set terminal pngcairo size 900,560 font 'sans,11'\nset output '{}'\n\
         set title '{title}'\nset grid\n{axes}\nplot {}\n",
        png.display(),
        plots.join(", ")
    );
    gnuplot(&script, data)
}

/// Runs gnuplot on `script`, in which `$DATA` stands for a file holding
/// `data` (gnuplot data blocks).
pub fn gnuplot(script: &str, data: &str) -> Result<()> {
    let base = std::env::temp_dir().join(format!(
        "xdhcp-plot-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let data_path = base.with_extension("dat");
    let script_path = base.with_extension("gp");
    fs::write(&data_path, data)?;
    fs::write(
        &script_path,
        script.replace("$DATA", &data_path.display().to_string()),
    )?;
    let out = Command::new("gnuplot")
        .arg(&script_path)
        .output()
        .context("running gnuplot (apt-get install gnuplot-nox)");
    let _ = fs::remove_file(&data_path);
    let _ = fs::remove_file(&script_path);
    let out = out?;
    if !out.status.success() {
        bail!("gnuplot: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
