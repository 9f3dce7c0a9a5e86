//! `cargo xtask test-kernel`: the XDP object on Debian 12's kernel (6.1,
//! linux-image-amd64) booted under qemu. An initramfs holds the fastpath test
//! binary and `vm_init` (tests/src/bin/vm_init.rs) as /init; the serial
//! console says whether the object verified and the fixture table passed.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

/// The qemu that boots the kernel (Debian package qemu-system-x86).
pub const QEMU: &str = "qemu-system-x86_64";
/// The metapackage naming Debian 12's current kernel.
const KERNEL_META: &str = "linux-image-amd64";
/// The prefix of vm_init's own console lines.
const TAG: &str = "xdhcp-vm:";
/// Booting under software emulation and running the tests takes about a
/// minute; past this the VM is taken to hang.
const TIMEOUT: Duration = Duration::from_secs(600);

/// What one boot showed.
pub struct Outcome {
    /// The fastpath tests that passed and failed in the VM.
    pub passed: u64,
    pub failed: u64,
}

/// Whether qemu-system-x86_64 is on this machine.
pub fn qemu_present() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Builds the two binaries, packs them, boots Debian 12's kernel and checks
/// what the console says. `ws` is the workspace root.
pub fn test_kernel(ws: &Path) -> Result<Outcome> {
    let dir = ws.join("target/vm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let vmlinuz = debian_kernel(&dir)?;
    let init = build_vm_init(ws)?;
    let tests = build_fastpath_tests(ws)?;
    let initrd = dir.join("initrd.cpio");
    write_initramfs(&initrd, &[("init", &init), ("fastpath", &tests)])?;
    let t0 = Instant::now();
    let console = boot(&vmlinuz, &initrd)?;
    let secs = t0.elapsed().as_secs_f64();
    let log = dir.join("console.log");
    std::fs::write(&log, &console).with_context(|| format!("writing {}", log.display()))?;
    check_console(&console, &log, secs)
}

/// The vmlinuz of the kernel `linux-image-amd64` depends on, fetched once
/// into `dir` with `apt-get download` and `dpkg-deb -x` (nothing installed).
fn debian_kernel(dir: &Path) -> Result<PathBuf> {
    let depends = output(Command::new("apt-cache").args(["depends", KERNEL_META]))?;
    let package = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("`apt-cache depends {KERNEL_META}` names no kernel:\n{depends}"))?
        .to_string();
    let version = package.trim_start_matches("linux-image-");
    let vmlinuz = dir.join(format!("vmlinuz-{version}"));
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    eprintln!("xtask test-kernel: downloading {package} (~70 MB)");
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    // apt's sandbox user cannot write here: download as root, unsandboxed.
    run(Command::new("apt-get")
        .args(["-qq", "-o", "APT::Sandbox::User=root", "download", &package])
        .current_dir(&download))?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let tree = download.join("tree");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    let inside = tree.join(format!("boot/vmlinuz-{version}"));
    std::fs::copy(&inside, &vmlinuz)
        .with_context(|| format!("{} has no {}", deb.display(), inside.display()))?;
    std::fs::remove_dir_all(&download)?;
    Ok(vmlinuz)
}

fn build_vm_init(ws: &Path) -> Result<PathBuf> {
    crate::cargo(&[
        "build",
        "--release",
        "--quiet",
        "-p",
        "xdhcp-tests",
        "--bin",
        "vm_init",
    ])?;
    Ok(ws.join("target/release/vm_init"))
}

