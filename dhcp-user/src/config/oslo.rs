//! neutron-dhcp-agent's configuration files, read the way oslo.config reads them.
//!
//! `xdhcp agent --config-file neutron.conf --config-file dhcp_agent.ini` takes
//! the same files as the agent it replaces. The ini dialect is oslo.config's
//! (its `iniparser` plus `cfg`):
//!
//! * `[section]` headers; `DEFAULT` is matched exactly, any other section name
//!   case-insensitively (oslo lowercases them, so `[AGENT]` is `[agent]`);
//! * `key = value` or `key: value`, whichever separator comes first; values
//!   are trimmed and lose one pair of surrounding `"` or `'` quotes;
//! * lines whose first character is `#` or `;` are comments; there are no
//!   comments at the end of a line;
//! * later files, and later lines, win per section and key;
//! * `$name`, `${name}` and `${section.name}` are replaced by that option's
//!   value, `$$` (or `\$`) by a literal `$`.
//!
//! oslo.config reads a line that starts with a blank as the continuation of
//! the line before, so an indented option silently becomes part of the value
//! above it. xdhcp refuses such lines instead. Keys xdhcp has no use for are
//! reported back, one warning per section and key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::config::AgentConfig;

/// The section of ungrouped options, the only one oslo.config matches case-sensitively.
const DEFAULT: &str = "DEFAULT";

/// The port RabbitMQ listens on when transport_url names none.
const AMQP_PORT: u16 = 5672;

/// The neutron-dhcp-agent options xdhcp reads, and xdhcp's own `[xdhcp]` ones.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// `[DEFAULT] host`: the name the agent reports under (default: this machine's hostname).
    pub host: String,
    /// `[DEFAULT] transport_url`: the message broker(s); None when unset.
    pub transport_url: Option<TransportUrl>,
    /// `[DEFAULT] control_exchange`: the AMQP exchange Neutron's RPC uses.
    pub control_exchange: String,
    /// `[DEFAULT] state_path`: Neutron's state directory.
    pub state_path: PathBuf,
    /// `[DEFAULT] interface_driver`: how DHCP ports are plugged; None when unset.
    pub interface_driver: Option<InterfaceDriver>,
    /// `[ovs] integration_bridge`, or its older name `[DEFAULT] ovs_integration_bridge`.
    pub ovs_integration_bridge: String,
    /// `[DEFAULT] ovs_use_veth`: plug DHCP ports through veth pairs.
    pub ovs_use_veth: bool,
    /// `[DEFAULT] dhcp_lease_duration`: lease seconds, -1 for infinite.
    pub dhcp_lease_duration: i64,
    /// `[DEFAULT] dns_domain`: the domain handed out in option 15.
    pub dns_domain: String,
    /// `[DEFAULT] enable_isolated_metadata`: metadata route on subnets without a router.
    pub enable_isolated_metadata: bool,
    /// `[DEFAULT] force_metadata`: metadata route on every subnet.
    pub force_metadata: bool,
    /// `[DEFAULT] dnsmasq_dns_servers`, IPv4 entries only.
    pub dnsmasq_dns_servers: Vec<Ipv4Addr>,
    /// `[DEFAULT] dnsmasq_config_file`: extra dnsmasq options; None when unset.
    pub dnsmasq_config_file: Option<PathBuf>,
    /// The `dhcp-option`/`dhcp-option-force` lines of `dnsmasq_config_file`.
    pub dnsmasq_options: Vec<DnsmasqOption>,
    /// `[DEFAULT] resync_interval`: seconds between resyncs after a failure.
    pub resync_interval: u64,
    /// `[agent] report_interval`: seconds between state reports; 0 disables them.
    pub report_interval: f64,
    /// `[agent] availability_zone`: the zone the agent reports.
    pub availability_zone: String,
    /// `[ovs] ovsdb_connection`: where the OVS database listens.
    pub ovsdb_connection: String,
    /// `[oslo_messaging_rabbit] amqp_durable_queues`: declare durable queues.
    pub amqp_durable_queues: bool,
    /// `[oslo_messaging_rabbit] rabbit_quorum_queue`: declare quorum queues.
    pub rabbit_quorum_queue: bool,
    /// `[oslo_messaging_rabbit] heartbeat_timeout_threshold`: AMQP heartbeat seconds, 0 off.
    pub heartbeat_timeout_threshold: u64,
    /// `[oslo_messaging_rabbit] amqp_auto_delete`: declare auto-delete queues and exchanges.
    pub amqp_auto_delete: bool,
    /// `[xdhcp] bpffs`: where xdhcp pins its maps and programs.
    pub bpffs: PathBuf,
    /// `[xdhcp] db`: xdhcp's database (default: state_path/xdhcp/xdhcp.db).
    pub db: PathBuf,
    /// `[xdhcp] enable_relay`: answer requests relayed through giaddr.
    pub enable_relay: bool,
    /// `[xdhcp] relay_addresses`: with enable_relay, the only relays answered (empty: any).
    pub relay_addresses: Vec<Ipv4Addr>,
    /// `[xdhcp] metrics_address`: where the Prometheus endpoint listens (None: off).
    pub metrics_address: Option<SocketAddr>,
    /// `[xdhcp] metrics_max_networks`: networks that get per-network series.
    pub metrics_max_networks: usize,
}

/// How Neutron plugs the DHCP port into the host (`interface_driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceDriver {
    /// Open vSwitch: `openvswitch` or `neutron.agent.linux.interface.OVSInterfaceDriver`.
    OpenVSwitch,
    /// Linux bridge: `linuxbridge` or `neutron.agent.linux.interface.BridgeInterfaceDriver`.
    LinuxBridge,
}

/// The interface_driver values Neutron accepts for the drivers xdhcp supports.
const INTERFACE_DRIVERS: [(&str, InterfaceDriver); 4] = [
    ("openvswitch", InterfaceDriver::OpenVSwitch),
    ("linuxbridge", InterfaceDriver::LinuxBridge),
    (
        "neutron.agent.linux.interface.OVSInterfaceDriver",
        InterfaceDriver::OpenVSwitch,
    ),
    (
        "neutron.agent.linux.interface.BridgeInterfaceDriver",
        InterfaceDriver::LinuxBridge,
    ),
];

/// oslo.messaging's transport_url for RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportUrl {
    /// The brokers, in the order written.
    pub hosts: Vec<RabbitHost>,
    /// The virtual host, percent-decoded; "/" is RabbitMQ's default one.
    pub virtual_host: String,
}

/// One broker of a transport_url, with the credentials to use on it.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitHost {
    /// User name, percent-decoded ("guest" when the URL gives no credentials).
    pub user: String,
    /// Password, percent-decoded ("guest" when the URL gives no credentials).
    pub password: String,
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port (5672 when the URL names none).
    pub port: u16,
}

impl fmt::Debug for RabbitHost {
    /// Like a derived Debug, but never shows the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitHost")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

/// A `dhcp-option` or `dhcp-option-force` line of the dnsmasq config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsmasqOption {
    /// True for `dhcp-option-force` (sent even when the client did not ask for it).
    pub force: bool,
    /// The option as written: a number ("26") or the name after `option:` ("dns-server").
    pub name: String,
    /// Everything after the comma that follows the option ("" when nothing does).
    pub value: String,
    /// The dnsmasq config file, as configured.
    pub file: PathBuf,
    /// The line, counted from 1.
    pub line: usize,
}

impl TransportUrl {
    /// One `amqp://user:pass@host:port/vhost` URI per broker, escaped for lapin.
    pub fn amqp_uris(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| {
                let host = if h.host.contains(':') {
                    format!("[{}]", h.host)
                } else {
                    h.host.clone()
                };
                format!(
                    "amqp://{}:{}@{}:{}/{}",
                    percent_encode(&h.user),
                    percent_encode(&h.password),
                    host,
                    h.port,
                    percent_encode(&self.virtual_host)
                )
            })
            .collect()
    }
}

impl AgentSettings {
    /// The options the DHCP answers depend on, as the daemon's AgentConfig.
    pub fn to_agent_config(&self) -> AgentConfig {
        AgentConfig {
            dhcp_lease_duration: self.dhcp_lease_duration,
            dns_domain: self.dns_domain.clone(),
            enable_isolated_metadata: self.enable_isolated_metadata,
            force_metadata: self.force_metadata,
            dnsmasq_dns_servers: self.dnsmasq_dns_servers.clone(),
            enable_relay: self.enable_relay,
            relay_addresses: self.relay_addresses.clone(),
            ..AgentConfig::default()
        }
    }
}

