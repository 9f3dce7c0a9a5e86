//! Agent options from a TOML file, named as in Neutron's dhcp_agent.ini.
//!
//! Keys may stand at the top level or under `[DEFAULT]`, so an operator can
//! paste the ini's section (quoting string values). Other dhcp_agent.ini
//! options are accepted and reported back as ignored.

pub mod oslo;

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use toml::{Table, Value};

/// The dhcp_agent.ini options xdhcp honours, plus its own.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Lease length in seconds; -1 = infinite.
    pub dhcp_lease_duration: i64,
    /// Domain handed out in option 15.
    pub dns_domain: String,
    /// Route 169.254.169.254/32 via the DHCP port's IP on subnets without a router.
    pub enable_isolated_metadata: bool,
    /// Route 169.254.169.254/32 via the DHCP port's IP on every subnet.
    pub force_metadata: bool,
    /// DNS servers handed out when a subnet has no dns_nameservers.
    pub dnsmasq_dns_servers: Vec<Ipv4Addr>,
    /// xdhcp's own: answer requests relayed through giaddr (off by default: a
    /// relayed request's Ethernet source is the relay's, not the client's, so
    /// it proves nothing about who asks).
    pub enable_relay: bool,
    /// xdhcp's own, with `enable_relay`: answer only relays whose giaddr is
    /// listed (empty: any relay that is not itself a port of the network).
    pub relay_addresses: Vec<Ipv4Addr>,
    /// Options every client gets, as dnsmasq option name (or number) and
    /// value: the `dhcp-option`/`dhcp-option-force` lines of the agent's
    /// `dnsmasq_config_file`. A port's extra_dhcp_opts of the same code win.
    pub extra_options: Vec<(String, String)>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            dhcp_lease_duration: 86400,
            dns_domain: "openstacklocal".to_string(),
            enable_isolated_metadata: false,
            force_metadata: false,
            dnsmasq_dns_servers: Vec::new(),
            enable_relay: false,
            relay_addresses: Vec::new(),
            extra_options: Vec::new(),
        }
    }
}

/// The table operators paste their ini section into.
const DEFAULT_SECTION: &str = "DEFAULT";

impl AgentConfig {
    /// Reads and parses a config file, logging the keys it ignores.
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let (cfg, ignored) =
            Self::parse(&text).with_context(|| format!("config file {}", path.display()))?;
        for key in ignored {
            tracing::warn!(file = %path.display(), key, "ignoring config key xdhcp does not use");
        }
        Ok(cfg)
    }

    /// Parses TOML text; also returns the keys it ignored (e.g. "DEFAULT.interface_driver").
    pub fn parse(text: &str) -> Result<(AgentConfig, Vec<String>)> {
        let doc: Table = toml::from_str(text).context("not valid TOML")?;
        let mut cfg = AgentConfig::default();
        let mut ignored = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in &doc {
            match value {
                Value::Table(t) if key.eq_ignore_ascii_case(DEFAULT_SECTION) => {
                    for (k, v) in t {
                        cfg.apply(
                            k,
                            v,
                            &format!("{}.", key_name(key)),
                            &mut seen,
                            &mut ignored,
                        )?;
                    }
                }
                Value::Table(t) => {
                    ignored.extend(
                        t.keys()
                            .map(|k| format!("{}.{}", key_name(key), key_name(k))),
                    );
                }
                _ => cfg.apply(key, value, "", &mut seen, &mut ignored)?,
            }
        }
        Ok((cfg, ignored))
    }

    /// The lease time for the fast path: seconds, or u32::MAX for infinite.
    pub fn lease_secs(&self) -> u32 {
        u32::try_from(self.dhcp_lease_duration).unwrap_or(u32::MAX)
    }

    /// Sets one key; `prefix` is where it stood ("" or "DEFAULT."), for messages.
    fn apply(
        &mut self,
        key: &str,
        value: &Value,
        prefix: &str,
        seen: &mut Vec<String>,
        ignored: &mut Vec<String>,
    ) -> Result<()> {
        let known = [
            "dhcp_lease_duration",
            "dns_domain",
            "enable_isolated_metadata",
            "force_metadata",
            "dnsmasq_dns_servers",
            "enable_relay",
            "relay_addresses",
        ];
        if !known.contains(&key) {
            ignored.push(format!("{prefix}{}", key_name(key)));
            return Ok(());
        }
        if seen.iter().any(|k| k == key) {
            bail!("{key} is set both at the top level and under [{DEFAULT_SECTION}]");
        }
        seen.push(key.to_string());
        let ctx = || format!("{prefix}{key} = {value}");
        match key {
            "dhcp_lease_duration" => {
                self.dhcp_lease_duration = lease_duration(value).with_context(ctx)?
            }
            "dns_domain" => {
                let d = string(value).with_context(ctx)?.trim();
                check_dns_domain(d).with_context(ctx)?;
                self.dns_domain = d.to_string();
            }
            "enable_isolated_metadata" => {
                self.enable_isolated_metadata = boolean(value).with_context(ctx)?
            }
            "force_metadata" => self.force_metadata = boolean(value).with_context(ctx)?,
            "dnsmasq_dns_servers" => {
                self.dnsmasq_dns_servers = ipv4_list(value).with_context(ctx)?;
                check_dns_servers(&self.dnsmasq_dns_servers).with_context(ctx)?;
            }
            "enable_relay" => self.enable_relay = boolean(value).with_context(ctx)?,
            "relay_addresses" => self.relay_addresses = ipv4_list(value).with_context(ctx)?,
            _ => unreachable!("every known key has an arm"),
        }
        Ok(())
    }
}

