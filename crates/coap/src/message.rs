//! RFC 7252 message codec.
//!
//! The parser is strict on purpose: RFC 7252 §4.2/§4.3 require a server to
//! reject (CON) or ignore (NON) a message with a format error rather than
//! guess, and datagrams come from untrusted peers, so every length is checked
//! and no input can make [`Message::parse`] panic. Because the extended option
//! forms are unambiguous, [`Message::encode`] of a parsed message reproduces
//! the original datagram byte for byte.

use std::fmt;
use std::ops::Deref;

use thiserror::Error;

/// The only CoAP version defined by RFC 7252; datagrams with another version
/// must be silently ignored (§3).
pub const VERSION: u8 = 1;

/// Maximum token length in bytes; token length nibbles 9–15 are reserved (§3).
pub const MAX_TOKEN_LEN: usize = 8;

/// Byte separating the options from a non-empty payload (§3).
pub const PAYLOAD_MARKER: u8 = 0xFF;

/// Largest option value length the wire format can express
/// (nibble 14 with a 16-bit extension: 65535 + 269).
pub const MAX_OPTION_VALUE_LEN: usize = 65535 + 269;

/// The two-bit message type from the CoAP header (§3, §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Requires an acknowledgement; the peer retransmits until it gets one.
    Confirmable,
    /// Fire-and-forget; never acknowledged.
    NonConfirmable,
    /// Acknowledges a Confirmable message, possibly carrying a piggybacked response.
    Acknowledgement,
    /// Tells the peer that a message could not be processed (no context).
    Reset,
}

impl MessageType {
    /// Decodes the type from its two-bit wire value; higher bits are ignored
    /// so every `u8` maps to a type and decoding cannot fail.
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => MessageType::Confirmable,
            1 => MessageType::NonConfirmable,
            2 => MessageType::Acknowledgement,
            _ => MessageType::Reset,
        }
    }

    /// Returns the two-bit wire value.
    pub const fn to_bits(self) -> u8 {
        match self {
            MessageType::Confirmable => 0,
            MessageType::NonConfirmable => 1,
            MessageType::Acknowledgement => 2,
            MessageType::Reset => 3,
        }
    }
}

/// A CoAP method or response code, `class.detail` packed as `ccc ddddd`.
///
/// It is a newtype rather than an enum because codes outside the registry
/// must still round-trip (a server answers unknown methods with 4.05 instead
/// of failing to parse them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

impl Code {
    /// Builds a code from its class (0–7) and detail (0–31); out-of-range bits are masked off.
    pub const fn new(class: u8, detail: u8) -> Code {
        Code(((class & 0x07) << 5) | (detail & 0x1F))
    }

    /// The class digit (0 = request, 2 = success, 4 = client error, 5 = server error).
    pub const fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The two-digit detail part.
    pub const fn detail(self) -> u8 {
        self.0 & 0x1F
    }

    /// True for 0.00, which marks an Empty message (ping, empty ACK, RST).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True for request methods (class 0 other than 0.00).
    pub const fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// True for response codes (classes 2, 4 and 5).
    pub const fn is_response(self) -> bool {
        matches!(self.class(), 2 | 4 | 5)
    }

    /// True for the reserved classes 1, 6 and 7, which a receiver "lacks
    /// context" for and must reject when Confirmable (§4.2).
    pub const fn is_reserved_class(self) -> bool {
        matches!(self.class(), 1 | 6 | 7)
    }