/// Reads the `--config-file`s in order; returns the settings and one warning per ignored key.
pub fn load(files: &[PathBuf]) -> Result<(AgentSettings, Vec<String>)> {
    let texts = files
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))
                .map(|text| (path.display().to_string(), text))
        })
        .collect::<Result<Vec<_>>>()?;
    parse_files(&texts)
}

/// Parses (file name, text) pairs as `load` reads files; only dnsmasq_config_file is read from disk.
pub fn parse_files(texts: &[(String, String)]) -> Result<(AgentSettings, Vec<String>)> {
    parse_files_with(texts, &|path| std::fs::read_to_string(path))
}

/// A reader of the one file the settings name (`dnsmasq_config_file`).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// `parse_files`, with `read` in place of the file system for
/// dnsmasq_config_file (the fuzz target keeps it in memory).
pub fn parse_files_with(
    texts: &[(String, String)],
    read: ReadFile<'_>,
) -> Result<(AgentSettings, Vec<String>)> {
    let mut values: BTreeMap<(String, String), Raw> = BTreeMap::new();
    let mut warned: BTreeSet<(String, String)> = BTreeSet::new();
    let mut warnings = Vec::new();
    for (order, (file, text)) in texts.iter().enumerate() {
        for a in parse_ini(file, text)? {
            let section = normalize_section(&a.section);
            let id = (section.clone(), a.key.clone());
            if !is_known(&section, &a.key) && warned.insert(id.clone()) {
                warnings.push(format!(
                    "{file}: [{}] {} is not used by xdhcp",
                    a.section, a.key
                ));
            }
            values.insert(
                id,
                Raw {
                    value: a.value,
                    file: file.clone(),
                    line: a.line,
                    section: a.section,
                    order,
                },
            );
        }
    }
    let values = Values {
        values,
        host: machine_hostname(),
        read,
    };
    let settings = build(&values, &mut warnings)?;
    Ok((settings, warnings))
}

/// The options xdhcp reads: (section as oslo normalizes it, key).
const KNOWN: &[(&str, &str)] = &[
    (DEFAULT, "host"),
    (DEFAULT, "transport_url"),
    (DEFAULT, "control_exchange"),
    (DEFAULT, "state_path"),
    (DEFAULT, "interface_driver"),
    (DEFAULT, "ovs_integration_bridge"),
    (DEFAULT, "ovs_use_veth"),
    (DEFAULT, "dhcp_lease_duration"),
    (DEFAULT, "dns_domain"),
    (DEFAULT, "enable_isolated_metadata"),
    (DEFAULT, "force_metadata"),
    (DEFAULT, "dnsmasq_dns_servers"),
    (DEFAULT, "dnsmasq_config_file"),
    (DEFAULT, "resync_interval"),
    ("agent", "report_interval"),
    ("agent", "availability_zone"),
    ("ovs", "ovsdb_connection"),
    ("ovs", "integration_bridge"),
    ("oslo_messaging_rabbit", "amqp_durable_queues"),
    ("oslo_messaging_rabbit", "rabbit_quorum_queue"),
    ("oslo_messaging_rabbit", "heartbeat_timeout_threshold"),
    ("oslo_messaging_rabbit", "amqp_auto_delete"),
    ("xdhcp", "bpffs"),
    ("xdhcp", "db"),
    ("xdhcp", "enable_relay"),
    ("xdhcp", "relay_addresses"),
    ("xdhcp", "metrics_address"),
    ("xdhcp", "metrics_max_networks"),
];

/// Whether xdhcp reads this option.
fn is_known(section: &str, key: &str) -> bool {
    KNOWN.iter().any(|&(s, k)| s == section && k == key)
}

/// The default of a known option as the text oslo.config would substitute (host aside).
fn default_text(section: &str, key: &str) -> Option<&'static str> {
    if !is_known(section, key) {
        return None;
    }
    let text = match (section, key) {
        (DEFAULT, "control_exchange") => "neutron",
        (DEFAULT, "state_path") => "/var/lib/neutron",
        (DEFAULT, "ovs_integration_bridge") | ("ovs", "integration_bridge") => "br-int",
        (DEFAULT, "ovs_use_veth") => "false",
        (DEFAULT, "dhcp_lease_duration") => "86400",
        (DEFAULT, "dns_domain") => "openstacklocal",
        (DEFAULT, "enable_isolated_metadata") | (DEFAULT, "force_metadata") => "false",
        (DEFAULT, "resync_interval") => "5",
        ("agent", "report_interval") => "30",
        ("agent", "availability_zone") => "nova",
        ("ovs", "ovsdb_connection") => "tcp:127.0.0.1:6640",
        ("oslo_messaging_rabbit", "heartbeat_timeout_threshold") => "60",
        ("oslo_messaging_rabbit", _) => "false",
        ("xdhcp", "bpffs") => "/sys/fs/bpf/xdhcp",
        ("xdhcp", "db") => "$state_path/xdhcp/xdhcp.db",
        ("xdhcp", "enable_relay") => "false",
        ("xdhcp", "metrics_max_networks") => "100",
        _ => "",
    };
    Some(text)
}

/// oslo.config's group names: DEFAULT as is, every other section lowercased.
fn normalize_section(section: &str) -> String {
    if section == DEFAULT {
        section.to_string()
    } else {
        section.to_lowercase()
    }
}

/// This machine's hostname, Neutron's default `host`.
fn machine_hostname() -> String {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.nodename().to_str().map(str::to_string))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// One `key = value` line.
struct Assignment {
    line: usize,
    section: String,
    key: String,
    value: String,
}

/// Splits one file into assignments, refusing what oslo.config would misread or refuse.
fn parse_ini(file: &str, text: &str) -> Result<Vec<Assignment>> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    // The key on the line just before, which an indented line would continue.
    let mut prev_key: Option<(usize, String)> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            prev_key = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let why = match &prev_key {
                Some((l, k)) => format!(
                    "oslo.config would read it as a continuation of the line before \
                     (part of the value of {k} on line {l})"
                ),
                None => "oslo.config would read it as a continuation of the line before \
                         and, with no option there to continue, refuse the file"
                    .to_string(),
            };
            bail!(
                "{file}: line {n}: {line:?} starts with a blank: {why}; \
                 options and comments must start in column 1"
            );
        }
        prev_key = None;
        if line.starts_with('[') {
            if !line.ends_with(']') {
                bail!("{file}: line {n}: {line:?}: a section header must end with ']'");
            }
            if line.len() <= 2 {
                bail!("{file}: line {n}: {line:?}: empty section name");
            }
            section = Some(line[1..line.len() - 1].to_string());
        } else if line.starts_with(['#', ';']) {
            continue;
        } else {
            let Some((key, value)) = split_key_value(line) else {
                let bom = if n == 1 && line.starts_with('\u{feff}') {
                    " (the file starts with a byte-order mark)"
                } else {
                    ""
                };
                bail!(
                    "{file}: line {n}: {line:?} is neither a [section], a comment \
                     nor key = value (no '=' or ':'){bom}"
                );
            };
            if key.is_empty() {
                bail!("{file}: line {n}: {line:?}: empty key");
            }
            let Some(section) = &section else {
                bail!(
                    "{file}: line {n}: {line:?}: option before any [section] \
                     (options without a section go under [DEFAULT])"
                );
            };
            prev_key = Some((n, key.to_string()));
            out.push(Assignment {
                line: n,
                section: section.clone(),
                key: key.to_string(),
                value: value.to_string(),
            });
        }
    }
    Ok(out)
}

/// Splits at the first '=' or ':', trims, and drops one pair of surrounding quotes.
fn split_key_value(line: &str) -> Option<(&str, &str)> {
    let at = line.find(['=', ':'])?;
    let key = line[..at].trim();
    let value = line[at + 1..].trim();
    let value = match value.chars().next() {
        Some(q @ ('"' | '\'')) if value.ends_with(q) => {
            if value.len() == 1 {
                ""
            } else {
                &value[1..value.len() - 1]
            }
        }
        _ => value,
    };
    Some((key, value))
}

/// A value as the files give it.
struct Raw {
    value: String,
    file: String,
    line: usize,
    section: String,
    /// Which file, counted from 0: the later one wins.
    order: usize,
}

/// Every value the files set, by (normalized section, key), with the defaults behind them.
struct Values<'a> {
    values: BTreeMap<(String, String), Raw>,
    host: String,
    read: ReadFile<'a>,
}

/// An option's value after substitution, and where it came from (for messages).
struct Val {
    text: String,
    at: String,
}

impl Val {
    /// An error naming where the value came from, with a hint about inline comments.
    fn error(&self, what: &str) -> anyhow::Error {
        let hint = if self.text.contains(" #") || self.text.contains(" ;") {
            " (oslo.config has no comments at the end of a line)"
        } else {
            ""
        };
        anyhow!("{}: {what}{hint}", self.at)
    }
}

