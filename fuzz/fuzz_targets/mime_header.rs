//! mail-parser on a header section, called exactly as `policy::MessageView::parsed_header`
//! and the session's envelope (Message-ID, Subject) call it, then every accessor a policy
//! stage reads. It fuzzes the library Bulwark relies on for headers, not code of Bulwark's
//! own (a `MessageView` needs a whole envelope, so the target calls mail-parser directly).
//! Nothing may panic.
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
