//! The filter seam's view of a message: `policy::MessageView::parsed_header` (mail-parser on
//! the header section), then every accessor a policy stage reads. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::MimeHeaders;

fuzz_target!(|header: &[u8]| {
    let Some(message) = mail_parser::MessageParser::default().parse_headers(header) else {
        return;
    };
    let _ = (message.subject(), message.message_id(), message.date());
    let _ = (
        message.from(),
        message.to(),
        message.reply_to(),
        message.return_path(),
    );
    for header in message.headers() {
        let _ = (header.name(), header.value());
    }
    let _ = message.content_type();
});
