//! Properties checked by the fuzz targets. Shared with `crates/resp/tests/fuzz_checks.rs`,
//! which runs them on random inputs under plain `cargo test`, so this code keeps compiling
//! (and keeps holding) without a nightly toolchain.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use shardis_resp::{
    array_elements, encode_command, reply_integer, reply_is_error, Frame, Limits, ProtoError,
    Protocol, ReplyScanner, Request, RequestDecoder,
};

/// Small limits, so that fuzzed inputs actually reach the limit checks.
pub fn limits() -> Limits {
    Limits {
        max_bulk_len: 1 << 12,
        max_elements: 64,
        max_depth: 6,
        max_inline_len: 256,
    }
}

/// How a stream ended once all input was fed.
#[derive(Debug, PartialEq)]
pub enum End {
    /// Waiting for more bytes, with this many left in the buffer.
    NeedMore(usize),
    Failed(ProtoError),
}

/// Chunk sizes derived from the input itself, so every run of one input is reproducible.
struct Chunker {
    state: u64,
    max: usize,
}

impl Chunker {
    fn new(data: &[u8], max: usize) -> Self {
        let mut state = 0x9E37_79B9_7F4A_7C15 ^ data.len() as u64;
        for &b in data.iter().take(8) {
            state = state.rotate_left(8) ^ u64::from(b);
        }
        Chunker {
            state: state | 1,
            max,
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        1 + (self.state % self.max as u64) as usize
    }
}

/// Feeds `data` to `step` in chunks of at most `max_chunk` bytes (all at once if `None`),
/// calling `step` until it reports that it needs more.
fn feed<T>(
    data: &[u8],
    max_chunk: Option<usize>,
    mut step: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtoError>,
) -> (Vec<T>, End) {
    let mut chunker = Chunker::new(data, max_chunk.unwrap_or(1));
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        let n = match max_chunk {
            None => data.len() - fed,
            Some(_) => chunker.next().min(data.len() - fed),
        };
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        loop {
            match step(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(e) => return (out, End::Failed(e)),
            }
        }
        if fed == data.len() {
            return (out, End::NeedMore(buf.len()));
        }
    }
}

pub fn decode_requests(
    data: &[u8],
    max_chunk: Option<usize>,
    limits: Limits,
) -> (Vec<Request>, End) {
    let mut decoder = RequestDecoder::new(limits);
    feed(data, max_chunk, |buf| decoder.decode(buf))
}

pub fn scan_replies(data: &[u8], max_chunk: Option<usize>, limits: Limits) -> (Vec<Bytes>, End) {
    let mut scanner = ReplyScanner::new(limits);
    feed(data, max_chunk, |buf| scanner.next_reply(buf))
}

fn within(part: &Bytes, whole: &Bytes) -> bool {
    let base = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    part.is_empty() || (p >= base && p + part.len() <= base + whole.len())
}

/// Requests decoded in any chunking are the same; each is canonical RESP whose arguments
/// are zero-copy slices of it.
pub fn check_requests(data: &[u8]) {
    let limits = limits();
    let whole = decode_requests(data, None, limits);
    for req in &whole.0 {
        assert!(!req.args.is_empty());
        let mut canonical = BytesMut::new();
        encode_command(&mut canonical, &req.args);
        assert_eq!(req.raw, canonical.freeze());
        assert!(req.args.iter().all(|a| within(a, &req.raw)));
        assert_eq!(req.name(), req.args.first().map(|a| a.as_ref()));
    }
    for max_chunk in [1, 7] {
        let chunked = decode_requests(data, Some(max_chunk), limits);
        assert_eq!(whole, chunked, "chunks of at most {max_chunk}");
    }
}

/// Replies scanned in any chunking are the same, and agree with [`Frame::parse`] on every
/// boundary and every error; the helpers that re-read a reply agree with its parsed form.
pub fn check_replies(data: &[u8]) {
    let limits = limits();
    let whole = scan_replies(data, None, limits);
    for max_chunk in [1, 7] {
        let chunked = scan_replies(data, Some(max_chunk), limits);
        assert_eq!(whole, chunked, "chunks of at most {max_chunk}");
    }

    let input = Bytes::copy_from_slice(data);
    let mut offset = 0;
    for chunk in &whole.0 {
        let rest = input.slice(offset..);
        let (frame, consumed) = match Frame::parse(&rest, &limits) {
            Ok(Some(parsed)) => parsed,
            other => panic!("scanner returned {chunk:?} but Frame::parse gave {other:?}"),
        };
        assert_eq!(consumed, chunk.len());
        assert_eq!(&rest[..consumed], &chunk[..]);
        check_reply_helpers(chunk, &frame);
        check_reencoding(&frame);
        offset += consumed;
    }
    let rest = input.slice(offset..);
    match (&whole.1, Frame::parse(&rest, &limits)) {
        (End::NeedMore(left), Ok(None)) => assert_eq!(*left, rest.len()),
        (End::Failed(a), Err(b)) => assert_eq!(*a, b),
        (end, parsed) => panic!("scanner ended with {end:?} but Frame::parse gave {parsed:?}"),
    }
}

fn check_reply_helpers(chunk: &Bytes, frame: &Frame) {
    let attributed = chunk.first() == Some(&b'|');
    assert_eq!(
        reply_is_error(chunk),
        matches!(frame, Frame::Error(_) | Frame::BulkError(_))
    );
    if !attributed {
        let expected = match frame {
            Frame::Integer(n) => Some(*n),
            _ => None,
        };
        assert_eq!(reply_integer(chunk), expected);
    }
    let items = match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => Some(items),
        _ => None,
    };
    match (array_elements(chunk), items) {
        (Some(elements), Some(items)) => {
            assert_eq!(elements.len(), items.len());
            for (raw, item) in elements.iter().zip(items) {
                assert!(within(raw, chunk));
                let parsed = Frame::parse(raw, &Limits::default()).ok().flatten();
                assert_eq!(
                    parsed.as_ref().map(|(f, n)| (f, *n)),
                    Some((item, raw.len()))
                );
            }
        }
        (None, None) => {}
        // `*-1` is Frame::Null, which array_elements reports as None too.
        (elements, items) => panic!("array_elements {elements:?} vs frame items {items:?}"),
    }
}

/// Encoding is stable: what we encode parses back to a frame that encodes identically, in
/// both protocols.
fn check_reencoding(frame: &Frame) {
    let unbounded = Limits {
        max_bulk_len: usize::MAX,
        max_elements: usize::MAX,
        max_depth: usize::MAX / 2,
        max_inline_len: usize::MAX,
    };
    for proto in [Protocol::Resp2, Protocol::Resp3] {
        let mut first = BytesMut::new();
        frame.encode(proto, &mut first);
        let first = first.freeze();
        let (again, consumed) = match Frame::parse(&first, &unbounded) {
            Ok(Some(parsed)) => parsed,
            other => panic!("re-parsing {first:?} gave {other:?}"),
        };
        assert_eq!(consumed, first.len());
        let mut second = BytesMut::new();
        again.encode(proto, &mut second);
        assert_eq!(first, second.freeze());
    }
}