    /// 0.00 Empty message.
    pub const EMPTY: Code = Code::new(0, 0);
    /// 0.01 GET.
    pub const GET: Code = Code::new(0, 1);
    /// 0.02 POST.
    pub const POST: Code = Code::new(0, 2);
    /// 0.03 PUT.
    pub const PUT: Code = Code::new(0, 3);
    /// 0.04 DELETE.
    pub const DELETE: Code = Code::new(0, 4);
    /// 0.05 FETCH (RFC 8132).
    pub const FETCH: Code = Code::new(0, 5);
    /// 0.06 PATCH (RFC 8132).
    pub const PATCH: Code = Code::new(0, 6);
    /// 0.07 iPATCH (RFC 8132).
    pub const IPATCH: Code = Code::new(0, 7);
    /// 2.01 Created.
    pub const CREATED: Code = Code::new(2, 1);
    /// 2.02 Deleted.
    pub const DELETED: Code = Code::new(2, 2);
    /// 2.03 Valid.
    pub const VALID: Code = Code::new(2, 3);
    /// 2.04 Changed.
    pub const CHANGED: Code = Code::new(2, 4);
    /// 2.05 Content.
    pub const CONTENT: Code = Code::new(2, 5);
    /// 2.31 Continue (RFC 7959, more Block1 blocks expected).
    pub const CONTINUE: Code = Code::new(2, 31);
    /// 4.00 Bad Request.
    pub const BAD_REQUEST: Code = Code::new(4, 0);
    /// 4.01 Unauthorized.
    pub const UNAUTHORIZED: Code = Code::new(4, 1);
    /// 4.02 Bad Option (unrecognised critical option).
    pub const BAD_OPTION: Code = Code::new(4, 2);
    /// 4.03 Forbidden.
    pub const FORBIDDEN: Code = Code::new(4, 3);
    /// 4.04 Not Found.
    pub const NOT_FOUND: Code = Code::new(4, 4);
    /// 4.05 Method Not Allowed.
    pub const METHOD_NOT_ALLOWED: Code = Code::new(4, 5);
    /// 4.06 Not Acceptable.
    pub const NOT_ACCEPTABLE: Code = Code::new(4, 6);
    /// 4.08 Request Entity Incomplete (RFC 7959).
    pub const REQUEST_ENTITY_INCOMPLETE: Code = Code::new(4, 8);
    /// 4.12 Precondition Failed.
    pub const PRECONDITION_FAILED: Code = Code::new(4, 12);
    /// 4.13 Request Entity Too Large.
    pub const REQUEST_ENTITY_TOO_LARGE: Code = Code::new(4, 13);
    /// 4.15 Unsupported Content-Format.
    pub const UNSUPPORTED_CONTENT_FORMAT: Code = Code::new(4, 15);
    /// 4.29 Too Many Requests (RFC 8516), for rate-limited peers.
    pub const TOO_MANY_REQUESTS: Code = Code::new(4, 29);
    /// 5.00 Internal Server Error.
    pub const INTERNAL_SERVER_ERROR: Code = Code::new(5, 0);
    /// 5.01 Not Implemented.
    pub const NOT_IMPLEMENTED: Code = Code::new(5, 1);
    /// 5.02 Bad Gateway.
    pub const BAD_GATEWAY: Code = Code::new(5, 2);
    /// 5.03 Service Unavailable.
    pub const SERVICE_UNAVAILABLE: Code = Code::new(5, 3);
    /// 5.04 Gateway Timeout.
    pub const GATEWAY_TIMEOUT: Code = Code::new(5, 4);
    /// 5.05 Proxying Not Supported.
    pub const PROXYING_NOT_SUPPORTED: Code = Code::new(5, 5);
}

impl fmt::Display for Code {
    /// Formats as `c.dd` (e.g. `2.01`), the notation used throughout the RFCs and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({self})")
    }
}

/// Option numbers (RFC 7252 §12.2, RFC 7641, RFC 7959, RFC 7967) and option helpers.
pub mod option {
    /// If-Match (1).
    pub const IF_MATCH: u16 = 1;
    /// Uri-Host (3).
    pub const URI_HOST: u16 = 3;
    /// ETag (4).
    pub const ETAG: u16 = 4;
    /// If-None-Match (5).
    pub const IF_NONE_MATCH: u16 = 5;
    /// Observe (6, RFC 7641).
    pub const OBSERVE: u16 = 6;
    /// Uri-Port (7).
    pub const URI_PORT: u16 = 7;
    /// Location-Path (8).
    pub const LOCATION_PATH: u16 = 8;
    /// Uri-Path (11).
    pub const URI_PATH: u16 = 11;
    /// Content-Format (12).
    pub const CONTENT_FORMAT: u16 = 12;
    /// Max-Age (14).
    pub const MAX_AGE: u16 = 14;
    /// Uri-Query (15).
    pub const URI_QUERY: u16 = 15;
    /// Accept (17).
    pub const ACCEPT: u16 = 17;
    /// Location-Query (20).
    pub const LOCATION_QUERY: u16 = 20;
    /// Block2 (23, RFC 7959).
    pub const BLOCK2: u16 = 23;
    /// Block1 (27, RFC 7959).
    pub const BLOCK1: u16 = 27;
    /// Size2 (28, RFC 7959).
    pub const SIZE2: u16 = 28;
    /// Proxy-Uri (35).
    pub const PROXY_URI: u16 = 35;
    /// Proxy-Scheme (39).
    pub const PROXY_SCHEME: u16 = 39;
    /// Size1 (60).
    pub const SIZE1: u16 = 60;
    /// No-Response (258, RFC 7967).
    pub const NO_RESPONSE: u16 = 258;

