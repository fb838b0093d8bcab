//! The record decoder on arbitrary bytes: never panics, and whatever it accepts re-encodes to
//! exactly the bytes it was decoded from.
#![no_main]

use eventlog::format::{Decoded, decode_record, encode_record, find_valid_record_after};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Decoded::Record(view) = decode_record(data) {
        let mut again = Vec::new();
        encode_record(&mut again, &view.fields);
        assert_eq!(&again[..], &data[..view.record_len]);
    }
    let _ = find_valid_record_after(data, 0);
});
