//! Neutron's `extra_dhcp_opts`, encoded byte for byte as dnsmasq encodes
//! `--dhcp-option-force=tag:<port>,option:<name>,<value>`.
//!
//! The option table and the value rules follow dnsmasq's `opttab` and
//! `parse_dhcp_opt`: an option's type (address list, name, time, fixed-size
//! number) decides the encoding where the table gives one; otherwise the value
//! is characterised as dnsmasq does (hex bytes, decimal, IPv4 addresses with
//! optional `/prefix` descriptors, else a plain string). Where dnsmasq would
//! silently send garbage (a 3-byte MTU, an odd static-route list) this module
//! returns an error instead.

use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};

/// What one extra option turns into in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A DHCP option: code and value bytes (may exceed 255; the caller splits per RFC 3396).
    Option(u8, Vec<u8>),
    /// dnsmasq's "server-ip-address" is not an option: it sets the BOOTP siaddr field.
    Siaddr(Ipv4Addr),
}

/// How an option's value is encoded (dnsmasq's `OT_*` size flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    /// `OT_ADDR_LIST`: IPv4 addresses, in the given shape.
    Addrs(Shape),
    /// `OT_NAME`: the value's bytes, whatever they look like.
    Name,
    /// `OT_RFC1035_NAME`: a list of domains in DNS wire format, compressed (RFC 3397).
    Domains,
    /// `OT_TIME`: 4-byte seconds, with an optional w/d/h/m/s suffix.
    Time,
    /// A fixed-size big-endian number (1, 2 or 4 bytes).
    Int(u8),
    /// Size 0 in the table (or not in it): the value's form decides.
    Free,
}

/// How many addresses an address option holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    One,
    List,
    /// Address pairs (static-route: destination, router; policy-filter: address, mask).
    Pairs,
}

struct Entry {
    name: &'static str,
    code: u8,
    kind: ValueKind,
    /// dnsmasq's `OT_INTERNAL`: refused as `option:<name>` (the number still works).
    internal: bool,
}

const fn e(name: &'static str, code: u8, kind: ValueKind) -> Entry {
    Entry {
        name,
        code,
        kind,
        internal: false,
    }
}

const fn internal(name: &'static str, code: u8, kind: ValueKind) -> Entry {
    Entry {
        name,
        code,
        kind,
        internal: true,
    }
}

use Shape::*;
use ValueKind::*;

/// dnsmasq's DHCPv4 `opttab` (2.90), names matched case-insensitively.
const TABLE: &[Entry] = &[
    e("netmask", 1, Addrs(One)),
    e("time-offset", 2, Int(4)),
    e("router", 3, Addrs(List)),
    e("dns-server", 6, Addrs(List)),
    e("log-server", 7, Addrs(List)),
    e("lpr-server", 9, Addrs(List)),
    internal("hostname", 12, Name),
    e("boot-file-size", 13, Int(2)),
    e("domain-name", 15, Name),
    e("swap-server", 16, Addrs(One)),
    e("root-path", 17, Name),
    e("extension-path", 18, Name),
    e("ip-forward-enable", 19, Int(1)),
    e("non-local-source-routing", 20, Int(1)),
    e("policy-filter", 21, Addrs(Pairs)),
    e("max-datagram-reassembly", 22, Int(2)),
    e("default-ttl", 23, Int(1)),
    e("mtu", 26, Int(2)),
    e("all-subnets-local", 27, Int(1)),
    internal("broadcast", 28, Addrs(One)),
    e("router-discovery", 31, Int(1)),
    e("router-solicitation", 32, Addrs(One)),
    e("static-route", 33, Addrs(Pairs)),
    e("trailer-encapsulation", 34, Int(1)),
    e("arp-timeout", 35, Int(4)),
    e("ethernet-encap", 36, Int(1)),
    e("tcp-ttl", 37, Int(1)),
    e("tcp-keepalive", 38, Int(4)),
    e("nis-domain", 40, Name),
    e("nis-server", 41, Addrs(List)),
    e("ntp-server", 42, Addrs(List)),
    internal("vendor-encap", 43, Free),
    e("netbios-ns", 44, Addrs(List)),
    e("netbios-dd", 45, Addrs(List)),
    e("netbios-nodetype", 46, Int(1)),
    e("netbios-scope", 47, Free),
    e("x-windows-fs", 48, Addrs(List)),
    e("x-windows-dm", 49, Addrs(List)),
    internal("requested-address", 50, Addrs(List)),
    internal("lease-time", 51, Time),
    internal("option-overload", 52, Free),
    internal("message-type", 53, Int(1)),
    internal("server-identifier", 54, Addrs(List)),
    internal("parameter-request", 55, Free),
    internal("message", 56, Free),
    internal("max-message-size", 57, Free),
    e("T1", 58, Time),
    e("T2", 59, Time),
    e("vendor-class", 60, Free),
    internal("client-id", 61, Free),
    e("nis+-domain", 64, Name),
    e("nis+-server", 65, Addrs(List)),
    e("tftp-server", 66, Name),
    e("bootfile-name", 67, Name),
    e("mobile-ip-home", 68, Addrs(List)),
    e("smtp-server", 69, Addrs(List)),
    e("pop3-server", 70, Addrs(List)),
    e("nntp-server", 71, Addrs(List)),
    e("irc-server", 74, Addrs(List)),
    e("user-class", 77, Free),
    e("rapid-commit", 80, Free),
    internal("FQDN", 81, Free),
    internal("agent-info", 82, Free),
    e("last-transaction", 91, Time),
    e("associated-ip", 92, Addrs(List)),
    e("client-arch", 93, Int(2)),
    e("client-interface-id", 94, Free),
    e("client-machine-id", 97, Free),
    e("posix-timezone", 100, Name),
    e("tzdb-timezone", 101, Name),
    e("ipv6-only", 108, Int(4)),
    internal("subnet-select", 118, Free),
    e("domain-search", 119, Domains),
    e("sip-server", 120, Free),
    e("classless-static-route", 121, Free),
    e("vendor-id-encap", 125, Free),
    e("tftp-server-address", 150, Addrs(List)),
];

