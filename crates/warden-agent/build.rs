//! Places the functions a binary's steady state runs next to each other (lld's
//! `--symbol-ordering-file`): the agent's from `hot-symbols.txt`, the fence guard's from
//! `guard-hot-symbols.txt` (with the libc functions of its static build,
//! scripts/build-release.sh); both made by `scripts/hot-symbols.py`. The kernel maps
//! code 64 KiB at a time around each page it faults in, so a steady loop whose code is
//! spread over the whole text keeps most of it resident; grouped, it keeps a fraction.
//! Release builds for x86_64 Linux only, where rustc (1.90 and later) links with its own
//! lld; names a list does not know (another toolchain, other dependency versions) are
//! ignored, so a stale list costs memory, not correctness. `WARDEN_NO_SYMBOL_ORDERING=1`
//! turns it off (e.g. with another linker).

use std::path::PathBuf;

/// Each binary and the list of its steady-state functions.
const LISTS: [(&str, &str); 2] = [
    ("warden", "hot-symbols.txt"),
    ("warden-guard", "guard-hot-symbols.txt"),
];

fn main() {
    for (_, list) in LISTS {
        println!("cargo:rerun-if-changed={list}");
    }
    println!("cargo:rerun-if-env-changed=WARDEN_NO_SYMBOL_ORDERING");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let target = std::env::var("TARGET").unwrap_or_default();
    let off = std::env::var_os("WARDEN_NO_SYMBOL_ORDERING").is_some_and(|v| v != "0");
    let custom_linker = std::env::var("CARGO_ENCODED_RUSTFLAGS")
        .is_ok_and(|f| f.contains("linker"))
        || std::env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER"));
    if !release
        || off
        || custom_linker
        || target != "x86_64-unknown-linux-gnu"
        || !rustc_links_with_lld()
    {
        return;
    }
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    for (bin, list) in LISTS {
        let list = dir.join(list);
        if !list.is_file() {
            continue;
        }
        println!(
            "cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
    }
}

/// rustc 1.90 and later link x86_64 Linux binaries with their bundled lld by default.
fn rustc_links_with_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    major > 1 || (major == 1 && minor >= 90)
}