/// How deep `$name` may refer to options that refer to options.
const MAX_SUBSTITUTION_DEPTH: usize = 10;

impl Values<'_> {
    /// The raw value of (section, key) if a file sets it.
    fn raw(&self, section: &str, key: &str) -> Option<&Raw> {
        self.values.get(&(section.to_string(), key.to_string()))
    }

    /// A known option's value: from the files, else its default; substituted.
    fn get(&self, section: &str, key: &str) -> Result<Val> {
        match self.raw(section, key) {
            Some(raw) => self.of_raw(section, key, raw),
            None => self.default_val(section, key),
        }
    }

    /// A value the files set, substituted, named by file, line, section and key.
    fn of_raw(&self, section: &str, key: &str, raw: &Raw) -> Result<Val> {
        let at = format!("{}: line {}: [{}] {key}", raw.file, raw.line, raw.section);
        let text = match self.substitute(&raw.value, section, 0) {
            Ok(text) => text,
            // Its value holds passwords: say what went wrong without quoting it.
            Err(_) if key == "transport_url" => bail!(
                "{at}: a $ in the value cannot be substituted: it names no option \
                 xdhcp knows (oslo.config replaces $NAME by that option's value; \
                 write $$ for a $)"
            ),
            Err(e) => return Err(e.context(at)),
        };
        Ok(Val { text, at })
    }

    /// A known option's default, substituted.
    fn default_val(&self, section: &str, key: &str) -> Result<Val> {
        let at = format!("[{section}] {key} (default)");
        let text = if (section, key) == (DEFAULT, "host") {
            self.host.clone()
        } else {
            let text = default_text(section, key).unwrap_or("");
            self.substitute(text, section, 0)
                .with_context(|| at.clone())?
        };
        Ok(Val { text, at })
    }

    /// The value `$name` stands for, read from `section` (None: no such option).
    fn lookup(&self, section: &str, key: &str, depth: usize) -> Result<Option<String>> {
        if let Some(raw) = self.raw(section, key) {
            return self.substitute(&raw.value, section, depth + 1).map(Some);
        }
        if (section, key) == (DEFAULT, "host") {
            return Ok(Some(self.host.clone()));
        }
        match default_text(section, key) {
            Some(text) => self.substitute(text, section, depth + 1).map(Some),
            None => Ok(None),
        }
    }

    /// oslo.config's `$name`, `${name}`, `${section.name}` and `$$` (Python's safe_substitute).
    fn substitute(&self, text: &str, section: &str, depth: usize) -> Result<String> {
        if !text.contains('$') {
            return Ok(text.to_string());
        }
        if depth > MAX_SUBSTITUTION_DEPTH {
            bail!("$-substitutions nest more than {MAX_SUBSTITUTION_DEPTH} deep (a loop?)");
        }
        let text = text.replace("\\$", "$$");
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
                continue;
            }
            let braced = after
                .strip_prefix('{')
                .and_then(|b| b.find('}').map(|end| (&b[..end], &b[end + 1..])))
                .filter(|(name, _)| identifier_len(name) == name.len() && !name.is_empty());
            let (name, r) = match braced {
                Some(found) => found,
                None => {
                    let len = identifier_len(after);
                    if len == 0 {
                        // Not a placeholder: Python's safe_substitute leaves it be.
                        out.push('$');
                        rest = after;
                        continue;
                    }
                    (&after[..len], &after[len..])
                }
            };
            let found = match name.split_once('.') {
                Some((group, key)) => self.lookup(&normalize_section(group), key, depth)?,
                None => match self.lookup(section, name, depth)? {
                    Some(v) => Some(v),
                    None => self.lookup(DEFAULT, name, depth)?,
                },
            };
            let Some(value) = found else {
                bail!(
                    "${name} names no option xdhcp knows nor one the files set \
                     (oslo.config replaces $NAME by that option's value; write $$ for a $)"
                );
            };
            out.push_str(&value);
            rest = r;
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A string option that must not be empty.
    fn string(&self, section: &str, key: &str) -> Result<String> {
        let v = self.get(section, key)?;
        if v.text.is_empty() {
            return Err(v.error("must not be empty"));
        }
        Ok(v.text)
    }

    /// A path option that must not be empty.
    fn path(&self, section: &str, key: &str) -> Result<PathBuf> {
        self.string(section, key).map(PathBuf::from)
    }

    /// A boolean as oslo.config reads it.
    fn boolean(&self, section: &str, key: &str) -> Result<bool> {
        let v = self.get(section, key)?;
        match v.text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(v.error(&format!(
                "{:?} is not a boolean (true/false, yes/no, on/off, 1/0)",
                v.text
            ))),
        }
    }

    /// An integer, and where it came from.
    fn integer(&self, section: &str, key: &str) -> Result<(i64, Val)> {
        let v = self.get(section, key)?;
        match v.text.strip_prefix('+').unwrap_or(&v.text).parse::<i64>() {
            Ok(n) => Ok((n, v)),
            Err(_) => Err(v.error(&format!("{:?} is not an integer", v.text))),
        }
    }

    /// A non-negative integer.
    fn unsigned(&self, section: &str, key: &str) -> Result<u64> {
        let (n, v) = self.integer(section, key)?;
        u64::try_from(n).map_err(|_| v.error(&format!("must not be negative, got {n}")))
    }

    /// A finite, non-negative number.
    fn seconds(&self, section: &str, key: &str) -> Result<f64> {
        let v = self.get(section, key)?;
        match v.text.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
            Ok(_) => Err(v.error(&format!(
                "{:?} is not a finite number of seconds >= 0",
                v.text
            ))),
            Err(_) => Err(v.error(&format!("{:?} is not a number", v.text))),
        }
    }

    /// A comma-separated list; items trimmed, empty ones dropped.
    fn list(&self, section: &str, key: &str) -> Result<(Vec<String>, Val)> {
        let v = self.get(section, key)?;
        let items = v
            .text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        Ok((items, v))
    }
}

