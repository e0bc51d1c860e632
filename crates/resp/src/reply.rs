//! Splitting a server's reply stream into complete top-level replies without building them.

use bytes::{Bytes, BytesMut};

use crate::num::parse_int_line;
use crate::wire::{self, Aggregate, Blob, Line};
use crate::{Limits, ProtoError};

/// One open aggregate while scanning.
#[derive(Debug, Clone, Copy)]
struct Level {
    remaining: usize,
    /// An attribute annotates the frame after it, so finishing one must not count as an
    /// element of the enclosing aggregate.
    attribute: bool,
}

/// Resumable walk over one reply starting at a fixed offset of a buffer that only grows.
#[derive(Debug, Default)]
struct ScanCore {
    /// Start of the next frame header to read, or of the pending blob's payload.
    pos: usize,
    /// Set once a blob header at `pos` is parsed, so waiting for a big payload costs O(1)
    /// per call: `(type, payload start, payload end)`.
    blob: Option<(u8, usize, usize)>,
    /// How far the current line frame has been searched for its `\r`.
    line_from: usize,
    stack: Vec<Level>,
    /// Buffer length that would complete the blob being waited for; 0 if unknown.
    need_to: usize,
}

impl ScanCore {
    fn starting_at(pos: usize) -> Self {
        ScanCore {
            pos,
            ..ScanCore::default()
        }
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.blob = None;
        self.line_from = 0;
        self.stack.clear();
        self.need_to = 0;
    }

    /// Walks as far as `buf` allows. `Some(end)` when the reply is complete and ends at
    /// `end`; after that the state must be reset before scanning another reply.
    fn advance(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtoError> {
        loop {
            let pos = self.pos;
            let end = if let Some((ty, start, end)) = self.blob {
                let Some(frame_end) = wire::blob_tail(buf, ty, start, end)? else {
                    self.need_to = end.saturating_add(2);
                    return Ok(None);
                };
                self.blob = None;
                self.need_to = 0;
                frame_end
            } else {
                let Some(&ty) = buf.get(pos) else {
                    return Ok(None);
                };
                match ty {
                    b'+' | b'-' | b',' | b'(' => {
                        match wire::find_line_end(
                            buf,
                            pos + 1,
                            self.line_from,
                            limits.max_bulk_len,
                        )? {
                            Line::Partial(from) => {
                                self.line_from = from;
                                return Ok(None);
                            }
                            Line::End(cr) => {
                                let content = buf.get(pos + 1..cr).unwrap_or_default();
                                wire::check_line(ty, content)?;
                                cr + 2
                            }
                        }
                    }
                    b':' => match wire::integer(buf, pos)? {
                        Some((_, end)) => end,
                        None => return Ok(None),
                    },
                    b'#' => match wire::boolean(buf, pos)? {
                        Some((_, end)) => end,
                        None => return Ok(None),
                    },
                    b'_' => match wire::null(buf, pos)? {
                        Some(end) => end,
                        None => return Ok(None),
                    },
                    b'$' | b'!' | b'=' => match wire::blob_header(buf, pos, ty, limits)? {
                        None => return Ok(None),
                        Some(Blob::Null(end)) => end,
                        Some(Blob::Data { start, end }) => {
                            self.pos = start;
                            self.blob = Some((ty, start, end));
                            continue;
                        }
                    },
                    b'*' | b'~' | b'%' | b'>' | b'|' => {
                        match wire::aggregate_header(buf, pos, ty, self.stack.len(), limits)? {
                            None => return Ok(None),
                            Some(Aggregate::Null(end)) => end,
                            Some(Aggregate::Items { elements, next }) => {
                                self.pos = next;
                                if elements > 0 {
                                    self.stack.push(Level {
                                        remaining: elements,
                                        attribute: ty == b'|',
                                    });
                                    continue;
                                }
                                if ty == b'|' {
                                    // An empty attribute still annotates whatever follows.
                                    continue;
                                }
                                next
                            }
                        }
                    }
                    other => return Err(ProtoError::InvalidType(other)),
                }
            };
            self.pos = end;
            if self.element_done() {
                return Ok(Some(end));
            }
        }
    }

    /// Accounts for one finished frame; true when it finished the whole reply.
    fn element_done(&mut self) -> bool {
        while let Some(level) = self.stack.last_mut() {
            level.remaining = level.remaining.saturating_sub(1);
            if level.remaining > 0 {
                return false;
            }
            let attribute = level.attribute;
            self.stack.pop();
            if attribute {
                return false;
            }
        }
        true
    }
}

/// Incremental scanner for replies from a Redis server (RESP2 and RESP3).
///
/// It validates structure and limits but builds nothing: each complete top-level reply is
/// split off the front of the buffer and returned as raw bytes, ready to be forwarded. An
/// attribute (`|`) is returned together with the reply it annotates; push frames (`>`) are
/// returned like any other reply. Between calls the buffer may only grow at its end.
#[derive(Debug)]
pub struct ReplyScanner {
    limits: Limits,
    core: ScanCore,
    seen: usize,
}

impl ReplyScanner {
    pub fn new(limits: Limits) -> Self {
        ReplyScanner {
            limits,
            core: ScanCore::default(),
            seen: 0,
        }
    }