/// Builds tests/tests/fastpath.rs (release, as `cargo xtask test` does) and
/// returns the test binary cargo reports.
fn build_fastpath_tests(ws: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let json = output(Command::new(cargo).current_dir(ws).args([
        "test",
        "--release",
        "--quiet",
        "-p",
        "xdhcp-tests",
        "--test",
        "fastpath",
        "--no-run",
        "--message-format=json",
    ]))?;
    // One artifact line per crate; the test's says `"name":"fastpath"` and
    // `"test":true` and carries its `"executable":"…"`.
    json.lines()
        .filter(|l| l.contains(r#""name":"fastpath""#) && l.contains(r#""test":true"#))
        .find_map(|l| {
            let rest = l.split(r#""executable":""#).nth(1)?;
            Some(PathBuf::from(&rest[..rest.find('"')?]))
        })
        .context("cargo reported no fastpath test executable")
}

/// The shared libraries `ldd` lists for `bin`, the loader included.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(bin))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has no file.
            let path = l.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// An uncompressed initramfs (cpio, newc) holding `files` (name in the root,
/// host path) and every shared library they need, at the host's paths.
fn write_initramfs(out: &Path, files: &[(&str, &Path)]) -> Result<()> {
    let mut entries: Vec<(String, PathBuf)> = files
        .iter()
        .map(|(name, path)| (name.to_string(), path.to_path_buf()))
        .collect();
    for (_, bin) in files {
        for lib in libraries(bin)? {
            let name = lib.to_string_lossy().trim_start_matches('/').to_string();
            if !entries.iter().any(|(n, _)| *n == name) {
                entries.push((name, lib));
            }
        }
    }
    let mut cpio = Cpio::default();
    // The kernel opens /dev/console as /init's stdin, stdout and stderr.
    cpio.dir("dev");
    cpio.entry("dev/console", 0o020600, (5, 1), &[]);
    for (name, path) in &entries {
        // Parents first: the kernel does not create missing directories.
        let mut parent = String::new();
        for part in name.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            cpio.dir(&parent);
        }
        // Symbolic links (lib64/ld-linux…) are read through: a file is enough.
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        cpio.file(name, &data);
    }
    let bytes = cpio.finish();
    let mut f =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    f.write_all(&bytes)
        .with_context(|| format!("writing {}", out.display()))
}

/// The newc cpio format: ASCII-hex headers, names and data padded to 4 bytes.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    dirs: Vec<String>,
    ino: u32,
}

impl Cpio {
    fn dir(&mut self, name: &str) {
        if !self.dirs.iter().any(|d| d == name) {
            self.dirs.push(name.to_string());
            self.entry(name, 0o040755, (0, 0), &[]);
        }
    }

    fn file(&mut self, name: &str, data: &[u8]) {
        self.entry(name, 0o100755, (0, 0), data);
    }

    /// One entry; `rdev` (major, minor) is a device node's number.
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for v in fields {
            self.bytes.extend_from_slice(format!("{v:08X}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.bytes
    }
}

/// Boots `vmlinuz` with `initrd` under software emulation and returns the
/// serial console's output. Not KVM: nested under this project's machines it
/// hung before the first console line, and TCG boots 6.1 in ~3 s.
fn boot(vmlinuz: &Path, initrd: &Path) -> Result<String> {
    let mut child = Command::new(QEMU)
        .args([
            "-machine",
            "accel=tcg",
            "-m",
            "1G",
            "-smp",
            "1",
            "-no-reboot",
        ])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // panic=-1: if /init dies the kernel reboots, which -no-reboot ends.
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {QEMU}"))?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let pid = child.id() as i32;
    // The watchdog: a VM that hangs is killed, and the read below ends.
    let watchdog = std::thread::spawn(move || {
        let end = Instant::now() + TIMEOUT;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: signal 0 only asks whether our child still exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: killing our own child (qemu), by its pid.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    });
    let mut console = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        let line = line.trim_end_matches('\r');
        if line.starts_with(TAG) || line.starts_with("test ") {
            println!("  vm | {line}");
        }
        console.push_str(line);
        console.push('\n');
    }
    let status = child.wait()?;
    if watchdog.join().unwrap_or(false) {
        bail!("the VM did not power off within {TIMEOUT:?}:\n{console}");
    }
    ensure!(status.success(), "{QEMU} failed: {status}\n{console}");
    Ok(console)
}

/// Holds the console to what a passing run prints; reports the figures.
fn check_console(console: &str, log: &Path, secs: f64) -> Result<Outcome> {
    let tagged = |what: &str| {
        console
            .lines()
            .find_map(|l| l.strip_prefix(TAG)?.trim().strip_prefix(what))
            .map(str::trim)
    };
    if let Some(e) = tagged("error:") {
        bail!("in the VM: {e} (console: {})", log.display());
    }
    let kernel = tagged("kernel").with_context(|| {
        format!(
            "vm_init never reported; the kernel or /init failed (console: {}):\n{console}",
            log.display()
        )
    })?;
    let verified = tagged("verified").context("no verifier line")?;
    let result = console
        .lines()
        .find_map(|l| l.strip_prefix("test result: "))
        .with_context(|| format!("no test result in the console ({})", log.display()))?;
    let count = |word: &str| crate::result_count(result, word);
    let outcome = Outcome {
        passed: count("passed"),
        failed: count("failed"),
    };
    println!(
        "test-kernel: Linux {kernel} under {QEMU}: verified {verified}; fastpath tests {} passed, \
         {} failed; {secs:.1} s from boot to power-off (console: {})",
        outcome.passed,
        outcome.failed,
        log.display()
    );
    let exit = tagged("exit").unwrap_or("none");
    ensure!(
        exit == "0" && outcome.failed == 0 && outcome.passed > 0,
        "the fastpath tests failed on Linux {kernel} (exit {exit}; console: {}):\n{console}",
        log.display()
    );
    Ok(outcome)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    crate::run(cmd)
}
