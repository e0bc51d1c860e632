//! Frame-level primitives shared by the incremental [`ReplyScanner`](crate::ReplyScanner)
//! and the one-shot [`Frame::parse`](crate::Frame::parse). Both walk frames in the same
//! order through these functions, which is what guarantees they agree on every boundary
//! and every error (the `replies` fuzz target checks exactly that).

use crate::examined;
use crate::num::parse_int_line;
use crate::{Limits, ProtoError};

/// Result of looking for the end of a line.
pub(crate) enum Line {
    /// Position of the `\r` of the terminating `\r\n`.
    End(usize),
    /// Not terminated yet; the search may resume at this position next time.
    Partial(usize),
}

/// Finds the `\r\n` ending the line whose content starts at `start`, searching from `from`
/// (callers pass where a previous search stopped, so long lines are searched once).
pub(crate) fn find_line_end(
    buf: &[u8],
    start: usize,
    from: usize,
    max_len: usize,
) -> Result<Line, ProtoError> {
    let from = from.max(start);
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        Some(off) => {
            examined(off + 1);
            let cr = from + off;
            if cr - start > max_len {
                return Err(ProtoError::TooBigLine);
            }
            match buf.get(cr + 1) {
                None => Ok(Line::Partial(cr)),
                Some(b'\n') => Ok(Line::End(cr)),
                Some(_) => Err(ProtoError::ExpectedCrlf),
            }
        }
        None => {
            examined(rest.len());
            if buf.len().saturating_sub(start) > max_len {
                return Err(ProtoError::TooBigLine);
            }
            Ok(Line::Partial(buf.len()))
        }
    }
}

/// Validates the payload of a complete line frame of type `ty`.
pub(crate) fn check_line(ty: u8, content: &[u8]) -> Result<(), ProtoError> {
    match ty {
        b',' if content.is_empty() => Err(ProtoError::InvalidDouble),
        b'(' => {
            let digits = match content.first() {
                Some(b'-' | b'+') => content.get(1..).unwrap_or_default(),
                _ => content,
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                Err(ProtoError::InvalidBigNumber)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// Parses a whole `:` frame at `pos`: value and end position.
pub(crate) fn integer(buf: &[u8], pos: usize) -> Result<Option<(i64, usize)>, ProtoError> {
    parse_int_line(buf, pos + 1).map_err(|_| ProtoError::InvalidInteger)
}

/// Parses a whole `#` frame at `pos`: value and end position.
pub(crate) fn boolean(buf: &[u8], pos: usize) -> Result<Option<(bool, usize)>, ProtoError> {
    let Some(body) = buf.get(pos + 1..pos + 4) else {
        return Ok(None);
    };
    examined(3);
    match body {
        b"t\r\n" => Ok(Some((true, pos + 4))),
        b"f\r\n" => Ok(Some((false, pos + 4))),
        _ => Err(ProtoError::InvalidBoolean),
    }
}

/// Parses a whole `_` frame at `pos`: its end position.
pub(crate) fn null(buf: &[u8], pos: usize) -> Result<Option<usize>, ProtoError> {
    let Some(body) = buf.get(pos + 1..pos + 3) else {
        return Ok(None);
    };
    examined(2);
    if body == b"\r\n" {
        Ok(Some(pos + 3))
    } else {
        Err(ProtoError::InvalidNull)
    }
}

/// Header of a blob frame (`$ ! =`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blob {
    /// RESP2 `$-1\r\n`; the frame ends at the given position.
    Null(usize),
    /// Payload occupies `start..end`; the frame ends 2 bytes later.
    Data { start: usize, end: usize },
}

/// Parses the header of a blob frame of type `ty` at `pos`.
pub(crate) fn blob_header(
    buf: &[u8],
    pos: usize,
    ty: u8,
    limits: &Limits,
) -> Result<Option<Blob>, ProtoError> {
    let Some((n, start)) =
        parse_int_line(buf, pos + 1).map_err(|_| ProtoError::InvalidBulkLength)?
    else {
        return Ok(None);
    };
    if n == -1 && ty == b'$' {
        return Ok(Some(Blob::Null(start)));
    }
    let len = usize::try_from(n)
        .ok()
        .filter(|&len| len <= limits.max_bulk_len)
        .ok_or(ProtoError::InvalidBulkLength)?;
    let end = start
        .checked_add(len)
        .filter(|end| end.checked_add(2).is_some())
        .ok_or(ProtoError::InvalidBulkLength)?;
    Ok(Some(Blob::Data { start, end }))
}

/// Checks the tail of a blob payload `start..end` of type `ty` once `end + 2` bytes are
/// buffered; `None` while they are not.
pub(crate) fn blob_tail(
    buf: &[u8],
    ty: u8,
    start: usize,
    end: usize,
) -> Result<Option<usize>, ProtoError> {
    let frame_end = end.saturating_add(2);
    if buf.len() < frame_end {
        return Ok(None);
    }
    examined(2);
    if buf.get(end..frame_end) != Some(b"\r\n".as_slice()) {
        return Err(ProtoError::ExpectedCrlf);
    }
    if ty == b'=' && (end - start < 4 || buf.get(start + 3) != Some(&b':')) {
        return Err(ProtoError::InvalidVerbatim);
    }
    Ok(Some(frame_end))
}

/// Header of an aggregate frame (`* ~ % > |`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregate {
    /// RESP2 `*-1\r\n`; the frame ends at the given position.
    Null(usize),
    /// `elements` child frames (2 per pair for `%` and `|`) start at `next`.
    Items { elements: usize, next: usize },
}

/// Parses the header of an aggregate of type `ty` at `pos`, opened inside `depth` others.
pub(crate) fn aggregate_header(
    buf: &[u8],
    pos: usize,
    ty: u8,
    depth: usize,
    limits: &Limits,
) -> Result<Option<Aggregate>, ProtoError> {
    let Some((n, next)) =
        parse_int_line(buf, pos + 1).map_err(|_| ProtoError::InvalidMultibulkLength)?
    else {
        return Ok(None);
    };
    if n == -1 && ty == b'*' {
        return Ok(Some(Aggregate::Null(next)));
    }
    let count = usize::try_from(n).map_err(|_| ProtoError::InvalidMultibulkLength)?;
    let elements = if matches!(ty, b'%' | b'|') {
        count.checked_mul(2)
    } else {
        Some(count)
    }
    .filter(|&e| e <= limits.max_elements)
    .ok_or(ProtoError::InvalidMultibulkLength)?;
    if depth >= limits.max_depth {
        return Err(ProtoError::TooDeep);
    }
    Ok(Some(Aggregate::Items { elements, next }))
}

/// Upper bound for `Vec::with_capacity` when `elements` children are announced but only
/// `available` bytes exist to hold them: each child takes at least 3 bytes (`_\r\n`), so this
/// keeps a lying header from reserving more than the input could ever fill.
pub(crate) fn capacity_for(elements: usize, available: usize) -> usize {
    elements.min(available / 3)
}
