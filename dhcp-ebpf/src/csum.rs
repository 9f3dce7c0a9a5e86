//! The Internet checksum (RFC 1071): a ones'-complement sum of 16-bit words,
//! kept unfolded in a u64 while adding and folded once at the end.

/// `sum` plus the big-endian 16-bit words of `bytes`; an odd last byte is the
/// high byte of a word padded with zero (so only the last piece may be odd).
#[inline(always)]
pub fn add(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += ((bytes[i] as u64) << 8) | bytes[i + 1] as u64;
        i += 2;
    }
    if i < bytes.len() {
        sum += (bytes[i] as u64) << 8;
    }
    sum
}

/// Folds a sum into 16 bits. Four fixed rounds fold any u64 (a loop until no
/// carry is left is unbounded to the verifier).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    for _ in 0..4 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field for a sum taken with the field zero.
#[inline(always)]
pub fn checksum(sum: u64) -> u16 {
    !fold(sum)
}

/// The UDP checksum field: as [`checksum`], but 0 is sent as 0xffff (0 means
/// "no checksum", RFC 768).
#[inline(always)]
pub fn udp_checksum(sum: u64) -> u16 {
    match checksum(sum) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folding until no carry is left: what four rounds must equal.
    fn fold_until_done(mut sum: u64) -> u16 {
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn four_rounds_fold_like_a_loop() {
        let cases = [
            ("zero", 0u64),
            ("one word", 0xabcd),
            ("one carry", 0x1_0000),
            ("carry that carries again", 0x1_ffff),
            ("32-bit all ones", 0xffff_ffff),
            ("48 bits", 0xffff_ffff_ffff),
            ("u64::MAX", u64::MAX),
            ("u64::MAX - 1", u64::MAX - 1),
            ("high word only", 0xffff_0000_0000_0000),
        ];
        for (what, sum) in cases {
            assert_eq!(fold(sum), fold_until_done(sum), "{what}: {sum:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to 2ddf0, folds to ddf2.
        let sum = add(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(sum, 0x2ddf0);
        assert_eq!(fold(sum), 0xddf2);
        assert_eq!(checksum(sum), !0xddf2);
    }

    #[test]
    fn odd_last_byte_is_padded_with_zero() {
        assert_eq!(add(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(add(7, &[]), 7, "nothing added");
        assert_eq!(add(0, &[0xff]), 0xff00);
    }

    #[test]
    fn udp_sends_zero_as_all_ones() {
        // A sum that folds to 0xffff has checksum 0, sent as 0xffff.
        assert_eq!(checksum(0xffff), 0);
        assert_eq!(udp_checksum(0xffff), 0xffff);
        assert_eq!(udp_checksum(0x1234), !0x1234);
    }
}
