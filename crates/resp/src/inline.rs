//! Splitting an inline command line exactly like Redis's `sdssplitargs`, so a command typed
//! into telnet means the same thing through the proxy as it does against Redis.

use crate::ProtoError;

/// C's `isspace` in the "C" locale, which `sdssplitargs` uses between arguments.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: Option<u8>) -> Option<u8> {
    match b? {
        d @ b'0'..=b'9' => Some(d - b'0'),
        h @ b'a'..=b'f' => Some(h - b'a' + 10),
        h @ b'A'..=b'F' => Some(h - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` (without its line terminator) into arguments. Unescaped argument bytes are
/// appended to `out`, and each argument's range in `out` is pushed to `spans`.
///
/// `sdssplitargs` works on a C string, so a NUL byte ends the line: what follows it is
/// ignored, and inside quotes it is an unterminated quote.
pub(crate) fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
) -> Result<(), ProtoError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    let at = |i: usize| line.get(i).copied();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if at(i).is_none() {
            return Ok(());
        }
        let start = out.len();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = at(i);
            if in_double {
                match c {
                    None => return Err(ProtoError::UnbalancedQuotes),
                    Some(b'\\') if at(i + 1) == Some(b'x') => {
                        if let (Some(hi), Some(lo)) = (hex_value(at(i + 2)), hex_value(at(i + 3))) {
                            out.push(hi * 16 + lo);
                            i += 4;
                        } else {
                            // Not a valid \xHH: an ordinary escape of 'x'.
                            out.push(b'x');
                            i += 2;
                        }
                    }
                    Some(b'\\') if at(i + 1).is_some() => {
                        out.push(match at(i + 1) {
                            Some(b'n') => b'\n',
                            Some(b'r') => b'\r',
                            Some(b't') => b'\t',
                            Some(b'b') => 0x08,
                            Some(b'a') => 0x07,
                            Some(other) => other,
                            None => b'\\',
                        });
                        i += 2;
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or the end.
                        if at(i + 1).is_some_and(|n| !is_space(n)) {
                            return Err(ProtoError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        out.push(other);
                        i += 1;
                    }
                }
            } else if in_single {
                match c {
                    None => return Err(ProtoError::UnbalancedQuotes),
                    Some(b'\\') if at(i + 1) == Some(b'\'') => {
                        out.push(b'\'');
                        i += 2;
                    }
                    Some(b'\'') => {
                        if at(i + 1).is_some_and(|n| !is_space(n)) {
                            return Err(ProtoError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        out.push(other);
                        i += 1;
                    }
                }
            } else {
                match c {
                    // Unlike the skip above, only these end an unquoted argument (no \v, \f).
                    None => break,
                    Some(b' ' | b'\n' | b'\r' | b'\t') => {
                        i += 1;
                        break;
                    }
                    Some(b'"') => {
                        in_double = true;
                        i += 1;
                    }
                    Some(b'\'') => {
                        in_single = true;
                        i += 1;
                    }
                    Some(other) => {
                        out.push(other);
                        i += 1;
                    }
                }
            }
        }
        spans.push((start, out.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtoError> {
        let mut out = Vec::new();
        let mut spans = Vec::new();
        split_args(line, &mut out, &mut spans)?;
        Ok(spans
            .iter()
            .map(|&(s, e)| out[s..e].to_vec())
            .collect::<Vec<_>>())
    }

    fn ok(line: &[u8], expected: &[&[u8]]) {
        let got = split(line).unwrap();
        let expected: Vec<Vec<u8>> = expected.iter().map(|a| a.to_vec()).collect();
        assert_eq!(got, expected, "line {:?}", String::from_utf8_lossy(line));
    }

    #[test]
    fn plain_words() {
        ok(b"", &[]);
        ok(b"   \t ", &[]);
        ok(b"PING", &[b"PING"]);
        ok(b"  set  a\tb  ", &[b"set", b"a", b"b"]);
        ok(b"a\x0bb", &[b"a\x0bb"]);
        ok(b"\x0b\x0ca", &[b"a"]);
        ok(b"a\rb", &[b"a", b"b"]);
    }

    #[test]
    fn double_quotes_and_escapes() {
        ok(b"set \"a b\" \"\"", &[b"set", b"a b", b""]);
        ok(
            br#""\n\r\t\b\a\\\"\q\x41\x4a\x4A\xzz\x4""#,
            &[b"\n\r\t\x08\x07\\\"qAJJxzzx4"],
        );
        ok(b"\"a\"\x0b", &[b"a"]);
    }

    #[test]
    fn quote_glued_inside_word() {
        // A quote in the middle of a word opens a quoted section of the same argument,
        // which then must close at a word boundary.
        ok(b"ab\"c d\"", &[b"abc d"]);
        assert_eq!(split(b"ab\"c d\"e"), Err(ProtoError::UnbalancedQuotes));
    }

    #[test]
    fn single_quotes() {
        ok(b"'a \"b\" \\n' x", &[b"a \"b\" \\n", b"x"]);
        ok(br"'it\'s'", &[b"it's"]);
    }

    #[test]
    fn unbalanced() {
        for bad in [
            &b"\"abc"[..],
            b"'abc",
            b"\"abc\"x",
            b"'abc'x",
            b"\"abc\\\"",
            b"\"ab\0c\"",
        ] {
            assert_eq!(
                split(bad),
                Err(ProtoError::UnbalancedQuotes),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn nul_ends_the_line() {
        ok(b"get a\0b c", &[b"get", b"a"]);
    }
}
