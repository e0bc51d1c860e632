//! Tier 1: exact bytes in, exact results out.

use bytes::{Bytes, BytesMut};
use shardis_resp::*;

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

// ---------------------------------------------------------------- requests

/// Decodes everything decodable from `input` at once: the requests' args and raws, and
/// what is left in the buffer.
fn decode_all(input: &[u8]) -> Result<(Vec<Request>, Vec<u8>), ProtoError> {
    decode_all_with(input, Limits::default())
}

fn decode_all_with(input: &[u8], limits: Limits) -> Result<(Vec<Request>, Vec<u8>), ProtoError> {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(req) = decoder.decode(&mut buf)? {
        out.push(req);
    }
    Ok((out, buf.to_vec()))
}

fn args(req: &Request) -> Vec<&[u8]> {
    req.args.iter().map(|a| a.as_ref()).collect()
}

fn decode_err(input: &[u8]) -> ProtoError {
    decode_all(input).expect_err("expected a protocol error")
}

#[test]
fn arg_frames_are_the_elements_as_sent() {
    let wire = b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$0\r\n\r\n$10\r\nkey:000001\r\n$3\r\nxyz\r\n";
    let (reqs, _) = decode_all(wire).unwrap();
    let req = &reqs[0];
    assert_eq!(req.arg_frames(0, 0), Some(&b"$4\r\nMSET\r\n"[..]));
    assert_eq!(req.arg_frames(1, 2), Some(&b"$1\r\na\r\n$0\r\n\r\n"[..]));
    assert_eq!(
        req.arg_frames(3, 4),
        Some(&b"$10\r\nkey:000001\r\n$3\r\nxyz\r\n"[..])
    );
    assert_eq!(req.arg_frames(4, 5), None);
    assert_eq!(req.arg_frames(5, 5), None);

    // Inline commands are re-encoded canonically, so they have frames too.
    let (reqs, _) = decode_all(b"set 'a b' c\r\n").unwrap();
    assert_eq!(
        reqs[0].arg_frames(1, 2),
        Some(&b"$3\r\na b\r\n$1\r\nc\r\n"[..])
    );

    // Arguments that are not slices of `raw` (or not in order) have none.
    let by_hand = Request {
        raw: b(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        args: vec![b(b"GET"), b(b"k")],
    };
    assert_eq!(by_hand.arg_frames(0, 1), None);
    let swapped = Request {
        raw: req.raw.clone(),
        args: vec![req.args[2].clone(), req.args[1].clone()],
    };
    assert_eq!(swapped.arg_frames(0, 0), Some(&b"$0\r\n\r\n"[..]));
    assert_eq!(swapped.arg_frames(0, 1), None);
}

#[test]
fn recycled_argument_vectors_are_reused() {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]);
    let first = decoder.decode(&mut buf).unwrap().unwrap();
    let ptr = first.args.as_ptr();
    decoder.recycle(first);
    let second = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(args(&second), [&b"GET"[..], b"k"]);
    assert_eq!(second.args.as_ptr(), ptr);
}

#[test]
fn multibulk_request() {
    let wire = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    let (reqs, rest) = decode_all(wire).unwrap();
    assert_eq!(reqs.len(), 1);
    assert!(rest.is_empty());
    assert_eq!(&reqs[0].raw[..], wire);
    assert_eq!(args(&reqs[0]), [&b"SET"[..], b"key", b"value"]);
    assert_eq!(reqs[0].name(), Some(&b"SET"[..]));
    assert_eq!(reqs[0].arg(2), Some(&b(b"value")));
    assert_eq!(reqs[0].arg(3), None);
}

#[test]
fn args_are_slices_of_raw() {
    let (reqs, _) = decode_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap();
    let raw = &reqs[0].raw;
    let base = raw.as_ptr() as usize;
    for arg in &reqs[0].args {
        let p = arg.as_ptr() as usize;
        assert!(p >= base && p + arg.len() <= base + raw.len());
    }
}

#[test]
fn binary_and_empty_arguments() {
    let wire = b"*3\r\n$4\r\na\r\nb\r\n$0\r\n\r\n$2\r\n\0\xff\r\n";
    let (reqs, _) = decode_all(wire).unwrap();
    assert_eq!(args(&reqs[0]), [&b"a\r\nb"[..], b"", b"\0\xff"]);
}

