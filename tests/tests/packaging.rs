//! Shipping xdhcp: the systemd units (verified, their command lines accepted,
//! their capabilities enough to serve), sd_notify (READY=1 after the first
//! sync, WATCHDOG=1 from the main loop), `xdhcp check`, and the Debian
//! package (built by xtask's own code, installed into a throwaway root).

#[path = "../../xtask/src/package.rs"]
mod package;

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use xdhcp::slowpath::reply::DHCPINFORM;
use xdhcp_tests::craft::RequestFrame;
use xdhcp_tests::{
    cloud::{exchange, msg_type, xdhcp_bin, Cloud},
    yiaddr,
};

const UNITS: [&str; 2] = ["xdhcp-agent.service", "xdhcp.service"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace above tests/")
        .to_path_buf()
}

fn unit_text(name: &str) -> String {
    let path = workspace().join("packaging").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of `key=` in a unit (the last one, as systemd reads single-valued keys).
fn unit_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// A directory removed with everything in it when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdhcp-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (key, does its value pass, why the unit needs it).
type UnitRule<'a> = (&'a str, &'a dyn Fn(&str) -> bool, &'a str);

/// `systemd-analyze verify` prints nothing about either unit (pointed at the
/// built binary: it checks that ExecStart's command exists), the settings the
/// daemon relies on are there, and clap accepts both units' command lines.
#[test]
fn units_verify_clean_and_their_command_lines_parse() {
    let scratch = Scratch::new("units");
    let bin = xdhcp_bin();
    let mut copies = Vec::new();
    for name in UNITS {
        let unit = unit_text(name);
        // (key, what it must be) for both units.
        let expected: [UnitRule; 6] = [
            ("Type", &|v| v == "notify", "READY=1 ends start-up"),
            ("Restart", &|v| v == "on-failure", "restarted after a crash"),
            ("WatchdogSec", &|v| v.ends_with('s'), "a watchdog interval"),
            ("KillMode", &|v| v == "mixed", "SIGTERM to the daemon only"),
            (
                "ExecStartPre",
                &|v| v.starts_with("/usr/bin/xdhcp ") && v.ends_with(" check"),
                "xdhcp check before start",
            ),
            (
                "CapabilityBoundingSet",
                &|v| v.contains("CAP_SYS_ADMIN") && !v.contains("CAP_SYS_MODULE"),
                "capabilities, not full root",
            ),
        ];
        for (key, ok, why) in expected {
            let value = unit_value(&unit, key);
            assert!(
                value.as_deref().is_some_and(ok),
                "{name}: {key}={value:?} ({why})"
            );
        }
        let copy = scratch.0.join(name);
        std::fs::write(&copy, unit.replace("/usr/bin/xdhcp", bin.to_str().unwrap())).unwrap();
        copies.push(copy);
    }
    assert_eq!(
        unit_value(&unit_text("xdhcp-agent.service"), "ExecStart").as_deref(),
        Some(
            "/usr/bin/xdhcp --config-file /etc/neutron/neutron.conf \
             --config-file /etc/neutron/dhcp_agent.ini agent"
        ),
        "the agent runs on neutron-dhcp-agent's files"
    );

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .current_dir(&scratch.0)
        .output()
        .expect("running systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );

    // Every command line of the units, with `--help` appended, is accepted
    // by the binary (a misspelt option or subcommand fails here).
    for name in UNITS {
        let unit = unit_text(name);
        for key in ["ExecStartPre", "ExecStart"] {
            let line = unit_value(&unit, key).unwrap();
            let args: Vec<&str> = line
                .split_whitespace()
                .skip(1)
                .filter(|a| !a.starts_with('$'))
                .collect();
            let out = Command::new(&bin)
                .args(&args)
                .arg("--help")
                .output()
                .unwrap();
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Usage:"),
                "{name} {key} {args:?}: {}",
                text(&out)
            );
        }
    }
}

/// Kills the daemon if the test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The capability numbers of linux/capability.h this project's units name.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_ADMIN" => 21,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("{other}: add its number to cap_bit"),
    }
}