/// dnsmasq's pseudo-option that sets siaddr (its table gives it code 255).
const SIADDR_NAME: &str = "server-ip-address";

/// Codes the server writes itself; a port may not override them.
const RESERVED: &[u8] = &[0, 50, 52, 53, 54, 55, 57, 61, 82, 255];

const DOMAIN_SEARCH: u8 = 119;
const SIP_SERVER: u8 = 120;
const CLASSLESS_ROUTES: u8 = 121;

/// What an opt_name resolves to.
enum Target {
    Code(u8, ValueKind),
    Siaddr,
}

/// The option code an opt_name stands for ("router", "option:router", "3"), if any.
pub fn code_of(opt_name: &str) -> Option<u8> {
    match resolve(opt_name).ok()? {
        Target::Code(code, _) => Some(code),
        Target::Siaddr => None,
    }
}

/// Encodes one extra_dhcp_opt as dnsmasq would put it on the wire.
pub fn encode(opt_name: &str, opt_value: &str) -> Result<Encoded> {
    let fail = |why: anyhow::Error| anyhow!("extra_dhcp_opt {opt_name:?} = {opt_value:?}: {why:#}");
    let target = resolve(opt_name).map_err(fail)?;
    match target {
        Target::Siaddr => ipv4(opt_value.trim()).map(Encoded::Siaddr).map_err(fail),
        Target::Code(code, kind) => {
            if RESERVED.contains(&code) {
                return Err(fail(anyhow!("option {code} is set by the server itself")));
            }
            let mut v = value(code, kind, opt_value).map_err(fail)?;
            // dnsmasq NUL-terminates the TFTP server and boot file names:
            // some PXE ROMs read them as C strings.
            if matches!(code, 66 | 67) && v.last() != Some(&0) {
                v.push(0);
            }
            Ok(Encoded::Option(code, v))
        }
    }
}

