//! A spool file as recovery finds it after a crash or a bad disk: `queue::spool::decode`
//! must refuse anything damaged and never panic; what it accepts has its content inside the
//! file and an envelope with readable fields.
#![no_main]

use bulwark::queue::spool::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((envelope, content)) = decode(bytes) {
        assert!(content.start == 4 && content.end <= bytes.len());
        // Recovery hands the envelope to the queue index and the delivery engine; they
        // read its recipients and sender: touch them as they do.
        let _ = (envelope.recipients.len(), envelope.sender.len());
    }
});