    /// Odd option numbers are critical (§5.4.1): a request carrying an
    /// unrecognised critical option must be answered with 4.02 Bad Option.
    pub const fn is_critical(number: u16) -> bool {
        number & 1 == 1
    }

    /// Decodes a `uint` option value (§3.2): big-endian, leading zeros
    /// allowed, the empty value meaning 0. Returns `None` for values longer
    /// than 4 bytes, which no option defined here permits.
    pub fn decode_uint(value: &[u8]) -> Option<u32> {
        if value.len() > 4 {
            return None;
        }
        Some(value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
    }

    /// Encodes a `uint` option value in its shortest form (0 becomes the
    /// empty value), as §3.2 asks senders to do.
    pub fn encode_uint(value: u32) -> Vec<u8> {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        bytes[skip..].to_vec()
    }
}

/// Registered Content-Format numbers (RFC 7252 §12.3 and later registrations)
/// a telemetry server commonly needs to recognise.
pub mod content_format {
    /// `text/plain; charset=utf-8`.
    pub const TEXT_PLAIN: u32 = 0;
    /// `application/link-format`.
    pub const LINK_FORMAT: u32 = 40;
    /// `application/xml`.
    pub const XML: u32 = 41;
    /// `application/octet-stream`.
    pub const OCTET_STREAM: u32 = 42;
    /// `application/exi`.
    pub const EXI: u32 = 47;
    /// `application/json`.
    pub const JSON: u32 = 50;
    /// `application/cbor`.
    pub const CBOR: u32 = 60;
}

/// A message token (0–8 bytes) stored inline.
///
/// Tokens are copied into every response and used as map keys, so keeping
/// them in a fixed array avoids a heap allocation per message. Unused bytes
/// are always zero, which makes the derived equality and hashing correct.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    bytes: [u8; MAX_TOKEN_LEN],
    len: u8,
}

impl Token {
    /// The zero-length token.
    pub const EMPTY: Token = Token {
        bytes: [0; MAX_TOKEN_LEN],
        len: 0,
    };

    /// Copies `bytes` into a token, or returns `None` if it is longer than 8 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Token> {
        let mut token = Token::EMPTY;
        token.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        token.len = u8::try_from(bytes.len()).ok()?;
        Some(token)
    }

    /// The token bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The token of an encoded message (e.g. a stored answer), read from its header alone;
    /// `None` if the bytes are too short or the length is not a token's.
    pub fn of_encoded(encoded: &[u8]) -> Option<Token> {
        let length = usize::from(*encoded.first()? & 0x0F);
        Token::from_slice(encoded.get(4..4 + length)?)
    }
}