/// The CapabilityBoundingSet of a unit.
fn unit_caps(unit: &str) -> Vec<String> {
    unit_value(&unit_text(unit), "CapabilityBoundingSet")
        .unwrap_or_else(|| panic!("{unit} has no CapabilityBoundingSet"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `setpriv …  --`: root limited to `caps` (bounding set, nothing inheritable)
/// with no_new_privs, as systemd starts the units; the command follows.
fn setpriv(caps: &[String]) -> Command {
    let plus: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let mut cmd = Command::new("setpriv");
    cmd.arg("--inh-caps=-all")
        .arg(format!("--bounding-set=-all,{}", plus.join(",")))
        .arg("--no-new-privs")
        .arg("--");
    cmd
}

/// A capability mask from /proc/PID/status.
fn proc_caps(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// `xdhcp run` with NOTIFY_SOCKET and WATCHDOG_USEC, started as xdhcp.service
/// starts it (root limited to the unit's CapabilityBoundingSet): READY=1 comes
/// once the maps hold the database's clients, WATCHDOG=1 every second (half of
/// 2 s) while the loop runs, the fast and the slow path answer with those
/// capabilities, and SIGTERM sends STOPPING=1 and exits cleanly.
#[test]
fn notify_ready_after_first_sync_watchdog_repeats_under_unit_capabilities() {
    let mut c = Cloud::new();
    let (net, vm) = c.net_with_vm(71);

    let caps = unit_caps("xdhcp.service");
    let mask = caps.iter().fold(0u64, |m, c| m | 1 << cap_bit(c));

    let scratch = Scratch::new("notify");
    let socket_path = scratch.0.join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = std::fs::File::create(&c.log).unwrap();
    let child = setpriv(&caps)
        .arg(xdhcp_bin())
        .arg("--db")
        .arg(&c.db)
        .arg("--bpffs")
        .arg(&c.bpffs)
        .args(["run", "--plumb", "--bridge", &c.bridge])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting setpriv … xdhcp run");
    let mut daemon = Daemon(child);
    let pid = daemon.0.id();

    let recv = |timeout: Duration| -> Option<(Instant, String)> {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            if let Ok(n) = sock.recv(&mut buf) {
                return Some((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
        None
    };

    let (_, first) = recv(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no notification in 30 s; log:\n{}", c.log()));
    assert!(
        first.lines().any(|l| l == "READY=1") && first.contains("STATUS=serving"),
        "the first notification is READY=1 with a status: {first:?}"
    );
    // READY means the first sync is done: the client is in the maps already.
    let ports = c.xdhcp(&["ports", "--json"]);
    assert!(
        ports.status.success()
            && String::from_utf8_lossy(&ports.stdout)
                .contains(&xdhcp::neutron::model::format_mac(&vm.mac)),
        "the VM's lease in the maps at READY=1: {}",
        text(&ports)
    );
    assert_eq!(
        (proc_caps(pid, "CapBnd"), proc_caps(pid, "CapEff")),
        (mask, mask),
        "the daemon runs with exactly the unit's capabilities"
    );

    // WATCHDOG=1 at half of WATCHDOG_USEC: never less than 1 s apart, never
    // as much as 2 s (systemd would kill the daemon).
    let mut pings = Vec::new();
    while pings.len() < 4 {
        let (at, msg) = recv(Duration::from_secs(3)).unwrap_or_else(|| {
            panic!(
                "{} WATCHDOG=1 after READY=1, then silence; log:\n{}",
                pings.len(),
                c.log()
            )
        });
        assert_eq!(msg, "WATCHDOG=1", "only watchdog pings while serving");
        pings.push(at);
    }
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            gap >= Duration::from_millis(950) && gap < Duration::from_millis(1900),
            "watchdog gap {gap:?}"
        );
    }

    // With those capabilities the fast path is attached and answers, and
    // the slow path's packet socket answers an INFORM.
    c.wait_attached(&net, Duration::from_secs(30)).unwrap();
    let (_, vm_sock) = c.vm(&vm).unwrap();
    let mut offer = None;
    let end = Instant::now() + Duration::from_secs(5);
    while offer.is_none() && Instant::now() < end {
        offer = exchange(
            &vm_sock,
            &RequestFrame::discover(vm.mac),
            Duration::from_millis(300),
        );
    }
    let offer = offer.unwrap_or_else(|| panic!("no OFFER; log:\n{}", c.log()));
    assert_eq!(
        (msg_type(&offer), yiaddr(&offer)),
        (Some(2), vm.ip),
        "OFFER"
    );
    let mut inform = RequestFrame::discover(vm.mac)
        .with_type(DHCPINFORM)
        .unicast_from(vm.ip, net.server_ip, net.dhcp_mac);
    inform.xid = [0x71, 0, 0, 3];
    let ack = exchange(&vm_sock, &inform, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no ACK to INFORM from the slow path; log:\n{}", c.log()));
    assert_eq!(msg_type(&ack), Some(5), "slow-path ACK");

    // SIGTERM: STOPPING=1, then a clean exit.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let mut stopping = false;
    let end = Instant::now() + Duration::from_secs(10);
    while !stopping && Instant::now() < end {
        stopping = recv(Duration::from_millis(500))
            .is_some_and(|(_, m)| m.lines().any(|l| l == "STOPPING=1"));
    }
    assert!(stopping, "STOPPING=1 on SIGTERM; log:\n{}", c.log());
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", c.log());
    let log = c.log();
    for bad in ["ERROR", "not permitted", "Permission denied"] {
        assert!(!log.contains(bad), "{bad:?} in the log:\n{log}");
    }
}

/// `xdhcp check` with neutron.conf + dhcp_agent.ini of its own.
struct CheckCase {
    what: &'static str,
    /// dhcp_agent.ini's text.
    ini: &'static str,
    /// Extra arguments before `check`, with `{dir}` for the case's directory.
    args: &'static [&'static str],
    /// PATH for the command (None: the test's).
    path: Option<&'static str>,
    /// The one FAILED line expected, with `{dir}` and `{bpffs}`; None: all ok.
    failed: Option<&'static str>,
}

const GOOD_INI: &str = "[DEFAULT]\ninterface_driver = openvswitch\n[xdhcp]\nbpffs = {bpffs}\n";

#[test]
fn check_passes_on_a_good_config_and_names_each_bad_input() {
    let cases = [
        CheckCase {
            what: "agent config, bpffs below /sys/fs/bpf, ovs-vsctl and ip present",
            ini: GOOD_INI,
            args: &[],
            path: None,
            failed: None,
        },
        CheckCase {
            what: "a config file that does not exist",
            ini: GOOD_INI,
            args: &["--config-file", "{dir}/missing.ini"],
            path: None,
            failed: Some("config files: FAILED: reading config file {dir}/missing.ini"),
        },
        CheckCase {
            what: "an indented line (oslo would read it as a continuation)",
            ini: "[DEFAULT]\ninterface_driver = openvswitch\n  dns_domain = x\n",
            args: &[],
            path: None,
            failed: Some("config files: FAILED: {dir}/dhcp_agent.ini"),
        },
        CheckCase {
            what: "no interface_driver",
            ini: "[xdhcp]\nbpffs = {bpffs}\n",
            args: &[],
            path: None,
            failed: Some("agent settings: FAILED: [DEFAULT] interface_driver is not set"),
        },
        CheckCase {
            what: "bpffs directory not on a bpf filesystem",
            ini: "[DEFAULT]\ninterface_driver = linuxbridge\n[xdhcp]\nbpffs = {dir}/pins\n",
            args: &[],
            path: None,
            failed: Some("bpffs: FAILED: {dir}/pins is not on a bpf filesystem"),
        },
        CheckCase {
            what: "--bpffs overrides the file, and is checked",
            ini: GOOD_INI,
            args: &["--bpffs", "{dir}"],
            path: None,
            failed: Some("bpffs: FAILED: {dir} is not on a bpf filesystem"),
        },
        CheckCase {
            what: "openvswitch without ovs-vsctl on PATH",
            ini: GOOD_INI,
            args: &[],
            path: Some("/usr/sbin:/sbin"),
            failed: Some("tool ovs-vsctl: FAILED: ovs-vsctl not found on PATH"),
        },
        CheckCase {
            what: "a database below a regular file",
            ini: GOOD_INI,
            args: &["--db", "{dir}/neutron.conf/xdhcp.db"],
            path: None,
            failed: Some("database: FAILED: database directory {dir}/neutron.conf"),
        },
        CheckCase {
            what: "run's TOML options that do not parse",
            ini: GOOD_INI,
            args: &["--config", "{dir}/neutron.conf"],
            path: None,
            failed: Some("agent options: FAILED: config file {dir}/neutron.conf"),
        },
    ];
    let bin = xdhcp_bin();
    for case in cases {
        let scratch = Scratch::new("check");
        let dir = scratch.0.to_str().unwrap().to_string();
        let bpffs = format!("/sys/fs/bpf/xdhcp-check-case-{}", std::process::id());
        let fill = |s: &str| s.replace("{dir}", &dir).replace("{bpffs}", &bpffs);
        std::fs::write(
            scratch.0.join("neutron.conf"),
            fill("[DEFAULT]\ntransport_url = rabbit://u:p@127.0.0.1:5672/\nstate_path = {dir}/state\n"),
        )
        .unwrap();
        std::fs::write(scratch.0.join("dhcp_agent.ini"), fill(case.ini)).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("--config-file")
            .arg(scratch.0.join("neutron.conf"))
            .arg("--config-file")
            .arg(scratch.0.join("dhcp_agent.ini"));
        if case.args.first() == Some(&"--config") {
            cmd.arg("check").args(case.args.iter().map(|a| fill(a)));
        } else {
            cmd.args(case.args.iter().map(|a| fill(a))).arg("check");
        }
        if let Some(path) = case.path {
            cmd.env("PATH", path);
        }
        let out = cmd.output().expect("running xdhcp check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("FAILED")).collect();
        match case.failed {
            None => {
                assert!(out.status.success(), "{}: {}", case.what, text(&out));
                for name in [
                    "config files",
                    "agent settings",
                    "bpffs",
                    "kernel",
                    "tool ip",
                ] {
                    assert!(
                        stdout
                            .lines()
                            .any(|l| l.starts_with(&format!("{name}: ok"))),
                        "{}: no `{name}: ok` line: {}",
                        case.what,
                        text(&out)
                    );
                }
                assert!(
                    stdout.contains("tool ovs-vsctl: ok") && stdout.contains("database: ok"),
                    "{}: {}",
                    case.what,
                    text(&out)
                );
            }
            Some(expected) => {
                let expected = fill(expected);
                assert!(!out.status.success(), "{}: {}", case.what, text(&out));
                assert!(
                    failed.len() == 1 && failed[0].starts_with(&expected),
                    "{}: want one FAILED line starting {expected:?}: {}",
                    case.what,
                    text(&out)
                );
            }
        }
        // A check creates nothing: no pin directory, no database, no state.
        assert!(
            !Path::new(&bpffs).exists(),
            "{}: {bpffs} created",
            case.what
        );
        assert!(
            !scratch.0.join("state").exists(),
            "{}: state_path created",
            case.what
        );
    }
}

/// The .deb that `cargo xtask package` builds (its code, on the binary under
/// test): control fields, contents, installed with dpkg into a throwaway
/// root, where the binary runs and the units are where systemd looks.
#[test]
fn deb_builds_installs_into_a_root_and_runs() {
    let scratch = Scratch::new("deb");
    let ws = workspace();
    let deb = package::build_deb(&ws, &xdhcp_bin(), &scratch.0).expect("building the .deb");
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let manifest = std::fs::read_to_string(ws.join("dhcp-user/Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("dhcp-user's version");
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("xdhcp_{version}_{}.deb", arch.trim()),
        "named package_version_arch.deb"
    );

    let field = |name: &str| {
        let out = Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "xdhcp");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch.trim());
    assert!(
        field("Depends").contains("iproute2"),
        "{}",
        field("Depends")
    );
    assert_eq!(field("Recommends"), "openvswitch-switch");
    assert!(!field("Description").is_empty());

    let root = scratch.0.join("root");
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    for file in ["status", "available"] {
        std::fs::write(admin.join(file), "").unwrap();
    }
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .arg(format!("--log={}", scratch.0.join("dpkg.log").display()))
            .args(["--force-depends", "--force-not-root"])
            .args(args)
            .output()
            .expect("running dpkg");
        assert!(out.status.success(), "dpkg {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    dpkg(&["--install", deb.to_str().unwrap()]);
    assert!(
        dpkg(&["--status", "xdhcp"]).contains("Status: install ok installed"),
        "dpkg has it installed"
    );

    let out = Command::new(root.join("usr/bin/xdhcp"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).trim() == format!("xdhcp {version}"),
        "the installed binary runs: {}",
        text(&out)
    );
    for unit in UNITS {
        let installed = std::fs::read_to_string(root.join("lib/systemd/system").join(unit))
            .unwrap_or_else(|e| panic!("{unit} not installed: {e}"));
        assert_eq!(installed, unit_text(unit), "{unit} as shipped");
    }
    for doc in ["README.md", "operations.md", "copyright"] {
        assert!(
            root.join("usr/share/doc/xdhcp").join(doc).is_file(),
            "{doc} installed"
        );
    }
    // The example section is read without a single unknown key.
    let example = root.join("usr/share/doc/xdhcp/examples/dhcp_agent.ini");
    let (settings, warnings) = xdhcp::config::oslo::load(&[example]).expect("the example parses");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(settings.bpffs, Path::new("/sys/fs/bpf/xdhcp"));

    // The agent started from the installed binary, as the unit starts it: on
    // a neutron.conf and the example section (its bpffs and database moved
    // to this test's, the broker unreachable). It serves (the daemon holds
    // its lock, `status` finds it) and says the broker is down.
    let tag = format!("pkg{}", std::process::id());
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/xdhcp-test-{tag}"));
    let state = root.join("var/lib/neutron");
    std::fs::create_dir_all(&state).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let neutron_conf = root.join("neutron.conf");
    std::fs::write(
        &neutron_conf,
        format!(
            "[DEFAULT]\nhost = {tag}\nstate_path = {}\ntransport_url = rabbit://guest:guest@127.0.0.1:{closed}/\n\
             interface_driver = linuxbridge\n[agent]\nreport_interval = 1\n",
            state.display()
        ),
    )
    .unwrap();
    let ini = root.join("dhcp_agent.ini");
    let example_text =
        std::fs::read_to_string(root.join("usr/share/doc/xdhcp/examples/dhcp_agent.ini")).unwrap();
    std::fs::write(
        &ini,
        example_text.replace(
            "bpffs = /sys/fs/bpf/xdhcp",
            &format!("bpffs = {}", bpffs.display()),
        ),
    )
    .unwrap();
    let installed = root.join("usr/bin/xdhcp");
    let files = [
        "--config-file",
        neutron_conf.to_str().unwrap(),
        "--config-file",
        ini.to_str().unwrap(),
    ];
    let mut agent = Command::new(&installed)
        .args(files)
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let out = Command::new(&installed)
            .args(files)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if !report["agent"].is_null() {
            assert!(
                !out.status.success(),
                "healthy without a broker: {report:#}"
            );
            break report;
        }
        assert!(
            Instant::now() < end && agent.try_wait().unwrap().is_none(),
            "the installed agent never reported: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(report["pid"], serde_json::json!(agent.id()), "{report:#}");
    assert_eq!(
        report["agent"]["broker_connected"],
        serde_json::json!(false)
    );
    assert!(
        state.join("xdhcp/xdhcp.db").exists(),
        "its database under state_path"
    );
    let down = Command::new(&installed)
        .args(files)
        .arg("down")
        .output()
        .unwrap();
    assert!(down.status.success(), "xdhcp down: {}", text(&down));
    let _ = agent.wait();
    assert!(!bpffs.exists(), "{} left", bpffs.display());
    std::fs::remove_dir_all(&state).unwrap();
    std::fs::remove_file(&neutron_conf).unwrap();
    std::fs::remove_file(&ini).unwrap();

    // Removed again, it leaves no file behind in the root.
    dpkg(&["--purge", "xdhcp"]);
    assert!(!root.join("usr/bin/xdhcp").exists(), "purged");
}

/// xdhcp-agent.service's capabilities reach a state_path owned by another
/// user (neutron's /var/lib/neutron): `xdhcp check` passes with them, and
/// fails on the database without CAP_DAC_OVERRIDE (why the unit lists it).
#[test]
fn agent_unit_capabilities_write_a_state_path_owned_by_neutron() {
    let scratch = Scratch::new("agentcaps");
    let state = scratch.0.join("state");
    std::fs::create_dir(&state).unwrap();
    // nobody:nogroup, 0755: as /var/lib/neutron is neutron's.
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let conf = scratch.0.join("neutron.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\ntransport_url = rabbit://u:p@127.0.0.1:5672/\nstate_path = {}\n\
             interface_driver = linuxbridge\n[xdhcp]\nbpffs = /sys/fs/bpf/xdhcp-agentcaps-{}\n",
            state.display(),
            std::process::id()
        ),
    )
    .unwrap();
    let caps = unit_caps("xdhcp-agent.service");
    assert!(caps.iter().any(|c| c == "CAP_DAC_OVERRIDE"), "{caps:?}");
    let without: Vec<String> = caps
        .iter()
        .filter(|c| *c != "CAP_DAC_OVERRIDE")
        .cloned()
        .collect();
    let check = |caps: &[String]| {
        setpriv(caps)
            .arg(xdhcp_bin())
            .arg("--config-file")
            .arg(&conf)
            .arg("check")
            .output()
            .expect("running setpriv … xdhcp check")
    };
    let with = check(&caps);
    assert!(
        with.status.success(),
        "with the unit's capabilities: {}",
        text(&with)
    );
    let denied = check(&without);
    let stdout = String::from_utf8_lossy(&denied.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|l| l.contains("FAILED")).collect();
    assert!(
        !denied.status.success()
            && failed.len() == 1
            && failed[0].starts_with(&format!(
                "database: FAILED: database directory {}/xdhcp is not writable",
                state.display()
            )),
        "without CAP_DAC_OVERRIDE: {}",
        text(&denied)
    );
    assert!(!state.join("xdhcp").exists(), "check created nothing");
}