/// Finds the option an opt_name names: a number, a table name, or either after "option:".
fn resolve(opt_name: &str) -> Result<Target> {
    let name = opt_name.trim();
    if name.contains(',') || name.starts_with("tag:") {
        bail!("tag-conditional options are not supported");
    }
    let name = name.strip_prefix("option:").unwrap_or(name);
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        let code: u8 = name
            .parse()
            .map_err(|_| anyhow!("option number {name} is above 255"))?;
        // A number takes the type the table gives that code, as in dnsmasq.
        let kind = TABLE
            .iter()
            .find(|t| t.code == code)
            .map_or(Free, |t| t.kind);
        return Ok(Target::Code(code, kind));
    }
    if name.eq_ignore_ascii_case(SIADDR_NAME) {
        return Ok(Target::Siaddr);
    }
    let entry = TABLE
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| anyhow!("unknown DHCP option name {name:?}"))?;
    // Neutron always writes "option:<name>", which dnsmasq refuses for internal options.
    if entry.internal && !RESERVED.contains(&entry.code) {
        bail!(
            "dnsmasq does not accept option {} by name; use its number {}",
            entry.name,
            entry.code
        );
    }
    Ok(Target::Code(entry.code, entry.kind))
}

/// Encodes a value for an option of the given code and kind.
fn value(code: u8, kind: ValueKind, v: &str) -> Result<Vec<u8>> {
    // dnsmasq sends an option given without a value as a zero-length option.
    if v.is_empty() {
        return Ok(Vec::new());
    }
    match kind {
        Addrs(shape) => addresses(v, shape),
        Name => Ok(v.as_bytes().to_vec()),
        Domains => domains(v, 0),
        Time => time(v),
        Int(size) => int(v, size),
        Free => free(code, v),
    }
}

/// Lists of IPv4 addresses (`OT_ADDR_LIST`), no `/prefix` descriptors.
fn addresses(v: &str, shape: Shape) -> Result<Vec<u8>> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let mut out = Vec::with_capacity(parts.len() * 4);
    for p in &parts {
        out.extend_from_slice(&ipv4(p)?.octets());
    }
    match shape {
        One if parts.len() != 1 => bail!("takes exactly one IPv4 address, got {}", parts.len()),
        Pairs if !parts.len().is_multiple_of(2) => {
            bail!("takes pairs of IPv4 addresses, got {}", parts.len())
        }
        _ => Ok(out),
    }
}

fn ipv4(s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| anyhow!("bad IPv4 address {s:?}"))
}

/// `OT_TIME`: seconds, or a number with a w/d/h/m/s suffix; always 4 bytes.
fn time(v: &str) -> Result<Vec<u8>> {
    let t = v.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        _ => (t, 's'),
    };
    let fac: i64 = match unit {
        'w' => 7 * 24 * 3600,
        'd' => 24 * 3600,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => bail!("bad time {t:?}: the unit must be one of w, d, h, m, s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| anyhow!("bad time {t:?}: expected seconds or a number with w/d/h/m/s"))?;
    let secs = n
        .checked_mul(fac)
        .filter(|s| (0..=i64::from(u32::MAX)).contains(s))
        .ok_or_else(|| anyhow!("time {t:?} does not fit 32 bits"))?;
    Ok((secs as u32).to_be_bytes().to_vec())
}

/// A fixed-size number: decimal (with dnsmasq's b/s/i size suffix) or exactly `size` hex bytes.
fn int(v: &str, size: u8) -> Result<Vec<u8>> {
    let t = v.trim();
    if let Some(bytes) = hex(t)? {
        if bytes.len() != size as usize {
            bail!("expects {size} byte(s), got {} hex byte(s)", bytes.len());
        }
        return Ok(bytes);
    }
    let (n, suffix) = decimal(t).ok_or_else(|| anyhow!("expects a {size}-byte number"))?;
    number(n, suffix.unwrap_or(size))
}

/// Size 0 in dnsmasq's table: hex bytes, else a decimal, else IPv4 addresses, else a string.
fn free(code: u8, v: &str) -> Result<Vec<u8>> {
    if let Some(bytes) = hex(v)? {
        return Ok(bytes);
    }
    if let Some((n, suffix)) = decimal(v) {
        // dnsmasq sizes an untyped number by its magnitude.
        let bits = n as u32;
        let size = if bits & 0xffff_0000 != 0 {
            4
        } else if bits & 0xff00 != 0 {
            2
        } else {
            1
        };
        return number(n, suffix.unwrap_or(size));
    }
    if looks_like_addresses(v) {
        let mut out = Vec::new();
        if code == SIP_SERVER {
            out.push(1); // RFC 3361 encoding byte: addresses
        }
        out.extend(prefixed_addresses(code, v)?);
        return Ok(out);
    }
    match code {
        DOMAIN_SEARCH => domains(v, 0),
        SIP_SERVER => domains(v, 1), // RFC 3361 encoding byte 0: names
        _ => Ok(v.as_bytes().to_vec()),
    }
}

/// dnsmasq's hex form: at least two colon-separated fields of hex digits ("01:02:ff").
/// `Ok(None)` when the value is not of that form.
fn hex(v: &str) -> Result<Option<Vec<u8>>> {
    let is_hex = v.contains(':') && v.bytes().all(|b| b == b':' || b.is_ascii_hexdigit());
    if !is_hex {
        return Ok(None);
    }
    v.split(':')
        .map(|f| match f.len() {
            1 | 2 => Ok(u8::from_str_radix(f, 16).expect("checked hex digits")),
            _ => Err(anyhow!(
                "bad hex bytes {v:?}: each field must be 1 or 2 hex digits"
            )),
        })
        .collect::<Result<Vec<u8>>>()
        .map(Some)
}

/// A decimal with an optional b/s/i size suffix (1, 2, 4 bytes); atoi's range.
fn decimal(v: &str) -> Option<(i64, Option<u8>)> {
    let (digits, size) = match v.as_bytes().last()? {
        b'b' => (&v[..v.len() - 1], Some(1)),
        b's' => (&v[..v.len() - 1], Some(2)),
        b'i' => (&v[..v.len() - 1], Some(4)),
        _ => (v, None),
    };
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    (i64::from(i32::MIN)..=i64::from(u32::MAX))
        .contains(&n)
        .then_some((n, size))
}

/// `n` big-endian in `size` bytes (two's complement when negative); an error when it does not fit.
fn number(n: i64, size: u8) -> Result<Vec<u8>> {
    let bits = 8 * u32::from(size);
    let fits = n < (1i64 << bits) && n >= -(1i64 << (bits - 1));
    if !fits {
        bail!("{n} does not fit in {size} byte(s)");
    }
    Ok((n as u32).to_be_bytes()[4 - size as usize..].to_vec())
}

/// dnsmasq's `is_addr`: digits, dots, commas, spaces and non-leading slashes, with a digit and a dot.
fn looks_like_addresses(v: &str) -> bool {
    !v.starts_with('/')
        && v.contains('.')
        && v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b".,/ ".contains(&b))
}

