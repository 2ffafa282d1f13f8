//! Byte-level pieces of the scan: eight bytes at a time, member-name prints, and names
//! decoded.

use super::{Decline, Scanned};
use crate::patch::json::Text;

pub(super) const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each zero byte of `v`: exact for the lowest one, and a borrow may
/// flag bytes above it, so only the first flag is to be trusted.
fn zero(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGH
}

/// The index of the first byte of `w` (little endian) that is `"`, `\` or a control
/// character (below 0x20), or 8. Each test flags its first matching byte exactly (a
/// borrow only runs upwards from it), so the lowest flag is the answer.
pub(super) fn special(w: u64) -> usize {
    (special_flags(w).trailing_zeros() / 8) as usize
}

/// [`special`], also stopping at a byte of a multi-byte character (0x80 and above).
pub(super) fn special_or_high(w: u64) -> usize {
    ((special_flags(w) | (w & HIGH)).trailing_zeros() / 8) as usize
}

#[inline(always)]
fn special_flags(w: u64) -> u64 {
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
}

/// From `pos`, eight bytes a step, to the first `"`, `\` or control character, or to
/// where fewer than eight bytes are left.
#[inline(always)]
pub(super) fn plain_run(b: &[u8], pos: usize) -> usize {
    run(b, pos, special)
}

/// [`plain_run`] that also stops at the first byte of 0x80 or above: the validating
/// scan checks multi-byte characters where it meets them.
#[inline(always)]
pub(super) fn ascii_run(b: &[u8], pos: usize) -> usize {
    run(b, pos, special_or_high)
}

#[inline(always)]
fn run(b: &[u8], mut pos: usize, stop: impl Fn(u64) -> usize) -> usize {
    while let Some(&chunk) = b.get(pos..).and_then(|rest| rest.first_chunk::<8>()) {
        let at = stop(u64::from_le_bytes(chunk));
        pos += at;
        if at < 8 {
            break;
        }
    }
    pos
}

/// A member name's first bytes, and its length when shorter than 8: names whose prints
/// differ differ (a name of 8 bytes or more has no control character in its 8th byte,
/// where a shorter one's print holds its length). `b[start..end]` is the name.
pub(super) fn fingerprint(b: &[u8], start: usize, end: usize) -> u64 {
    let len = end.saturating_sub(start);
    let word = match b.get(start..).and_then(|rest| rest.first_chunk::<8>()) {
        Some(&word) => u64::from_le_bytes(word),
        None => {
            let mut word = [0u8; 8];
            for (slot, &byte) in word.iter_mut().zip(b.get(start..end).unwrap_or_default()) {
                *slot = byte;
            }
            u64::from_le_bytes(word)
        }
    };
    if len >= 8 {
        word
    } else {
        (word & ((1u64 << (8 * len)) - 1)) | ((len as u64) << 56)
    }
}

/// A validated member name's content (canonical escapes only).
pub(super) fn decode(raw: &[u8]) -> Scanned<Text> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).map(Text::from).map_err(|_| Decline);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let (byte, width) = match raw.get(i + 1) {
            Some(b'n') => (b'\n', 2),
            Some(b'r') => (b'\r', 2),
            Some(b't') => (b'\t', 2),
            Some(b'b') => (0x08, 2),
            Some(b'f') => (0x0c, 2),
            Some(b'u') => {
                let hex = raw.get(i + 4..i + 6).ok_or(Decline)?;
                let hex = std::str::from_utf8(hex).map_err(|_| Decline)?;
                (u8::from_str_radix(hex, 16).map_err(|_| Decline)?, 6)
            }
            Some(&other) => (other, 2),
            None => return Err(Decline),
        };
        out.push(byte);
        i += width;
    }
    String::from_utf8(out).map(Text::from).map_err(|_| Decline)
}