#[test]
fn pipeline_and_partial_frame() {
    let wire = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*2\r\n$3\r\nGET\r\n$3\r\nke";
    let (reqs, rest) = decode_all(wire).unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(args(&reqs[1]), [&b"ECHO"[..], b"hi"]);
    assert_eq!(rest, b"*2\r\n$3\r\nGET\r\n$3\r\nke");

    // The partial frame completes once the rest arrives, with the same decoder.
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&rest[..]);
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    assert_eq!(
        buf.len(),
        rest.len(),
        "incomplete frame must stay in the buffer"
    );
    buf.extend_from_slice(b"y\r\n");
    let req = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(args(&req), [&b"GET"[..], b"key"]);
    assert!(buf.is_empty());
}

#[test]
fn empty_multibulks_are_skipped() {
    let (reqs, rest) = decode_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n*0\r\n").unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(&reqs[0].raw[..], b"*1\r\n$4\r\nPING\r\n");
    assert!(rest.is_empty());
}

#[test]
fn inline_requests_are_reencoded() {
    let (reqs, rest) = decode_all(b"PING\r\nset  a   b\n\r\n\n   \r\nget \"x y\"\r\n").unwrap();
    assert!(rest.is_empty());
    assert_eq!(reqs.len(), 3);
    assert_eq!(&reqs[0].raw[..], b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(
        &reqs[1].raw[..],
        b"*3\r\n$3\r\nset\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert_eq!(args(&reqs[2]), [&b"get"[..], b"x y"]);
    assert_eq!(&reqs[2].raw[..], b"*2\r\n$3\r\nget\r\n$3\r\nx y\r\n");
    for req in &reqs {
        let base = req.raw.as_ptr() as usize;
        for arg in &req.args {
            let p = arg.as_ptr() as usize;
            assert!(p >= base && p + arg.len() <= base + req.raw.len());
        }
    }
}

#[test]
fn inline_quoting_rules() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"set k \"a\\r\\nb\"\r\n", &[b"set", b"k", b"a\r\nb"]),
        (b"set k \"\\x00\\xfF\\x\"\r\n", &[b"set", b"k", b"\0\xffx"]),
        (
            b"set k \"tab\\there\\\\ \\\"q\\\"\"\n",
            &[b"set", b"k", b"tab\there\\ \"q\""],
        ),
        (b"set k \"\\a\\b\"\n", &[b"set", b"k", b"\x07\x08"]),
        (
            b"set k 'it\\'s \"x\" \\n'\n",
            &[b"set", b"k", b"it's \"x\" \\n"],
        ),
        (b"set k \"\"\n", &[b"set", b"k", b""]),
        (b"set k ''\n", &[b"set", b"k", b""]),
        (b"a\"b c\"\n", &[b"ab c"]),
        (b"\tx\x0by\x0c z\r\n", &[b"x\x0by\x0c", b"z"]),
        (b"get a\0ignored\r\n", &[b"get", b"a"]),
        (b"x\ry\r\n", &[b"x", b"y"]),
    ];
    for (line, expected) in cases {
        let (reqs, rest) = decode_all(line).unwrap();
        assert!(rest.is_empty());
        assert_eq!(reqs.len(), 1, "{:?}", String::from_utf8_lossy(line));
        assert_eq!(
            args(&reqs[0]),
            *expected,
            "{:?}",
            String::from_utf8_lossy(line)
        );
        let mut canonical = BytesMut::new();
        encode_command(&mut canonical, *expected);
        assert_eq!(reqs[0].raw, canonical);
    }
}

#[test]
fn inline_and_multibulk_mixed() {
    let (reqs, _) = decode_all(b"PING\r\n*1\r\n$4\r\nPING\r\nPING\n").unwrap();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| &r.raw[..] == b"*1\r\n$4\r\nPING\r\n"));
}

#[test]
fn inline_waits_for_newline() {
    let (reqs, rest) = decode_all(b"GET key").unwrap();
    assert!(reqs.is_empty());
    assert_eq!(rest, b"GET key");
}

#[test]
fn inline_unbalanced_quotes() {
    for line in [
        &b"set k \"abc\r\n"[..],
        b"set k 'abc\r\n",
        b"set k \"abc\"def\r\n",
        b"set k 'abc'def\r\n",
        b"set k \"abc\\\"\r\n",
    ] {
        assert_eq!(decode_err(line), ProtoError::UnbalancedQuotes);
    }
}

