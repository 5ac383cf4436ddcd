//! Internet checksum arithmetic on fixed-size data (RFC 1071 sums, RFC 1624 incremental
//! updates). Values are 16-bit words read from packet memory in host order: one's
//! complement sums don't depend on byte order as long as every word is read and written
//! the same way, so no byte swapping is needed. Loops are over compile-time lengths only
//! (aya #1562: the verifier rejects checksums over variable-length packet data).

#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Sum of the 16-bit words of a value (even-sized, no padding).
#[inline(always)]
pub fn sum_words<T: Copy, const N: usize>(value: &T) -> u64 {
    // SAFETY: callers pass repr(C) header structs of exactly N 16-bit words.
    let words: &[u16; N] = unsafe { &*(value as *const T as *const [u16; N]) };
    let mut sum = 0u64;
    let mut i = 0;
    while i < N {
        sum += words[i] as u64;
        i += 1;
    }
    sum
}

#[inline(always)]
pub fn sum_u32(v: u32) -> u64 {
    (v & 0xffff) as u64 + (v >> 16) as u64
}

/// New checksum after a 32-bit field changed from `from` to `to` (RFC 1624 eqn. 3).
#[inline(always)]
pub fn replace4(csum: u16, from: u32, to: u32) -> u16 {
    let sum = (!csum) as u64 + sum_u32(!from) + sum_u32(to);
    !fold(sum)
}

/// New checksum after a 16-bit field changed from `from` to `to`.
#[inline(always)]
pub fn replace2(csum: u16, from: u16, to: u16) -> u16 {
    let sum = (!csum) as u64 + (!from) as u64 + to as u64;
    !fold(sum)
}

/// The IPv4 pseudo-header sum for an L4 checksum (addresses in network order).
#[inline(always)]
pub fn pseudo_header(saddr_be: u32, daddr_be: u32, proto: u8, l4_len: u16) -> u64 {
    sum_u32(saddr_be) + sum_u32(daddr_be) + (proto as u16).to_be() as u64 + l4_len.to_be() as u64
}
