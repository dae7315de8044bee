//! Parses arbitrary bytes as a CoAP datagram. The parser must never panic,
//! and any datagram it accepts must re-encode to exactly the same bytes and
//! parse back to an equal message (the extended option forms are unambiguous).
#![no_main]

use coapgate_coap::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::parse(data) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(encoded, data, "encode(parse(x)) != x");
    let reparsed = Message::parse(&encoded).expect("re-encoded message must parse");
    assert_eq!(reparsed, message, "parse(encode(m)) != m");
    // The accessors on a parsed message must not panic either.
    let _ = (
        message.block1(),
        message.block2(),
        message.content_format(),
        message.uri_path(),
        message.uri_query(),
    );
});
