//! A parsed RESP2/RESP3 value, for the replies the proxy must look into (merging, HELLO,
//! CLUSTER ...) rather than forward.

use bytes::{Bytes, BytesMut};

use crate::encode::{
    write_array_header, write_blob, write_bulk, write_error, write_header, write_integer,
    write_line, write_map_header, write_null, write_simple, Protocol,
};
use crate::wire::{self, Aggregate, Blob, Line};
use crate::{Limits, ProtoError};

/// A parsed frame. String payloads are slices of the parsed input, not copies.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(Bytes),
    Error(Bytes),
    Integer(i64),
    Bulk(Bytes),
    /// RESP2 `$-1` and `*-1`, RESP3 `_`.
    Null,
    Array(Vec<Frame>),
    /// The text as received: re-encoding must not change what the server said.
    Double(Bytes),
    Boolean(bool),
    BigNumber(Bytes),
    BulkError(Bytes),
    Verbatim {
        format: Bytes,
        text: Bytes,
    },
    Map(Vec<(Frame, Frame)>),
    Set(Vec<Frame>),
    Push(Vec<Frame>),
}

impl Frame {
    /// Parses one complete frame from the start of `input`: the frame and the bytes it took,
    /// or `None` if `input` ends before the frame does.
    ///
    /// RESP3 attributes (`|`) are validated and dropped: the result is the frame they
    /// annotate, and `consumed` covers both (the same chunk a [`ReplyScanner`] returns).
    ///
    /// [`ReplyScanner`]: crate::ReplyScanner
    pub fn parse(input: &Bytes, limits: &Limits) -> Result<Option<(Frame, usize)>, ProtoError> {
        parse_at(input, 0, 0, limits)
    }

    /// Encodes the frame for a client speaking `proto`. For RESP2, RESP3-only types are
    /// downgraded the way Redis does: `Null` to `$-1`, maps to flat arrays, sets and pushes
    /// to arrays, doubles and big numbers to bulk strings, booleans to `:1`/`:0`, bulk errors
    /// to simple errors, verbatim strings to a bulk of their text.
    pub fn encode(&self, proto: Protocol, out: &mut BytesMut) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Frame::Simple(s) => write_simple(out, s),
            Frame::Error(s) => write_error(out, s),
            Frame::Integer(n) => write_integer(out, *n),
            Frame::Bulk(b) => write_bulk(out, b),
            Frame::Null => write_null(out, proto),
            Frame::Array(items) => {
                write_array_header(out, items.len());
                encode_all(items, proto, out);
            }
            Frame::Double(t) if resp3 => write_line(out, b',', t),
            Frame::BigNumber(t) if resp3 => write_line(out, b'(', t),
            Frame::Double(t) | Frame::BigNumber(t) => write_bulk(out, t),
            Frame::Boolean(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Frame::Boolean(b) => write_integer(out, i64::from(*b)),
            Frame::BulkError(t) if resp3 => write_blob(out, b'!', &[t.as_ref()]),
            Frame::BulkError(t) => write_error(out, t),
            Frame::Verbatim { format, text } if resp3 => {
                write_blob(out, b'=', &[format.as_ref(), b":", text.as_ref()])
            }
            Frame::Verbatim { text, .. } => write_bulk(out, text),
            Frame::Map(pairs) => {
                write_map_header(out, pairs.len(), proto);
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Frame::Set(items) | Frame::Push(items) => {
                let ty = match (resp3, self) {
                    (false, _) => b'*',
                    (true, Frame::Set(_)) => b'~',
                    (true, _) => b'>',
                };
                write_header(out, ty, items.len());
                encode_all(items, proto, out);
            }
        }
    }
}

fn encode_all(items: &[Frame], proto: Protocol, out: &mut BytesMut) {
    for item in items {
        item.encode(proto, out);
    }
}

