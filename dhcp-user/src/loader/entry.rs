//! The per-network entry program `xdhcp`, assembled here rather than loaded
//! from the object: it is sixteen instructions, and loading the object once
//! per network (parsing the ELF, loading its BTF, opening every pinned map)
//! cost ~18 ms a network, three minutes for 10,000 networks. Assembled, one
//! network's entry is a single BPF_PROG_LOAD of a few microseconds' worth of
//! verification.
//!
//! What it does, as the C it stands for:
//!
//! ```c
//! int xdhcp(struct xdp_md *ctx) {
//!     if (bpf_xdp_adjust_meta(ctx, -4) == 0) {
//!         __u32 *meta = (void *)(long)ctx->data_meta;
//!         if ((void *)(meta + 1) <= (void *)(long)ctx->data) {
//!             *meta = NET;                    /* the network's id */
//!             bpf_tail_call(ctx, &JUMP, 0);   /* xdhcp_fast */
//!         }
//!     }
//!     return XDP_PASS;                        /* the slow path answers */
//! }
//! ```

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};
use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_prog_type};
use dhcp_ebpf::{ENTRY_PROGRAM, NET_META_LEN};

use super::sys;

/// One BPF instruction: opcode, dst (low nibble) and src (high nibble)
/// registers, offset, immediate; little-endian as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (include/uapi/linux/bpf.h, bpf_common.h).
const MOV64_REG: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ADD64_IMM: u8 = 0x07; // BPF_ALU64 | BPF_ADD | BPF_K
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ST_W: u8 = 0x62; // BPF_ST | BPF_MEM | BPF_W
const LD_IMM64: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
const JNE_IMM: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JGT_REG: u8 = 0x2d; // BPF_JMP | BPF_JGT | BPF_X
const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
/// ld_imm64's source register when its immediate is a map descriptor.
const PSEUDO_MAP_FD: u8 = 1;
// Helpers.
const FUNC_TAIL_CALL: i32 = 12;
const FUNC_XDP_ADJUST_META: i32 = 54;
// struct xdp_md offsets.
const MD_DATA: i16 = 0;
const MD_DATA_META: i16 = 8;
const XDP_PASS: i32 = 2;

/// The entry program of network `net`, tail-calling through the prog array `jump`.
fn program(net: u32, jump: i32) -> [Insn; 17] {
    const R0: u8 = 0;
    const R1: u8 = 1;
    const R2: u8 = 2;
    const R3: u8 = 3;
    const R4: u8 = 4;
    const R6: u8 = 6;
    [
        insn(MOV64_REG, R6, R1, 0, 0),                     // 0: r6 = ctx
        insn(MOV64_IMM, R2, 0, 0, -(NET_META_LEN as i32)), // 1: r2 = -4
        insn(CALL, 0, 0, 0, FUNC_XDP_ADJUST_META),         // 2
        insn(JNE_IMM, R0, 0, 15 - 4, 0),                   // 3: failed: pass
        insn(LDX_W, R2, R6, MD_DATA_META, 0),              // 4: r2 = meta
        insn(LDX_W, R3, R6, MD_DATA, 0),                   // 5: r3 = data
        insn(MOV64_REG, R4, R2, 0, 0),                     // 6
        insn(ADD64_IMM, R4, 0, 0, NET_META_LEN as i32),    // 7: r4 = meta + 4
        insn(JGT_REG, R4, R3, 15 - 9, 0),                  // 8: no room: pass
        insn(ST_W, R2, 0, 0, net as i32),                  // 9: *meta = net
        insn(MOV64_REG, R1, R6, 0, 0),                     // 10: r1 = ctx
        insn(LD_IMM64, R2, PSEUDO_MAP_FD, 0, jump),        // 11: r2 = &JUMP
        insn(0, 0, 0, 0, 0),                               // 12: (its upper half)
        insn(MOV64_IMM, R3, 0, 0, 0),                      // 13: r3 = 0
        insn(CALL, 0, 0, 0, FUNC_TAIL_CALL),               // 14: does not return
        insn(MOV64_IMM, R0, 0, 0, XDP_PASS),               // 15
        insn(EXIT, 0, 0, 0, 0),                            // 16
    ]
}

/// Loads (and so verifies) network `net`'s entry program; `jump` is the
/// pinned JUMP prog array. On a refusal the verifier's log is in the error.
pub(super) fn load(net: u32, jump: &OwnedFd) -> Result<OwnedFd> {
    let insns = program(net, jump.as_raw_fd());
    let license = CString::new("GPL").expect("no NUL");
    let try_load = |log: Option<&mut Vec<u8>>| {
        let mut attr = sys::zeroed_attr();
        // SAFETY: writing plain integers into the prog-load member of the union.
        let a = unsafe { &mut attr.__bindgen_anon_3 };
        a.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
        a.insn_cnt = insns.len() as u32;
        a.insns = insns.as_ptr() as u64;
        a.license = license.as_ptr() as u64;
        // What aya gives the object's XDP programs: xdhcp_fast, installed in
        // JUMP, fixed the array's owner, and a tail call must match it.
        a.expected_attach_type = bpf_attach_type::BPF_XDP as u32;
        for (d, s) in a.prog_name.iter_mut().zip(ENTRY_PROGRAM.bytes()) {
            *d = s as libc::c_char;
        }
        if let Some(log) = log {
            a.log_level = 1;
            a.log_size = log.len() as u32;
            a.log_buf = log.as_mut_ptr() as u64;
        }
        // SAFETY: the instructions, license and log buffer outlive the call;
        // the kernel reads insn_cnt instructions and writes at most log_size bytes.
        unsafe { sys::bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) }
    };
    match try_load(None) {
        // SAFETY: the kernel just returned this descriptor to us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let mut log = vec![0u8; 64 * 1024];
            let _ = try_load(Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err(e).with_context(|| {
                format!(
                    "the kernel refused the entry program of network {net}; verifier log:\n{}",
                    String::from_utf8_lossy(&log[..end])
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jumps_land_on_the_pass_and_the_map_load_is_two_slots() {
        let p = program(7, 3);
        // Both branches go to "r0 = XDP_PASS".
        for at in [3usize, 8] {
            let target = at as i64 + 1 + p[at].off as i64;
            assert_eq!(p[target as usize].code, MOV64_IMM);
            assert_eq!(p[target as usize].imm, XDP_PASS);
        }
        assert_eq!((p[11].code, p[11].regs >> 4, p[11].imm), (LD_IMM64, 1, 3));
        assert_eq!(p[9].imm, 7);
        assert_eq!(p[16].code, EXIT);
    }
}