/// Addresses where each may carry a `/prefix`: then it is written as RFC 3442's
/// descriptor (prefix length, significant octets). Option 121 must alternate
/// destination/prefix and router.
fn prefixed_addresses(code: u8, v: &str) -> Result<Vec<u8>> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if code == CLASSLESS_ROUTES {
        let well_formed = parts.len().is_multiple_of(2)
            && parts
                .chunks(2)
                .all(|pair| pair[0].contains('/') && !pair[1].contains('/'));
        if !well_formed {
            bail!("expects destination/prefix,router pairs");
        }
    }
    let mut out = Vec::new();
    for p in parts {
        match p.split_once('/') {
            None => out.extend_from_slice(&ipv4(p)?.octets()),
            Some((addr, len)) => {
                let addr = ipv4(addr)?;
                let len: u8 = len
                    .parse()
                    .ok()
                    .filter(|l| *l <= 32)
                    .ok_or_else(|| anyhow!("bad prefix length in {p:?}"))?;
                out.push(len);
                out.extend_from_slice(&addr.octets()[..len.div_ceil(8) as usize]);
            }
        }
    }
    Ok(out)
}

/// Domains in DNS wire format after `header` zero bytes, each name tail-compressed
/// against the names before it exactly as dnsmasq does (RFC 3397, RFC 3361).
fn domains(v: &str, header: usize) -> Result<Vec<u8>> {
    let mut names: Vec<&str> = v.split(',').map(str::trim).collect();
    while names.last() == Some(&"") {
        names.pop(); // dnsmasq stops at the first empty name; trailing commas are harmless
    }
    let mut buf = vec![0u8; header];
    for name in names {
        let start = buf.len();
        if name != "." {
            for label in domain_labels(name)? {
                buf.push(label.len() as u8);
                buf.extend_from_slice(label.as_bytes());
            }
        }
        buf.push(0);
        compress(&mut buf, header, start)?;
    }
    Ok(buf)
}

