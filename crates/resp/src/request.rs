//! Decoding client requests: RESP multibulk or inline commands.

use bytes::{Buf, Bytes, BytesMut};

use crate::encode::{write_array_header, write_header};
use crate::examined;
use crate::inline::split_args;
use crate::num::parse_int_line;
use crate::{Limits, ProtoError};

/// Above this many remembered argument ranges (or scratch bytes) the buffers are dropped
/// after the request, so one huge MSET does not pin memory for the connection's lifetime.
const KEEP_RANGES: usize = 256;
const KEEP_SCRATCH: usize = 4096;

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The whole frame as received, to be forwarded byte for byte. For an inline command it
    /// is the command re-encoded as a multibulk, so backends only ever see canonical RESP.
    pub raw: Bytes,
    /// The arguments, as slices of `raw`.
    pub args: Vec<Bytes>,
}

impl Request {
    /// The command name (first argument), as sent (not case-folded).
    pub fn name(&self) -> Option<&[u8]> {
        self.args.first().map(|a| a.as_ref())
    }

    pub fn arg(&self, i: usize) -> Option<&Bytes> {
        self.args.get(i)
    }

    /// The encoded elements of arguments `first..=last` (`$len\r\n…\r\n` each) exactly as
    /// they sit, back to back, in `raw`, so that they can be copied into another command
    /// with one copy and no re-encoding. `None` if an index is out of range or the arguments
    /// are not consecutive canonical elements of `raw` (a `Request` built by hand); callers
    /// then encode the arguments themselves.
    pub fn arg_frames(&self, first: usize, last: usize) -> Option<&[u8]> {
        let base = self.raw.as_ptr() as usize;
        let mut start = None;
        let mut end = None;
        for i in first..=last {
            let arg = self.args.get(i)?;
            // Where the argument's bytes sit in `raw`; an argument that is no slice of
            // `raw` fails the bounds and content checks below.
            let data = (arg.as_ptr() as usize).checked_sub(base)?;
            let header = element_header_len(arg.len());
            let from = data.checked_sub(header)?;
            let to = data.checked_add(arg.len())?.checked_add(2)?;
            let element = self.raw.get(from..to)?;
            // The decoder only accepts canonical lengths (no sign, no leading zero), so an
            // element is exactly `$` + the decimal length + CRLF + data + CRLF.
            if element.first() != Some(&b'$')
                || decimal(element.get(1..header - 2)?) != Some(arg.len())
                || element.get(header - 2..header) != Some(b"\r\n".as_slice())
                || element.get(header + arg.len()..) != Some(b"\r\n".as_slice())
            {
                return None;
            }
            if end.is_some_and(|e| e != from) {
                return None;
            }
            start.get_or_insert(from);
            end = Some(to);
        }
        self.raw.get(start?..end?)
    }
}

/// The value of a run of decimal digits (no sign), if it is one and fits.
fn decimal(digits: &[u8]) -> Option<usize> {
    digits.iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
            .flatten()
    })
}

/// Length of `$<len>\r\n`.
fn element_header_len(len: usize) -> usize {
    let mut digits = 1;
    let mut n = len;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits + 3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// At the start of a frame; nothing of it is remembered.
    Idle,
    /// Inside an inline line; `pos` is how far it has been searched for `\n`.
    Inline,
    /// Inside `*N`; `pos` is the next unparsed byte.
    Multibulk,
}

/// Incremental decoder of client requests.
///
/// Requests are either a multibulk of bulk strings (`*N\r\n$len\r\n...`) or an inline line
/// split like Redis does. Between calls the buffer may only grow at its end: everything
/// learnt about the frame in progress (position, elements left, argument ranges) is kept,
/// so a frame arriving in many small reads is still scanned once.
#[derive(Debug)]
pub struct RequestDecoder {
    limits: Limits,
    mode: Mode,
    pos: usize,
    /// Multibulk elements not yet complete.
    remaining: usize,
    /// Length of the bulk whose header is parsed and whose payload starts at `pos`.
    bulk_len: Option<usize>,
    /// Argument ranges in the frame (multibulk) or in `scratch` (inline).
    ranges: Vec<(usize, usize)>,
    /// Unescaped inline arguments.
    scratch: Vec<u8>,
    /// Buffer length that completes the bulk being waited for; 0 if unknown.
    need_to: usize,
    /// Buffer length at the last call that returned `Ok(None)`.
    seen: usize,
    /// An emptied argument vector handed back with [`RequestDecoder::recycle`], so that
    /// decoding a pipeline allocates nothing per request.
    spare_args: Vec<Bytes>,
}

