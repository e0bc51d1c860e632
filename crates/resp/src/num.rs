//! Decimal integers in RESP headers.

use crate::examined;

/// The digits were not an integer Redis would accept; the caller decides which
/// [`ProtoError`](crate::ProtoError) that is, since Redis words it per context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadInt;

/// Parses the integer that starts at `start` and is terminated by `\r\n`, with Redis's
/// `string2ll` rules: optional `-`, no `+`, no leading zeros, no `-0`, no overflow.
///
/// Returns the value and the position just past the `\r\n`, or `None` when the buffer ends
/// before the terminator. Since at most 20 characters can precede the `\r` of a valid
/// integer, re-parsing an incomplete header on the next call costs a bounded amount of work
/// and needs no saved state.
#[inline]
pub(crate) fn parse_int_line(buf: &[u8], start: usize) -> Result<Option<(i64, usize)>, BadInt> {
    let rest = buf.get(start..).unwrap_or_default();
    let neg = rest.first() == Some(&b'-');
    let mut idx = usize::from(neg);
    // Accumulating negatively makes i64::MIN representable without a special case.
    let mut acc: i64 = 0;
    let mut digits = 0usize;
    let mut leading_zero = false;
    loop {
        let Some(&b) = rest.get(idx) else {
            examined(idx);
            return Ok(None);
        };
        match b {
            b'0'..=b'9' => {
                if leading_zero {
                    return Err(BadInt);
                }
                if digits == 0 && b == b'0' {
                    leading_zero = true;
                }
                acc = acc
                    .checked_mul(10)
                    .and_then(|a| a.checked_sub(i64::from(b - b'0')))
                    .ok_or(BadInt)?;
                digits += 1;
            }
            b'\r' => {
                examined(idx + 2);
                if digits == 0 || (neg && leading_zero) {
                    return Err(BadInt);
                }
                return match rest.get(idx + 1) {
                    None => Ok(None),
                    Some(b'\n') => {
                        let value = if neg {
                            acc
                        } else {
                            acc.checked_neg().ok_or(BadInt)?
                        };
                        Ok(Some((value, start + idx + 2)))
                    }
                    Some(_) => Err(BadInt),
                };
            }
            _ => return Err(BadInt),
        }
        idx += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Result<Option<i64>, BadInt> {
        parse_int_line(s, 0).map(|o| o.map(|(v, _)| v))
    }

    #[test]
    fn accepts_redis_integers() {
        assert_eq!(p(b"0\r\n"), Ok(Some(0)));
        assert_eq!(p(b"7\r\n"), Ok(Some(7)));
        assert_eq!(p(b"-1\r\n"), Ok(Some(-1)));
        assert_eq!(p(b"1234567890\r\n"), Ok(Some(1_234_567_890)));
        assert_eq!(p(b"9223372036854775807\r\n"), Ok(Some(i64::MAX)));
        assert_eq!(p(b"-9223372036854775808\r\n"), Ok(Some(i64::MIN)));
        assert_eq!(parse_int_line(b"x12\r\nrest", 1), Ok(Some((12, 5))));
    }

    #[test]
    fn rejects_what_string2ll_rejects() {
        for bad in [
            &b"\r\n"[..],
            b"-\r\n",
            b"+1\r\n",
            b"01\r\n",
            b"-0\r\n",
            b"-01\r\n",
            b"1 \r\n",
            b" 1\r\n",
            b"1x\r\n",
            b"1\rx",
            b"9223372036854775808\r\n",
            b"-9223372036854775809\r\n",
            b"99999999999999999999999\r\n",
            b"1\n",
        ] {
            assert_eq!(p(bad), Err(BadInt), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn incomplete() {
        for part in [&b""[..], b"-", b"12", b"12\r", b"-9223372036854775808"] {
            assert_eq!(p(part), Ok(None), "{:?}", String::from_utf8_lossy(part));
        }
        assert_eq!(parse_int_line(b"12", 5), Ok(None));
    }
}
