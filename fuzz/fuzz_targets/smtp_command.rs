//! One command line as the session sees it: NUL lines are refused before parsing (as in
//! `Session::command`), the rest goes through `smtp_proto::Request::parse`, and every MAIL /
//! RCPT address then through `Mailbox::parse` with and without SMTPUTF8. Nothing may panic.
#![no_main]

use bulwark::smtp::address::Mailbox;
use libfuzzer_sys::fuzz_target;
use smtp_proto::Request;

fuzz_target!(|line: &[u8]| {
    if line.contains(&0) {
        return;
    }
    let Ok(request) = Request::parse(&mut line.iter()) else {
        return;
    };
    let address = match &request {
        Request::Mail { from } => from.address.as_ref(),
        Request::Rcpt { to } => to.address.as_ref(),
        _ => return,
    };
    for smtputf8 in [false, true] {
        if let Ok(mailbox) = Mailbox::parse(address, smtputf8) {
            // What the queue stores must parse again to the same mailbox.
            let canonical = mailbox.canonical();
            let again = Mailbox::parse(&canonical, smtputf8);
            assert!(
                again.is_ok(),
                "canonical form {canonical:?} of {address:?} does not parse"
            );
        }
    }
});
