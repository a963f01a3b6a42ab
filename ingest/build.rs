//! Lays out the server's code so that the functions a server runs lie together (see
//! `benches/code_order.py`): release builds of the `argus` binary for x86-64 Linux, which
//! rustc links with lld, hand `code-order.txt` to lld as its symbol ordering file. Code
//! pages are resident memory, and the kernel maps 64 KiB around each one a server touches.
//! `ARGUS_CODE_ORDER=0` turns it off (a linker other than lld or mold refuses the option).

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=code-order.txt");
    println!("cargo::rerun-if-env-changed=ARGUS_CODE_ORDER");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let off = std::env::var("ARGUS_CODE_ORDER").is_ok_and(|v| v == "0");
    // rustc links this target with its own lld (since 1.90; the workspace needs 1.95),
    // unless a linker is named, which may not know the option.
    let own_linker = std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_none()
        && !std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("linker"));
    if target != "x86_64-unknown-linux-gnu" || !release || off || !own_linker {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&dir).join("code-order.txt");
    if !order.is_file() {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bin=argus=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Functions the file names but this build lacks (renamed, inlined away) are expected.
    println!("cargo::rustc-link-arg-bin=argus=-Wl,--no-warn-symbol-ordering");
}
