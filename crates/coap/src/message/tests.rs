//! Codec tests: hand-built RFC 7252 style vectors, every format error,
//! extended-form boundaries and a deterministic random robustness test.

use super::*;

fn msg(mtype: MessageType, code: Code, mid: u16, token: &[u8]) -> Message {
    let mut m = Message::new(mtype, code, mid);
    m.token = Token::from_slice(token).unwrap();
    m
}

fn with_options(mut m: Message, options: &[(u16, &[u8])], payload: &[u8]) -> Message {
    for &(number, value) in options {
        m.add_option(number, value);
    }
    m.payload = payload.to_vec();
    m
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Hand-assembled datagrams in the style of RFC 7252 Appendix A, with the message each encodes.
fn known_vectors() -> Vec<(&'static str, Vec<u8>, Message)> {
    use MessageType::*;
    vec![
        (
            "A.1 CON GET /temperature",
            cat(&[&[0x40, 0x01, 0x7d, 0x34, 0xbb], b"temperature"]),
            with_options(
                msg(Confirmable, Code::GET, 0x7d34, &[]),
                &[(option::URI_PATH, b"temperature")],
                b"",
            ),
        ),
        (
            "A.1 ACK 2.05 piggybacked",
            cat(&[&[0x60, 0x45, 0x7d, 0x34, 0xff], b"22.5 C"]),
            with_options(
                msg(Acknowledgement, Code::CONTENT, 0x7d34, &[]),
                &[],
                b"22.5 C",
            ),
        ),
        (
            "A.2 CON GET with 1-byte token",
            cat(&[&[0x41, 0x01, 0x7d, 0x35, 0x20, 0xbb], b"temperature"]),
            with_options(
                msg(Confirmable, Code::GET, 0x7d35, &[0x20]),
                &[(option::URI_PATH, b"temperature")],
                b"",
            ),
        ),
        (
            "A.2 ACK 2.05 with token",
            cat(&[&[0x61, 0x45, 0x7d, 0x35, 0x20, 0xff], b"22.5 C"]),
            with_options(
                msg(Acknowledgement, Code::CONTENT, 0x7d35, &[0x20]),
                &[],
                b"22.5 C",
            ),
        ),
        (
            "empty ACK",
            vec![0x60, 0x00, 0x7d, 0x36],
            Message::empty_ack(0x7d36),
        ),
        ("RST", vec![0x70, 0x00, 0x12, 0x34], Message::reset(0x1234)),
        (
            "CON ping",
            vec![0x40, 0x00, 0x00, 0x01],
            msg(Confirmable, Code::EMPTY, 1, &[]),
        ),
        (
            "NON POST telemetry, 4-byte token, repeated Uri-Path, Content-Format",
            cat(&[
                &[0x54, 0x02, 0xab, 0xcd, 0x01, 0x02, 0x03, 0x04],
                &[0xb3],
                b"api",
                &[0x02],
                b"v1",
                &[0x03],
                b"tok",
                &[0x09],
                b"telemetry",
                &[0x11, 0x32],
                &[0xff],
                br#"{"t":1}"#,
            ]),
            with_options(
                msg(NonConfirmable, Code::POST, 0xabcd, &[1, 2, 3, 4]),
                &[
                    (option::URI_PATH, b"api"),
                    (option::URI_PATH, b"v1"),
                    (option::URI_PATH, b"tok"),
                    (option::URI_PATH, b"telemetry"),
                    (option::CONTENT_FORMAT, &[50]),
                ],
                br#"{"t":1}"#,
            ),
        ),
        (
            "CON PUT with Block1 (delta 15 -> 13+2) and 8-byte token",
            cat(&[
                &[0x48, 0x03, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8],
                &[0xc1, 0x00],
                &[0xd1, 0x02, 0x2e],
                &[0xff, 0xaa],
            ]),
            with_options(
                msg(Confirmable, Code::PUT, 0x0010, &[1, 2, 3, 4, 5, 6, 7, 8]),
                &[(option::CONTENT_FORMAT, &[0]), (option::BLOCK1, &[0x2e])],
                &[0xaa],
            ),
        ),
        (
            "ACK 2.01 with Location-Path and empty (zero) Content-Format",
            cat(&[&[0x60, 0x41, 0x00, 0x02, 0x82], b"rd", &[0x40]]),
            with_options(
                msg(Acknowledgement, Code::CREATED, 2, &[]),
                &[
                    (option::LOCATION_PATH, b"rd"),
                    (option::CONTENT_FORMAT, b""),
                ],
                b"",
            ),
        ),
        (
            "No-Response (258) via delta 14",
            vec![0x50, 0x02, 0x00, 0x03, 0xd1, 0xf5, 0x02],
            with_options(
                msg(NonConfirmable, Code::POST, 3, &[]),
                &[(option::NO_RESPONSE, &[0x02])],
                b"",
            ),
        ),
    ]
}

#[test]
fn known_vectors_parse_and_encode() {
    for (name, bytes, expected) in known_vectors() {
        let parsed = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, expected, "{name}: parse");
        assert_eq!(expected.encode(), bytes, "{name}: encode");
        let mut buf = vec![0xEE];
        expected.encode_into(&mut buf);
        assert_eq!(&buf[1..], &bytes[..], "{name}: encode_into appends");
    }
}

