//! Embeds the XDP object built by `cargo xtask build-ebpf`, refusing a missing or stale one.
use std::{env, fs, path::PathBuf};

include!("../dhcp-ebpf/source_hash.rs");

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.parent().unwrap().to_path_buf();
    let crate_dir = workspace.join("dhcp-ebpf");
    println!("cargo:rerun-if-env-changed=XDHCP_EBPF_OBJ");
    let object = env::var_os("XDHCP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/ebpf/bpfel-unknown-none/release/dhcp-ebpf"));
    let stamp = object.with_extension("srchash");
    for path in [
        &object,
        &stamp,
        &crate_dir.join("src"),
        &crate_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    if !object.exists() {
        panic!(
            "the XDP object {} is missing: run `cargo xtask build-ebpf` first",
            object.display()
        );
    }
    let want = ebpf_source_hash(&crate_dir).expect("hashing dhcp-ebpf sources");
    let have = fs::read_to_string(&stamp).unwrap_or_default();
    if have.trim() != format!("{want:016x}") {
        panic!(
            "the XDP object {} is stale (dhcp-ebpf changed since it was built): run `cargo xtask build-ebpf`",
            object.display()
        );
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("dhcp-ebpf.o");
    fs::copy(&object, &out).expect("copying the XDP object into OUT_DIR");
}