/// The most DNS servers option 6 carries: 4 bytes each in one 255-byte option.
pub const DNS_SERVERS_MAX: usize = 63;

/// The longest domain name (RFC 1035: 255 bytes on the wire, 253 characters written).
pub const DOMAIN_MAX: usize = 253;

/// `dnsmasq_dns_servers` fits option 6 (the fast path's blob has room for no
/// RFC 3396 long DNS option, and one that does not fit leaves every port unserved).
pub fn check_dns_servers(servers: &[Ipv4Addr]) -> Result<()> {
    if servers.len() > DNS_SERVERS_MAX {
        bail!(
            "{} servers, at most {DNS_SERVERS_MAX} fit option 6",
            servers.len()
        );
    }
    Ok(())
}

/// `dns_domain` is a domain name option 15 can carry: at most 253 characters
/// (a trailing dot is dropped, as dnsmasq's --domain does), labels of 1 to 63
/// letters, digits, hyphens or underscores, not starting or ending with a hyphen.
/// Empty means no option 15.
pub fn check_dns_domain(domain: &str) -> Result<()> {
    let d = domain.strip_suffix('.').unwrap_or(domain);
    if d.is_empty() {
        return Ok(());
    }
    if d.len() > DOMAIN_MAX {
        bail!("{domain:?}: {} characters, at most {DOMAIN_MAX}", d.len());
    }
    for label in d.split('.') {
        if label.is_empty() {
            bail!("{domain:?} has an empty label");
        }
        if label.len() > 63 {
            bail!(
                "{domain:?}: label {label:?} has {} characters, at most 63",
                label.len()
            );
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if !label.chars().all(legal) || label.starts_with('-') || label.ends_with('-') {
            bail!(
                "{domain:?}: label {label:?} must be letters, digits, hyphens or underscores, not starting or ending with a hyphen"
            );
        }
    }
    Ok(())
}

fn string(v: &Value) -> Result<&str> {
    v.as_str().ok_or_else(|| anyhow!("expected a string"))
}

/// -1 (infinite) or 1..=u32::MAX-1 seconds; an integer or a quoted integer as in the ini.
fn lease_duration(v: &Value) -> Result<i64> {
    let n = match v {
        Value::Integer(n) => *n,
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| anyhow!("expected an integer number of seconds"))?,
        _ => bail!("expected an integer number of seconds"),
    };
    if n == -1 || (1..=i64::from(u32::MAX - 1)).contains(&n) {
        Ok(n)
    } else {
        bail!(
            "must be -1 (infinite) or 1..={} seconds, got {n}",
            u32::MAX - 1
        )
    }
}

/// A TOML boolean, or the strings oslo.config accepts (true/false, yes/no, on/off, 1/0).
fn boolean(v: &Value) -> Result<bool> {
    match v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => bail!("expected true or false"),
        },
        _ => bail!("expected true or false"),
    }
}

/// A TOML array of addresses or one comma-separated string ("8.8.8.8,8.8.4.4").
fn ipv4_list(v: &Value) -> Result<Vec<Ipv4Addr>> {
    let items: Vec<&str> = match v {
        Value::String(s) => s.split(',').collect(),
        Value::Array(a) => a
            .iter()
            .map(|i| i.as_str().ok_or_else(|| anyhow!("expected strings")))
            .collect::<Result<_>>()?,
        _ => bail!("expected an array of addresses or a comma-separated string"),
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| anyhow!("bad IPv4 address {s:?}")))
        .collect()
}

