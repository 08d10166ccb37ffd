//! A next hop's reply lines through the delivery client's own parser
//! (`bulwark::smtp_client::parse_reply_line`, which `read_lines` uses), and the
//! enhanced-status extraction that decides retry or bounce. Nothing may panic; a parsed code
//! always has three digits.
#![no_main]

use bulwark::smtp_client::{parse_reply_line, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = Vec::new();
    for line in text.split_inclusive('\n') {
        let Ok((code, last, rest)) = parse_reply_line(line) else {
            return;
        };
        assert!((0..=999).contains(&code));
        lines.push(rest.to_string());
        if last {
            let response = Response {
                code,
                text: lines.join(" "),
            };
            let status = response.status();
            assert_eq!(status.split('.').count(), 3, "{status:?}");
            let _ = (response.is_positive(), response.is_permanent());
            return;
        }
    }
});
