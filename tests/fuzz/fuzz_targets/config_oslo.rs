//! Fuzz target: the oslo.config reader (`config::oslo::parse_files_with`) on
//! any text, split at NUL bytes into several `--config-file`s (neutron.conf,
//! then dhcp_agent.ini, …) so that the later-file-wins merge is exercised too.
//! The reader opens one file itself, `dnsmasq_config_file`: here the last part
//! is that file, kept in memory and returned for whatever path the text names
//! (a path of `/missing` reads as "no such file").
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
    let files: Vec<(String, String)> = parts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("fuzz-{i}.conf"), t.to_string()))
        .collect();
    let read = |path: &std::path::Path| {
        if path == std::path::Path::new("/missing") {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        Ok(dnsmasq.unwrap_or_default().to_string())
    };
    match oslo::parse_files_with(&files, &read) {
        Ok((settings, warnings)) => {
            let _ = settings.to_agent_config().lease_secs();
            let _ = settings.transport_url.as_ref().map(|t| t.amqp_uris());
            assert!(warnings.iter().all(|w| !w.is_empty()), "warnings say why");
        }
        Err(e) => assert!(!format!("{e:#}").is_empty(), "an error says why"),
    }
});
