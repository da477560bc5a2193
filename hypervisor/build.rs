//! Links the hypervisor with its own linker script (only for the bare-metal target).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // A static position-independent executable: the entry assembly relocates it.
        println!("cargo:rustc-link-arg-bins=-pie");
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        // Dependencies are built for a fixed address (the target's default): their
        // constant tables with pointers need relocating where they are, in .rodata too.
        println!("cargo:rustc-link-arg-bins=-znotext");
    }
    println!("cargo:rerun-if-changed=linker.ld");
}