/// A TOML key as a message names it: bare when TOML allows it bare, quoted
/// otherwise (so the empty key `''` is named `""`, not as nothing).
fn key_name(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_agent_options() {
        type Check = fn(&AgentConfig, &[String]);
        let cases: &[(&str, &str, Check)] = &[
            ("an empty file gives the defaults", "", |c, i| {
                assert_eq!(*c, AgentConfig::default());
                assert!(i.is_empty());
            }),
            ("defaults are Neutron's", "", |c, _| {
                assert_eq!(c.dhcp_lease_duration, 86400);
                assert_eq!(c.dns_domain, "openstacklocal");
                assert!(!c.enable_isolated_metadata && !c.force_metadata && !c.enable_relay);
                assert!(c.relay_addresses.is_empty());
                assert!(c.dnsmasq_dns_servers.is_empty());
            }),
            ("top-level keys", "dhcp_lease_duration = 600\ndns_domain = \"cloud.example\"\nforce_metadata = true", |c, _| {
                assert_eq!(c.dhcp_lease_duration, 600);
                assert_eq!(c.dns_domain, "cloud.example");
                assert!(c.force_metadata);
            }),
            ("keys under [DEFAULT] as pasted from the ini", "[DEFAULT]\nenable_isolated_metadata = true\nenable_relay = false", |c, _| {
                assert!(c.enable_isolated_metadata);
                assert!(!c.enable_relay);
            }),
            ("ini-style quoted booleans", "[DEFAULT]\nforce_metadata = \"True\"\nenable_relay = \"on\"", |c, _| {
                assert!(c.force_metadata);
                assert!(c.enable_relay);
            }),
            ("relaying on, limited to listed relays", "enable_relay = true\nrelay_addresses = \"10.9.0.1, 10.9.0.2\"", |c, _| {
                assert!(c.enable_relay);
                assert_eq!(c.relay_addresses, vec![ip("10.9.0.1"), ip("10.9.0.2")]);
            }),
            ("dns servers as a TOML array", "dnsmasq_dns_servers = [\"8.8.8.8\", \"8.8.4.4\"]", |c, _| {
                assert_eq!(c.dnsmasq_dns_servers, vec![ip("8.8.8.8"), ip("8.8.4.4")]);
            }),
            ("dns servers as one comma-separated string", "dnsmasq_dns_servers = \"8.8.8.8, 8.8.4.4\"", |c, _| {
                assert_eq!(c.dnsmasq_dns_servers, vec![ip("8.8.8.8"), ip("8.8.4.4")]);
            }),
            ("an empty dns server string is an empty list", "dnsmasq_dns_servers = \"\"", |c, _| {
                assert!(c.dnsmasq_dns_servers.is_empty());
            }),
            ("infinite lease", "dhcp_lease_duration = -1", |c, _| {
                assert_eq!(c.dhcp_lease_duration, -1);
                assert_eq!(c.lease_secs(), u32::MAX);
            }),
            ("finite lease seconds pass through", "dhcp_lease_duration = 3600", |c, _| {
                assert_eq!(c.lease_secs(), 3600);
            }),
            ("the longest finite lease", "dhcp_lease_duration = 4294967294", |c, _| {
                assert_eq!(c.lease_secs(), u32::MAX - 1);
            }),
            ("a quoted lease duration as in the ini", "[DEFAULT]\ndhcp_lease_duration = \"120\"", |c, _| {
                assert_eq!(c.dhcp_lease_duration, 120);
            }),
            ("an empty or odd key is named quoted (found by fuzzing)", "'' = -0\n\"a b\" = 1\n[\" odd\"]\nx = 1", |_, i| {
                assert_eq!(i, ["\"\"", "\" odd\".x", "\"a b\""]);
            }),
            ("other agent options are reported as ignored", "interface_driver = \"openvswitch\"\n[DEFAULT]\ndhcp_driver = \"x\"\n[AGENT]\nreport_interval = 30", |c, i| {
                assert_eq!(*c, AgentConfig::default());
                let mut i = i.to_vec();
                i.sort();
                assert_eq!(i, ["AGENT.report_interval", "DEFAULT.dhcp_driver", "interface_driver"]);
            }),
        ];
        for (desc, text, check) in cases {
            let (cfg, ignored) =
                AgentConfig::parse(text).unwrap_or_else(|e| panic!("{desc}: {e:#}"));
            check(&cfg, &ignored);
        }
    }

    #[test]
    fn rejects_bad_values() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "a zero lease",
                "dhcp_lease_duration = 0",
                &["dhcp_lease_duration", "got 0"],
            ),
            (
                "a lease below -1",
                "dhcp_lease_duration = -5",
                &["dhcp_lease_duration", "got -5"],
            ),
            (
                "a lease of u32::MAX",
                "dhcp_lease_duration = 4294967295",
                &["dhcp_lease_duration", "4294967295"],
            ),
            (
                "a lease that is not a number",
                "dhcp_lease_duration = \"1d\"",
                &["dhcp_lease_duration", "integer"],
            ),
            (
                "a bad DNS server",
                "dnsmasq_dns_servers = \"8.8.8.8,8.8.8\"",
                &["dnsmasq_dns_servers", "\"8.8.8\""],
            ),
            (
                "an IPv6 DNS server",
                "dnsmasq_dns_servers = [\"2001:db8::1\"]",
                &["dnsmasq_dns_servers", "2001:db8::1"],
            ),
            (
                "a DNS server list of numbers",
                "dnsmasq_dns_servers = [1]",
                &["dnsmasq_dns_servers", "strings"],
            ),
            (
                "a bad boolean",
                "[DEFAULT]\nforce_metadata = \"maybe\"",
                &["DEFAULT.force_metadata", "true or false"],
            ),
            (
                "a domain that is not a string",
                "dns_domain = 5",
                &["dns_domain", "string"],
            ),
            (
                "a key set twice",
                "force_metadata = true\n[DEFAULT]\nforce_metadata = false",
                &["force_metadata", "both"],
            ),
            (
                "64 DNS servers (option 6 holds 63)",
                "dnsmasq_dns_servers = \"10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4,10.0.0.5,10.0.0.6,10.0.0.7,10.0.0.8,10.0.0.9,10.0.0.10,10.0.0.11,10.0.0.12,10.0.0.13,10.0.0.14,10.0.0.15,10.0.0.16,10.0.0.17,10.0.0.18,10.0.0.19,10.0.0.20,10.0.0.21,10.0.0.22,10.0.0.23,10.0.0.24,10.0.0.25,10.0.0.26,10.0.0.27,10.0.0.28,10.0.0.29,10.0.0.30,10.0.0.31,10.0.0.32,10.0.0.33,10.0.0.34,10.0.0.35,10.0.0.36,10.0.0.37,10.0.0.38,10.0.0.39,10.0.0.40,10.0.0.41,10.0.0.42,10.0.0.43,10.0.0.44,10.0.0.45,10.0.0.46,10.0.0.47,10.0.0.48,10.0.0.49,10.0.0.50,10.0.0.51,10.0.0.52,10.0.0.53,10.0.0.54,10.0.0.55,10.0.0.56,10.0.0.57,10.0.0.58,10.0.0.59,10.0.0.60,10.0.0.61,10.0.0.62,10.0.0.63,10.0.0.64\"",
                &["dnsmasq_dns_servers", "64 servers", "at most 63"],
            ),
            (
                "a 300-character domain",
                "dns_domain = \"a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.example\"",
                &["dns_domain", "characters", "at most 253"],
            ),
            (
                "a domain label of 64 characters",
                "dns_domain = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example\"",
                &["dns_domain", "label", "at most 63"],
            ),
            (
                "a domain with a semicolon",
                "dns_domain = \"cloud;example\"",
                &["dns_domain", "\"cloud;example\"", "letters, digits"],
            ),
            (
                "a domain with an empty label",
                "dns_domain = \"cloud..example\"",
                &["dns_domain", "empty label"],
            ),
            (
                "text that is not TOML",
                "dns_domain = openstacklocal",
                &["TOML"],
            ),
        ];
        for (desc, text, wants) in cases {
            let err = match AgentConfig::parse(text) {
                Ok(got) => panic!("{desc}: accepted as {got:?}"),
                Err(e) => format!("{e:#}"),
            };
            for want in *wants {
                assert!(err.contains(want), "{desc}: error {err:?} lacks {want:?}");
            }
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("xdhcp-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        let bad = dir.join("bad.toml");
        std::fs::write(&good, "[DEFAULT]\ndhcp_lease_duration = 600\n").unwrap();
        std::fs::write(&bad, "dhcp_lease_duration = 0\n").unwrap();
        // Ok(lease seconds) or the substrings the error must contain.
        type Want<'a> = Result<i64, &'a [&'a str]>;
        let cases: &[(&str, &Path, Want)] = &[
            ("a good file loads", &good, Ok(600)),
            (
                "a bad value names file and key",
                &bad,
                Err(&["bad.toml", "dhcp_lease_duration"]),
            ),
            (
                "a missing file is named",
                &dir.join("missing.toml"),
                Err(&["missing.toml"]),
            ),
        ];
        for (desc, path, want) in cases {
            match (AgentConfig::load(path), want) {
                (Ok(cfg), Ok(secs)) => assert_eq!(cfg.dhcp_lease_duration, *secs, "{desc}"),
                (Err(e), Err(subs)) => {
                    let msg = format!("{e:#}");
                    for s in *subs {
                        assert!(msg.contains(s), "{desc}: error {msg:?} lacks {s:?}");
                    }
                }
                (got, _) => panic!("{desc}: got {got:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
