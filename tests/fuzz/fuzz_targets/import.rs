//! Fuzz target: `xdhcp import`'s reader on any bytes: the document parser
//! and, when a document parses, its checks against an empty database. Errors
//! are the expected outcome; a panic, a hang or an empty message is a bug.

#![no_main]

use libfuzzer_sys::fuzz_target;
use xdhcp::neutron::{import, model::Snapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    match import::parse(json) {
        Ok(doc) => {
            if let Err(e) = import::validate(&doc, &Snapshot::default()) {
                assert!(!format!("{e:#}").is_empty(), "an error says why");
            }
        }
        Err(e) => assert!(!format!("{e:#}").is_empty(), "an error says why"),
    }
});
