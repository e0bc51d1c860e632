//! A tiny blocking RESP2/RESP3 client for byte-exact assertions.
//!
//! It is written independently of `shardis-resp` on purpose: the proxy's parser is
//! what the tests check, so the client must not share its code (or its bugs).
//! [`RespConn`] sends commands or raw bytes and reads exactly one reply frame back
//! as the raw bytes the server wrote; [`Reply`] parses such bytes when a test
//! needs to look inside (or to normalise an unordered reply).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// How long a read waits before the test gives up on a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes a command the way clients do: an array of bulk strings.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `GET k` style text of a command, for failure messages.
pub fn describe_command<A: AsRef<[u8]>>(args: &[A]) -> String {
    args.iter()
        .map(|a| escape_short(a.as_ref(), 60))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shows bytes with `\r`, `\n` and non-printable bytes escaped, for failure messages.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Like [`escape`], but cut to `max` characters so that one huge reply does not
/// drown a failure message.
pub fn escape_short(bytes: &[u8], max: usize) -> String {
    let s = escape(bytes);
    if s.len() <= max {
        s
    } else {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}... ({} bytes)", &s[..cut], bytes.len())
    }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

/// One blocking connection. Every method that is not `try_*` panics with the
/// server address on I/O errors, which is what a test wants.
pub struct RespConn {
    addr: String,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl fmt::Debug for RespConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RespConn")
            .field("addr", &self.addr)
            .finish()
    }
}

impl RespConn {
    /// Connects with a read/write timeout of [`DEFAULT_TIMEOUT`].
    pub fn connect(addr: &str) -> RespConn {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: &str) -> io::Result<RespConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(DEFAULT_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
        let reader = BufReader::with_capacity(64 * 1024, stream.try_clone()?);
        Ok(RespConn {
            addr: addr.to_string(),
            writer: stream,
            reader,
        })
    }

    /// Connects and, when `password` is given, authenticates (panics unless `+OK`).
    pub fn connect_auth(addr: &str, password: Option<&str>) -> RespConn {
        let mut conn = Self::connect(addr);
        if let Some(pw) = password {
            let reply = conn.cmd(&["AUTH", pw]);
            assert_eq!(reply, b"+OK\r\n", "AUTH at {addr}: {}", escape(&reply));
        }
        conn
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.writer
            .set_read_timeout(Some(timeout))
            .expect("set read timeout");
        self.writer
            .set_write_timeout(Some(timeout))
            .expect("set write timeout");
    }

    /// The underlying stream (for `shutdown`, cloning a writer thread, ...).
    pub fn stream(&self) -> &TcpStream {
        &self.writer
    }

    /// Writes one command without reading its reply (pipelining).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let bytes = encode_command(args);
        self.send_raw(&bytes);
    }

    /// Writes raw bytes, exactly as given.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.addr));
    }

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Sends a command and returns its reply's raw bytes.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.send(args);
        self.read_raw()
    }

    /// Sends a command and returns its reply as (lossy) text, e.g. `"+OK\r\n"`.
    pub fn cmd_text<A: AsRef<[u8]>>(&mut self, args: &[A]) -> String {
        String::from_utf8_lossy(&self.cmd(args)).into_owned()
    }

    /// Sends a command and parses its reply.
    pub fn reply<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let raw = self.cmd(args);
        Reply::parse_all(&raw).unwrap_or_else(|e| panic!("bad reply {}: {e}", escape(&raw)))
    }

    /// Sends a command and asserts that the reply is exactly `expected`.
    #[track_caller]
    pub fn expect<A: AsRef<[u8]>>(&mut self, args: &[A], expected: &[u8]) {
        let reply = self.cmd(args);
        assert!(
            reply == expected,
            "{} at {}: expected {}, got {}",
            describe_command(args),
            self.addr,
            escape(expected),
            escape_short(&reply, 500)
        );
    }

    /// Reads one whole reply frame (RESP2 or RESP3) and returns its raw bytes.
    pub fn read_raw(&mut self) -> Vec<u8> {
        self.try_read_frame()
            .unwrap_or_else(|e| panic!("read a reply from {}: {e}", self.addr))
    }

    pub fn read_reply(&mut self) -> Reply {
        let raw = self.read_raw();
        Reply::parse_all(&raw).unwrap_or_else(|e| panic!("bad reply {}: {e}", escape(&raw)))
    }

    /// Reads one frame. End of stream before a complete frame is `UnexpectedEof`.
    pub fn try_read_frame(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        read_frame_into(&mut self.reader, &mut out)?;
        Ok(out)
    }

    /// What happened next on this connection: a reply, the server closing it, or
    /// nothing within `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Event {
        self.set_timeout(timeout);
        let event = match self.try_read_frame() {
            Ok(frame) => Event::Reply(frame),
            Err(e) if is_closed_error(&e) => Event::Closed,
            Err(e) if is_timeout_error(&e) => Event::Silent,
            // A reset or any other hard error: the connection is gone.
            Err(_) => Event::Closed,
        };
        self.set_timeout(DEFAULT_TIMEOUT);
        event
    }

    /// Waits until the server closes the connection, discarding replies in the
    /// meantime. True when it was closed within `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.writer
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if is_closed_error(&e) => return true,
                Err(e) if is_timeout_error(&e) => return false,
                Err(_) => return true,
            }
        }
    }

    /// Half-closes the writing side (the server sees end of stream).
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown(Shutdown::Write);
    }
}

