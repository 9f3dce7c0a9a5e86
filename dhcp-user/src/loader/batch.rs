//! Reading whole hash maps by BPF_MAP_LOOKUP_BATCH (aya 0.14 has no batch
//! operations): a few syscalls per map where iterating takes two per entry.

use anyhow::{Context, Result};
use aya::maps::MapData;
use aya_obj::generated::bpf_cmd;

use super::sys;

/// Every (key, value) of hash map `map` by BPF_MAP_LOOKUP_BATCH. Entries that
/// come and go meanwhile may or may not be seen, as with iteration.
pub(super) fn lookup_all<K: aya::Pod, V: aya::Pod>(map: &MapData) -> Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    lookup_each(map, |k: &K, v: &V| out.push((*k, *v)))?;
    Ok(out)
}

/// Calls `f` on every (key, value) of hash map `map`, read as [`lookup_all`]
/// reads, without holding the whole map in memory.
pub(super) fn lookup_each<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    mut f: impl FnMut(&K, &V),
) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut chunk = 4096usize;
    // SAFETY: aya::Pod types are plain data for which all-zero bytes are valid.
    let zero_k: K = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let zero_v: V = unsafe { std::mem::zeroed() };
    let (mut keys, mut values) = (vec![zero_k; chunk], vec![zero_v; chunk]);
    // Hash maps' batch position is a bucket index (u32); none = from the start.
    let (mut position, mut next): (Option<u32>, u32) = (None, 0);
    loop {
        let mut attr = sys::zeroed_attr();
        attr.batch.in_batch = position.as_ref().map_or(0, |p| p as *const u32 as u64);
        attr.batch.out_batch = &mut next as *mut u32 as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = chunk as u32;
        attr.batch.map_fd = fd;
        // SAFETY: the kernel writes at most `count` keys and values into the
        // buffers, which hold `chunk` of each, and one u32 into `next`.
        let err = unsafe { sys::bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) }.err();
        match err.as_ref().and_then(|e| e.raw_os_error()) {
            None | Some(libc::ENOENT) => {}
            // One bucket holds more entries than a chunk: try it again, bigger.
            Some(libc::ENOSPC) if chunk < 1 << 20 => {
                chunk *= 4;
                keys.resize(chunk, zero_k);
                values.resize(chunk, zero_v);
                continue;
            }
            Some(_) => {
                return Err(err.unwrap()).context("BPF_MAP_LOOKUP_BATCH");
            }
        }
        // SAFETY: `count` is a plain integer the kernel set to the entries it wrote.
        let n = unsafe { attr.batch.count } as usize;
        for (k, v) in keys[..n].iter().zip(&values[..n]) {
            f(k, v);
        }
        // ENOENT: the end of the map.
        if err.is_some() {
            return Ok(());
        }
        position = Some(next);
    }
}