impl Deref for Token {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Token {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Token {
    /// Prints hex, because tokens are opaque bytes and hex is what packet captures show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(")?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// One option instance: its absolute number and raw value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoapOption {
    /// Option number (see [`option`]).
    pub number: u16,
    /// Raw value bytes; interpretation depends on the option's format.
    pub value: Vec<u8>,
}

/// Why a datagram failed to parse.
///
/// The variants are split by what the caller must do (RFC 7252 §3, §4.2,
/// §4.3): nothing can be answered when the header is missing or has an
/// unknown version, whereas a [`ParseError::Format`] error still carries the
/// type and message id so a Confirmable message can be rejected with a
/// matching Reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Fewer than the 4 header bytes; the datagram must be ignored.
    #[error("datagram of {0} bytes is shorter than the 4-byte CoAP header")]
    TooShort(usize),
    /// Version other than 1; §3 requires such messages to be silently ignored.
    #[error("unsupported CoAP version {0}")]
    UnsupportedVersion(u8),
    /// The header was readable but the rest is malformed.
    #[error("format error in {mtype:?} message {message_id}: {kind}")]
    Format {
        /// Type from the readable header.
        mtype: MessageType,
        /// Message id from the readable header.
        message_id: u16,
        /// What exactly was wrong.
        kind: FormatError,
    },
}

impl ParseError {
    /// Type and message id when the header was readable, so that a malformed
    /// Confirmable message can be answered with [`Message::reset`].
    pub fn header(&self) -> Option<(MessageType, u16)> {
        match *self {
            ParseError::Format {
                mtype, message_id, ..
            } => Some((mtype, message_id)),
            ParseError::TooShort(_) | ParseError::UnsupportedVersion(_) => None,
        }
    }
}

/// The specific message format error inside [`ParseError::Format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FormatError {
    /// Token length nibble 9–15, which §3 reserves.
    #[error("reserved token length {0}")]
    InvalidTokenLength(u8),
    /// The datagram ends inside the token.
    #[error("datagram ends inside the token")]
    TruncatedToken,
    /// Option delta nibble 15 in a byte that is not the payload marker.
    #[error("reserved option delta nibble 15")]
    InvalidOptionDelta,
    /// Option length nibble 15, which §3 reserves.
    #[error("reserved option length nibble 15")]
    InvalidOptionLength,
    /// The datagram ends inside an option header extension or value.
    #[error("datagram ends inside an option")]
    TruncatedOption,
    /// The accumulated option number exceeds 65535.
    #[error("option number exceeds 65535")]
    OptionNumberOverflow,
    /// A payload marker followed by no payload, which §3 forbids.
    #[error("payload marker followed by an empty payload")]
    EmptyPayload,
    /// Code 0.00 with a token, options or payload, which §4.1 forbids.
    #[error("empty message (0.00) with token, options or payload")]
    NonEmptyEmptyMessage,
}

/// A Block1/Block2 option value (RFC 7959 §2.2).
///
/// Fields are private so that every value can be encoded: the block number
/// is limited to 20 bits and SZX 7 is reserved (it means BERT, which only
/// exists for CoAP over TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockOption {
    num: u32,
    more: bool,
    szx: u8,
}

impl BlockOption {
    /// Largest block number expressible in the 3-byte option.
    pub const MAX_NUM: u32 = (1 << 20) - 1;
    /// Largest valid size exponent (block size 1024).
    pub const MAX_SZX: u8 = 6;

    /// Builds a block option, or `None` if `num` exceeds 20 bits or `szx` is 7 or more.
    pub const fn new(num: u32, more: bool, szx: u8) -> Option<BlockOption> {
        if num > Self::MAX_NUM || szx > Self::MAX_SZX {
            None
        } else {
            Some(BlockOption { num, more, szx })
        }
    }

    /// Block number (NUM).
    pub const fn num(&self) -> u32 {
        self.num
    }

    /// The "more blocks follow" flag (M).
    pub const fn more(&self) -> bool {
        self.more
    }

    /// Size exponent (SZX), 0–6.
    pub const fn szx(&self) -> u8 {
        self.szx
    }

    /// Block size in bytes, `2^(szx + 4)` (16–1024).
    pub const fn size(&self) -> usize {
        1 << (self.szx + 4)
    }

    /// Byte offset of this block in the whole body (`num * size`).
    pub const fn offset(&self) -> usize {
        self.num as usize * self.size()
    }

    /// The SZX for a block size, or `None` unless `size` is a power of two in 16–1024.
    pub const fn szx_for_size(size: usize) -> Option<u8> {
        match size {
            16 => Some(0),
            32 => Some(1),
            64 => Some(2),
            128 => Some(3),
            256 => Some(4),
            512 => Some(5),
            1024 => Some(6),
            _ => None,
        }
    }

    /// Decodes an option value; `None` if it is longer than 3 bytes or uses the reserved SZX 7.
    pub fn decode(value: &[u8]) -> Option<BlockOption> {
        if value.len() > 3 {
            return None;
        }
        let v = option::decode_uint(value)?;
        let szx = u8::try_from(v & 0x07).ok()?;
        BlockOption::new(v >> 4, v & 0x08 != 0, szx)
    }

    /// Encodes the option value in its shortest form.
    pub fn encode(&self) -> Vec<u8> {
        option::encode_uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }
}