/// Turns the merged values into settings, adding warnings for what it skips.
fn build(v: &Values<'_>, warnings: &mut Vec<String>) -> Result<AgentSettings> {
    let state_path = v.path(DEFAULT, "state_path")?;

    let transport_url = {
        let url = v.get(DEFAULT, "transport_url")?;
        if url.text.is_empty() {
            None
        } else {
            let (parsed, notes) = parse_transport_url(&url.text).map_err(|e| url.error(&e))?;
            warnings.extend(notes.into_iter().map(|n| format!("{}: {n}", url.at)));
            Some(parsed)
        }
    };

    let interface_driver = {
        let d = v.get(DEFAULT, "interface_driver")?;
        if d.text.is_empty() {
            None
        } else {
            let found = INTERFACE_DRIVERS
                .iter()
                .find(|(name, _)| *name == d.text)
                .map(|&(_, driver)| driver);
            match found {
                Some(driver) => Some(driver),
                None => {
                    let accepted: Vec<&str> = INTERFACE_DRIVERS.iter().map(|(n, _)| *n).collect();
                    return Err(d.error(&format!(
                        "{:?} is not an interface driver xdhcp supports; accepted: {}",
                        d.text,
                        accepted.join(", ")
                    )));
                }
            }
        }
    };

    // oslo.config looks at the files latest first and, within a file, at the
    // current name before the deprecated one.
    let ovs_integration_bridge = {
        let new = v.raw("ovs", "integration_bridge");
        let old = v.raw(DEFAULT, "ovs_integration_bridge");
        let (section, key) = match (new, old) {
            (Some(n), Some(o)) if o.order > n.order => (DEFAULT, "ovs_integration_bridge"),
            (None, Some(_)) => (DEFAULT, "ovs_integration_bridge"),
            _ => ("ovs", "integration_bridge"),
        };
        v.string(section, key)?
    };

    let dhcp_lease_duration = {
        let (n, at) = v.integer(DEFAULT, "dhcp_lease_duration")?;
        let max = i64::from(u32::MAX - 1);
        if n != -1 && !(1..=max).contains(&n) {
            return Err(at.error(&format!(
                "must be -1 (infinite) or 1..={max} seconds, got {n}"
            )));
        }
        n
    };

    let dnsmasq_dns_servers = {
        let (items, at) = v.list(DEFAULT, "dnsmasq_dns_servers")?;
        let mut servers = Vec::new();
        for item in items {
            match item.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) => servers.push(a),
                Ok(IpAddr::V6(_)) => warnings.push(format!(
                    "{}: IPv6 server {item} is skipped: xdhcp serves DHCPv4 only",
                    at.at
                )),
                Err(_) => return Err(at.error(&format!("{item:?} is not an IP address"))),
            }
        }
        super::check_dns_servers(&servers).map_err(|e| at.error(&format!("{e}")))?;
        servers
    };

    let dns_domain = {
        let d = v.get(DEFAULT, "dns_domain")?;
        super::check_dns_domain(&d.text).map_err(|e| d.error(&format!("{e}")))?;
        d.text
    };

    let relay_addresses = {
        let (items, at) = v.list("xdhcp", "relay_addresses")?;
        items
            .iter()
            .map(|item| {
                item.parse::<Ipv4Addr>()
                    .map_err(|_| at.error(&format!("{item:?} is not an IPv4 address")))
            })
            .collect::<Result<Vec<_>>>()?
    };

    let metrics_address = {
        let a = v.get("xdhcp", "metrics_address")?;
        if a.text.is_empty() {
            None
        } else {
            Some(a.text.parse::<SocketAddr>().map_err(|_| {
                a.error(&format!(
                    "{:?} is not an address and port (127.0.0.1:9411, [::]:9411)",
                    a.text
                ))
            })?)
        }
    };

    let (dnsmasq_config_file, dnsmasq_options) = {
        let f = v.get(DEFAULT, "dnsmasq_config_file")?;
        if f.text.is_empty() {
            (None, Vec::new())
        } else {
            let path = PathBuf::from(&f.text);
            let text =
                (v.read)(&path).with_context(|| format!("{}: reading {}", f.at, path.display()))?;
            let options = parse_dnsmasq(&path, &text, warnings)?;
            (Some(path), options)
        }
    };

    let db = match v.raw("xdhcp", "db") {
        Some(_) => v.path("xdhcp", "db")?,
        None => state_path.join("xdhcp/xdhcp.db"),
    };

    Ok(AgentSettings {
        host: v.string(DEFAULT, "host")?,
        transport_url,
        control_exchange: v.string(DEFAULT, "control_exchange")?,
        state_path,
        interface_driver,
        ovs_integration_bridge,
        ovs_use_veth: v.boolean(DEFAULT, "ovs_use_veth")?,
        dhcp_lease_duration,
        dns_domain,
        enable_isolated_metadata: v.boolean(DEFAULT, "enable_isolated_metadata")?,
        force_metadata: v.boolean(DEFAULT, "force_metadata")?,
        dnsmasq_dns_servers,
        dnsmasq_config_file,
        dnsmasq_options,
        resync_interval: v.unsigned(DEFAULT, "resync_interval")?,
        report_interval: v.seconds("agent", "report_interval")?,
        availability_zone: v.get("agent", "availability_zone")?.text,
        ovsdb_connection: v.string("ovs", "ovsdb_connection")?,
        amqp_durable_queues: v.boolean("oslo_messaging_rabbit", "amqp_durable_queues")?,
        rabbit_quorum_queue: v.boolean("oslo_messaging_rabbit", "rabbit_quorum_queue")?,
        heartbeat_timeout_threshold: v
            .unsigned("oslo_messaging_rabbit", "heartbeat_timeout_threshold")?,
        amqp_auto_delete: v.boolean("oslo_messaging_rabbit", "amqp_auto_delete")?,
        bpffs: v.path("xdhcp", "bpffs")?,
        db,
        enable_relay: v.boolean("xdhcp", "enable_relay")?,
        relay_addresses,
        metrics_address,
        metrics_max_networks: v.unsigned("xdhcp", "metrics_max_networks")? as usize,
    })
}

/// Parses a transport_url as oslo.messaging does; the error never quotes it (it holds passwords).
fn parse_transport_url(url: &str) -> std::result::Result<(TransportUrl, Vec<String>), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("is not a URL (expected rabbit://user:pass@host:port/vhost)".to_string());
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "rabbit" && scheme != "amqp" {
        return Err(format!(
            "scheme {scheme:?} is not supported: xdhcp talks to RabbitMQ (rabbit:// or amqp://)"
        ));
    }
    let mut notes = Vec::new();
    let netloc_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (netloc, tail) = rest.split_at(netloc_end);
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, extra) = tail.split_at(path_end);
    if !extra.is_empty() {
        notes.push("the URL's query and fragment are not used by xdhcp".to_string());
    }
    let virtual_host = match path.strip_prefix('/') {
        Some(p) if !p.is_empty() => percent_decode(p),
        _ => "/".to_string(),
    };

    let mut hosts = Vec::new();
    let (mut with_creds, mut without_creds) = (0, 0);
    for item in netloc.split(',').filter(|h| !h.is_empty()) {
        let (user, password, hostport) = match item.rsplit_once('@') {
            Some((userinfo, hostport)) => match userinfo.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p)), hostport),
                None => (Some(percent_decode(userinfo)), None, hostport),
            },
            None => (None, None, item),
        };
        if user.is_some() && password.is_some() {
            with_creds += 1;
        } else {
            without_creds += 1;
        }
        let (host, port) = split_host_port(hostport)?;
        // Without credentials the broker client falls back to RabbitMQ's guest account.
        let password = match (&user, password) {
            (_, Some(p)) => p,
            (None, None) => "guest".to_string(),
            (Some(_), None) => String::new(),
        };
        hosts.push(RabbitHost {
            user: user.unwrap_or_else(|| "guest".to_string()),
            password,
            host,
            port,
        });
    }
    if with_creds > 0 && without_creds > 0 {
        notes.push(
            "some hosts have a user and password and some do not; \
             those without use guest:guest"
                .to_string(),
        );
    }
    if hosts.is_empty() {
        // oslo.messaging's rabbit driver: no host means guest@localhost.
        hosts.push(RabbitHost {
            user: "guest".to_string(),
            password: "guest".to_string(),
            host: "localhost".to_string(),
            port: AMQP_PORT,
        });
    }
    Ok((
        TransportUrl {
            hosts,
            virtual_host,
        },
        notes,
    ))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address (oslo.utils' parse_host_port).
fn split_host_port(s: &str) -> std::result::Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("has a host with '[' but no ']'".to_string());
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("has junk after a ']' host".to_string()),
        }
    } else if s.matches(':').count() == 1 {
        let (host, port) = s.split_once(':').unwrap_or((s, ""));
        (host, Some(port))
    } else {
        (s, None)
    };
    if host.is_empty() {
        return Err("lists a broker without a host name".to_string());
    }
    let port = match port {
        None => AMQP_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(format!("has a bad port {p:?} for host {host}")),
        },
    };
    Ok((host.to_string(), port))
}

/// Decodes %XX escapes; malformed ones stay as written (like Python's unquote).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: &u8| (*b as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes everything but RFC 3986's unreserved characters ("/" → "%2f").
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Reads a dnsmasq config file's dhcp-option lines; warns about every other option.
fn parse_dnsmasq(
    path: &Path,
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<DnsmasqOption>> {
    let file = path.display();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, ""),
        };
        let force = match key {
            "dhcp-option" => false,
            "dhcp-option-force" => true,
            _ => {
                warnings.push(format!(
                    "{file}: line {n}: dnsmasq option {key} is not used by xdhcp"
                ));
                continue;
            }
        };
        let mut rest = value;
        let mut tags = Vec::new();
        let option = loop {
            let (item, after) = match rest.split_once(',') {
                Some((item, after)) => (item.trim(), after),
                None => (rest.trim(), ""),
            };
            if item.starts_with("tag:") || item.starts_with("set:") {
                tags.push(item);
                rest = after;
                continue;
            }
            rest = after;
            break item;
        };
        if !tags.is_empty() {
            warnings.push(format!(
                "{file}: line {n}: {key} {} is ignored: xdhcp sends the option on every subnet",
                tags.join(",")
            ));
        }
        let name = if let Some(name) = option.strip_prefix("option:") {
            if name.is_empty() {
                bail!("{file}: line {n}: {key}: empty option name after option:");
            }
            name.to_string()
        } else if !option.is_empty() && option.bytes().all(|b| b.is_ascii_digit()) {
            match option.parse::<u8>() {
                Ok(_) => option.to_string(),
                Err(_) => bail!("{file}: line {n}: {key}: option {option} is not 0..=255"),
            }
        } else if ["option6:", "encap:", "vi-encap:", "vendor:"]
            .iter()
            .any(|p| option.starts_with(p))
        {
            warnings.push(format!(
                "{file}: line {n}: dnsmasq option {key}={value} is not used by xdhcp"
            ));
            continue;
        } else {
            bail!(
                "{file}: line {n}: {key}: cannot read the option {option:?} \
                 (expected a number or option:NAME)"
            );
        };
        out.push(DnsmasqOption {
            force,
            name,
            value: rest.trim().to_string(),
            file: path.to_path_buf(),
            line: n,
        });
    }
    Ok(out)
}

