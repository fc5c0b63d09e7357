//! Walks a PyTorch archive's pickle before Candle reads it: Candle's reader allocates what a
//! string, bytes or integer opcode says it holds before reading it, so a damaged pickle of a
//! few kilobytes could ask for gigabytes. Every length is checked against the bytes that are
//! left; nothing is decoded.

/// `Ok` when every length-prefixed argument in `pickle` fits in the bytes after it (or the
/// walk meets an opcode it does not know, which Candle refuses by itself).
pub fn check_lengths(pickle: &[u8]) -> Result<(), String> {
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<u64, String> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= pickle.len())
            .ok_or_else(|| format!("the pickle ends inside an argument at byte {at}"))?;
        let mut v = 0u64;
        for (i, b) in pickle[*at..end].iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        *at = end;
        Ok(v)
    };
    while at < pickle.len() {
        let op = pickle[at];
        at += 1;
        // Width of the length prefix, for opcodes whose argument is that many bytes.
        let prefixed = match op {
            0x8a | 0x8c | b'C' | b'U' => Some(1),
            0x8b | b'X' | b'B' | b'T' => Some(4),
            0x8d | 0x8e | 0x96 => Some(8),
            _ => None,
        };
        if let Some(width) = prefixed {
            let len = take(&mut at, width)?;
            let len = if width == 4 && matches!(op, 0x8b | b'T') {
                i32::try_from(len as u32).map_err(|_| format!("a negative length at byte {at}"))?
                    as u64
            } else {
                len
            };
            let left = (pickle.len() - at) as u64;
            if len > left {
                return Err(format!(
                    "opcode 0x{op:02x} at byte {} claims {len} bytes; {left} are left",
                    at - width - 1
                ));
            }
            at += len as usize;
            continue;
        }
        let fixed = match op {
            b'.' => return Ok(()),
            0x80 | b'K' | b'q' | b'h' | 0x82 => 1,
            b'M' | 0x83 => 2,
            b'J' | b'r' | b'j' | 0x84 => 4,
            b'G' | 0x95 => 8,
            b'(' | b'}' | b']' | b')' | b't' | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 | b'N' | b'a'
            | b'e' | b's' | b'u' | b'b' | b'R' | 0x81 | b'0' | b'1' | b'2' | b'Q' | 0x94 | 0x93
            | 0x8f | 0x90 | 0x91 | 0x92 | 0x97 | 0x98 => 0,
            // Text arguments end at a newline (GLOBAL has two).
            b'c' | b'I' | b'L' | b'S' | b'V' | b'F' | b'p' | b'g' | b'P' => {
                let lines = if op == b'c' { 2 } else { 1 };
                for _ in 0..lines {
                    match pickle[at..].iter().position(|&b| b == b'\n') {
                        Some(n) => at += n + 1,
                        None => return Err("the pickle ends inside a text argument".into()),
                    }
                }
                continue;
            }
            _ => return Ok(()),
        };
        take(&mut at, fixed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_lengths;

    #[test]
    fn lengths_past_the_end_are_refused_and_real_ones_pass() {
        // PROTO 2, BINUNICODE "ab", BININT1 7, TUPLE2, STOP.
        let good = b"\x80\x02X\x02\x00\x00\x00abK\x07\x86.";
        assert_eq!(check_lengths(good), Ok(()));
        let claims = b"\x80\x02X\xff\xff\xff\x7fab.";
        let err = check_lengths(claims).unwrap_err();
        assert!(err.contains("claims 2147483647 bytes"), "{err}");
        assert!(
            check_lengths(b"\x80\x02\x8a\x09\x01").is_err(),
            "LONG1 past the end"
        );
        assert!(check_lengths(b"\x80").is_err(), "PROTO without its byte");
        assert!(
            check_lengths(b"cmodule\nname").is_err(),
            "GLOBAL without its newline"
        );
        assert_eq!(check_lengths(b"\x80\x02cmod\nname\n)\x81."), Ok(()));
    }
}
