//! The DATA / BDAT decoder under any input, fed in two pieces split at a fuzzer-chosen point.
//! Invariants (the smuggling contract in `smtp/data.rs`):
//! - the output never holds a bare CR or bare LF;
//! - DATA ends exactly after the first `<CRLF>.<CRLF>` (or a leading `.<CRLF>`), never
//!   earlier, never later, and consumes nothing after it;
//! - splitting the input changes nothing;
//! - BDAT never ends by itself.
#![no_main]

use bulwark::config::BareNewline;
use bulwark::smtp::data::DataDecoder;
use libfuzzer_sys::fuzz_target;

fn no_bare_line_ends(out: &[u8]) {
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
}

/// Where a correct DATA reader stops: just after the first real terminator.
fn expected_end(input: &[u8]) -> Option<usize> {
    if input.starts_with(b".\r\n") {
        return Some(3);
    }
    input
        .windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5)
}

fn run(input: &[u8], split: usize, bdat: bool) -> (Vec<u8>, usize, bool) {
    let mut decoder = if bdat {
        DataDecoder::for_bdat(BareNewline::Normalize)
    } else {
        DataDecoder::for_data(BareNewline::Normalize)
    };
    let mut out = Vec::new();
    let mut used = decoder.decode(&input[..split], &mut out);
    if !decoder.is_done() {
        used += decoder.decode(&input[split..], &mut out);
    }
    if bdat {
        decoder.finish_bdat(&mut out);
    }
    (out, used, decoder.is_done())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let split = (split as usize).min(input.len());

    let (out, used, done) = run(input, split, false);
    let (whole, whole_used, _) = run(input, input.len(), false);
    assert_eq!(out, whole, "splitting changed the output");
    assert_eq!(used, whole_used);
    match expected_end(input) {
        Some(end) => {
            assert!(done, "did not stop at the terminator ending at {end}");
            assert_eq!(used, end, "stopped at {used}, terminator ends at {end}");
            no_bare_line_ends(&out);
            assert!(out.is_empty() || out.ends_with(b"\r\n"));
        }
        None => {
            assert!(!done, "stopped at {used} without a terminator");
            assert_eq!(used, input.len());
            // A CR may still be pending at the end of an unfinished DATA: check the rest.
            let cut = if out.ends_with(b"\r") {
                out.len() - 1
            } else {
                out.len()
            };
            no_bare_line_ends(&out[..cut]);
        }
    }

    let (out, used, done) = run(input, split, true);
    assert!(!done, "BDAT ended by itself");
    assert_eq!(used, input.len());
    no_bare_line_ends(&out);
});