/// The length of the oslo.config identifier (`[_a-z][._a-z0-9]*`, any case) `s` starts with.
fn identifier_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = if i == 0 {
            c == '_' || c.is_ascii_alphabetic()
        } else {
            c == '_' || c == '.' || c.is_ascii_alphanumeric()
        };
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Check = fn(&AgentSettings, &[String]);

    /// A file under the temp dir, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "xdhcp-agent-config-{}-{n}-{name}",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// Names the texts file1.ini, file2.ini, … unless a text starts with "NAME|".
    fn files(texts: &[&str]) -> Vec<(String, String)> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| match t.split_once('|') {
                Some((name, text)) if !name.contains('\n') => (name.to_string(), text.to_string()),
                _ => (format!("file{}.ini", i + 1), t.to_string()),
            })
            .collect()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn host(user: &str, password: &str, host: &str, port: u16) -> RabbitHost {
        RabbitHost {
            user: user.into(),
            password: password.into(),
            host: host.into(),
            port,
        }
    }

    fn url(s: &AgentSettings) -> &TransportUrl {
        s.transport_url.as_ref().expect("transport_url set")
    }

    #[test]
    fn reads_settings() {
        let cases: &[(&str, &[&str], Check)] = &[
            ("no files: Neutron's defaults", &[], |s, w| {
                assert!(w.is_empty());
                assert_eq!(s.host, machine_hostname());
                assert!(!s.host.is_empty());
                assert_eq!(s.transport_url, None);
                assert_eq!(s.control_exchange, "neutron");
                assert_eq!(s.state_path, PathBuf::from("/var/lib/neutron"));
                assert_eq!(s.interface_driver, None);
                assert_eq!(s.ovs_integration_bridge, "br-int");
                assert!(!s.ovs_use_veth);
                assert_eq!(s.dhcp_lease_duration, 86400);
                assert_eq!(s.dns_domain, "openstacklocal");
                assert!(!s.enable_isolated_metadata && !s.force_metadata);
                assert!(s.dnsmasq_dns_servers.is_empty());
                assert_eq!(s.dnsmasq_config_file, None);
                assert!(s.dnsmasq_options.is_empty());
                assert_eq!(s.resync_interval, 5);
                assert_eq!(s.report_interval, 30.0);
                assert_eq!(s.availability_zone, "nova");
                assert_eq!(s.ovsdb_connection, "tcp:127.0.0.1:6640");
                assert!(!s.amqp_durable_queues && !s.rabbit_quorum_queue && !s.amqp_auto_delete);
                assert_eq!(s.heartbeat_timeout_threshold, 60);
                assert_eq!(s.bpffs, PathBuf::from("/sys/fs/bpf/xdhcp"));
                assert_eq!(s.db, PathBuf::from("/var/lib/neutron/xdhcp/xdhcp.db"));
                assert!(!s.enable_relay);
                assert!(s.relay_addresses.is_empty());
                assert_eq!(s.metrics_address, None);
                assert_eq!(s.metrics_max_networks, 100);
                assert_eq!(s.to_agent_config(), AgentConfig::default());
            }),
            ("empty sections and comments change nothing", &["# c\n; c\n\n[DEFAULT]\n[agent]\n"], |s, w| {
                assert!(w.is_empty());
                assert_eq!(s.dhcp_lease_duration, 86400);
            }),
            ("every option set", &["[DEFAULT]\nhost = agent-1\ncontrol_exchange = openstack\nstate_path = /srv/neutron\novs_use_veth = yes\ndhcp_lease_duration = 600\ndns_domain = cloud.example\nenable_isolated_metadata = on\nforce_metadata = 1\nresync_interval = 7\n[agent]\nreport_interval = 2.5\navailability_zone = az1\n[ovs]\novsdb_connection = unix:/run/openvswitch/db.sock\n[oslo_messaging_rabbit]\namqp_durable_queues = true\nrabbit_quorum_queue = TRUE\nheartbeat_timeout_threshold = 0\namqp_auto_delete = On\n[xdhcp]\nbpffs = /sys/fs/bpf/x\ndb = /tmp/x.db\nenable_relay = true\nrelay_addresses = 10.9.0.1\nmetrics_address = 127.0.0.1:9411\nmetrics_max_networks = 7\n"], |s, w| {
                assert!(w.is_empty(), "{w:?}");
                assert_eq!(s.host, "agent-1");
                assert_eq!(s.control_exchange, "openstack");
                assert_eq!(s.state_path, PathBuf::from("/srv/neutron"));
                assert!(s.ovs_use_veth);
                assert_eq!(s.dhcp_lease_duration, 600);
                assert_eq!(s.dns_domain, "cloud.example");
                assert!(s.enable_isolated_metadata && s.force_metadata);
                assert_eq!(s.resync_interval, 7);
                assert_eq!(s.report_interval, 2.5);
                assert_eq!(s.availability_zone, "az1");
                assert_eq!(s.ovsdb_connection, "unix:/run/openvswitch/db.sock");
                assert!(s.amqp_durable_queues && s.rabbit_quorum_queue && s.amqp_auto_delete);
                assert_eq!(s.heartbeat_timeout_threshold, 0);
                assert_eq!(s.bpffs, PathBuf::from("/sys/fs/bpf/x"));
                assert_eq!(s.db, PathBuf::from("/tmp/x.db"));
                assert!(s.enable_relay);
                assert_eq!(s.metrics_address, Some("127.0.0.1:9411".parse().unwrap()));
                assert_eq!(s.metrics_max_networks, 7);
                let c = s.to_agent_config();
                assert_eq!(c.dhcp_lease_duration, 600);
                assert_eq!(c.dns_domain, "cloud.example");
                assert!(c.enable_isolated_metadata && c.force_metadata && c.enable_relay);
                assert_eq!(c.relay_addresses, vec![ip("10.9.0.1")]);
            }),
            ("report_interval 0 disables reporting", &["[agent]\nreport_interval = 0\n"], |s, _| {
                assert_eq!(s.report_interval, 0.0);
            }),
            ("infinite lease", &["[DEFAULT]\ndhcp_lease_duration = -1\n"], |s, _| {
                assert_eq!(s.dhcp_lease_duration, -1);
            }),
            ("two files: the later wins per key, the rest stays", &["[DEFAULT]\ndns_domain = a.example\nforce_metadata = true\n", "[DEFAULT]\ndns_domain = b.example\n"], |s, _| {
                assert_eq!(s.dns_domain, "b.example");
                assert!(s.force_metadata);
            }),
            ("within a file the later line wins", &["[DEFAULT]\ndns_domain = a.example\ndns_domain = b.example\n"], |s, _| {
                assert_eq!(s.dns_domain, "b.example");
            }),
            ("a section may appear twice", &["[DEFAULT]\ndns_domain = a.example\n[agent]\navailability_zone = z\n[DEFAULT]\nforce_metadata = true\n"], |s, _| {
                assert_eq!(s.dns_domain, "a.example");
                assert!(s.force_metadata);
                assert_eq!(s.availability_zone, "z");
            }),
            ("section names other than DEFAULT match in any case", &["[AGENT]\navailability_zone = upper\n[Ovs]\nintegration_bridge = br-x\n"], |s, w| {
                assert!(w.is_empty(), "{w:?}");
                assert_eq!(s.availability_zone, "upper");
                assert_eq!(s.ovs_integration_bridge, "br-x");
            }),
            ("[default] in lower case is not [DEFAULT]", &["[default]\ndns_domain = x\n"], |s, w| {
                assert_eq!(s.dns_domain, "openstacklocal");
                assert_eq!(w, ["file1.ini: [default] dns_domain is not used by xdhcp"]);
            }),
            ("key: value works like key = value; the first separator wins", &["[DEFAULT]\ndns_domain: colon.example\nhost = h:1\n"], |s, _| {
                assert_eq!(s.dns_domain, "colon.example");
                assert_eq!(s.host, "h:1");
            }),
            ("list options: items trimmed, empty items dropped", &["[DEFAULT]\ndnsmasq_dns_servers = 8.8.8.8 , ,8.8.4.4,\n[xdhcp]\nrelay_addresses = 10.9.0.1,10.9.0.2\n"], |s, _| {
                assert_eq!(s.dnsmasq_dns_servers, vec![ip("8.8.8.8"), ip("8.8.4.4")]);
                assert_eq!(s.relay_addresses, vec![ip("10.9.0.1"), ip("10.9.0.2")]);
                assert_eq!(s.to_agent_config().dnsmasq_dns_servers, s.dnsmasq_dns_servers);
            }),
            ("an empty list", &["[DEFAULT]\ndnsmasq_dns_servers =\n"], |s, _| {
                assert!(s.dnsmasq_dns_servers.is_empty());
            }),
            ("IPv6 DNS servers are skipped with a warning", &["[DEFAULT]\ndnsmasq_dns_servers = 2001:db8::53, 1.1.1.1\n"], |s, w| {
                assert_eq!(s.dnsmasq_dns_servers, vec![ip("1.1.1.1")]);
                assert_eq!(w.len(), 1);
                assert!(w[0].contains("file1.ini: line 2: [DEFAULT] dnsmasq_dns_servers"), "{w:?}");
                assert!(w[0].contains("2001:db8::53"), "{w:?}");
            }),
            ("quoted values lose one pair of quotes", &["[DEFAULT]\ndns_domain = \"quoted.example\"\nhost = 'single'\ncontrol_exchange = \"'both'\"\nstate_path = \"/x\n"], |s, _| {
                assert_eq!(s.dns_domain, "quoted.example");
                assert_eq!(s.host, "single");
                assert_eq!(s.control_exchange, "'both'");
                assert_eq!(s.state_path, PathBuf::from("\"/x"));
            }),
            ("a quoted boolean", &["[DEFAULT]\nforce_metadata = \"True\"\n"], |s, _| {
                assert!(s.force_metadata);
            }),
            ("an empty quoted value is empty", &["[DEFAULT]\ndns_domain = \"\"\n"], |s, _| {
                assert_eq!(s.dns_domain, "");
            }),
            ("CRLF line ends and trailing blanks", &["[DEFAULT]\r\ndns_domain = crlf.example  \r\n"], |s, _| {
                assert_eq!(s.dns_domain, "crlf.example");
            }),
            ("ignored keys warn once each, naming file, section and key", &["dhcp_agent.ini|[DEFAULT]\ninterface_driver = openvswitch\ndhcp_driver = x\ndebug = true\n[agent]\nlog_agent_heartbeats = false\n[database]\nconnection = mysql://\n", "other.ini|[DEFAULT]\ndhcp_driver = y\n[AGENT]\nlog_agent_heartbeats = true\n"], |s, w| {
                assert_eq!(s.interface_driver, Some(InterfaceDriver::OpenVSwitch));
                assert_eq!(w, [
                    "dhcp_agent.ini: [DEFAULT] dhcp_driver is not used by xdhcp",
                    "dhcp_agent.ini: [DEFAULT] debug is not used by xdhcp",
                    "dhcp_agent.ini: [agent] log_agent_heartbeats is not used by xdhcp",
                    "dhcp_agent.ini: [database] connection is not used by xdhcp",
                ]);
            }),
            ("xdhcp's own keys belong in [xdhcp], not [DEFAULT]", &["[DEFAULT]\nenable_relay = true\n"], |s, w| {
                assert!(!s.enable_relay);
                assert_eq!(w, ["file1.ini: [DEFAULT] enable_relay is not used by xdhcp"]);
            }),
            ("state_path moves the default db, even from a later file", &["[xdhcp]\nbpffs = /b\n", "[DEFAULT]\nstate_path = /srv/n/\n"], |s, _| {
                assert_eq!(s.db, PathBuf::from("/srv/n/xdhcp/xdhcp.db"));
            }),
            ("an explicit db ignores state_path", &["[xdhcp]\ndb = /d.db\n", "[DEFAULT]\nstate_path = /srv/n\n"], |s, _| {
                assert_eq!(s.db, PathBuf::from("/d.db"));
            }),
            ("$state_path is substituted as oslo.config does", &["[DEFAULT]\nstate_path = /srv/n\n[xdhcp]\ndb = $state_path/x.db\nbpffs = ${DEFAULT.state_path}/bpf\n"], |s, _| {
                assert_eq!(s.db, PathBuf::from("/srv/n/x.db"));
                assert_eq!(s.bpffs, PathBuf::from("/srv/n/bpf"));
            }),
            ("$state_path uses its default when unset; $$ and \\$ are a literal $", &["[xdhcp]\ndb = $state_path/x.db\n[agent]\navailability_zone = a$$b\n[DEFAULT]\nhost = c\\$d\ncontrol_exchange = $ alone\n"], |s, _| {
                assert_eq!(s.db, PathBuf::from("/var/lib/neutron/x.db"));
                assert_eq!(s.availability_zone, "a$b");
                assert_eq!(s.host, "c$d");
                assert_eq!(s.control_exchange, "$ alone");
            }),
            ("$name may refer to a key xdhcp ignores", &["[DEFAULT]\nbase = /opt\n[xdhcp]\nbpffs = $base/bpf\n"], |s, w| {
                assert_eq!(s.bpffs, PathBuf::from("/opt/bpf"));
                assert_eq!(w.len(), 1);
            }),
            ("[ovs] integration_bridge overrides ovs_integration_bridge in the same file", &["[DEFAULT]\novs_integration_bridge = br-old\n[ovs]\nintegration_bridge = br-new\n"], |s, _| {
                assert_eq!(s.ovs_integration_bridge, "br-new");
            }),
            ("ovs_integration_bridge alone still works", &["[DEFAULT]\novs_integration_bridge = br-old\n"], |s, w| {
                assert_eq!(s.ovs_integration_bridge, "br-old");
                assert!(w.is_empty());
            }),
            ("[ovs] integration_bridge from an earlier file wins over nothing", &["[ovs]\nintegration_bridge = br-new\n", "[DEFAULT]\ndns_domain = x\n"], |s, _| {
                assert_eq!(s.ovs_integration_bridge, "br-new");
            }),
            ("a later file's ovs_integration_bridge wins, as in oslo.config", &["[ovs]\nintegration_bridge = br-new\n", "[DEFAULT]\novs_integration_bridge = br-later\n"], |s, _| {
                assert_eq!(s.ovs_integration_bridge, "br-later");
            }),
            ("interface_driver: the openvswitch alias", &["[DEFAULT]\ninterface_driver = openvswitch\n"], |s, _| {
                assert_eq!(s.interface_driver, Some(InterfaceDriver::OpenVSwitch));
            }),
            ("interface_driver: the linuxbridge alias", &["[DEFAULT]\ninterface_driver = linuxbridge\n"], |s, _| {
                assert_eq!(s.interface_driver, Some(InterfaceDriver::LinuxBridge));
            }),
            ("interface_driver: the OVS class path", &["[DEFAULT]\ninterface_driver = neutron.agent.linux.interface.OVSInterfaceDriver\n"], |s, _| {
                assert_eq!(s.interface_driver, Some(InterfaceDriver::OpenVSwitch));
            }),
            ("interface_driver: the bridge class path", &["[DEFAULT]\ninterface_driver = neutron.agent.linux.interface.BridgeInterfaceDriver\n"], |s, _| {
                assert_eq!(s.interface_driver, Some(InterfaceDriver::LinuxBridge));
            }),
            ("transport_url: several hosts, each with its credentials and port", &["[DEFAULT]\ntransport_url = rabbit://u1:p1@rmq1:5672,u2:p2@rmq2:5673/neutron\n"], |s, w| {
                assert!(w.is_empty(), "{w:?}");
                let u = url(s);
                assert_eq!(u.hosts, vec![host("u1", "p1", "rmq1", 5672), host("u2", "p2", "rmq2", 5673)]);
                assert_eq!(u.virtual_host, "neutron");
                assert_eq!(u.amqp_uris(), ["amqp://u1:p1@rmq1:5672/neutron", "amqp://u2:p2@rmq2:5673/neutron"]);
            }),
            ("transport_url: default port, empty path is the default vhost", &["[DEFAULT]\ntransport_url = rabbit://openstack:secret@controller/\n"], |s, _| {
                let u = url(s);
                assert_eq!(u.hosts, vec![host("openstack", "secret", "controller", 5672)]);
                assert_eq!(u.virtual_host, "/");
                assert_eq!(u.amqp_uris(), ["amqp://openstack:secret@controller:5672/%2f"]);
            }),
            ("transport_url: no path at all is the default vhost too", &["[DEFAULT]\ntransport_url = amqp://u:p@h:1234\n"], |s, _| {
                assert_eq!(url(s).virtual_host, "/");
                assert_eq!(url(s).hosts, vec![host("u", "p", "h", 1234)]);
            }),
            ("transport_url: percent-encoded user, password and vhost", &["[DEFAULT]\ntransport_url = rabbit://us%40er:p%3Aa%2Fss%25@h:5672/v%2Fhost\n"], |s, _| {
                let u = url(s);
                assert_eq!(u.hosts, vec![host("us@er", "p:a/ss%", "h", 5672)]);
                assert_eq!(u.virtual_host, "v/host");
                assert_eq!(u.amqp_uris(), ["amqp://us%40er:p%3aa%2fss%25@h:5672/v%2fhost"]);
            }),
            ("transport_url: a password with a raw colon and @ (first colon, last @)", &["[DEFAULT]\ntransport_url = rabbit://u:pa:ss@word@h\n"], |s, _| {
                assert_eq!(url(s).hosts, vec![host("u", "pa:ss@word", "h", 5672)]);
            }),
            ("transport_url: IPv6 hosts", &["[DEFAULT]\ntransport_url = rabbit://u:p@[2001:db8::1]:5671,u:p@[2001:db8::2]/\n"], |s, _| {
                let u = url(s);
                assert_eq!(u.hosts, vec![host("u", "p", "2001:db8::1", 5671), host("u", "p", "2001:db8::2", 5672)]);
                assert_eq!(u.amqp_uris()[0], "amqp://u:p@[2001:db8::1]:5671/%2f");
            }),
            ("transport_url: a host without credentials uses guest, with a warning", &["[DEFAULT]\ntransport_url = rabbit://u:p@h1,h2\n"], |s, w| {
                assert_eq!(url(s).hosts, vec![host("u", "p", "h1", 5672), host("guest", "guest", "h2", 5672)]);
                assert_eq!(w.len(), 1);
                assert!(w[0].contains("[DEFAULT] transport_url"), "{w:?}");
                assert!(!w[0].contains(":p@"), "no password in warnings: {w:?}");
            }),
            ("transport_url: a query is ignored with a warning", &["[DEFAULT]\ntransport_url = rabbit://u:p@h/v?ssl=1\n"], |s, w| {
                assert_eq!(url(s).virtual_host, "v");
                assert_eq!(w.len(), 1);
            }),
            ("transport_url: an empty value is unset", &["[DEFAULT]\ntransport_url =\n"], |s, _| {
                assert_eq!(s.transport_url, None);
            }),
            ("Debug never shows a broker password", &["[DEFAULT]\ntransport_url = rabbit://u:hunter2@h/\n"], |s, _| {
                assert!(!format!("{s:?}").contains("hunter2"));
            }),
        ];
        for (what, texts, check) in cases {
            let (settings, warnings) = parse_files(&files(texts))
                .unwrap_or_else(|e| panic!("{what}: unexpected error: {e:#}"));
            let run = std::panic::catch_unwind(|| check(&settings, &warnings));
            if run.is_err() {
                panic!("case failed: {what}");
            }
        }
    }

    #[test]
    fn reads_the_dnsmasq_config_file() {
        let dnsmasq = TempFile::new(
            "dnsmasq-neutron.conf",
            "# MTU for VXLAN\ndhcp-option-force=26,1400\n\n  dhcp-option=option:dns-server,8.8.8.8,8.8.4.4\ndhcp-option=tag:tag0,42,10.0.0.1\ndhcp-option=3\nlog-facility=/var/log/dnsmasq.log\ndhcp-option=option6:dns-server,[::1]\n",
        );
        let path = dnsmasq.0.display().to_string();
        type FileCheck = fn(&AgentSettings, &[String], &Path);
        let seed = format!(
            "[DEFAULT]\ninterface_driver = openvswitch\ndhcp_driver = neutron.agent.linux.dhcp.Dnsmasq\nenable_isolated_metadata = True\ndnsmasq_config_file = {path}\novs_use_veth = True\n"
        );
        let in_state = format!(
            "[DEFAULT]\nstate_path = {}\ndnsmasq_config_file = $state_path/{}\n",
            dnsmasq.0.parent().unwrap().display(),
            dnsmasq.0.file_name().unwrap().to_string_lossy()
        );
        let cases: &[(&str, String, FileCheck)] = &[
            ("the seed's typical dhcp_agent.ini", seed, |s, w, p| {
                assert_eq!(s.interface_driver, Some(InterfaceDriver::OpenVSwitch));
                assert!(s.enable_isolated_metadata);
                assert!(s.ovs_use_veth);
                assert_eq!(s.dnsmasq_config_file.as_deref(), Some(p));
                let opt = |force: bool, name: &str, value: &str, line: usize| DnsmasqOption {
                    force,
                    name: name.into(),
                    value: value.into(),
                    file: p.to_path_buf(),
                    line,
                };
                assert_eq!(
                    s.dnsmasq_options,
                    vec![
                        opt(true, "26", "1400", 2),
                        opt(false, "dns-server", "8.8.8.8,8.8.4.4", 4),
                        opt(false, "42", "10.0.0.1", 5),
                        opt(false, "3", "", 6),
                    ]
                );
                assert_eq!(w.len(), 4, "{w:?}");
                assert_eq!(
                    w[0],
                    "dhcp_agent.ini: [DEFAULT] dhcp_driver is not used by xdhcp"
                );
                assert!(
                    w[1].contains("line 5") && w[1].contains("tag:tag0"),
                    "{w:?}"
                );
                assert!(
                    w[2].ends_with("line 7: dnsmasq option log-facility is not used by xdhcp"),
                    "{w:?}"
                );
                assert!(
                    w[3].contains("line 8") && w[3].contains("option6:"),
                    "{w:?}"
                );
            }),
            (
                "dnsmasq_config_file through $state_path",
                in_state,
                |s, _, p| {
                    assert_eq!(s.dnsmasq_config_file.as_deref(), Some(p));
                    assert_eq!(s.dnsmasq_options.len(), 4);
                },
            ),
        ];
        for (what, text, check) in cases {
            let (settings, warnings) = parse_files(&[("dhcp_agent.ini".into(), text.clone())])
                .unwrap_or_else(|e| panic!("{what}: unexpected error: {e:#}"));
            let run = std::panic::catch_unwind(|| check(&settings, &warnings, &dnsmasq.0));
            if run.is_err() {
                panic!("case failed: {what}");
            }
        }
    }

    #[test]
    fn load_reads_files_in_order() {
        let a = TempFile::new("a.ini", "[DEFAULT]\ndns_domain = a.example\n");
        let b = TempFile::new("b.ini", "[DEFAULT]\ndns_domain = b.example\nfoo = 1\n");
        let (s, w) = load(&[a.0.clone(), b.0.clone()]).unwrap();
        assert_eq!(s.dns_domain, "b.example");
        assert_eq!(
            w,
            [format!(
                "{}: [DEFAULT] foo is not used by xdhcp",
                b.0.display()
            )]
        );
        let missing = std::env::temp_dir().join("xdhcp-agent-config-does-not-exist.ini");
        let e = format!("{:#}", load(std::slice::from_ref(&missing)).unwrap_err());
        assert!(e.contains(&missing.display().to_string()), "{e}");
    }

    #[test]
    fn refuses_bad_files() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "an indented option continues the line before in oslo.config",
                &["dhcp_agent.ini|[DEFAULT]\ndns_domain = a.example\n  force_metadata = true\n"],
                &[
                    "dhcp_agent.ini: line 3",
                    "\"  force_metadata = true\"",
                    "continuation of the line before",
                    "dns_domain on line 2",
                    "column 1",
                ],
            ),
            (
                "a tab-indented option after a section header",
                &["[DEFAULT]\n\tforce_metadata = true\n"],
                &[
                    "file1.ini: line 2",
                    "continuation of the line before",
                    "column 1",
                ],
            ),
            (
                "an indented option after a blank line",
                &["[DEFAULT]\nhost = a\n\n force_metadata = true\n"],
                &["file1.ini: line 4", "continuation", "column 1"],
            ),
            (
                "an indented comment is a continuation too",
                &["[DEFAULT]\nhost = a\n   # a note\n"],
                &["file1.ini: line 3", "continuation", "host on line 2"],
            ),
            (
                "the error names the file it is in",
                &["[DEFAULT]\n", "second.ini|[DEFAULT]\nhost = a\n x = y\n"],
                &["second.ini: line 3"],
            ),
            (
                "a line without = or :",
                &["[DEFAULT]\nforce_metadata\n"],
                &["file1.ini: line 2", "\"force_metadata\"", "no '=' or ':'"],
            ),
            (
                "an empty key",
                &["[DEFAULT]\n= value\n"],
                &["file1.ini: line 2", "empty key"],
            ),
            (
                "a [ without ]",
                &["[DEFAULT\nhost = a\n"],
                &["file1.ini: line 1", "\"[DEFAULT\"", "must end with ']'"],
            ),
            (
                "a comment after a section header",
                &["[DEFAULT] # main\n"],
                &["file1.ini: line 1", "must end with ']'"],
            ),
            (
                "an empty section name",
                &["[]\n"],
                &["file1.ini: line 1", "empty section name"],
            ),
            (
                "a key before any section",
                &["# top\nhost = a\n"],
                &["file1.ini: line 2", "before any [section]"],
            ),
            (
                "a bad boolean",
                &["[DEFAULT]\nforce_metadata = maybe\n"],
                &[
                    "file1.ini: line 2: [DEFAULT] force_metadata",
                    "\"maybe\"",
                    "not a boolean",
                ],
            ),
            (
                "a boolean with an end-of-line comment",
                &["[DEFAULT]\nforce_metadata = true # yes\n"],
                &[
                    "[DEFAULT] force_metadata",
                    "no comments at the end of a line",
                ],
            ),
            (
                "a bad boolean in a later file names that file",
                &[
                    "[DEFAULT]\n",
                    "x.ini|[oslo_messaging_rabbit]\namqp_durable_queues = 2\n",
                ],
                &["x.ini: line 2: [oslo_messaging_rabbit] amqp_durable_queues"],
            ),
            (
                "a bad integer",
                &["[DEFAULT]\ndhcp_lease_duration = 1d\n"],
                &[
                    "file1.ini: line 2: [DEFAULT] dhcp_lease_duration",
                    "\"1d\"",
                    "not an integer",
                ],
            ),
            (
                "a zero lease",
                &["[DEFAULT]\ndhcp_lease_duration = 0\n"],
                &["[DEFAULT] dhcp_lease_duration", "got 0"],
            ),
            (
                "a lease below -1",
                &["[DEFAULT]\ndhcp_lease_duration = -2\n"],
                &["[DEFAULT] dhcp_lease_duration", "got -2"],
            ),
            (
                "a negative resync_interval",
                &["[DEFAULT]\nresync_interval = -1\n"],
                &["[DEFAULT] resync_interval", "negative"],
            ),
            (
                "a bad heartbeat threshold",
                &["[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = x\n"],
                &["heartbeat_timeout_threshold", "not an integer"],
            ),
            (
                "a bad report_interval",
                &["[agent]\nreport_interval = soon\n"],
                &["[agent] report_interval", "not a number"],
            ),
            (
                "a negative report_interval",
                &["[agent]\nreport_interval = -1\n"],
                &["[agent] report_interval", ">= 0"],
            ),
            (
                "a bad DNS server",
                &["[DEFAULT]\ndnsmasq_dns_servers = 8.8.8.8, dns.example\n"],
                &["[DEFAULT] dnsmasq_dns_servers", "\"dns.example\""],
            ),
            (
                "64 DNS servers (option 6 holds 63)",
                &["[DEFAULT]\ndnsmasq_dns_servers = 10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6,10.0.0.7,10.0.0.8,10.0.0.9,10.0.0.10,10.0.0.11,10.0.0.12,10.0.0.13,10.0.0.14,10.0.0.15,10.0.0.16,10.0.0.17,10.0.0.18,10.0.0.19,10.0.0.20,10.0.0.21,10.0.0.22,10.0.0.23,10.0.0.24,10.0.0.25,10.0.0.26,10.0.0.27,10.0.0.28,10.0.0.29,10.0.0.30,10.0.0.31,10.0.0.32,10.0.0.33,10.0.0.34,10.0.0.35,10.0.0.36,10.0.0.37,10.0.0.38,10.0.0.39,10.0.0.40,10.0.0.41,10.0.0.42,10.0.0.43,10.0.0.44,10.0.0.45,10.0.0.46,10.0.0.47,10.0.0.48,10.0.0.49,10.0.0.50,10.0.0.51,10.0.0.52,10.0.0.53,10.0.0.54,10.0.0.55,10.0.0.56,10.0.0.57,10.0.0.58,10.0.0.59,10.0.0.60,10.0.0.61,10.0.0.62,10.0.0.63,10.0.0.64\n"],
                &["[DEFAULT] dnsmasq_dns_servers", "64 servers", "at most 63"],
            ),
            (
                "a 300-character dns_domain",
                &["[DEFAULT]\ndns_domain = a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.example\n"],
                &["[DEFAULT] dns_domain", "at most 253"],
            ),
            (
                "a dns_domain with a newline escape and a space",
                &["[DEFAULT]\ndns_domain = cloud example\n"],
                &["[DEFAULT] dns_domain", "letters, digits"],
            ),
            (
                "an IPv6 relay address",
                &["[xdhcp]\nrelay_addresses = 2001:db8::1\n"],
                &["[xdhcp] relay_addresses", "not an IPv4 address"],
            ),
            (
                "a metrics_address without a port",
                &["[xdhcp]\nmetrics_address = 127.0.0.1\n"],
                &[
                    "[xdhcp] metrics_address",
                    "\"127.0.0.1\" is not an address and port",
                ],
            ),
            (
                "a negative metrics_max_networks",
                &["[xdhcp]\nmetrics_max_networks = -1\n"],
                &["[xdhcp] metrics_max_networks", "must not be negative"],
            ),
            (
                "an unknown interface driver lists the accepted ones",
                &["[DEFAULT]\ninterface_driver = ovs\n"],
                &[
                    "[DEFAULT] interface_driver",
                    "\"ovs\"",
                    "openvswitch, linuxbridge, neutron.agent.linux.interface.OVSInterfaceDriver",
                ],
            ),
            (
                "an empty host",
                &["[DEFAULT]\nhost =\n"],
                &["[DEFAULT] host", "must not be empty"],
            ),
            (
                "transport_url with another scheme",
                &["[DEFAULT]\ntransport_url = kafka://u:secret@h:9092/\n"],
                &["file1.ini: line 2: [DEFAULT] transport_url", "\"kafka\""],
            ),
            (
                "transport_url that is no URL",
                &["[DEFAULT]\ntransport_url = controller\n"],
                &["[DEFAULT] transport_url", "not a URL"],
            ),
            (
                "transport_url with a bad port",
                &["[DEFAULT]\ntransport_url = rabbit://u:secret@h:amqp/\n"],
                &["[DEFAULT] transport_url", "bad port"],
            ),
            (
                "transport_url with a host-less broker",
                &["[DEFAULT]\ntransport_url = rabbit://u:secret@:5672/\n"],
                &["[DEFAULT] transport_url", "without a host"],
            ),
            (
                "transport_url with a $ naming no option",
                &["[DEFAULT]\ntransport_url = rabbit://u:pa$word@h/\n"],
                &["[DEFAULT] transport_url", "write $$"],
            ),
            (
                "$name naming no option",
                &["[xdhcp]\ndb = $nowhere/x.db\n"],
                &["file1.ini: line 2: [xdhcp] db", "$nowhere"],
            ),
            (
                "a $-substitution loop",
                &["[DEFAULT]\na = $b\nb = $a\n[xdhcp]\ndb = $a\n"],
                &["[xdhcp] db", "loop"],
            ),
            (
                "a missing dnsmasq_config_file",
                &["[DEFAULT]\ndnsmasq_config_file = /nonexistent/xdhcp-dnsmasq.conf\n"],
                &[
                    "[DEFAULT] dnsmasq_config_file",
                    "/nonexistent/xdhcp-dnsmasq.conf",
                ],
            ),
        ];
        for (what, texts, needles) in cases {
            let err = match parse_files(&files(texts)) {
                Ok(_) => panic!("{what}: expected an error"),
                Err(e) => format!("{e:#}"),
            };
            for needle in *needles {
                assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
            }
            if texts.iter().any(|t| t.contains("secret")) {
                assert!(!err.contains("secret"), "{what}: password in {err:?}");
            }
        }
    }

    #[test]
    fn refuses_bad_dnsmasq_lines() {
        let cases: &[(&str, &str, &str)] = &[
            ("no option at all", "dhcp-option=\n", "line 1"),
            (
                "an option name that is neither a number nor option:NAME",
                "# x\ndhcp-option=dns,1.1.1.1\n",
                "line 2",
            ),
            (
                "an option number above 255",
                "dhcp-option-force=300,1\n",
                "not 0..=255",
            ),
            (
                "option: without a name",
                "dhcp-option=option:,1\n",
                "empty option name",
            ),
        ];
        for (what, text, needle) in cases {
            let f = TempFile::new("bad-dnsmasq.conf", text);
            let ini = format!("[DEFAULT]\ndnsmasq_config_file = {}\n", f.0.display());
            let err = match parse_files(&[("a.ini".into(), ini)]) {
                Ok(_) => panic!("{what}: expected an error"),
                Err(e) => format!("{e:#}"),
            };
            assert!(err.contains(&f.0.display().to_string()), "{what}: {err}");
            assert!(err.contains(needle), "{what}: {err:?} lacks {needle:?}");
        }
    }
}
