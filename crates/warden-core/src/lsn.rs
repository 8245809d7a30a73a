//! WAL positions (LSNs) as PostgreSQL prints them (`%X/%X`).

/// Formats a byte position as PostgreSQL's `%X/%X` (e.g. `0/4000060`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses `%X/%X` into a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (n, s) in [
            (0x4000060u64, "0/4000060"),
            (0, "0/0"),
            (0x1_0000_00FF, "1/FF"),
        ] {
            assert_eq!(format_lsn(n), s);
            assert_eq!(parse_lsn(s), Some(n));
        }
        assert_eq!(parse_lsn("zz"), None);
        assert_eq!(parse_lsn("1/"), None);
        assert_eq!(parse_lsn("100000000/0"), None);
    }
}