/// Recursive descent mirroring `ScanCore::advance` check for check (see `wire`). Recursion
/// is bounded by `limits.max_depth`, checked before descending.
fn parse_at(
    input: &Bytes,
    mut pos: usize,
    depth: usize,
    limits: &Limits,
) -> Result<Option<(Frame, usize)>, ProtoError> {
    loop {
        let Some(&ty) = input.get(pos) else {
            return Ok(None);
        };
        let parsed = match ty {
            b'+' | b'-' | b',' | b'(' => {
                let cr = match wire::find_line_end(input, pos + 1, pos + 1, limits.max_bulk_len)? {
                    Line::Partial(_) => return Ok(None),
                    Line::End(cr) => cr,
                };
                let content = input.get(pos + 1..cr).unwrap_or_default();
                wire::check_line(ty, content)?;
                let text = input.slice(pos + 1..cr);
                let frame = match ty {
                    b'+' => Frame::Simple(text),
                    b'-' => Frame::Error(text),
                    b',' => Frame::Double(text),
                    _ => Frame::BigNumber(text),
                };
                (frame, cr + 2)
            }
            b':' => match wire::integer(input, pos)? {
                Some((n, end)) => (Frame::Integer(n), end),
                None => return Ok(None),
            },
            b'#' => match wire::boolean(input, pos)? {
                Some((b, end)) => (Frame::Boolean(b), end),
                None => return Ok(None),
            },
            b'_' => match wire::null(input, pos)? {
                Some(end) => (Frame::Null, end),
                None => return Ok(None),
            },
            b'$' | b'!' | b'=' => match wire::blob_header(input, pos, ty, limits)? {
                None => return Ok(None),
                Some(Blob::Null(end)) => (Frame::Null, end),
                Some(Blob::Data { start, end }) => {
                    let Some(frame_end) = wire::blob_tail(input, ty, start, end)? else {
                        return Ok(None);
                    };
                    let frame = match ty {
                        b'$' => Frame::Bulk(input.slice(start..end)),
                        b'!' => Frame::BulkError(input.slice(start..end)),
                        // blob_tail checked the `xxx:` prefix.
                        _ => Frame::Verbatim {
                            format: input.slice(start..start + 3),
                            text: input.slice(start + 4..end),
                        },
                    };
                    (frame, frame_end)
                }
            },
            b'*' | b'~' | b'%' | b'>' | b'|' => {
                match wire::aggregate_header(input, pos, ty, depth, limits)? {
                    None => return Ok(None),
                    Some(Aggregate::Null(end)) => (Frame::Null, end),
                    Some(Aggregate::Items { elements, next }) => {
                        let Some((frame, end)) =
                            parse_aggregate(input, ty, elements, next, depth + 1, limits)?
                        else {
                            return Ok(None);
                        };
                        match frame {
                            Some(frame) => (frame, end),
                            None => {
                                // An attribute: what it annotates follows at this depth.
                                pos = end;
                                continue;
                            }
                        }
                    }
                }
            }
            other => return Err(ProtoError::InvalidType(other)),
        };
        return Ok(Some(parsed));
    }
}

/// Parses the `elements` children of an aggregate of type `ty` starting at `pos`. The frame
/// is `None` for an attribute, whose content is dropped.
#[allow(clippy::type_complexity)]
fn parse_aggregate(
    input: &Bytes,
    ty: u8,
    elements: usize,
    mut pos: usize,
    depth: usize,
    limits: &Limits,
) -> Result<Option<(Option<Frame>, usize)>, ProtoError> {
    let next = |pos: &mut usize| -> Result<Option<Frame>, ProtoError> {
        Ok(parse_at(input, *pos, depth, limits)?.map(|(frame, end)| {
            *pos = end;
            frame
        }))
    };
    let capacity = wire::capacity_for(elements, input.len().saturating_sub(pos));
    let frame = match ty {
        b'%' => {
            let mut pairs = Vec::with_capacity(capacity / 2);
            for _ in 0..elements / 2 {
                let Some(key) = next(&mut pos)? else {
                    return Ok(None);
                };
                let Some(value) = next(&mut pos)? else {
                    return Ok(None);
                };
                pairs.push((key, value));
            }
            Frame::Map(pairs)
        }
        b'|' => {
            for _ in 0..elements {
                if next(&mut pos)?.is_none() {
                    return Ok(None);
                }
            }
            return Ok(Some((None, pos)));
        }
        _ => {
            let mut items = Vec::with_capacity(capacity);
            for _ in 0..elements {
                let Some(item) = next(&mut pos)? else {
                    return Ok(None);
                };
                items.push(item);
            }
            match ty {
                b'~' => Frame::Set(items),
                b'>' => Frame::Push(items),
                _ => Frame::Array(items),
            }
        }
    };
    Ok(Some((Some(frame), pos)))
}