/// A complete CoAP message.
///
/// Options are private so that the list always stays sorted by number
/// (repeated options in insertion order), which is what encoding and the
/// binary-searching accessors rely on, and so that no option value exceeds
/// [`MAX_OPTION_VALUE_LEN`]; use [`Message::add_option`] and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type.
    pub mtype: MessageType,
    /// Method or response code.
    pub code: Code,
    /// Message id, used for deduplication and matching ACK/RST.
    pub message_id: u16,
    /// Token, used to match responses to requests.
    pub token: Token,
    options: Vec<CoapOption>,
    /// Payload (possibly empty).
    pub payload: Vec<u8>,
}

/// Reads an option delta/length nibble and its extension bytes (§3.1).
fn read_extended(nibble: u8, rest: &mut &[u8], reserved: FormatError) -> Result<u32, FormatError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let (&b, tail) = rest.split_first().ok_or(FormatError::TruncatedOption)?;
            *rest = tail;
            Ok(u32::from(b) + 13)
        }
        14 => {
            let (ext, tail) = rest
                .split_at_checked(2)
                .ok_or(FormatError::TruncatedOption)?;
            *rest = tail;
            Ok(u32::from(u16::from_be_bytes([ext[0], ext[1]])) + 269)
        }
        _ => Err(reserved),
    }
}

/// Splits a delta or length into its nibble and extension bytes (§3.1).
fn write_extended(value: u32) -> (u8, [u8; 2], usize) {
    if value < 13 {
        (value as u8, [0; 2], 0)
    } else if value < 269 {
        (13, [(value - 13) as u8, 0], 1)
    } else {
        let ext = u16::try_from(value - 269).unwrap_or(u16::MAX).to_be_bytes();
        (14, ext, 2)
    }
}

impl Message {
    /// Creates a message with an empty token, no options and no payload.
    pub fn new(mtype: MessageType, code: Code, message_id: u16) -> Message {
        Message {
            mtype,
            code,
            message_id,
            token: Token::EMPTY,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// Parses one datagram strictly according to RFC 7252 §3.
    ///
    /// Never panics: every read is bounds-checked and option numbers are
    /// accumulated in `u32` and checked against `u16::MAX`.
    pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
        let [b0, code, mid_hi, mid_lo, rest @ ..] = buf else {
            return Err(ParseError::TooShort(buf.len()));
        };
        let version = b0 >> 6;
        if version != VERSION {
            return Err(ParseError::UnsupportedVersion(version));
        }
        let mtype = MessageType::from_bits(b0 >> 4);
        let message_id = u16::from_be_bytes([*mid_hi, *mid_lo]);
        let code = Code(*code);
        let fail = |kind| ParseError::Format {
            mtype,
            message_id,
            kind,
        };

        let tkl = b0 & 0x0F;
        if usize::from(tkl) > MAX_TOKEN_LEN {
            return Err(fail(FormatError::InvalidTokenLength(tkl)));
        }
        if code.is_empty() {
            if tkl != 0 || !rest.is_empty() {
                return Err(fail(FormatError::NonEmptyEmptyMessage));
            }
            return Ok(Message::new(mtype, code, message_id));
        }
        let (token, mut rest) = rest
            .split_at_checked(usize::from(tkl))
            .ok_or(fail(FormatError::TruncatedToken))?;
        let token = Token::from_slice(token).ok_or(fail(FormatError::InvalidTokenLength(tkl)))?;

        let mut options = Vec::new();
        let mut payload = Vec::new();
        let mut number: u32 = 0;
        while let Some((&byte, tail)) = rest.split_first() {
            rest = tail;
            if byte == PAYLOAD_MARKER {
                if rest.is_empty() {
                    return Err(fail(FormatError::EmptyPayload));
                }
                payload = rest.to_vec();
                break;
            }
            let delta = read_extended(byte >> 4, &mut rest, FormatError::InvalidOptionDelta)
                .map_err(fail)?;
            let len = read_extended(byte & 0x0F, &mut rest, FormatError::InvalidOptionLength)
                .map_err(fail)?;
            number += delta;
            let opt_number =
                u16::try_from(number).map_err(|_| fail(FormatError::OptionNumberOverflow))?;
            let (value, tail) = rest
                .split_at_checked(len as usize)
                .ok_or(fail(FormatError::TruncatedOption))?;
            rest = tail;
            options.push(CoapOption {
                number: opt_number,
                value: value.to_vec(),
            });
        }

        Ok(Message {
            mtype,
            code,
            message_id,
            token,
            options,
            payload,
        })
    }

    /// Encodes the message into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf);
        buf
    }

