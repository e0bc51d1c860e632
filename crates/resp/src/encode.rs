//! Appending RESP to a `BytesMut` without intermediate allocations.

use bytes::{BufMut, BytesMut};

/// The protocol a client negotiated (`HELLO 3` switches to RESP3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// `ty` + decimal `n` + CRLF; the shape of every length and count header.
#[inline]
pub(crate) fn write_header(out: &mut BytesMut, ty: u8, n: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    out.reserve(digits.len() + 3);
    out.put_u8(ty);
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// A length-prefixed blob (`$`, `!`, `=`) whose payload is the concatenation of `parts`.
pub(crate) fn write_blob(out: &mut BytesMut, ty: u8, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    out.reserve(len + 24);
    write_header(out, ty, len);
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// A line frame (`+`, `-`, `,`, `(`). A CR or LF in `content` would end the line early and
/// let the rest be read as another reply, so they become spaces.
pub(crate) fn write_line(out: &mut BytesMut, ty: u8, content: &[u8]) {
    out.reserve(content.len() + 3);
    out.put_u8(ty);
    let mut parts = content.split(|&b| b == b'\r' || b == b'\n');
    if let Some(first) = parts.next() {
        out.extend_from_slice(first);
    }
    for part in parts {
        out.put_u8(b' ');
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

/// `*n\r\n`.
pub fn write_array_header(out: &mut BytesMut, n: usize) {
    write_header(out, b'*', n);
}

/// `$len\r\n` + `data` + `\r\n`.
pub fn write_bulk(out: &mut BytesMut, data: &[u8]) {
    write_blob(out, b'$', &[data]);
}

/// `:n\r\n`.
pub fn write_integer(out: &mut BytesMut, n: i64) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    out.reserve(digits.len() + 3);
    out.put_u8(b':');
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// `+s\r\n`; CR and LF in `s` are replaced by spaces.
pub fn write_simple(out: &mut BytesMut, s: &[u8]) {
    write_line(out, b'+', s);
}

/// `-msg\r\n`; CR and LF in `msg` are replaced by spaces.
pub fn write_error(out: &mut BytesMut, msg: &[u8]) {
    write_line(out, b'-', msg);
}

/// A null reply: `$-1\r\n` for RESP2, `_\r\n` for RESP3.
pub fn write_null(out: &mut BytesMut, proto: Protocol) {
    out.extend_from_slice(match proto {
        Protocol::Resp2 => b"$-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// A map of `pairs` entries: `%pairs` in RESP3, a flat `*2·pairs` array in RESP2.
pub fn write_map_header(out: &mut BytesMut, pairs: usize, proto: Protocol) {
    match proto {
        Protocol::Resp2 => write_header(out, b'*', pairs.saturating_mul(2)),
        Protocol::Resp3 => write_header(out, b'%', pairs),
    }
}

/// A command: an array of bulk strings.
pub fn encode_command<I, A>(out: &mut BytesMut, args: I)
where
    I: IntoIterator<Item = A>,
    I::IntoIter: ExactSizeIterator,
    A: AsRef<[u8]>,
{
    let args = args.into_iter();
    write_array_header(out, args.len());
    for arg in args {
        write_bulk(out, arg.as_ref());
    }
}