#[test]
fn inline_too_big() {
    let limits = Limits {
        max_inline_len: 16,
        ..Limits::default()
    };
    // The limit counts everything before the `\n`, a CR included (as Redis counts its
    // buffer), so the verdict does not depend on whether the `\n` has arrived yet.
    assert_eq!(
        decode_all_with(b"0123456789abcdef\n", limits)
            .unwrap()
            .0
            .len(),
        1
    );
    assert_eq!(
        decode_all_with(b"0123456789abcde\r\n", limits)
            .unwrap()
            .0
            .len(),
        1
    );
    assert_eq!(
        decode_all_with(b"0123456789abcdef\r\n", limits).unwrap_err(),
        ProtoError::TooBigInline
    );
    assert_eq!(
        decode_all_with(b"0123456789abcdef", limits)
            .unwrap()
            .1
            .len(),
        16
    );
    // Over it: whether the newline has arrived or not.
    let err = decode_all_with(b"0123456789abcdefg", limits).unwrap_err();
    assert_eq!(err, ProtoError::TooBigInline);
    let err = decode_all_with(b"0123456789abcdefg\n", limits).unwrap_err();
    assert_eq!(err, ProtoError::TooBigInline);
    assert_eq!(err.to_string(), "Protocol error: too big inline request");
    // The default limit is 64 KiB.
    let long = vec![b'a'; 64 * 1024 + 1];
    assert_eq!(decode_err(&long), ProtoError::TooBigInline);
}

