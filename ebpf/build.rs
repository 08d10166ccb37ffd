//! Compiles the XDP program (C) with clang-19 into OUT_DIR; the loader embeds the object.
//! clang is the one toolchain that builds BPF here reliably (see docs in the crate root).

use std::path::PathBuf;
use std::process::Command;

const CLANG: &str = "clang-19";

fn main() {
    let source = "src/bpf/flow.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("flow.bpf.o");
    let status = Command::new(CLANG)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
        .args(["-I/usr/include/x86_64-linux-gnu", "-c", source, "-o"])
        .arg(&object)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{CLANG} failed to compile {source} ({s}); is libbpf-dev installed?"),
        Err(e) => panic!(
            "cannot run {CLANG} ({e}): install it with `apt-get install -y clang-19 libbpf-dev` \
             (the Debian packages clang-19 and libbpf-dev)"
        ),
    }
}