/// What a connection did next (see [`RespConn::next_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Reply(Vec<u8>),
    Closed,
    Silent,
}

fn is_closed_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn is_timeout_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads a `\r\n`-terminated line (terminator included).
fn read_line(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 || !line.ends_with(b"\r\n") {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended inside a line: {:?}", escape(&line)),
        ));
    }
    out.extend_from_slice(&line);
    Ok(line)
}

fn header_number(line: &[u8]) -> io::Result<i64> {
    let text = std::str::from_utf8(&line[1..line.len() - 2]).unwrap_or("");
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad length in {:?}", escape(line)),
        )
    })
}

fn read_frame_into(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    let line = read_line(r, out)?;
    match line[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(()),
        b'$' | b'!' | b'=' => {
            let len = header_number(&line)?;
            if len < 0 {
                return Ok(());
            }
            let mut body = vec![0u8; len as usize + 2];
            r.read_exact(&mut body)?;
            out.extend_from_slice(&body);
            Ok(())
        }
        b'*' | b'~' | b'>' => {
            let n = header_number(&line)?;
            for _ in 0..n.max(0) {
                read_frame_into(r, out)?;
            }
            Ok(())
        }
        b'%' => {
            let n = header_number(&line)?;
            for _ in 0..n.max(0) * 2 {
                read_frame_into(r, out)?;
            }
            Ok(())
        }
        b'|' => {
            // An attribute is metadata in front of the real reply: keep both.
            let n = header_number(&line)?;
            for _ in 0..n.max(0) * 2 {
                read_frame_into(r, out)?;
            }
            read_frame_into(r, out)
        }
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "unknown reply type byte {other:#04x} in {:?}",
                escape(&line)
            ),
        )),
    }
}

// ---------------------------------------------------------------------------
// Parsed replies
// ---------------------------------------------------------------------------

/// A parsed reply. [`Reply::encode`] gives back the bytes Redis would write, so
/// a reply can be parsed, normalised and compared as bytes again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reply {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    /// RESP2 `$-1`.
    NullBulk,
    Array(Vec<Reply>),
    /// RESP2 `*-1`.
    NullArray,
    /// RESP3 `_`.
    Null,
    /// RESP3 `,`: kept as text so that re-encoding is exact.
    Double(Vec<u8>),
    Boolean(bool),
    BigNumber(Vec<u8>),
    BulkError(Vec<u8>),
    /// RESP3 `=`: the payload including its `txt:` prefix.
    Verbatim(Vec<u8>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Push(Vec<Reply>),
    Attribute(Vec<(Reply, Reply)>, Box<Reply>),
}

impl Reply {
    /// Parses exactly one frame that must fill all of `bytes`.
    pub fn parse_all(bytes: &[u8]) -> Result<Reply, String> {
        let (reply, used) = Self::parse(bytes)?;
        if used != bytes.len() {
            return Err(format!("{} trailing bytes", bytes.len() - used));
        }
        Ok(reply)
    }