impl RequestDecoder {
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            mode: Mode::Idle,
            pos: 0,
            remaining: 0,
            bulk_len: None,
            ranges: Vec::new(),
            scratch: Vec::new(),
            need_to: 0,
            seen: 0,
            spare_args: Vec::new(),
        }
    }

    /// Takes back a request that is done with, to reuse its argument vector for the next
    /// one (vectors of huge requests are dropped rather than kept).
    pub fn recycle(&mut self, req: Request) {
        let mut args = req.args;
        if args.capacity() <= KEEP_RANGES && args.capacity() > self.spare_args.capacity() {
            args.clear();
            self.spare_args = args;
        }
    }

    fn take_args(&mut self) -> Vec<Bytes> {
        let mut args = std::mem::take(&mut self.spare_args);
        args.clear();
        args.reserve(self.ranges.len());
        args
    }

    /// `Ok(Some(req))` removes one request from the front of `buf` (split off and frozen:
    /// zero-copy). `Ok(None)` means more bytes are needed; progress is kept. Frames that Redis
    /// ignores (`*0`, `*-1`, blank inline lines) are consumed silently, so `buf` may have
    /// shrunk even when `Ok(None)` is returned. After an `Err` the stream is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtoError> {
        if buf.len() < self.pos {
            // The caller dropped buffered bytes; saved positions no longer mean anything.
            self.reset();
        }
        let result = self.decode_inner(buf);
        match &result {
            Ok(Some(_)) => self.seen = 0,
            Ok(None) => self.seen = buf.len(),
            Err(_) => self.reset(),
        }
        result
    }

    /// Bytes the request in progress still needs at least, when known: once a bulk header
    /// such as `$1000000\r\n` is read, the rest of that argument plus its CRLF (not the
    /// arguments after it). 0 when unknown.
    pub fn pending_hint(&self) -> usize {
        self.need_to.saturating_sub(self.seen)
    }

    fn reset(&mut self) {
        self.mode = Mode::Idle;
        self.pos = 0;
        self.remaining = 0;
        self.bulk_len = None;
        self.need_to = 0;
        self.ranges.clear();
    }

    fn finish(&mut self) {
        self.reset();
        if self.ranges.capacity() > KEEP_RANGES {
            self.ranges = Vec::new();
        }
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtoError> {
        loop {
            match self.mode {
                Mode::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first != b'*' {
                        self.mode = Mode::Inline;
                        self.pos = 0;
                        continue;
                    }
                    let Some((n, next)) =
                        parse_int_line(buf, 1).map_err(|_| ProtoError::InvalidMultibulkLength)?
                    else {
                        return Ok(None);
                    };
                    if n <= 0 {
                        if n < -1 {
                            return Err(ProtoError::InvalidMultibulkLength);
                        }
                        buf.advance(next);
                        continue;
                    }
                    let n = usize::try_from(n)
                        .ok()
                        .filter(|&n| n <= self.limits.max_elements)
                        .ok_or(ProtoError::InvalidMultibulkLength)?;
                    self.ranges.clear();
                    self.mode = Mode::Multibulk;
                    self.remaining = n;
                    self.pos = next;
                    self.bulk_len = None;
                }
                Mode::Multibulk => return self.decode_multibulk(buf),
                Mode::Inline => {
                    if let Some(step) = self.decode_inline(buf)? {
                        return Ok(step);
                    }
                }
            }
        }
    }

    fn decode_multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtoError> {
        let data: &[u8] = buf;
        loop {
            let len = match self.bulk_len {
                Some(len) => len,
                None => {
                    match data.get(self.pos) {
                        None => return Ok(None),
                        Some(b'$') => {}
                        Some(&other) => return Err(ProtoError::ExpectedBulk(other)),
                    }
                    let Some((n, next)) = parse_int_line(data, self.pos + 1)
                        .map_err(|_| ProtoError::InvalidBulkLength)?
                    else {
                        return Ok(None);
                    };
                    let len = usize::try_from(n)
                        .ok()
                        .filter(|&len| len <= self.limits.max_bulk_len)
                        .ok_or(ProtoError::InvalidBulkLength)?;
                    self.pos = next;
                    self.bulk_len = Some(len);
                    len
                }
            };
            let data_end = self
                .pos
                .checked_add(len)
                .ok_or(ProtoError::InvalidBulkLength)?;
            let elem_end = data_end
                .checked_add(2)
                .ok_or(ProtoError::InvalidBulkLength)?;
            if data.len() < elem_end {
                self.need_to = elem_end;
                return Ok(None);
            }
            examined(2);
            if data.get(data_end..elem_end) != Some(b"\r\n".as_slice()) {
                return Err(ProtoError::ExpectedCrlf);
            }
            self.ranges.push((self.pos, data_end));
            self.pos = elem_end;
            self.bulk_len = None;
            self.need_to = 0;
            self.remaining = self.remaining.saturating_sub(1);
            if self.remaining == 0 {
                break;
            }
        }
        let raw = buf.split_to(self.pos).freeze();
        // Every range was recorded below `pos`, so the slices are in bounds.
        let mut args = self.take_args();
        args.extend(
            self.ranges
                .iter()
                .map(|&(start, end)| raw.slice(start..end)),
        );
        self.finish();
        Ok(Some(Request { raw, args }))
    }

    /// `Ok(None)` when a blank line was consumed and decoding should go on.
    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Option<Request>>, ProtoError> {
        let data: &[u8] = buf;
        let rest = data.get(self.pos..).unwrap_or_default();
        let Some(off) = rest.iter().position(|&b| b == b'\n') else {
            examined(rest.len());
            self.pos = data.len();
            if data.len() > self.limits.max_inline_len {
                return Err(ProtoError::TooBigInline);
            }
            return Ok(Some(None));
        };
        examined(off + 1);
        let newline = self.pos + off;
        if newline > self.limits.max_inline_len {
            return Err(ProtoError::TooBigInline);
        }
        let line = data.get(..newline).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.scratch.clear();
        self.ranges.clear();
        split_args(line, &mut self.scratch, &mut self.ranges)?;
        buf.advance(newline + 1);
        if self.ranges.is_empty() {
            self.finish();
            return Ok(None);
        }

        let mut out = BytesMut::with_capacity(self.scratch.len() + 16 * (self.ranges.len() + 1));
        write_array_header(&mut out, self.ranges.len());
        for range in self.ranges.iter_mut() {
            let arg = self.scratch.get(range.0..range.1).unwrap_or_default();
            write_header(&mut out, b'$', arg.len());
            let start = out.len();
            out.extend_from_slice(arg);
            *range = (start, out.len());
            out.extend_from_slice(b"\r\n");
        }
        let raw = out.freeze();
        let mut args = self.take_args();
        args.extend(
            self.ranges
                .iter()
                .map(|&(start, end)| raw.slice(start..end)),
        );
        self.finish();
        Ok(Some(Some(Request { raw, args })))
    }
}
