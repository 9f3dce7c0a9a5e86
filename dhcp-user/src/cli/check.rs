//! `xdhcp check`: what a start needs, checked before starting (the units'
//! ExecStartPre). One line per check, `ok` or `FAILED: <reason>` naming the
//! file, directory or tool at fault; an error when any failed.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Result};
use dhcp_ebpf::{ENTRY_PROGRAM, FAST_PROGRAM};
use xdhcp::{
    config::oslo::{self, AgentSettings, InterfaceDriver},
    config::AgentConfig,
    loader::bpffs::{self, TempPinDir},
    loader::{self, FastPath},
    plan::extra_opts,
};

/// What to check: the global options as given (unresolved), and `run --config`.
pub struct Inputs {
    pub config_files: Vec<PathBuf>,
    pub config: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub bpffs: Option<PathBuf>,
}

const DEFAULT_DB: &str = "/var/lib/xdhcp/xdhcp.db";
const DEFAULT_BPFFS: &str = "/sys/fs/bpf/xdhcp";

/// Prints one line per check; fails when any check failed.
pub fn run(inputs: Inputs) -> Result<()> {
    let mut failed = 0;
    let mut report = |name: &str, result: Result<String, String>| match result {
        Ok(detail) => println!("{name}: ok ({detail})"),
        Err(reason) => {
            failed += 1;
            println!("{name}: FAILED: {reason}");
        }
    };

    // The files first: they name the database and bpffs the other checks look at.
    let mut settings = None;
    let mut paths_known = true;
    if !inputs.config_files.is_empty() {
        let result = oslo::load(&inputs.config_files).map_err(|e| format!("{e:#}"));
        paths_known = result.is_ok() || (inputs.db.is_some() && inputs.bpffs.is_some());
        report(
            "config files",
            result
                .as_ref()
                .map(|(_, warnings)| {
                    format!(
                        "{}; {} key(s) not used by xdhcp",
                        list(&inputs.config_files),
                        warnings.len()
                    )
                })
                .map_err(Clone::clone),
        );
        if let Ok((s, _)) = result {
            report("agent settings", agent_settings(&s));
            settings = Some(s);
        }
    }
    if let Some(path) = &inputs.config {
        report(
            "agent options",
            AgentConfig::load(path)
                .map(|_| path.display().to_string())
                .map_err(|e| format!("{e:#}")),
        );
    }

    let pick = |given: Option<PathBuf>, from_files: Option<PathBuf>, default: &str| {
        given
            .or(from_files)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let db = pick(
        inputs.db,
        settings.as_ref().map(|s| s.db.clone()),
        DEFAULT_DB,
    );
    let bpffs_dir = pick(
        inputs.bpffs,
        settings.as_ref().map(|s| s.bpffs.clone()),
        DEFAULT_BPFFS,
    );
    // Without the files' [xdhcp] section the paths are unknown: skipped, not guessed.
    const SKIPPED: &str = "skipped (the config files did not parse)";
    if paths_known {
        report("bpffs", bpffs_mounted(&bpffs_dir));
    } else {
        println!("bpffs: {SKIPPED}");
    }
    report("kernel", kernel_loads());
    report("tool ip", tool("ip", "iproute2"));
    if settings
        .as_ref()
        .is_some_and(|s| s.interface_driver == Some(InterfaceDriver::OpenVSwitch))
    {
        report(
            "tool ovs-vsctl",
            tool(
                "ovs-vsctl",
                "openvswitch-switch (interface_driver = openvswitch)",
            ),
        );
    }
    if paths_known {
        report("database", db_writable(&db));
    } else {
        println!("database: {SKIPPED}");
    }
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn list(files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.join(", ")
}

/// What `xdhcp agent` refuses at start: no interface_driver, no transport_url, a bad dhcp-option line.
fn agent_settings(s: &AgentSettings) -> Result<String, String> {
    let driver = match s.interface_driver {
        Some(InterfaceDriver::OpenVSwitch) => {
            format!("openvswitch on {}", s.ovs_integration_bridge)
        }
        Some(InterfaceDriver::LinuxBridge) => "linuxbridge".into(),
        None => {
            return Err("[DEFAULT] interface_driver is not set (openvswitch or linuxbridge)".into())
        }
    };
    if s.transport_url.is_none() {
        return Err(
            "[DEFAULT] transport_url is not set: the agent cannot reach neutron-server".into(),
        );
    }
    for o in &s.dnsmasq_options {
        extra_opts::encode(&o.name, &o.value).map_err(|e| {
            format!(
                "{}: line {}: dhcp-option {},{}: {e:#}",
                o.file.display(),
                o.line,
                o.name,
                o.value
            )
        })?;
    }
    Ok(format!("host {}, interface_driver {driver}", s.host))
}

/// The bpffs directory, or the nearest existing directory above it, is on a
/// bpf filesystem (below /sys/fs/bpf an unmounted /sys/fs/bpf is fine: the
/// daemon mounts it, as systemd does at boot).
fn bpffs_mounted(dir: &Path) -> Result<String, String> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if bpffs::is_bpffs(existing) {
        return Ok(format!("{} on a bpf filesystem", dir.display()));
    }
    let system = Path::new(bpffs::SYSTEM_BPFFS);
    if dir.starts_with(system) && existing == system {
        return Ok(format!(
            "{} not mounted yet: the daemon mounts it",
            system.display()
        ));
    }
    Err(format!(
        "{} is not on a bpf filesystem ({} is not bpffs; the daemon would mount \
         a bpffs instance of its own there): use a directory below {} or mount \
         bpffs there first (mount -t bpf bpf DIR)",
        dir.display(),
        existing.display(),
        bpffs::SYSTEM_BPFFS
    ))
}

/// The kernel verifies and loads the embedded programs (not attached; unpinned after).
fn kernel_loads() -> Result<String, String> {
    let verified = || -> Result<String> {
        let pins = TempPinDir::new("xdhcp-check")?;
        let mut fast = FastPath::load(&pins.path)?;
        let fast_insns = loader::verified_insns(fast.program()?)?;
        let entry_insns = loader::verified_insns(&fast.entry(1)?)?;
        Ok(format!(
            "verified: {FAST_PROGRAM} {fast_insns} instructions processed, {ENTRY_PROGRAM} \
             (per network) {entry_insns}; object {} bytes",
            loader::OBJECT.len()
        ))
    };
    verified().map_err(|e| format!("the XDP program does not load: {e:#}"))
}

/// `name` is an executable file on PATH.
fn tool(name: &str, package: &str) -> Result<String, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map(|p| p.display().to_string())
        .ok_or_else(|| format!("{name} not found on PATH (install {package})"))
}

/// The database can be written: the file opened for writing when it exists,
/// else a probe file created (and removed) in the directory that will hold
/// it, or in the nearest existing directory above (the daemon creates the rest).
fn db_writable(db: &Path) -> Result<String, String> {
    if db.exists() {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(db)
            .map(|_| format!("{} writable", db.display()))
            .map_err(|e| format!("database {} is not writable: {e}", db.display()));
    }
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(format!(
            "database directory {}: {} is not a directory",
            dir.display(),
            existing.display()
        ));
    }
    let probe = existing.join(format!(".xdhcp-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(format!(
                "{} will be created, {} writable",
                db.display(),
                existing.display()
            ))
        }
        Err(e) => Err(format!(
            "database directory {} is not writable ({}: {e})",
            dir.display(),
            existing.display()
        )),
    }
}
