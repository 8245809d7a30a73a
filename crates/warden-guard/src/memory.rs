//! Releasing the mapped code a process no longer runs.
//!
//! Most of an agent's resident memory is not its own data but clean pages of its binary
//! and of libc: code and read-only data it ran once (argument and YAML parsing, start-up,
//! a bootstrap) and the neighbours the kernel maps with each page it faults in
//! ("fault-around", 64 KiB at a time). Those pages stay resident until memory is short.
//! [`release_mapped_code`] drops this process's mappings of such pages: the pages stay
//! in the page cache (the next use is a minor fault, no disk read) and whatever the
//! process still runs comes back by itself, so its resident set afterwards is the code
//! it actually uses.
//!
//! Only private, read-only, file-backed mappings without a single anonymous page are
//! released: their content is exactly the file's. Pages that were written (a shared
//! library's relocated data, made read-only after relocation) are private copies that
//! `MADV_DONTNEED` would revert to the file's bytes, so a mapping holding any is left
//! alone. Read-only mappings cannot be written afterwards, so the check cannot go stale.

use std::path::Path;

/// A mapping this process may release: address range and whether it is safe to.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    /// Private, not writable, backed by a file (a path), no anonymous pages.
    releasable: bool,
}

/// Parses `/proc/self/smaps` text into mappings, judging each one.
fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            // A mapping header: "start-end perms offset dev inode [path]".
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let p = perms.as_bytes();
            let read_only_private = p.len() == 4 && p[1] == b'-' && p[3] == b'p';
            out.push(Mapping {
                start,
                end,
                releasable: read_only_private && path.starts_with('/'),
            });
        } else if first == "Anonymous:" {
            let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(1);
            if kb != 0 {
                if let Some(m) = out.last_mut() {
                    m.releasable = false;
                }
            }
        }
    }
    out
}

/// Drops this process's mappings of clean file pages (see the module doc). Returns the
/// bytes of address space released (mapped or not), or the error reading `smaps`.
pub fn release_mapped_code() -> std::io::Result<usize> {
    release_from(Path::new("/proc/self/smaps"))
}

fn release_from(smaps: &Path) -> std::io::Result<usize> {
    let text = std::fs::read_to_string(smaps)?;
    let mut released = 0;
    for m in parse_smaps(&text).into_iter().filter(|m| m.releasable) {
        // SAFETY: the range is a whole mapping of this process, private, read-only and
        // file-backed with no anonymous page: MADV_DONTNEED only unmaps page-cache pages
        // that are faulted in again, unchanged, on the next access.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released += m.end - m.start;
        }
    }
    Ok(released)
}

/// This process's resident set in KiB (`VmRSS`), for logs and tests.
pub fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 123 /usr/bin/warden
Rss:                 400 kB
Anonymous:             0 kB
55d0c0100000-55d0c0400000 r-xp 00100000 08:01 123 /usr/bin/warden
Anonymous:             0 kB
55d0c0400000-55d0c0410000 r--p 00400000 08:01 123 /usr/bin/warden
Anonymous:            64 kB
55d0c0410000-55d0c0411000 rw-p 00410000 08:01 123 /usr/bin/warden
Anonymous:             4 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Anonymous:             0 kB
7f0000001000-7f0000002000 r--s 00000000 08:01 9 /dev/shm/x
Anonymous:             0 kB
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_private_read_only_file_mappings_are_released() {
        let judged: Vec<bool> = parse_smaps(SMAPS).iter().map(|m| m.releasable).collect();
        // rodata, text: yes; relocated read-only data (anonymous pages), writable data,
        // anonymous, shared and [vdso] mappings: no.
        assert_eq!(judged, [true, true, false, false, false, false, false]);
        assert_eq!(parse_smaps(SMAPS)[1].start, 0x55d0c0100000);
    }

    #[test]
    fn releasing_keeps_the_process_working_and_shrinks_it() {
        let before = resident_kib().unwrap();
        let released = release_mapped_code().unwrap();
        assert!(released > 0);
        let after = resident_kib().unwrap();
        assert!(
            after < before,
            "resident {before} KiB before, {after} KiB after"
        );
        // Code released above runs again (faulted back in) and gives the same answers.
        assert_eq!(parse_smaps(SMAPS).len(), 7);
        assert_eq!(format!("{:>5}", 42), "   42");
    }
}
