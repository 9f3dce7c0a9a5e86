//! Fuzz target: the oslo.config reader (`config::oslo::parse_files`) on any
//! text, split at NUL bytes into several `--config-file`s (neutron.conf, then
//! dhcp_agent.ini, …) so that the later-file-wins merge is exercised too.
//! The reader opens one file itself, `dnsmasq_config_file`: the last part is
//! written to a file of this process, which `@DNSMASQ@` in the text names.
//! A parsed result must convert to the agent's options.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::config::oslo;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts: Vec<&str> = text.split('\0').take(5).collect();
    let dnsmasq = if parts.len() > 1 { parts.pop() } else { None };
    let path = dnsmasq_file();
    std::fs::write(&path, dnsmasq.unwrap_or_default()).expect("writing the dnsmasq file");
    let path = path.to_str().expect("a UTF-8 temp path");
    let files: Vec<(String, String)> = parts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("fuzz-{i}.conf"), t.replace("@DNSMASQ@", path)))
        .collect();
    match oslo::parse_files(&files) {
        Ok((settings, warnings)) => {
            let _ = settings.to_agent_config().lease_secs();
            let _ = settings.transport_url.as_ref().map(|t| t.amqp_uris());
            assert!(warnings.iter().all(|w| !w.is_empty()), "warnings say why");
        }
        Err(e) => assert!(!format!("{e:#}").is_empty(), "an error says why"),
    }
});

/// This process's dnsmasq_config_file.
fn dnsmasq_file() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("xdhcp-fuzz-dnsmasq-{}.conf", std::process::id()))
}
