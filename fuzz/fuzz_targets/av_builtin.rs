//! The built-in anti-virus engine on a hostile message: MIME decoding, uuencoded blocks, zip
//! archives nested in each other (bomb limits), the hash lists and the magic-byte checks.
//! Nothing may panic, and a scan must finish within its unpack budget.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use bulwark::filters::antivirus::BuiltinEngine;
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static BuiltinEngine {
    static ENGINE: OnceLock<BuiltinEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        BuiltinEngine::load(Path::new("/nonexistent/bulwark-fuzz"), 4 << 20).expect("empty set")
    })
}

fuzz_target!(|message: &[u8]| {
    let _ = engine().scan(message);
});