/// Replaces the longest suffix of the name at `start` that equals a name suffix
/// found at a label boundary of the earlier data with a pointer. Mirrors
/// dnsmasq's walk (earliest match wins, comparing up to the next zero byte).
fn compress(buf: &mut Vec<u8>, header: usize, start: usize) -> Result<()> {
    let cstr = |b: &[u8], i: usize| -> Vec<u8> {
        b[i..].iter().take_while(|&&c| c != 0).copied().collect()
    };
    let mut tail = start;
    while buf[tail] != 0 {
        let wanted = cstr(buf, tail);
        let mut r = header;
        while r < start {
            if cstr(buf, r) == wanted {
                let offset = r - header;
                if offset > 0x3fff {
                    bail!("domain list too long to compress");
                }
                buf.truncate(tail);
                buf.extend_from_slice(&(offset as u16 | 0xc000).to_be_bytes());
                return Ok(());
            }
            r += buf[r] as usize + 1;
        }
        tail += buf[tail] as usize + 1;
    }
    Ok(())
}

/// A domain's labels, checked as dnsmasq's `check_name` does (trailing dot dropped).
fn domain_labels(name: &str) -> Result<Vec<&str>> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        bail!("bad domain {name:?}");
    }
    let labels: Vec<&str> = bare.split('.').collect();
    for l in &labels {
        let ok = !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            bail!("bad domain {name:?}: label {l:?}");
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(code: u8, bytes: &[u8]) -> Result<Encoded, &'static str> {
        Ok(Encoded::Option(code, bytes.to_vec()))
    }

    /// The expected encoding, or a substring of the expected error.
    type Want = fn() -> Result<Encoded, &'static str>;

    /// {description, opt_name, opt_value, expected}
    #[rustfmt::skip]
    const CASES: &[(&str, &str, &str, Want)] = &[
        // Address lists (OT_ADDR_LIST)
        ("netmask takes one address", "netmask", "255.255.255.0", || opt(1, &[255, 255, 255, 0])),
        ("netmask refuses two addresses", "netmask", "255.0.0.0,255.255.0.0", || Err("exactly one")),
        ("router list, option: prefix as Neutron writes it", "option:router", "10.0.0.1,10.0.0.2", || opt(3, &[10, 0, 0, 1, 10, 0, 0, 2])),
        ("dns-server, spaces after commas tolerated", "dns-server", "8.8.8.8, 1.1.1.1", || opt(6, &[8, 8, 8, 8, 1, 1, 1, 1])),
        ("names are case-insensitive", "DNS-Server", "8.8.8.8", || opt(6, &[8, 8, 8, 8])),
        ("log-server", "log-server", "10.0.0.7", || opt(7, &[10, 0, 0, 7])),
        ("lpr-server", "lpr-server", "10.0.0.9", || opt(9, &[10, 0, 0, 9])),
        ("swap-server", "swap-server", "10.0.0.16", || opt(16, &[10, 0, 0, 16])),
        ("policy-filter takes address/mask pairs", "policy-filter", "10.0.0.0,255.0.0.0", || opt(21, &[10, 0, 0, 0, 255, 0, 0, 0])),
        ("router-solicitation", "router-solicitation", "224.0.0.2", || opt(32, &[224, 0, 0, 2])),
        ("static-route takes destination/router pairs", "static-route", "10.1.0.0,10.0.0.1", || opt(33, &[10, 1, 0, 0, 10, 0, 0, 1])),
        ("static-route refuses an odd count", "static-route", "10.1.0.0,10.0.0.1,10.2.0.0", || Err("pairs")),
        ("nis-server", "nis-server", "10.0.0.41", || opt(41, &[10, 0, 0, 41])),
        ("ntp-server list", "ntp-server", "10.0.0.1,10.0.0.2", || opt(42, &[10, 0, 0, 1, 10, 0, 0, 2])),
        ("netbios-ns", "netbios-ns", "10.0.0.44", || opt(44, &[10, 0, 0, 44])),
        ("netbios-dd", "netbios-dd", "10.0.0.45", || opt(45, &[10, 0, 0, 45])),
        ("x-windows-fs", "x-windows-fs", "10.0.0.48", || opt(48, &[10, 0, 0, 48])),
        ("x-windows-dm", "x-windows-dm", "10.0.0.49", || opt(49, &[10, 0, 0, 49])),
        ("nis+-server", "nis+-server", "10.0.0.65", || opt(65, &[10, 0, 0, 65])),
        ("mobile-ip-home", "mobile-ip-home", "10.0.0.68", || opt(68, &[10, 0, 0, 68])),
        ("smtp-server", "smtp-server", "10.0.0.69", || opt(69, &[10, 0, 0, 69])),
        ("pop3-server", "pop3-server", "10.0.0.70", || opt(70, &[10, 0, 0, 70])),
        ("nntp-server", "nntp-server", "10.0.0.71", || opt(71, &[10, 0, 0, 71])),
        ("irc-server", "irc-server", "10.0.0.74", || opt(74, &[10, 0, 0, 74])),
        ("tftp-server-address is option 150, an address list", "tftp-server-address", "10.0.0.5", || opt(150, &[10, 0, 0, 5])),
        ("bare number takes the table's type (150 = addresses)", "150", "10.0.0.5", || opt(150, &[10, 0, 0, 5])),
        ("broadcast by number", "28", "10.0.0.255", || opt(28, &[10, 0, 0, 255])),
        ("an address option refuses a name", "router", "gw.example.com", || Err("bad IPv4 address")),
        ("an address option refuses a bad dotted quad", "dns-server", "8.8.8.256", || Err("\"8.8.8.256\"")),
        ("an address option refuses a prefix", "router", "10.0.0.1/24", || Err("bad IPv4 address")),
        // siaddr
        ("server-ip-address sets siaddr", "server-ip-address", "10.0.0.5", || Ok(Encoded::Siaddr(Ipv4Addr::new(10, 0, 0, 5)))),
        ("option:server-ip-address sets siaddr", "option:server-ip-address", "10.0.0.5", || Ok(Encoded::Siaddr(Ipv4Addr::new(10, 0, 0, 5)))),
        ("server-ip-address needs an address", "server-ip-address", "tftp.example.com", || Err("bad IPv4 address")),
        // Names (OT_NAME): bytes as given, even when they look like numbers
        ("tftp-server is a name, NUL-terminated", "tftp-server", "10.0.0.5", || opt(66, b"10.0.0.5\0")),
        ("bootfile-name is a name, NUL-terminated", "bootfile-name", "pxelinux.0", || opt(67, b"pxelinux.0\0")),
        ("bootfile-name keeps commas and colons", "bootfile-name", "http://a/b,c", || opt(67, b"http://a/b,c\0")),
        ("domain-name", "domain-name", "example.org", || opt(15, b"example.org")),
        ("root-path", "root-path", "/srv/root", || opt(17, b"/srv/root")),
        ("extension-path", "extension-path", "/srv/ext", || opt(18, b"/srv/ext")),
        ("nis-domain", "nis-domain", "nis", || opt(40, b"nis")),
        ("nis+-domain", "nis+-domain", "nisplus", || opt(64, b"nisplus")),
        ("hostname by number", "12", "vm1", || opt(12, b"vm1")),
        ("hostname by name is refused as dnsmasq does", "option:hostname", "vm1", || Err("use its number 12")),
        ("an empty name sends an empty option", "root-path", "", || opt(17, &[])),
        // Fixed-size numbers
        ("time-offset is 4 bytes, signed", "time-offset", "-3600", || opt(2, &(-3600i32).to_be_bytes())),
        ("boot-file-size is 2 bytes", "boot-file-size", "1024", || opt(13, &[4, 0])),
        ("ip-forward-enable is a 1-byte boolean", "ip-forward-enable", "1", || opt(19, &[1])),
        ("non-local-source-routing", "non-local-source-routing", "0", || opt(20, &[0])),
        ("max-datagram-reassembly is 2 bytes", "max-datagram-reassembly", "576", || opt(22, &[2, 64])),
        ("default-ttl is 1 byte", "default-ttl", "64", || opt(23, &[64])),
        ("mtu is 2 bytes", "mtu", "1450", || opt(26, &[0x05, 0xaa])),
        ("mtu by number is 2 bytes too", "26", "9000", || opt(26, &[0x23, 0x28])),
        ("mtu as 2 hex bytes", "mtu", "05:dc", || opt(26, &[0x05, 0xdc])),
        ("mtu refuses 3 hex bytes", "mtu", "00:05:dc", || Err("expects 2 byte(s)")),
        ("mtu refuses a value above 65535", "mtu", "70000", || Err("does not fit in 2 byte(s)")),
        ("mtu refuses a word", "mtu", "big", || Err("expects a 2-byte number")),
        ("all-subnets-local", "all-subnets-local", "1", || opt(27, &[1])),
        ("router-discovery", "router-discovery", "0", || opt(31, &[0])),
        ("trailer-encapsulation", "trailer-encapsulation", "1", || opt(34, &[1])),
        ("arp-timeout is 4 bytes", "arp-timeout", "60", || opt(35, &[0, 0, 0, 60])),
        ("ethernet-encap", "ethernet-encap", "1", || opt(36, &[1])),
        ("tcp-ttl is 1 byte", "tcp-ttl", "64", || opt(37, &[64])),
        ("tcp-keepalive is 4 bytes", "tcp-keepalive", "7200", || opt(38, &[0, 0, 0x1c, 0x20])),
        ("netbios-nodetype is 1 byte", "netbios-nodetype", "8", || opt(46, &[8])),
        ("client-arch is 2 bytes", "client-arch", "7", || opt(93, &[0, 7])),
        ("a size suffix overrides the table, as dnsmasq allows", "mtu", "1i", || opt(26, &[0, 0, 0, 1])),
        ("a boolean refuses 256", "ip-forward-enable", "256", || Err("does not fit in 1 byte(s)")),
        // Times (OT_TIME)
        ("T1 in seconds", "T1", "1800", || opt(58, &[0, 0, 0x07, 0x08])),
        ("T2 with an hour suffix", "T2", "2h", || opt(59, &[0, 0, 0x1c, 0x20])),
        ("lease-time by number with a day suffix", "51", "1d", || opt(51, &[0, 1, 0x51, 0x80])),
        ("a time refuses a word", "T1", "soon", || Err("bad time")),
        // Domain search (RFC 3397) and SIP (RFC 3361)
        ("domain-search, one name", "domain-search", "example.com", || opt(119, b"\x07example\x03com\x00")),
        ("domain-search compresses a shared suffix", "domain-search", "eng.example.com,example.com", || opt(119, b"\x03eng\x07example\x03com\x00\xc0\x04")),
        ("domain-search compresses a partial suffix", "domain-search", "a.example.com,b.example.com", || opt(119, b"\x01a\x07example\x03com\x00\x01b\xc0\x02")),
        ("domain-search drops a trailing dot", "domain-search", "example.com.", || opt(119, b"\x07example\x03com\x00")),
        ("domain-search refuses an empty label", "domain-search", "a..com", || Err("bad domain")),
        ("sip-server with a name has encoding byte 0", "sip-server", "sip.example.com", || opt(120, b"\x00\x03sip\x07example\x03com\x00")),
        ("sip-server with addresses has encoding byte 1", "sip-server", "10.0.0.1,10.0.0.2", || opt(120, &[1, 10, 0, 0, 1, 10, 0, 0, 2])),
        // Classless static routes (RFC 3442)
        ("classless-static-route as Neutron writes it", "classless-static-route", "10.0.0.0/24,10.0.0.1,0.0.0.0/0,10.0.0.254", || opt(121, &[24, 10, 0, 0, 10, 0, 0, 1, 0, 10, 0, 0, 254])),
        ("classless-static-route /32 host route", "121", "169.254.169.254/32,10.0.0.2", || opt(121, &[32, 169, 254, 169, 254, 10, 0, 0, 2])),
        ("classless-static-route /9 keeps two octets", "classless-static-route", "10.128.0.0/9,10.0.0.1", || opt(121, &[9, 10, 128, 10, 0, 0, 1])),
        ("classless-static-route refuses a router without destination", "classless-static-route", "10.0.0.0/24", || Err("pairs")),
        ("classless-static-route refuses /33", "classless-static-route", "10.0.0.0/33,10.0.0.1", || Err("bad prefix length")),
        // Untyped options: dnsmasq characterises the value
        ("vendor-class is a plain string", "vendor-class", "PXEClient", || opt(60, b"PXEClient")),
        ("user-class string", "user-class", "iPXE", || opt(77, b"iPXE")),
        ("netbios-scope string", "netbios-scope", "scope", || opt(47, b"scope")),
        ("client-interface-id as hex", "client-interface-id", "01:02:03", || opt(94, &[1, 2, 3])),
        ("client-machine-id as hex", "client-machine-id", "00:aa:BB", || opt(97, &[0, 0xaa, 0xbb])),
        ("vendor-id-encap as hex", "vendor-id-encap", "00:00:0d:e9", || opt(125, &[0, 0, 0x0d, 0xe9])),
        ("vendor-encap by number, hex", "43", "01:04:0a:00:00:01", || opt(43, &[1, 4, 10, 0, 0, 1])),
        ("unknown number, hex bytes", "224", "de:ad:be:ef", || opt(224, &[0xde, 0xad, 0xbe, 0xef])),
        ("unknown number, small decimal is 1 byte", "224", "5", || opt(224, &[5])),
        ("unknown number, decimal above 255 is 2 bytes", "224", "300", || opt(224, &[1, 44])),
        ("unknown number, decimal above 65535 is 4 bytes", "224", "70000", || opt(224, &[0, 1, 0x11, 0x70])),
        ("unknown number, negative decimal is 4 bytes", "224", "-1", || opt(224, &[0xff; 4])),
        ("unknown number, decimal with a size suffix", "224", "5s", || opt(224, &[0, 5])),
        ("unknown number, address", "224", "10.0.0.1", || opt(224, &[10, 0, 0, 1])),
        ("unknown number, plain string", "252", "http://wpad/wpad.dat", || opt(252, b"http://wpad/wpad.dat")),
        ("unknown number, hex field of 3 digits is refused", "224", "abc:01", || Err("1 or 2 hex digits")),
        ("empty value sends an empty option", "router", "", || opt(3, &[])),
        // Names and numbers
        ("unknown option name", "no-such-option", "1", || Err("unknown DHCP option name \"no-such-option\"")),
        ("option number above 255", "256", "1", || Err("above 255")),
        ("tag-conditional names are refused", "tag:!ipxe,bootfile-name", "undionly.kpxe", || Err("tag-conditional")),
        ("message-type is the server's", "53", "1", || Err("set by the server")),
        ("server-identifier is the server's", "54", "10.0.0.1", || Err("set by the server")),
        ("requested-address is the client's", "50", "10.0.0.1", || Err("set by the server")),
        ("parameter-request list is the client's", "55", "01:03", || Err("set by the server")),
        ("max-message-size is the client's", "57", "1500", || Err("set by the server")),
        ("client-id is the client's", "61", "01:02", || Err("set by the server")),
        ("agent-info belongs to the relay", "82", "01:02", || Err("set by the server")),
        ("PAD is not an option", "0", "1", || Err("set by the server")),
        ("END is not an option", "255", "1", || Err("set by the server")),
        ("server-identifier by name is refused too", "option:server-identifier", "10.0.0.1", || Err("server-identifier")),
        ("errors name the option and value", "mtu", "big", || Err("extra_dhcp_opt \"mtu\" = \"big\"")),
    ];

    #[test]
    fn encodes_as_dnsmasq_does() {
        for (desc, name, value, want) in CASES {
            let got = encode(name, value);
            match (want(), got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{desc}"),
                (Err(sub), Err(e)) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains(sub), "{desc}: error {msg:?} lacks {sub:?}");
                }
                (w, g) => panic!("{desc}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn long_strings_are_kept_whole() {
        let long = "x".repeat(600);
        assert_eq!(
            encode("root-path", &long).unwrap(),
            Encoded::Option(17, long.into_bytes())
        );
    }

    #[test]
    fn code_of_resolves_names_and_numbers() {
        let cases: &[(&str, &str, Option<u8>)] = &[
            ("a name", "tftp-server", Some(66)),
            ("an option: name", "option:bootfile-name", Some(67)),
            ("a name in another case", "t1", Some(58)),
            ("a number", "150", Some(150)),
            ("an unknown number", "224", Some(224)),
            ("siaddr is not an option", "server-ip-address", None),
            ("an unknown name", "frobnicate", None),
            ("a number above 255", "300", None),
        ];
        for (desc, name, want) in cases {
            assert_eq!(code_of(name), *want, "{desc}");
        }
    }

    #[test]
    fn table_names_and_codes_are_unique() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert!(a.code != b.code, "code {} twice", a.code);
                assert!(
                    !a.name.eq_ignore_ascii_case(b.name),
                    "name {} twice",
                    a.name
                );
            }
        }
    }
}
