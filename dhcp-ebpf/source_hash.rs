// Included by xtask (which writes the stamp next to the object it builds) and by
// dhcp-user's build.rs (which refuses to embed an object whose stamp differs), so
// a stale or missing XDP object is never embedded silently.

/// FNV-1a over every file of the eBPF crate that shapes the object, in path order.
pub fn ebpf_source_hash(crate_dir: &std::path::Path) -> std::io::Result<u64> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = vec![crate_dir.join("Cargo.toml")];
    walk(&crate_dir.join("src"), &mut files)?;
    files.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in &files {
        let name = file.strip_prefix(crate_dir).unwrap_or(file);
        let bytes = std::fs::read(file)?;
        for b in name.to_string_lossy().as_bytes().iter().chain([0u8].iter()).chain(bytes.iter()) {
            hash ^= *b as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(hash)
}
