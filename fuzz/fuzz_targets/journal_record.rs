//! A journal segment as recovery finds it after a crash or a bad disk: `queue::journal::parse`
//! must refuse anything damaged and never panic; what it accepts lies inside the bytes, and a
//! message record's image goes on to `spool::decode`, which must not panic either. The input
//! is also wrapped in a record with a correct checksum (random bytes almost never have one),
//! which must parse back exactly.
#![no_main]

use bulwark::queue::journal::{encode_message, parse, Record, HEADER_LEN};
use bulwark::queue::spool::decode;
use bulwark::queue::QueueId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut rest = bytes;
    // Recovery walks records until the first that does not check out; so does this.
    for _ in 0..1024 {
        let Some((record, used)) = parse(rest) else {
            break;
        };
        assert!(used >= HEADER_LEN && used <= rest.len());
        if let Record::Message { image, .. } = record {
            let _ = decode(image);
        }
        rest = &rest[used..];
    }
    let mut wrapped = Vec::new();
    encode_message(&mut wrapped, QueueId(42), bytes);
    let (record, used) = parse(&wrapped).expect("a freshly encoded record parses");
    assert_eq!(used, wrapped.len());
    assert_eq!(
        record,
        Record::Message {
            id: QueueId(42),
            image: bytes
        }
    );
    let _ = decode(bytes);
});
