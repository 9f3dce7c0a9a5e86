//! `cargo xtask package`: the Debian package, a staged tree built with
//! `dpkg-deb --build` (nothing to install or compile beyond dpkg itself).
//!
//! Self-contained (std and anyhow only): the packaging tests include this
//! file and build the package from the binary they test.

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The Debian package name, and the directory of its documentation.
pub const PACKAGE: &str = "xdhcp";

/// Builds `OUT_DIR/xdhcp_<version>_<arch>.deb` from the workspace at `ws` and
/// the release `binary` (stripped in the package); returns its path.
pub fn build_deb(ws: &Path, binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    let version = cargo_version(&ws.join("dhcp-user/Cargo.toml"))?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let name = format!("{PACKAGE}_{version}_{arch}");
    let stage = out_dir.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("removing the old stage {}", stage.display()))?;
    }
    let doc = format!("usr/share/doc/{PACKAGE}");
    let files: [(PathBuf, String, u32); 7] = [
        (binary.to_path_buf(), "usr/bin/xdhcp".into(), 0o755),
        (
            ws.join("packaging/xdhcp-agent.service"),
            "lib/systemd/system/xdhcp-agent.service".into(),
            0o644,
        ),
        (
            ws.join("packaging/xdhcp.service"),
            "lib/systemd/system/xdhcp.service".into(),
            0o644,
        ),
        (
            ws.join("packaging/dhcp_agent.ini"),
            format!("{doc}/examples/dhcp_agent.ini"),
            0o644,
        ),
        (ws.join("README.md"), format!("{doc}/README.md"), 0o644),
        (
            ws.join("docs/operations.md"),
            format!("{doc}/operations.md"),
            0o644,
        ),
        (
            ws.join("packaging/copyright"),
            format!("{doc}/copyright"),
            0o644,
        ),
    ];
    for (from, to, mode) in &files {
        install(from, &stage.join(to), *mode)?;
    }
    let staged_bin = stage.join("usr/bin/xdhcp");
    // Debian ships binaries without symbols (the embedded XDP object is data, not debug info).
    if Command::new("strip").arg("--version").output().is_ok() {
        run(Command::new("strip")
            .arg("--strip-unneeded")
            .arg(&staged_bin))?;
    }

    let control = control(
        &version,
        &arch,
        &depends(&staged_bin),
        installed_kib(&stage)?,
    );
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian).with_context(|| format!("creating {}", debian.display()))?;
    // dpkg-deb wants the control directory 0755 whatever the umask.
    std::fs::set_permissions(&debian, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", debian.display()))?;
    write(&debian.join("control"), &control, 0o644)?;
    let paths: Vec<&str> = files.iter().map(|(_, to, _)| to.as_str()).collect();
    let sums = output(Command::new("md5sum").args(&paths).current_dir(&stage))?;
    write(&debian.join("md5sums"), &format!("{sums}\n"), 0o644)?;

    let deb = out_dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    std::fs::remove_dir_all(&stage)
        .with_context(|| format!("removing the stage {}", stage.display()))?;
    Ok(deb)
}

/// `version = "…"` of the `[package]` section of a Cargo.toml.
fn cargo_version(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(value) = line.strip_prefix("version").map(str::trim_start) {
            if let (true, Some(v)) = (in_package, value.strip_prefix('=')) {
                return Ok(v.trim().trim_matches('"').to_string());
            }
        }
    }
    bail!("{}: no version in [package]", manifest.display())
}

/// The package's dependencies: the C runtime the binary links (libc6 at
/// least the newest GLIBC_ symbol version it uses) and iproute2's `ip`.
fn depends(binary: &Path) -> String {
    let glibc = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.split_whitespace()
                .filter_map(|w| w.trim_matches(['(', ')']).strip_prefix("GLIBC_"))
                .filter_map(|v| {
                    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
                    Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
                })
                .max()
        });
    let libc = match glibc {
        Some((major, minor)) => format!("libc6 (>= {major}.{minor})"),
        None => "libc6".into(),
    };
    format!("{libc}, libgcc-s1, iproute2")
}

/// Installed-Size: KiB of the files under `stage`.
fn installed_kib(stage: &Path) -> Result<u64> {
    fn bytes(dir: &Path) -> Result<u64> {
        let mut sum = 0;
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            sum += if entry.file_type()?.is_dir() {
                bytes(&entry.path())?
            } else {
                entry.metadata()?.len().div_ceil(1024) * 1024
            };
        }
        Ok(sum)
    }
    Ok(bytes(stage)?.div_ceil(1024))
}

fn control(version: &str, arch: &str, depends: &str, kib: u64) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: xdhcp developers <xdhcp@localhost>\n\
         Installed-Size: {kib}\n\
         Depends: {depends}\n\
         Recommends: openvswitch-switch\n\
         Section: net\n\
         Priority: optional\n\
         Description: DHCP server for OpenStack-style clouds, answered from XDP\n \
         xdhcp answers DHCPDISCOVER and DHCPREQUEST in an XDP program, straight\n \
         from BPF lease maps, where Neutron runs one dnsmasq per network. It runs\n \
         on its own port database (xdhcp run, xdhcp.service) or in place of\n \
         neutron-dhcp-agent on the agent's configuration files (xdhcp agent,\n \
         xdhcp-agent.service).\n"
    );
    c
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(|_| ())
}

/// Runs `cmd`; its trimmed stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