    /// Parses one frame from the front of `bytes`; returns it and the bytes used.
    pub fn parse(bytes: &[u8]) -> Result<(Reply, usize), String> {
        let end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("incomplete line")?;
        let kind = *bytes.first().ok_or("empty")?;
        let text = &bytes[1..end];
        let mut pos = end + 2;
        let number = || -> Result<i64, String> {
            std::str::from_utf8(text)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| format!("bad number {:?}", escape(text)))
        };
        let items = |n: i64, pos: &mut usize| -> Result<Vec<Reply>, String> {
            let mut v = Vec::new();
            for _ in 0..n.max(0) {
                let (item, used) = Self::parse(&bytes[*pos..])?;
                *pos += used;
                v.push(item);
            }
            Ok(v)
        };
        let reply = match kind {
            b'+' => Reply::Simple(text.to_vec()),
            b'-' => Reply::Error(text.to_vec()),
            b':' => Reply::Integer(number()?),
            b'_' => Reply::Null,
            b',' => Reply::Double(text.to_vec()),
            b'#' => Reply::Boolean(text == b"t"),
            b'(' => Reply::BigNumber(text.to_vec()),
            b'$' | b'!' | b'=' => {
                let n = number()?;
                if n < 0 {
                    if kind != b'$' {
                        return Err("negative length".into());
                    }
                    Reply::NullBulk
                } else {
                    let n = n as usize;
                    let body = bytes.get(pos..pos + n).ok_or("incomplete bulk")?.to_vec();
                    if bytes.get(pos + n..pos + n + 2) != Some(b"\r\n") {
                        return Err("bulk not terminated by CRLF".into());
                    }
                    pos += n + 2;
                    match kind {
                        b'$' => Reply::Bulk(body),
                        b'!' => Reply::BulkError(body),
                        _ => Reply::Verbatim(body),
                    }
                }
            }
            b'*' => {
                let n = number()?;
                if n < 0 {
                    Reply::NullArray
                } else {
                    Reply::Array(items(n, &mut pos)?)
                }
            }
            b'~' => Reply::Set(items(number()?, &mut pos)?),
            b'>' => Reply::Push(items(number()?, &mut pos)?),
            b'%' | b'|' => {
                let flat = items(number()? * 2, &mut pos)?;
                let mut pairs = Vec::new();
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                if kind == b'%' {
                    Reply::Map(pairs)
                } else {
                    let (inner, used) = Self::parse(&bytes[pos..])?;
                    pos += used;
                    Reply::Attribute(pairs, Box::new(inner))
                }
            }
            other => return Err(format!("unknown type byte {other:#04x}")),
        };
        Ok((reply, pos))
    }

    /// The exact bytes Redis writes for this reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let line = |out: &mut Vec<u8>, kind: u8, text: &[u8]| {
            out.push(kind);
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        };
        let blob = |out: &mut Vec<u8>, kind: u8, body: &[u8]| {
            out.push(kind);
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        };
        let head = |out: &mut Vec<u8>, kind: u8, n: usize| {
            out.push(kind);
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        match self {
            Reply::Simple(t) => line(out, b'+', t),
            Reply::Error(t) => line(out, b'-', t),
            Reply::Integer(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => blob(out, b'$', b),
            Reply::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Null => out.extend_from_slice(b"_\r\n"),
            Reply::Double(t) => line(out, b',', t),
            Reply::Boolean(b) => line(out, b'#', if *b { b"t" } else { b"f" }),
            Reply::BigNumber(t) => line(out, b'(', t),
            Reply::BulkError(b) => blob(out, b'!', b),
            Reply::Verbatim(b) => blob(out, b'=', b),
            Reply::Array(items) | Reply::Set(items) | Reply::Push(items) => {
                let kind = match self {
                    Reply::Array(_) => b'*',
                    Reply::Set(_) => b'~',
                    _ => b'>',
                };
                head(out, kind, items.len());
                for item in items {
                    item.encode_into(out);
                }
            }
            Reply::Map(pairs) | Reply::Attribute(pairs, _) => {
                let kind = if matches!(self, Reply::Map(_)) {
                    b'%'
                } else {
                    b'|'
                };
                head(out, kind, pairs.len());
                for (k, v) in pairs {
                    k.encode_into(out);
                    v.encode_into(out);
                }
                if let Reply::Attribute(_, inner) = self {
                    inner.encode_into(out);
                }
            }
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_) | Reply::BulkError(_))
    }

    /// The text of a simple string, error, bulk or verbatim string (verbatim
    /// without its `txt:` prefix).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(t) | Reply::Error(t) | Reply::Bulk(t) | Reply::BulkError(t) => {
                Some(String::from_utf8_lossy(t).into_owned())
            }
            Reply::Verbatim(t) => {
                Some(String::from_utf8_lossy(t.get(4..).unwrap_or(t)).into_owned())
            }
            _ => None,
        }
    }

    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// Elements of an array, set or push.
    pub fn items(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(v) | Reply::Set(v) | Reply::Push(v) => Some(v),
            _ => None,
        }
    }

    /// Key/value pairs of a RESP3 map, or of a RESP2 flat array of pairs.
    pub fn pairs(&self) -> Option<Vec<(Reply, Reply)>> {
        match self {
            Reply::Map(p) => Some(p.clone()),
            Reply::Array(v) if v.len() % 2 == 0 => {
                Some(v.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect())
            }
            _ => None,
        }
    }

    /// Looks a field up in a map (or flat pair array) by its text key.
    pub fn field(&self, name: &str) -> Option<Reply> {
        self.pairs()?
            .into_iter()
            .find(|(k, _)| k.text().as_deref() == Some(name))
            .map(|(_, v)| v)
    }

    /// For unordered replies: the same reply with the elements of an array or set
    /// sorted by their encoded bytes. Other replies are returned unchanged.
    pub fn sorted(&self) -> Reply {
        match self {
            Reply::Array(v) | Reply::Set(v) => {
                let mut v = v.clone();
                v.sort_by_key(|r| r.encode());
                if matches!(self, Reply::Array(_)) {
                    Reply::Array(v)
                } else {
                    Reply::Set(v)
                }
            }
            other => other.clone(),
        }
    }

    /// For unordered field/value replies (HGETALL, ZRANGE WITHSCORES pairs are
    /// *not* unordered): a map's pairs, or a flat array's consecutive pairs,
    /// sorted by field.
    pub fn sorted_pairs(&self) -> Reply {
        match self {
            Reply::Map(p) => {
                let mut p = p.clone();
                p.sort_by_key(|(k, _)| k.encode());
                Reply::Map(p)
            }
            Reply::Array(v) if v.len() % 2 == 0 => {
                let mut p: Vec<_> = v.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
                p.sort_by_key(|(k, _)| k.encode());
                Reply::Array(p.into_iter().flat_map(|(k, v)| [k, v]).collect())
            }
            other => other.clone(),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.encode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":-3\r\n",
            b"$3\r\nfoo\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*2\r\n$1\r\na\r\n:1\r\n",
            b"%1\r\n$1\r\nf\r\n,1.5\r\n",
            b"~2\r\n$1\r\na\r\n$1\r\nb\r\n",
            b"_\r\n",
            b"#t\r\n",
            b"=8\r\ntxt:abcd\r\n",
            b">2\r\n$7\r\nmessage\r\n$1\r\nx\r\n",
            b"|1\r\n$1\r\nk\r\n$1\r\nv\r\n:5\r\n",
        ];
        for &case in cases {
            let reply = Reply::parse_all(case).unwrap();
            assert_eq!(reply.encode(), case, "{reply:?}");
            let mut out = Vec::new();
            read_frame_into(&mut io::Cursor::new(case), &mut out).unwrap();
            assert_eq!(out, case);
        }
    }

    #[test]
    fn incomplete_frames_are_errors() {
        for case in [&b"$3\r\nfo"[..], b"*2\r\n:1\r\n", b"+OK"] {
            let mut out = Vec::new();
            assert!(read_frame_into(&mut io::Cursor::new(case), &mut out).is_err());
            assert!(Reply::parse_all(case).is_err());
        }
    }

    #[test]
    fn sorting() {
        let r = Reply::parse_all(b"*4\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\n1\r\n").unwrap();
        assert_eq!(
            r.sorted_pairs().encode(),
            b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
        assert_eq!(r.field("a"), Some(Reply::Bulk(b"1".to_vec())));
    }
}
