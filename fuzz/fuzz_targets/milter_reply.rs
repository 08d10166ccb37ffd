//! A hostile milter's bytes: a stream of length-prefixed reply packets must decode or fail,
//! never panic nor allocate past the packet limit.
#![no_main]

use bulwark::filters::milter::protocol::{decode_reply, packet_length};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Some((prefix, tail)) = rest.split_first_chunk::<4>() {
        let Ok(length) = packet_length(*prefix) else {
            return;
        };
        let Some(packet) = tail.get(..length) else {
            let _ = decode_reply(tail);
            return;
        };
        let _ = decode_reply(packet);
        rest = &tail[length..];
    }
});
