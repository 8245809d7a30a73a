//! Places the functions the agent's steady state runs next to each other in its binary
//! (lld's `--symbol-ordering-file` with `hot-symbols.txt`, made by
//! `scripts/hot-symbols.py`): the kernel maps code 64 KiB at a time around each page it
//! faults in, so a steady loop whose code is spread over the whole text keeps most of it
//! resident; grouped, it keeps a fraction. Release builds for x86_64 Linux only, where
//! rustc (1.90 and later) links with its own lld; names the list does not know (another
//! toolchain, other dependency versions) are ignored, so a stale list costs memory, not
//! correctness. `WARDEN_NO_SYMBOL_ORDERING=1` turns it off (e.g. with another linker).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=hot-symbols.txt");
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
    let list = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("hot-symbols.txt");
    if !list.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=warden=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bin=warden=-Wl,--no-warn-symbol-ordering");
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
