//! The configuration loader (`config::load_str`) on any text: either a config or problems
//! with line:column, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = bulwark::config::load_str(text, "fuzz.toml", Path::new("/nonexistent")) {
        let _ = error.to_string();
        let _ = error.problems().len();
    }
});
