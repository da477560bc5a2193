//! hypocaust-firmware: the M-mode SBI firmware hypocaust runs on (docs/firmware.md).
//!
//! Everything that runs on the hart is in `machine/`; this file only keeps the host build
//! of the workspace working (the binary means nothing off riscv64 bare metal).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod machine;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("hypocaust-firmware runs on riscv64 bare metal: build it with `cargo xtask`");
    std::process::exit(2);
}
