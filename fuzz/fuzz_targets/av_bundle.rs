//! What signature updates and clamd send back: a signature bundle's zip (unpacked only after
//! its signature verified, but the parser must hold even so) and clamd's VERSION reply.
//! Nothing may panic.
#![no_main]

use bulwark::filters::antivirus::bundle;
use bulwark::filters::antivirus::clamd::ClamdVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = bundle::unpack(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClamdVersion::parse(text);
    }
});