    /// `Ok(Some(reply))` removes one complete reply from the front of `buf` (zero-copy);
    /// `Ok(None)` means more bytes are needed (`buf` untouched, progress kept).
    pub fn next_reply(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtoError> {
        if buf.len() < self.core.pos {
            // The caller dropped buffered bytes; saved positions no longer mean anything.
            self.core.reset();
        }
        match self.core.advance(buf, &self.limits) {
            Ok(Some(end)) => {
                self.core.reset();
                self.seen = 0;
                Ok(Some(buf.split_to(end).freeze()))
            }
            Ok(None) => {
                self.seen = buf.len();
                Ok(None)
            }
            Err(e) => {
                self.core.reset();
                Err(e)
            }
        }
    }

    /// Bytes the reply in progress still needs at least, when known: the rest of the bulk
    /// payload being received (plus its CRLF). 0 when unknown.
    pub fn pending_hint(&self) -> usize {
        self.core.need_to.saturating_sub(self.seen)
    }
}

/// End of the one frame (with any attributes in front of it) starting at `pos`, for replies
/// that a scanner already accepted.
fn frame_end(buf: &[u8], pos: usize) -> Option<usize> {
    // Fast path for the common element of MGET replies: a bulk string.
    if buf.get(pos) == Some(&b'$') {
        if let Ok(Some((n, next))) = parse_int_line(buf, pos + 1) {
            if n == -1 {
                return Some(next);
            }
            let end = usize::try_from(n).ok()?.checked_add(next)?;
            return (buf.get(end..end.checked_add(2)?) == Some(b"\r\n".as_slice()))
                .then_some(end + 2);
        }
    }
    ScanCore::starting_at(pos)
        .advance(buf, &Limits::UNBOUNDED)
        .ok()
        .flatten()
}

/// Skips attribute frames starting at `pos`; the position of the first non-attribute frame.
fn skip_attributes(buf: &[u8], mut pos: usize) -> Option<usize> {
    while buf.get(pos) == Some(&b'|') {
        let (n, mut next) = parse_int_line(buf, pos + 1).ok().flatten()?;
        let pairs = usize::try_from(n).ok()?;
        for _ in 0..pairs.checked_mul(2)? {
            next = frame_end(buf, next)?;
        }
        pos = next;
    }
    Some(pos)
}

/// Zero-copy view of the elements of one complete array reply (`*N`, or RESP3 `~N` / `>N`):
/// each element's raw bytes, aggregates included. `None` if `reply` is not exactly one such
/// reply, is malformed, or is a null array.
pub fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    let mut cursor = ArrayCursor::new(reply)?;
    let mut out = Vec::with_capacity(wire::capacity_for(
        cursor.remaining(),
        reply.len().saturating_sub(cursor.pos),
    ));
    while cursor.remaining() > 0 {
        out.push(reply.slice(cursor.next_element(reply)?));
    }
    (cursor.pos == reply.len()).then_some(out)
}

/// A walk over the elements of one array reply (`*N`, or RESP3 `~N` / `>N`, attributes in
/// front skipped) that allocates nothing and keeps no borrow of the reply, so that the walks
/// over the parts of a split MGET can sit side by side in one reusable `Vec`. Every call
/// must be given the same reply as [`ArrayCursor::new`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ArrayCursor {
    pos: usize,
    left: usize,
}

impl ArrayCursor {
    /// A cursor before the first element; `None` if `reply` does not start with an array
    /// header (a null array `*-1` included).
    pub fn new(reply: &[u8]) -> Option<ArrayCursor> {
        let pos = skip_attributes(reply, 0)?;
        if !matches!(reply.get(pos), Some(b'*' | b'~' | b'>')) {
            return None;
        }
        let (n, pos) = parse_int_line(reply, pos + 1).ok().flatten()?;
        let left = usize::try_from(n).ok()?;
        Some(ArrayCursor { pos, left })
    }

    /// Elements not walked yet.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// The byte range of the next element, aggregates included; `None` at the end or if the
    /// reply is malformed.
    pub fn next_element(&mut self, reply: &[u8]) -> Option<std::ops::Range<usize>> {
        if self.left == 0 {
            return None;
        }
        let start = self.pos;
        let end = frame_end(reply, start)?;
        self.pos = end;
        self.left -= 1;
        Some(start..end)
    }

    /// True once every element was walked and they ended exactly at the end of `reply`.
    pub fn at_end(&self, reply: &[u8]) -> bool {
        self.left == 0 && self.pos == reply.len()
    }
}

/// The value of an integer reply `:N\r\n` (exactly one frame), if `reply` is one.
pub fn reply_integer(reply: &[u8]) -> Option<i64> {
    if reply.first() != Some(&b':') {
        return None;
    }
    match parse_int_line(reply, 1) {
        Ok(Some((n, end))) if end == reply.len() => Some(n),
        _ => None,
    }
}

/// True if the reply is an error (`-`, or RESP3 `!`), looking past leading attributes.
pub fn reply_is_error(reply: &[u8]) -> bool {
    let pos = match reply.first() {
        Some(b'-' | b'!') => return true,
        Some(b'|') => skip_attributes(reply, 0),
        _ => return false,
    };
    matches!(pos.and_then(|p| reply.get(p)), Some(b'-' | b'!'))
}