#[test]
fn format_errors() {
    use FormatError::*;
    let cases: Vec<(&str, Vec<u8>, FormatError)> = vec![
        (
            "TKL 9",
            vec![0x49, 0x01, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            InvalidTokenLength(9),
        ),
        ("TKL 15", vec![0x4f, 0x01, 0, 1], InvalidTokenLength(15)),
        (
            "token truncated",
            vec![0x42, 0x01, 0, 1, 0xaa],
            TruncatedToken,
        ),
        (
            "delta nibble 15",
            vec![0x40, 0x01, 0, 1, 0xf0],
            InvalidOptionDelta,
        ),
        (
            "delta 15 length 1",
            vec![0x40, 0x01, 0, 1, 0xf1, 0x00],
            InvalidOptionDelta,
        ),
        (
            "length nibble 15",
            vec![0x40, 0x01, 0, 1, 0x0f],
            InvalidOptionLength,
        ),
        (
            "length 15 after Uri-Path",
            vec![0x40, 0x01, 0, 1, 0xbf, 0x00],
            InvalidOptionLength,
        ),
        (
            "delta 13 without extension",
            vec![0x40, 0x01, 0, 1, 0xd0],
            TruncatedOption,
        ),
        (
            "delta 14 with 1 of 2 extension bytes",
            vec![0x40, 0x01, 0, 1, 0xe0, 0x00],
            TruncatedOption,
        ),
        (
            "length 13 without extension",
            vec![0x40, 0x01, 0, 1, 0xbd],
            TruncatedOption,
        ),
        (
            "length 14 with 1 of 2 extension bytes",
            vec![0x40, 0x01, 0, 1, 0xbe, 0x00],
            TruncatedOption,
        ),
        (
            "value truncated",
            vec![0x40, 0x01, 0, 1, 0xb3, b'a', b'b'],
            TruncatedOption,
        ),
        (
            "number 65535 + 1",
            vec![0x40, 0x01, 0, 1, 0xe0, 0xfe, 0xf2, 0x10],
            OptionNumberOverflow,
        ),
        (
            "delta 65804",
            vec![0x40, 0x01, 0, 1, 0xe0, 0xff, 0xff],
            OptionNumberOverflow,
        ),
        (
            "marker without payload",
            vec![0x40, 0x01, 0, 1, 0xff],
            EmptyPayload,
        ),
        (
            "marker without payload after option",
            vec![0x40, 0x01, 0, 1, 0xb1, b'a', 0xff],
            EmptyPayload,
        ),
        (
            "empty message with TKL",
            vec![0x41, 0x00, 0, 1, 0xaa],
            NonEmptyEmptyMessage,
        ),
        (
            "empty message with TKL but no token",
            vec![0x41, 0x00, 0, 1],
            NonEmptyEmptyMessage,
        ),
        (
            "empty message with payload",
            vec![0x60, 0x00, 0, 1, 0xff, 0x01],
            NonEmptyEmptyMessage,
        ),
        (
            "empty message with option",
            vec![0x70, 0x00, 0, 1, 0xb0],
            NonEmptyEmptyMessage,
        ),
    ];
    for (name, bytes, kind) in cases {
        let err = Message::parse(&bytes).expect_err(name);
        let mtype = MessageType::from_bits(bytes[0] >> 4);
        assert_eq!(
            err,
            ParseError::Format {
                mtype,
                message_id: 1,
                kind
            },
            "{name}"
        );
        assert_eq!(err.header(), Some((mtype, 1)), "{name}");
    }
}

#[test]
fn header_errors() {
    let cases: Vec<(&[u8], ParseError)> = vec![
        (&[], ParseError::TooShort(0)),
        (&[0x40, 0x01, 0x00], ParseError::TooShort(3)),
        (&[0x00, 0x01, 0x00, 0x01], ParseError::UnsupportedVersion(0)),
        (&[0x80, 0x01, 0x00, 0x01], ParseError::UnsupportedVersion(2)),
        (
            &[0xc0, 0x01, 0x00, 0x01, 0xff, 0x00],
            ParseError::UnsupportedVersion(3),
        ),
    ];
    for (bytes, expected) in cases {
        let err = Message::parse(bytes).unwrap_err();
        assert_eq!(err, expected);
        assert_eq!(err.header(), None);
    }
}

#[test]
fn parse_error_messages_are_readable() {
    let err = Message::parse(&[0x40, 0x01, 0x12, 0x34, 0xff]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "format error in Confirmable message 4660: payload marker followed by an empty payload"
    );
    assert_eq!(
        ParseError::TooShort(2).to_string(),
        "datagram of 2 bytes is shorter than the 4-byte CoAP header"
    );
}

#[test]
fn extended_delta_and_length_boundaries() {
    // (value, expected nibble, expected extension bytes)
    let cases: [(u32, u8, &[u8]); 7] = [
        (0, 0, &[]),
        (12, 12, &[]),
        (13, 13, &[0x00]),
        (268, 13, &[0xff]),
        (269, 14, &[0x00, 0x00]),
        (270, 14, &[0x00, 0x01]),
        (65535, 14, &[0xfe, 0xf2]),
    ];
    for &(value, nibble, ext) in &cases {
        // As an option number (delta from 0), with an empty value.
        let number = u16::try_from(value).unwrap();
        let m = with_options(
            msg(MessageType::Confirmable, Code::GET, 9, &[]),
            &[(number, b"")],
            b"",
        );
        let bytes = m.encode();
        assert_eq!(bytes[4], nibble << 4, "delta {value}");
        assert_eq!(&bytes[5..], ext, "delta {value}");
        assert_eq!(Message::parse(&bytes).unwrap(), m, "delta {value}");

        // As a delta between two options.
        if value < u32::from(u16::MAX) {
            let second = u16::try_from(value + 1).unwrap();
            let m = with_options(
                msg(MessageType::Confirmable, Code::GET, 9, &[]),
                &[(1, b""), (second, b"")],
                b"",
            );
            let bytes = m.encode();
            assert_eq!(bytes[5], nibble << 4, "second delta {value}");
            assert_eq!(Message::parse(&bytes).unwrap(), m, "second delta {value}");
        }

        // As a value length.
        let len = value as usize;
        let m = with_options(
            msg(MessageType::Confirmable, Code::GET, 9, &[]),
            &[(1, &vec![0x5a; len])],
            b"",
        );
        let bytes = m.encode();
        assert_eq!(bytes[4], 0x10 | nibble, "length {value}");
        assert_eq!(&bytes[5..5 + ext.len()], ext, "length {value}");
        assert_eq!(bytes.len(), 5 + ext.len() + len, "length {value}");
        assert_eq!(Message::parse(&bytes).unwrap(), m, "length {value}");
    }

    // The largest expressible value length.
    let m = with_options(
        msg(MessageType::NonConfirmable, Code::POST, 1, &[]),
        &[(60, &vec![1; MAX_OPTION_VALUE_LEN])],
        b"x",
    );
    let bytes = m.encode();
    assert_eq!(&bytes[4..8], &[0xde, 60 - 13, 0xff, 0xff]);
    assert_eq!(Message::parse(&bytes).unwrap(), m);
}

#[test]
#[should_panic(expected = "exceeds")]
fn oversized_option_value_is_rejected_on_insert() {
    let mut m = Message::new(MessageType::Confirmable, Code::GET, 1);
    m.add_option(1, vec![0; MAX_OPTION_VALUE_LEN + 1]);
}

#[test]
fn code_display_for_every_constant() {
    let cases = [
        (Code::EMPTY, "0.00"),
        (Code::GET, "0.01"),
        (Code::POST, "0.02"),
        (Code::PUT, "0.03"),
        (Code::DELETE, "0.04"),
        (Code::FETCH, "0.05"),
        (Code::PATCH, "0.06"),
        (Code::IPATCH, "0.07"),
        (Code::CREATED, "2.01"),
        (Code::DELETED, "2.02"),
        (Code::VALID, "2.03"),
        (Code::CHANGED, "2.04"),
        (Code::CONTENT, "2.05"),
        (Code::CONTINUE, "2.31"),
        (Code::BAD_REQUEST, "4.00"),
        (Code::UNAUTHORIZED, "4.01"),
        (Code::BAD_OPTION, "4.02"),
        (Code::FORBIDDEN, "4.03"),
        (Code::NOT_FOUND, "4.04"),
        (Code::METHOD_NOT_ALLOWED, "4.05"),
        (Code::NOT_ACCEPTABLE, "4.06"),
        (Code::REQUEST_ENTITY_INCOMPLETE, "4.08"),
        (Code::PRECONDITION_FAILED, "4.12"),
        (Code::REQUEST_ENTITY_TOO_LARGE, "4.13"),
        (Code::UNSUPPORTED_CONTENT_FORMAT, "4.15"),
        (Code::TOO_MANY_REQUESTS, "4.29"),
        (Code::INTERNAL_SERVER_ERROR, "5.00"),
        (Code::NOT_IMPLEMENTED, "5.01"),
        (Code::BAD_GATEWAY, "5.02"),
        (Code::SERVICE_UNAVAILABLE, "5.03"),
        (Code::GATEWAY_TIMEOUT, "5.04"),
        (Code::PROXYING_NOT_SUPPORTED, "5.05"),
    ];
    for (code, text) in cases {
        assert_eq!(code.to_string(), text);
        let (class, detail) = text.split_once('.').unwrap();
        assert_eq!(code.class(), class.parse::<u8>().unwrap(), "{text}");
        assert_eq!(code.detail(), detail.parse::<u8>().unwrap(), "{text}");
    }
    assert_eq!(Code(0xff).to_string(), "7.31");
    assert_eq!(format!("{:?}", Code::CONTENT), "Code(2.05)");
    assert_eq!(Code::CONTENT.0, 0x45);
}

#[test]
fn code_classification() {
    assert!(Code::EMPTY.is_empty() && !Code::EMPTY.is_request() && !Code::EMPTY.is_response());
    assert!(Code::GET.is_request() && Code::IPATCH.is_request() && !Code::GET.is_response());
    assert!(Code::CREATED.is_response() && Code::GATEWAY_TIMEOUT.is_response());
    assert!(!Code::CONTENT.is_request());
    assert!(Code::new(1, 0).is_reserved_class() && Code::new(7, 31).is_reserved_class());
    assert!(!Code::new(1, 0).is_response() && !Code::new(6, 1).is_request());
}

#[test]
fn message_type_bits_round_trip() {
    for bits in 0..4 {
        assert_eq!(MessageType::from_bits(bits).to_bits(), bits);
    }
}

#[test]
fn option_numbers_and_criticality() {
    let critical = [
        option::IF_MATCH,
        option::URI_HOST,
        option::IF_NONE_MATCH,
        option::URI_PORT,
        option::URI_PATH,
        option::URI_QUERY,
        option::ACCEPT,
        option::BLOCK2,
        option::BLOCK1,
        option::PROXY_URI,
        option::PROXY_SCHEME,
    ];
    let elective = [
        option::ETAG,
        option::OBSERVE,
        option::LOCATION_PATH,
        option::CONTENT_FORMAT,
        option::MAX_AGE,
        option::LOCATION_QUERY,
        option::SIZE2,
        option::SIZE1,
        option::NO_RESPONSE,
    ];
    assert!(critical.iter().all(|&n| option::is_critical(n)));
    assert!(!elective.iter().any(|&n| option::is_critical(n)));
}

#[test]
fn uint_option_values() {
    let cases: [(u32, &[u8]); 6] = [
        (0, &[]),
        (1, &[1]),
        (255, &[0xff]),
        (256, &[1, 0]),
        (0x0102_0304, &[1, 2, 3, 4]),
        (u32::MAX, &[0xff; 4]),
    ];
    for (value, bytes) in cases {
        assert_eq!(option::encode_uint(value), bytes);
        assert_eq!(option::decode_uint(bytes), Some(value));
    }
    assert_eq!(option::decode_uint(&[0, 0, 50]), Some(50));
    assert_eq!(option::decode_uint(&[0; 5]), None);

    let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
    assert_eq!(m.content_format(), None);
    m.add_option(option::CONTENT_FORMAT, vec![0, 42]);
    m.add_option(option::CONTENT_FORMAT, vec![1]);
    assert_eq!(m.content_format(), Some(content_format::OCTET_STREAM));
    m.set_uint_option(option::CONTENT_FORMAT, content_format::JSON);
    assert_eq!(m.options_with(option::CONTENT_FORMAT).count(), 1);
    assert_eq!(m.get_option(option::CONTENT_FORMAT), Some(&[50u8][..]));
    m.set_uint_option(option::CONTENT_FORMAT, 0);
    assert_eq!(m.get_option(option::CONTENT_FORMAT), Some(&[][..]));
    assert_eq!(m.content_format(), Some(content_format::TEXT_PLAIN));
    m.set_option(option::CONTENT_FORMAT, vec![0; 5]);
    assert_eq!(m.content_format(), None);
}

#[test]
fn block_options() {
    /// Expected `(num, more, szx)`, or `None` for an invalid value.
    type Fields = Option<(u32, bool, u8)>;
    let cases: [(&[u8], Fields); 9] = [
        (&[], Some((0, false, 0))),
        (&[0x0e], Some((0, true, 6))),
        (&[0x2e], Some((2, true, 6))),
        (&[0x15], Some((1, false, 5))),
        (&[0x01, 0x0a], Some((16, true, 2))),
        (&[0xff, 0xff, 0xf6], Some((BlockOption::MAX_NUM, false, 6))),
        (&[0x07], None),
        (&[0xff, 0xff, 0xff], None),
        (&[0, 0, 0, 0x06], None),
    ];
    for (bytes, expected) in cases {
        let decoded = BlockOption::decode(bytes);
        assert_eq!(
            decoded.map(|b| (b.num(), b.more(), b.szx())),
            expected,
            "{bytes:02x?}"
        );
        if let Some(block) = decoded {
            assert_eq!(BlockOption::decode(&block.encode()), Some(block));
        }
    }
    let block = BlockOption::new(3, true, 6).unwrap();
    assert_eq!(block.size(), 1024);
    assert_eq!(block.offset(), 3072);
    assert_eq!(BlockOption::new(0, false, 0).unwrap().size(), 16);
    assert_eq!(BlockOption::new(0, false, 7), None);
    assert_eq!(BlockOption::new(BlockOption::MAX_NUM + 1, false, 0), None);
    assert_eq!(BlockOption::szx_for_size(512), Some(5));
    assert_eq!(BlockOption::szx_for_size(2048), None);
    assert_eq!(BlockOption::szx_for_size(100), None);

    let mut m = Message::new(MessageType::Confirmable, Code::PUT, 1);
    assert_eq!(m.block1(), None);
    m.set_block1(block);
    m.set_block2(BlockOption::new(0, false, 2).unwrap());
    assert_eq!(m.block1(), Some(block));
    assert_eq!(m.block2().map(|b| b.size()), Some(64));
    let reparsed = Message::parse(&m.encode()).unwrap();
    assert_eq!(reparsed.block1(), Some(block));
    m.set_option(option::BLOCK1, vec![0x0f]);
    assert_eq!(m.block1(), None, "SZX 7 is reserved");
}

#[test]
fn options_stay_sorted_and_repeats_keep_order() {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
    m.add_option(option::URI_QUERY, b"b=2".to_vec());
    m.add_option(option::URI_PATH, b"api".to_vec());
    m.add_option(option::URI_HOST, b"h".to_vec());
    m.add_option(option::URI_PATH, b"v1".to_vec());
    m.add_option(option::URI_QUERY, b"a=1".to_vec());
    m.add_option(option::URI_PATH, vec![0xff, b'x']);
    let numbers: Vec<u16> = m.options().iter().map(|o| o.number).collect();
    assert_eq!(numbers, [3, 11, 11, 11, 15, 15]);
    assert_eq!(m.uri_path(), ["api", "v1", "\u{fffd}x"]);
    assert_eq!(m.uri_query(), ["b=2", "a=1"]);
    assert_eq!(m.get_option(option::URI_PATH), Some(&b"api"[..]));
    assert_eq!(m.get_option(option::ETAG), None);
    assert_eq!(m.options_with(option::ETAG).count(), 0);
    assert!(m.location_path().is_empty());

    let reparsed = Message::parse(&m.encode()).unwrap();
    assert_eq!(reparsed, m);

    m.remove_option(option::URI_PATH);
    assert!(m.uri_path().is_empty());
    assert_eq!(m.options().len(), 3);

    let mut created = Message::new(MessageType::Acknowledgement, Code::CREATED, 1);
    created.add_option(option::LOCATION_QUERY, b"q".to_vec());
    created.add_option(option::LOCATION_PATH, b"x".to_vec());
    created.add_option(option::LOCATION_PATH, b"y".to_vec());
    assert_eq!(created.location_path(), ["x", "y"]);
    assert_eq!(created.location_query(), ["q"]);
}

#[test]
fn unrecognized_critical_options() {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
    m.add_option(option::URI_PATH, b"a".to_vec());
    m.add_option(option::CONTENT_FORMAT, vec![50]);
    m.add_option(option::NO_RESPONSE, vec![2]);
    assert_eq!(m.unrecognized_critical_option(&[option::URI_PATH]), None);
    m.add_option(option::PROXY_URI, b"coap://x".to_vec());
    assert_eq!(
        m.unrecognized_critical_option(&[option::URI_PATH]),
        Some(option::PROXY_URI)
    );
    assert_eq!(m.unrecognized_critical_option(&[]), Some(option::URI_PATH));
}

#[test]
fn response_constructors() {
    let mut req = msg(MessageType::Confirmable, Code::POST, 0x1234, &[9, 8, 7]);
    req.add_option(option::URI_PATH, b"telemetry".to_vec());
    req.payload = b"{}".to_vec();

    let ack = Message::piggybacked_response(&req, Code::CHANGED, Vec::new());
    assert_eq!(ack.mtype, MessageType::Acknowledgement);
    assert_eq!(
        (ack.code, ack.message_id, ack.token),
        (Code::CHANGED, 0x1234, req.token)
    );
    assert!(ack.options().is_empty() && ack.payload.is_empty());
    assert_eq!(ack.encode(), [0x63, 0x44, 0x12, 0x34, 9, 8, 7]);

    let non = Message::non_response(&req, Code::CONTENT, b"ok".to_vec(), 0x0001);
    assert_eq!(non.mtype, MessageType::NonConfirmable);
    assert_eq!(
        (non.code, non.message_id, non.token),
        (Code::CONTENT, 1, req.token)
    );
    assert_eq!(non.payload, b"ok");

    let sep = Message::separate_response(&req, Code::CREATED, "done", 0x0002);
    assert_eq!(sep.mtype, MessageType::Confirmable);
    assert_eq!(
        (sep.code, sep.message_id, sep.token),
        (Code::CREATED, 2, req.token)
    );
    assert_eq!(sep.payload, b"done");

    assert_eq!(
        Message::empty_ack(0xbeef).encode(),
        [0x60, 0x00, 0xbe, 0xef]
    );
    assert_eq!(Message::reset(0xbeef).encode(), [0x70, 0x00, 0xbe, 0xef]);
}

#[test]
fn tokens() {
    assert_eq!(Token::from_slice(&[]), Some(Token::EMPTY));
    assert!(Token::EMPTY.is_empty());
    let t = Token::from_slice(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
    assert_eq!(t.as_slice(), [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(t.len(), 4);
    assert_eq!(format!("{t:?}"), "Token(deadbeef)");
    assert!(Token::from_slice(&[0; 8]).is_some());
    assert_eq!(Token::from_slice(&[0; 9]), None);
    assert_ne!(Token::from_slice(&[0]), Some(Token::EMPTY));
}

/// Tiny deterministic xorshift64* generator so the robustness test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn random_message(rng: &mut XorShift) -> Message {
    let mtype = MessageType::from_bits(rng.byte());
    let code = Code(rng.byte() | 1); // never Empty, so token/options are allowed
    let token: Vec<u8> = (0..rng.below(9)).map(|_| rng.byte()).collect();
    let mut m = msg(mtype, code, rng.next() as u16, &token);
    for _ in 0..rng.below(7) {
        let number = match rng.below(4) {
            0 => rng.below(15) as u16,
            1 => rng.below(300) as u16,
            2 => rng.next() as u16,
            _ => option::URI_PATH,
        };
        let len = match rng.below(8) {
            0 => rng.below(400) as usize,
            _ => rng.below(16) as usize,
        };
        m.add_option(number, (0..len).map(|_| rng.byte()).collect::<Vec<u8>>());
    }
    m.payload = (0..rng.below(40)).map(|_| rng.byte()).collect();
    m
}

fn check_parse(bytes: &[u8]) -> bool {
    match Message::parse(bytes) {
        Ok(m) => {
            // The wire format is canonical, so re-encoding must reproduce the input.
            let encoded = m.encode();
            assert_eq!(encoded, bytes);
            assert_eq!(Message::parse(&encoded).as_ref(), Ok(&m));
            true
        }
        Err(e) => {
            if bytes.len() >= 4 && bytes[0] >> 6 == 1 {
                assert!(e.header().is_some(), "{e} for {bytes:02x?}");
            }
            false
        }
    }
}

#[test]
fn random_and_truncated_buffers_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0usize;
    for i in 0..100_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            // Mostly random bytes, biased towards version 1 so the body parser is reached.
            let len = rng.below(48) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if let Some(first) = bytes.first_mut() {
                if rng.below(8) != 0 {
                    *first = (*first & 0x3f) | 0x40;
                }
            }
            bytes
        } else {
            // A valid message, round-tripped, then truncated and/or mutated.
            let m = random_message(&mut rng);
            let mut bytes = m.encode();
            assert_eq!(Message::parse(&bytes).as_ref(), Ok(&m));
            let cut = rng.below(bytes.len() as u64 + 1) as usize;
            bytes.truncate(cut);
            if !bytes.is_empty() && rng.below(2) == 0 {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            bytes
        };
        if check_parse(&bytes) {
            parsed += 1;
        }
    }
    // Guard against the generator degenerating into only-invalid input.
    assert!(parsed > 10_000, "only {parsed} buffers parsed");
}

#[test]
fn the_token_of_an_encoded_message_is_the_parsed_one() {
    let mut m = Message::new(MessageType::Acknowledgement, Code::CREATED, 7);
    m.token = Token::from_slice(b"\x01\x02\x03").unwrap();
    let bytes = m.encode();
    assert_eq!(Token::of_encoded(&bytes), Some(Message::parse(&bytes).unwrap().token));
    assert_eq!(Token::of_encoded(&Message::empty_ack(7).encode()), Some(Token::EMPTY));
    assert_eq!(Token::of_encoded(&bytes[..5]), None, "token cut off");
    assert_eq!(Token::of_encoded(&[0x49, 0x41, 0, 7, 0]), None, "a length of 9 is no token's");
}