    /// Appends the encoded message to `buf`, so a server can reuse one send buffer.
    ///
    /// Options are written in number order with delta encoding; the payload
    /// marker is written only for a non-empty payload, as §3 requires.
    /// Nothing is validated: an Empty (0.00) message that was given a token,
    /// options or a payload is encoded as-is and will not parse.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let options_len: usize = self.options.iter().map(|o| o.value.len() + 5).sum();
        buf.reserve(4 + self.token.len() + options_len + 1 + self.payload.len());
        let tkl = u8::try_from(self.token.len()).unwrap_or(0);
        buf.push((VERSION << 6) | (self.mtype.to_bits() << 4) | tkl);
        buf.push(self.code.0);
        buf.extend_from_slice(&self.message_id.to_be_bytes());
        buf.extend_from_slice(self.token.as_slice());
        let mut previous = 0u16;
        for opt in &self.options {
            // The list is sorted, so the subtraction never saturates in practice.
            let delta = opt.number.saturating_sub(previous);
            previous = opt.number;
            let len = u32::try_from(opt.value.len()).unwrap_or(u32::MAX);
            let (delta_nibble, delta_ext, delta_ext_len) = write_extended(u32::from(delta));
            let (len_nibble, len_ext, len_ext_len) = write_extended(len);
            buf.push((delta_nibble << 4) | len_nibble);
            buf.extend_from_slice(&delta_ext[..delta_ext_len]);
            buf.extend_from_slice(&len_ext[..len_ext_len]);
            buf.extend_from_slice(&opt.value);
        }
        if !self.payload.is_empty() {
            buf.push(PAYLOAD_MARKER);
            buf.extend_from_slice(&self.payload);
        }
    }

    /// Piggybacked response (§5.2.1): an ACK reusing the request's message id and token.
    pub fn piggybacked_response(
        request: &Message,
        code: Code,
        payload: impl Into<Vec<u8>>,
    ) -> Message {
        Message {
            token: request.token,
            payload: payload.into(),
            ..Message::new(MessageType::Acknowledgement, code, request.message_id)
        }
    }

    /// Response to a Non-confirmable request (§5.2.3): NON, same token, fresh message id.
    pub fn non_response(
        request: &Message,
        code: Code,
        payload: impl Into<Vec<u8>>,
        message_id: u16,
    ) -> Message {
        Message {
            token: request.token,
            payload: payload.into(),
            ..Message::new(MessageType::NonConfirmable, code, message_id)
        }
    }

    /// Separate response (§5.2.2): CON, same token, fresh message id; the
    /// request must already have been acknowledged with [`Message::empty_ack`].
    pub fn separate_response(
        request: &Message,
        code: Code,
        payload: impl Into<Vec<u8>>,
        message_id: u16,
    ) -> Message {
        Message {
            token: request.token,
            payload: payload.into(),
            ..Message::new(MessageType::Confirmable, code, message_id)
        }
    }

    /// Empty ACK, used to acknowledge a CON before a separate response.
    pub fn empty_ack(message_id: u16) -> Message {
        Message::new(MessageType::Acknowledgement, Code::EMPTY, message_id)
    }

    /// Reset (RST), used to reject a message the receiver lacks context for
    /// (pings, reserved codes, format errors).
    pub fn reset(message_id: u16) -> Message {
        Message::new(MessageType::Reset, Code::EMPTY, message_id)
    }

    /// All options, sorted by number.
    pub fn options(&self) -> &[CoapOption] {
        &self.options
    }

    /// Adds an option after any existing options with the same number, keeping the list sorted.
    ///
    /// # Panics
    ///
    /// Panics if the value is longer than [`MAX_OPTION_VALUE_LEN`], which the
    /// wire format cannot express; that is a programming error, not a
    /// protocol condition.
    pub fn add_option(&mut self, number: u16, value: impl Into<Vec<u8>>) {
        let value = value.into();
        assert!(
            value.len() <= MAX_OPTION_VALUE_LEN,
            "CoAP option value of {} bytes exceeds {MAX_OPTION_VALUE_LEN}",
            value.len()
        );
        let index = self.options.partition_point(|o| o.number <= number);
        self.options.insert(index, CoapOption { number, value });
    }

    /// Replaces every occurrence of `number` with a single option.
    ///
    /// # Panics
    ///
    /// Same as [`Message::add_option`].
    pub fn set_option(&mut self, number: u16, value: impl Into<Vec<u8>>) {
        self.remove_option(number);
        self.add_option(number, value);
    }

    /// Removes every occurrence of `number`.
    pub fn remove_option(&mut self, number: u16) {
        self.options.retain(|o| o.number != number);
    }

    /// Sets a `uint` option (replacing earlier occurrences) in its shortest encoding.
    pub fn set_uint_option(&mut self, number: u16, value: u32) {
        self.set_option(number, option::encode_uint(value));
    }

    /// The first value of `number`, if present.
    pub fn get_option(&self, number: u16) -> Option<&[u8]> {
        self.options_with(number).next()
    }

    /// The first value of `number` decoded as `uint`; `None` if absent or longer than 4 bytes.
    pub fn get_uint_option(&self, number: u16) -> Option<u32> {
        self.get_option(number).and_then(option::decode_uint)
    }

    /// All values of `number` in order (repeatable options such as Uri-Path).
    pub fn options_with(&self, number: u16) -> impl Iterator<Item = &[u8]> + '_ {
        let start = self.options.partition_point(|o| o.number < number);
        let end = self.options.partition_point(|o| o.number <= number);
        self.options
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .map(|o| o.value.as_slice())
    }

    fn strings(&self, number: u16) -> Vec<String> {
        self.options_with(number)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// Uri-Path segments (lossy UTF-8, because the path only selects a resource).
    pub fn uri_path(&self) -> Vec<String> {
        self.strings(option::URI_PATH)
    }

    /// Uri-Query arguments (lossy UTF-8), each typically `key=value`.
    pub fn uri_query(&self) -> Vec<String> {
        self.strings(option::URI_QUERY)
    }

    /// Location-Path segments (lossy UTF-8).
    pub fn location_path(&self) -> Vec<String> {
        self.strings(option::LOCATION_PATH)
    }

    /// Location-Query arguments (lossy UTF-8).
    pub fn location_query(&self) -> Vec<String> {
        self.strings(option::LOCATION_QUERY)
    }

    /// Content-Format; `None` if absent or malformed (longer than 4 bytes).
    pub fn content_format(&self) -> Option<u32> {
        self.get_uint_option(option::CONTENT_FORMAT)
    }

    /// Block1 option; `None` if absent or invalid (longer than 3 bytes or SZX 7).
    pub fn block1(&self) -> Option<BlockOption> {
        self.get_option(option::BLOCK1)
            .and_then(BlockOption::decode)
    }

    /// Block2 option; `None` if absent or invalid (longer than 3 bytes or SZX 7).
    pub fn block2(&self) -> Option<BlockOption> {
        self.get_option(option::BLOCK2)
            .and_then(BlockOption::decode)
    }

    /// Sets the Block1 option (replacing any previous one).
    pub fn set_block1(&mut self, block: BlockOption) {
        self.set_option(option::BLOCK1, block.encode());
    }

    /// Sets the Block2 option (replacing any previous one).
    pub fn set_block2(&mut self, block: BlockOption) {
        self.set_option(option::BLOCK2, block.encode());
    }

    /// Size1 (RFC 7959 §4): in a request the announced body size, in a 4.13
    /// response the largest body the server accepts; `None` if absent or malformed.
    pub fn size1(&self) -> Option<u32> {
        self.get_uint_option(option::SIZE1)
    }

    /// Sets the Size1 option (replacing any previous one), e.g. on a 4.13 response.
    pub fn set_size1(&mut self, size: u32) {
        self.set_uint_option(option::SIZE1, size);
    }

    /// The first critical option number not in `recognized`, which §5.4.1
    /// says must make a CON request fail with 4.02 Bad Option (and a NON
    /// request be rejected).
    pub fn unrecognized_critical_option(&self, recognized: &[u16]) -> Option<u16> {
        self.options
            .iter()
            .map(|o| o.number)
            .find(|&n| option::is_critical(n) && !recognized.contains(&n))
    }
}

#[cfg(test)]
mod tests;
