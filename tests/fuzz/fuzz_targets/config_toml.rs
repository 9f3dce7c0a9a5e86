//! Fuzz target: the `--config` TOML reader (`AgentConfig::parse`) on any
//! text. What it accepts must make sense: the lease time it hands the fast
//! path is derived without overflow, and every ignored key is named.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::config::AgentConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match AgentConfig::parse(text) {
        Ok((cfg, ignored)) => {
            let _ = cfg.lease_secs();
            assert!(
                ignored.iter().all(|k| !k.is_empty()),
                "ignored keys are named"
            );
        }
        Err(e) => assert!(!format!("{e:#}").is_empty(), "an error says why"),
    }
});
