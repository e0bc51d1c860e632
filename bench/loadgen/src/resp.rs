//! Just enough RESP2 for a load tool: encoding commands, and finding where
//! each reply ends (and whether it is an error) without building values.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Appends one command as a RESP array of bulk strings.
pub fn push_cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One parsed reply: its text if it is an error.
pub struct Reply {
    pub error: Option<String>,
}

fn crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

fn int(head: &[u8]) -> Result<i64> {
    std::str::from_utf8(head)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad length {:?}", String::from_utf8_lossy(head)))
}

/// End of the reply starting at `pos` (`None`: incomplete).
fn end_of(buf: &[u8], pos: usize, error: &mut Option<String>) -> Result<Option<usize>> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(eol) = crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let head = &buf[pos + 1..eol];
    let after = eol + 2;
    match kind {
        b'+' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(after)),
        b'-' => {
            if error.is_none() {
                *error = Some(String::from_utf8_lossy(head).into_owned());
            }
            Ok(Some(after))
        }
        b'$' | b'=' | b'!' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some(after));
            }
            let end = after + n as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'%' | b'~' | b'>' => {
            let n = int(head)?;
            let n = if kind == b'%' { n * 2 } else { n };
            let mut p = after;
            for _ in 0..n.max(0) {
                match end_of(buf, p, error)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(p))
        }
        other => bail!("unexpected reply type byte {other:#04x}"),
    }
}

/// A connection's reading side: a buffer of bytes received, replies taken
/// from its front.
pub struct Reader<S = TcpStream> {
    sock: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    drained: bool,
}

impl<S: Read> Reader<S> {
    pub fn new(sock: S) -> Reader<S> {
        Reader {
            sock,
            buf: vec![0; 256 * 1024],
            start: 0,
            end: 0,
            drained: false,
        }
    }

    /// The last read found the socket empty (it read less than it had room
    /// for, or would have blocked): with edge-triggered readiness, nothing
    /// more to read until the next event.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// The next complete reply already received, if any.
    pub fn next_reply(&mut self) -> Result<Option<Reply>> {
        let mut error = None;
        let window = &self.buf[self.start..self.end];
        match end_of(window, 0, &mut error)? {
            Some(len) => {
                self.start += len;
                Ok(Some(Reply { error }))
            }
            None => Ok(None),
        }
    }

    /// Reads more bytes: `Ok(false)` when the read timed out.
    pub fn fill(&mut self) -> Result<bool> {
        self.fill_via(|sock, buf| sock.read(buf)).map(|n| n > 0)
    }

    /// Reads more bytes with `read`: how many, 0 when the read timed out or
    /// would block. [`Reader::drained`] tells whether the socket may have
    /// more.
    pub fn fill_via(
        &mut self,
        read: impl FnOnce(&mut S, &mut [u8]) -> io::Result<usize>,
    ) -> Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grow = self.buf.len();
            self.buf.resize(self.buf.len() + grow, 0);
        }
        match read(&mut self.sock, &mut self.buf[self.end..]) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(n) => {
                self.drained = self.end + n < self.buf.len();
                self.end += n;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                self.drained = true;
                Ok(0)
            }
            Err(e) => Err(e).context("read"),
        }
    }

    /// Blocks until one whole reply is there.
    pub fn read_reply(&mut self) -> Result<Reply> {
        loop {
            if let Some(r) = self.next_reply()? {
                return Ok(r);
            }
            self.fill()?;
        }
    }
}

/// Connects with Nagle off; reads time out after `read_timeout` so that
/// loops can look at their stop flags.
pub fn connect(addr: &str, read_timeout: Duration) -> Result<TcpStream> {
    let sock = TcpStream::connect(addr).with_context(|| format!("connect to {addr}"))?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(read_timeout))?;
    sock.set_write_timeout(Some(Duration::from_secs(60)))?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Option<(usize, Option<String>)> {
        let mut e = None;
        end_of(buf, 0, &mut e).unwrap().map(|n| (n, e))
    }

    #[test]
    fn replies() {
        assert_eq!(parse(b"+OK\r\n"), Some((5, None)));
        assert_eq!(parse(b"+OK\r"), None);
        assert_eq!(parse(b"$3\r\nabc\r\n+"), Some((9, None)));
        assert_eq!(parse(b"$3\r\nabc\r"), None);
        assert_eq!(parse(b"$-1\r\n"), Some((5, None)));
        assert_eq!(parse(b"*2\r\n:1\r\n$1\r\nx\r\n"), Some((15, None)));
        assert_eq!(parse(b"*2\r\n:1\r\n$1\r\nx\r"), None);
        assert_eq!(
            parse(b"-TRYAGAIN slot held\r\n"),
            Some((21, Some("TRYAGAIN slot held".into())))
        );
    }

    #[test]
    fn encode() {
        let mut out = Vec::new();
        push_cmd(&mut out, &[b"GET", b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