#[test]
fn request_protocol_errors() {
    use ProtoError::*;
    let cases: &[(&[u8], ProtoError)] = &[
        (b"*abc\r\n", InvalidMultibulkLength),
        (b"*\r\n", InvalidMultibulkLength),
        (b"*-2\r\n", InvalidMultibulkLength),
        (b"*01\r\n", InvalidMultibulkLength),
        (b"*+1\r\n", InvalidMultibulkLength),
        (b"*1 \r\n", InvalidMultibulkLength),
        (b"*1\rx", InvalidMultibulkLength),
        (b"*1048577\r\n", InvalidMultibulkLength),
        (b"*1000000000\r\n", InvalidMultibulkLength),
        (b"*99999999999999999999\r\n", InvalidMultibulkLength),
        (b"*1\r\n:1\r\n", ExpectedBulk(b':')),
        (b"*1\r\n*1\r\n$1\r\na\r\n", ExpectedBulk(b'*')),
        (b"*2\r\n$1\r\na\r\nx", ExpectedBulk(b'x')),
        (b"*1\r\n$-1\r\n", InvalidBulkLength),
        (b"*1\r\n$-2\r\n", InvalidBulkLength),
        (b"*1\r\n$x\r\n", InvalidBulkLength),
        (b"*1\r\n$\r\n", InvalidBulkLength),
        (b"*1\r\n$ 3\r\n", InvalidBulkLength),
        (b"*1\r\n$3\rX", InvalidBulkLength),
        (b"*1\r\n$536870913\r\n", InvalidBulkLength),
        (b"*1\r\n$9223372036854775807\r\n", InvalidBulkLength),
        (b"*1\r\n$3\r\nfooXX", ExpectedCrlf),
        (b"*1\r\n$3\r\nfoo\rX", ExpectedCrlf),
        (b"*1\r\n$3\r\nfoo\n\r", ExpectedCrlf),
    ];
    for (input, expected) in cases {
        assert_eq!(
            &decode_err(input),
            expected,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    // At most 512 MiB is fine: it just waits for the payload.
    let (reqs, rest) = decode_all(b"*1\r\n$536870912\r\n").unwrap();
    assert!(reqs.is_empty());
    assert_eq!(rest.len(), 16);
}

#[test]
fn error_texts_mimic_redis() {
    use ProtoError::*;
    let cases = [
        (
            InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (InvalidBulkLength, "Protocol error: invalid bulk length"),
        (ExpectedBulk(b'x'), "Protocol error: expected '$', got 'x'"),
        (
            ExpectedBulk(b'\r'),
            "Protocol error: expected '$', got '\\x0d'",
        ),
        (TooBigInline, "Protocol error: too big inline request"),
        (
            UnbalancedQuotes,
            "Protocol error: unbalanced quotes in request",
        ),
        (TooDeep, "Protocol error: too deep nesting"),
        (InvalidInteger, "Protocol error: invalid integer"),
        (ExpectedCrlf, "Protocol error: expected CRLF"),
        (
            InvalidType(b'?'),
            "Protocol error: got '?' as reply type byte",
        ),
    ];
    for (err, text) in cases {
        assert_eq!(err.to_string(), text);
    }
}

#[test]
fn decoder_can_be_reused_after_buffer_is_cleared() {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nk"[..]);
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    buf.clear();
    buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    let req = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(args(&req), [&b"PING"[..]]);
}

#[test]
fn huge_announced_counts_reserve_nothing() {
    let limits = Limits {
        max_elements: usize::MAX,
        max_bulk_len: usize::MAX,
        ..Limits::default()
    };
    let (reqs, rest) = decode_all_with(b"*1000000000000\r\n$1\r\na\r\n", limits).unwrap();
    assert!(reqs.is_empty());
    assert_eq!(rest.len(), 23);
    let (reqs, _) = decode_all_with(b"*1\r\n$9223372036854775807\r\n", limits).unwrap();
    assert!(reqs.is_empty());

    let huge = b(b"*1000000000000\r\n:1\r\n");
    assert_eq!(Frame::parse(&huge, &limits).unwrap(), None);
    assert_eq!(array_elements(&huge), None);
}

// ---------------------------------------------------------------- frames

fn parse(input: &'static [u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    Frame::parse(&b(input), &Limits::default())
}

fn parse_one(input: &'static [u8]) -> Frame {
    let (frame, consumed) = parse(input).unwrap().expect("complete frame");
    assert_eq!(
        consumed,
        input.len(),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    frame
}

fn encoded(frame: &Frame, proto: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(proto, &mut out);
    out.to_vec()
}

/// Every frame type: its wire form parses to the expected frame and encodes back (RESP3)
/// to the same bytes.
#[test]
fn frame_types_round_trip() {
    use Frame::*;
    let cases: Vec<(&'static [u8], Frame)> = vec![
        (b"+OK\r\n", Simple(b(b"OK"))),
        (b"+\r\n", Simple(b(b""))),
        (
            b"-ERR unknown command\r\n",
            Error(b(b"ERR unknown command")),
        ),
        (b":0\r\n", Integer(0)),
        (b":-42\r\n", Integer(-42)),
        (b":9223372036854775807\r\n", Integer(i64::MAX)),
        (b":-9223372036854775808\r\n", Integer(i64::MIN)),
        (b"$5\r\nhe\r\no\r\n", Bulk(b(b"he\r\no"))),
        (b"$0\r\n\r\n", Bulk(b(b""))),
        (b"_\r\n", Null),
        (b"*0\r\n", Array(vec![])),
        (
            b"*3\r\n:1\r\n*1\r\n+a\r\n$1\r\nb\r\n",
            Array(vec![
                Integer(1),
                Array(vec![Simple(b(b"a"))]),
                Bulk(b(b"b")),
            ]),
        ),
        (b",3.14\r\n", Double(b(b"3.14"))),
        (b",-inf\r\n", Double(b(b"-inf"))),
        (b",1.5e+300\r\n", Double(b(b"1.5e+300"))),
        (b"#t\r\n", Boolean(true)),
        (b"#f\r\n", Boolean(false)),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            BigNumber(b(b"3492890328409238509324850943850943825024385")),
        ),
        (b"(-1\r\n", BigNumber(b(b"-1"))),
        (
            b"!21\r\nSYNTAX invalid syntax\r\n",
            BulkError(b(b"SYNTAX invalid syntax")),
        ),
        (
            b"=15\r\ntxt:Some string\r\n",
            Verbatim {
                format: b(b"txt"),
                text: b(b"Some string"),
            },
        ),
        (
            b"=4\r\nmkd:\r\n",
            Verbatim {
                format: b(b"mkd"),
                text: b(b""),
            },
        ),
        (
            b"%2\r\n+first\r\n:1\r\n$6\r\nsecond\r\n_\r\n",
            Map(vec![
                (Simple(b(b"first")), Integer(1)),
                (Bulk(b(b"second")), Null),
            ]),
        ),
        (b"%0\r\n", Map(vec![])),
        (
            b"~2\r\n+a\r\n#f\r\n",
            Set(vec![Simple(b(b"a")), Boolean(false)]),
        ),
        (
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nmsg\r\n",
            Push(vec![Bulk(b(b"message")), Bulk(b(b"ch")), Bulk(b(b"msg"))]),
        ),
    ];
    for (wire, expected) in cases {
        assert_eq!(
            parse_one(wire),
            expected,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
        assert_eq!(encoded(&expected, Protocol::Resp3), wire);
    }
}

#[test]
fn resp2_nulls_parse_as_null() {
    assert_eq!(parse_one(b"$-1\r\n"), Frame::Null);
    assert_eq!(parse_one(b"*-1\r\n"), Frame::Null);
}

#[test]
fn frames_are_zero_copy() {
    let input = b(b"*2\r\n$3\r\nabc\r\n+def\r\n");
    let (frame, _) = Frame::parse(&input, &Limits::default()).unwrap().unwrap();
    let Frame::Array(items) = frame else { panic!() };
    let base = input.as_ptr() as usize;
    let Frame::Bulk(abc) = &items[0] else {
        panic!()
    };
    let Frame::Simple(def) = &items[1] else {
        panic!()
    };
    assert_eq!(abc.as_ptr() as usize, base + 8);
    assert_eq!(def.as_ptr() as usize, base + 14);
}

#[test]
fn attributes_are_dropped_but_consumed() {
    let wire = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2\r\n:3\r\n";
    assert_eq!(
        parse_one(wire),
        Frame::Array(vec![Frame::Integer(2), Frame::Integer(3)])
    );
    // Attributes inside aggregates do not count as elements.
    assert_eq!(
        parse_one(b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n|0\r\n:2\r\n"),
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)])
    );
    assert_eq!(parse(b"|1\r\n+a\r\n+b\r\n").unwrap(), None);
}

#[test]
fn parse_needs_the_whole_frame() {
    let wire = b"*2\r\n$3\r\nfoo\r\n%1\r\n+k\r\n:1\r\n";
    for cut in 0..wire.len() {
        let partial = Bytes::copy_from_slice(&wire[..cut]);
        assert_eq!(
            Frame::parse(&partial, &Limits::default()).unwrap(),
            None,
            "cut {cut}"
        );
    }
    // Trailing bytes are left alone.
    let (_, consumed) = parse(b":1\r\n:2\r\n").unwrap().unwrap();
    assert_eq!(consumed, 4);
}

#[test]
fn resp2_downgrades() {
    use Frame::*;
    let cases: Vec<(Frame, &'static [u8])> = vec![
        (Null, b"$-1\r\n"),
        (
            Map(vec![(Simple(b(b"a")), Integer(1)), (Bulk(b(b"b")), Null)]),
            b"*4\r\n+a\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
        ),
        (Set(vec![Integer(1), Integer(2)]), b"*2\r\n:1\r\n:2\r\n"),
        (Push(vec![Bulk(b(b"message"))]), b"*1\r\n$7\r\nmessage\r\n"),
        (Double(b(b"3.14")), b"$4\r\n3.14\r\n"),
        (
            BigNumber(b(b"12345678901234567890")),
            b"$20\r\n12345678901234567890\r\n",
        ),
        (Boolean(true), b":1\r\n"),
        (Boolean(false), b":0\r\n"),
        (
            BulkError(b(b"SYNTAX bad\r\nthing")),
            b"-SYNTAX bad  thing\r\n",
        ),
        (
            Verbatim {
                format: b(b"txt"),
                text: b(b"hello"),
            },
            b"$5\r\nhello\r\n",
        ),
        (
            Array(vec![Map(vec![(Boolean(true), Set(vec![Null]))])]),
            b"*1\r\n*2\r\n:1\r\n*1\r\n$-1\r\n",
        ),
        // Types RESP2 has are written unchanged.
        (Simple(b(b"OK")), b"+OK\r\n"),
        (Error(b(b"ERR x")), b"-ERR x\r\n"),
        (Integer(-7), b":-7\r\n"),
        (Bulk(b(b"")), b"$0\r\n\r\n"),
    ];
    for (frame, wire) in cases {
        assert_eq!(encoded(&frame, Protocol::Resp2), wire, "{frame:?}");
    }
}

#[test]
fn encode_never_breaks_lines() {
    let frame = Frame::Array(vec![
        Frame::Simple(b(b"a\r\nb")),
        Frame::Error(b(b"E\nx")),
        Frame::Double(b(b"1\r")),
    ]);
    assert_eq!(
        encoded(&frame, Protocol::Resp3),
        b"*3\r\n+a  b\r\n-E x\r\n,1 \r\n"
    );
}

// ---------------------------------------------------------------- reply scanner

fn scan_all(input: &[u8]) -> Result<(Vec<Bytes>, Vec<u8>), ProtoError> {
    scan_all_with(input, Limits::default())
}

fn scan_all_with(input: &[u8], limits: Limits) -> Result<(Vec<Bytes>, Vec<u8>), ProtoError> {
    let mut scanner = ReplyScanner::new(limits);
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(reply) = scanner.next_reply(&mut buf)? {
        out.push(reply);
    }
    Ok((out, buf.to_vec()))
}

#[test]
fn scanner_splits_replies() {
    let replies: &[&[u8]] = &[
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":1\r\n",
        b"$3\r\nfoo\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n",
        b"_\r\n",
        b",1.5\r\n",
        b"#t\r\n",
        b"(123\r\n",
        b"!3\r\nERR\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%1\r\n+k\r\n~2\r\n:1\r\n:2\r\n",
        b">2\r\n+pubsub\r\n+x\r\n",
        b"|1\r\n+ttl\r\n:5\r\n$1\r\nv\r\n",
        b"|0\r\n:1\r\n",
        b"*1\r\n|1\r\n+a\r\n+b\r\n%0\r\n",
    ];
    let stream: Vec<u8> = replies.concat();
    let (chunks, rest) = scan_all(&stream).unwrap();
    assert!(rest.is_empty());
    assert_eq!(chunks.len(), replies.len());
    for (chunk, expected) in chunks.iter().zip(replies) {
        assert_eq!(&chunk[..], *expected);
    }
}

#[test]
fn scanner_keeps_partial_reply() {
    let (chunks, rest) = scan_all(b"+OK\r\n*2\r\n:1\r\n").unwrap();
    assert_eq!(chunks.len(), 1);
    assert_eq!(rest, b"*2\r\n:1\r\n");
    let (chunks, rest) = scan_all(b"|1\r\n+a\r\n+b\r\n").unwrap();
    assert!(chunks.is_empty());
    assert_eq!(rest.len(), 12);
}

/// Errors shared by the scanner and `Frame::parse`.
#[test]
fn reply_protocol_errors() {
    use ProtoError::*;
    let cases: &[(&[u8], ProtoError)] = &[
        (b"?\r\n", InvalidType(b'?')),
        (b"OK\r\n", InvalidType(b'O')),
        (b"*1\r\nx", InvalidType(b'x')),
        (b":abc\r\n", InvalidInteger),
        (b":12x\r\n", InvalidInteger),
        (b":\r\n", InvalidInteger),
        (b":99999999999999999999\r\n", InvalidInteger),
        (b"$-2\r\n", InvalidBulkLength),
        (b"$abc\r\n", InvalidBulkLength),
        (b"!-1\r\n", InvalidBulkLength),
        (b"=-1\r\n", InvalidBulkLength),
        (b"$536870913\r\n", InvalidBulkLength),
        (b"$3\r\nfooXX", ExpectedCrlf),
        (b"+OK\rX", ExpectedCrlf),
        (b"*-2\r\n", InvalidMultibulkLength),
        (b"~-1\r\n", InvalidMultibulkLength),
        (b"%-1\r\n", InvalidMultibulkLength),
        (b">-1\r\n", InvalidMultibulkLength),
        (b"|-1\r\n", InvalidMultibulkLength),
        (b"*1048577\r\n", InvalidMultibulkLength),
        (b"%524289\r\n", InvalidMultibulkLength),
        (b"#x\r\n", InvalidBoolean),
        (b"#true\r\n", InvalidBoolean),
        (b"_x\r\n", InvalidNull),
        (b",\r\n", InvalidDouble),
        (b"(\r\n", InvalidBigNumber),
        (b"(12a\r\n", InvalidBigNumber),
        (b"(-\r\n", InvalidBigNumber),
        (b"=3\r\nabc\r\n", InvalidVerbatim),
        (b"=5\r\nabcde\r\n", InvalidVerbatim),
    ];
    for (input, expected) in cases {
        let what = String::from_utf8_lossy(input);
        assert_eq!(&scan_all(input).unwrap_err(), expected, "scanner {what:?}");
        let parsed = Frame::parse(&Bytes::copy_from_slice(input), &Limits::default());
        assert_eq!(&parsed.unwrap_err(), expected, "Frame::parse {what:?}");
    }
}

#[test]
fn nesting_limit() {
    let nested = |depth: usize| {
        let mut wire = b"*1\r\n".repeat(depth);
        wire.extend_from_slice(b":1\r\n");
        Bytes::from(wire)
    };
    let limits = Limits::default();
    assert_eq!(scan_all(&nested(32)).unwrap().0.len(), 1);
    assert!(Frame::parse(&nested(32), &limits).unwrap().is_some());
    assert_eq!(scan_all(&nested(33)).unwrap_err(), ProtoError::TooDeep);
    assert_eq!(
        Frame::parse(&nested(33), &limits).unwrap_err(),
        ProtoError::TooDeep
    );
    // Every aggregate type counts, empty ones and attributes included.
    let mixed = b(b"%1\r\n~1\r\n>1\r\n|1\r\n*0\r\n*0\r\n:1\r\n:1\r\n");
    let tight = Limits {
        max_depth: 3,
        ..limits
    };
    assert_eq!(
        scan_all_with(&mixed, tight).unwrap_err(),
        ProtoError::TooDeep
    );
    assert_eq!(
        Frame::parse(&mixed, &tight).unwrap_err(),
        ProtoError::TooDeep
    );
    let enough = Limits {
        max_depth: 5,
        ..limits
    };
    assert_eq!(scan_all_with(&mixed, enough).unwrap().0.len(), 1);
    // A deep but legal stack of attribute-annotated frames does not overflow anything.
    let deep = Limits {
        max_depth: 100_000,
        ..limits
    };
    assert_eq!(scan_all_with(&nested(100_000), deep).unwrap().0.len(), 1);
}

#[test]
fn long_reply_lines_are_bounded() {
    let limits = Limits {
        max_bulk_len: 8,
        ..Limits::default()
    };
    assert_eq!(scan_all_with(b"+12345678\r\n", limits).unwrap().0.len(), 1);
    assert_eq!(
        scan_all_with(b"+123456789\r\n", limits).unwrap_err(),
        ProtoError::TooBigLine
    );
    assert_eq!(
        scan_all_with(b"-123456789", limits).unwrap_err(),
        ProtoError::TooBigLine
    );
    assert_eq!(
        scan_all_with(b"$9\r\n", limits).unwrap_err(),
        ProtoError::InvalidBulkLength
    );
}

#[test]
fn array_cursor_walks_without_allocating() {
    let reply = b"|1\r\n+a\r\n+b\r\n*3\r\n:1\r\n*2\r\n+a\r\n|1\r\n+k\r\n+v\r\n+b\r\n$-1\r\n";
    let mut c = ArrayCursor::new(reply).unwrap();
    assert_eq!(c.remaining(), 3);
    let mut seen = Vec::new();
    while let Some(r) = c.next_element(reply) {
        seen.push(&reply[r]);
    }
    assert_eq!(
        seen,
        [
            &b":1\r\n"[..],
            b"*2\r\n+a\r\n|1\r\n+k\r\n+v\r\n+b\r\n",
            b"$-1\r\n"
        ]
    );
    assert!(c.at_end(reply));
    assert_eq!(c.next_element(reply), None);

    for not_array in [
        &b"*-1\r\n"[..],
        b"+OK\r\n",
        b"%1\r\n:1\r\n:2\r\n",
        b"*x\r\n",
    ] {
        assert!(ArrayCursor::new(not_array).is_none(), "{not_array:?}");
    }
    // Fewer elements than announced: the walk stops, and is not at the end.
    let short = b"*2\r\n:1\r\n";
    let mut c = ArrayCursor::new(short).unwrap();
    assert!(c.next_element(short).is_some());
    assert_eq!(c.next_element(short), None);
    assert!(!c.at_end(short));
}

#[test]
fn array_elements_views() {
    let reply = b(b"*3\r\n:1\r\n*2\r\n+a\r\n|1\r\n+k\r\n+v\r\n+b\r\n$1\r\nx\r\n");
    let elements = array_elements(&reply).unwrap();
    assert_eq!(
        elements,
        [
            b(b":1\r\n"),
            b(b"*2\r\n+a\r\n|1\r\n+k\r\n+v\r\n+b\r\n"),
            b(b"$1\r\nx\r\n")
        ]
    );
    let base = reply.as_ptr() as usize;
    assert_eq!(elements[2].as_ptr() as usize, base + reply.len() - 7);

    assert_eq!(array_elements(&b(b"~1\r\n#t\r\n")).unwrap(), [b(b"#t\r\n")]);
    assert_eq!(array_elements(&b(b">1\r\n_\r\n")).unwrap(), [b(b"_\r\n")]);
    assert_eq!(array_elements(&b(b"*0\r\n")).unwrap(), Vec::<Bytes>::new());
    assert_eq!(
        array_elements(&b(b"|1\r\n+a\r\n+b\r\n*1\r\n:1\r\n")).unwrap(),
        [b(b":1\r\n")]
    );
    for not_array in [
        &b"*-1\r\n"[..],
        b"+OK\r\n",
        b"%1\r\n:1\r\n:2\r\n",
        b"*2\r\n:1\r\n",
        b"*1\r\n:1\r\n:2\r\n",
        b"*1\r\n:x\r\n",
        b"",
    ] {
        assert_eq!(array_elements(&Bytes::from_static(not_array)), None);
    }
}

#[test]
fn reply_helpers() {
    assert_eq!(reply_integer(b":42\r\n"), Some(42));
    assert_eq!(reply_integer(b":-1\r\n"), Some(-1));
    assert_eq!(reply_integer(b":42\r\nx"), None);
    assert_eq!(reply_integer(b":42\r"), None);
    assert_eq!(reply_integer(b"+42\r\n"), None);
    assert_eq!(reply_integer(b""), None);

    assert!(reply_is_error(b"-ERR x\r\n"));
    assert!(reply_is_error(b"!3\r\nERR\r\n"));
    assert!(reply_is_error(b"|1\r\n+a\r\n+b\r\n-ERR\r\n"));
    assert!(!reply_is_error(b"+OK\r\n"));
    assert!(!reply_is_error(b"|1\r\n+a\r\n+b\r\n+OK\r\n"));
    assert!(!reply_is_error(b""));
}

// ---------------------------------------------------------------- encoding helpers

#[test]
fn encoding_helpers() {
    let mut out = BytesMut::new();
    write_array_header(&mut out, 3);
    write_bulk(&mut out, b"a\r\nb");
    write_bulk(&mut out, b"");
    write_integer(&mut out, i64::MIN);
    write_integer(&mut out, 0);
    write_simple(&mut out, b"OK");
    write_simple(&mut out, b"two\nlines");
    write_error(&mut out, b"ERR bad\r\nthing");
    write_null(&mut out, Protocol::Resp2);
    write_null(&mut out, Protocol::Resp3);
    write_map_header(&mut out, 2, Protocol::Resp2);
    write_map_header(&mut out, 2, Protocol::Resp3);
    assert_eq!(
        &out[..],
        &b"*3\r\n$4\r\na\r\nb\r\n$0\r\n\r\n:-9223372036854775808\r\n:0\r\n+OK\r\n+two lines\r\n\
           -ERR bad  thing\r\n$-1\r\n_\r\n*4\r\n%2\r\n"[..]
    );

    let mut out = BytesMut::new();
    encode_command(&mut out, ["GET", "key"]);
    encode_command(&mut out, vec![b"DEL".to_vec()]);
    encode_command(&mut out, Vec::<&[u8]>::new());
    assert_eq!(
        &out[..],
        b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$3\r\nDEL\r\n*0\r\n"
    );
    assert_eq!(Protocol::default(), Protocol::Resp2);
}

#[test]
fn limits_defaults() {
    let limits = Limits::default();
    assert_eq!(limits.max_bulk_len, 512 * 1024 * 1024);
    assert_eq!(limits.max_elements, 1_048_576);
    assert_eq!(limits.max_depth, 32);
    assert_eq!(limits.max_inline_len, 64 * 1024);
}
