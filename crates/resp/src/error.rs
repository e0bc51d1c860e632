use std::fmt;

/// A protocol violation. The stream it came from cannot be resynchronised: answer the
/// error (clients expect `-ERR ` + this text, as Redis writes it) and close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// `*N` that is not a valid integer, negative other than -1, or over `max_elements`.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$N` that is not a valid integer, negative (other than a `$-1` null reply), or over
    /// `max_bulk_len`.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A request multibulk element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", DisplayByte(*.0))]
    ExpectedBulk(u8),
    /// An inline command line longer than `max_inline_len`.
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// An inline command with an unterminated quote, or a closing quote glued to more text.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Aggregates nested deeper than `max_depth`.
    #[error("Protocol error: too deep nesting")]
    TooDeep,
    /// An integer reply (`:`) that is not a valid signed 64-bit decimal.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// A bulk payload or a line not followed by `\r\n` (or a lone `\r` in a line).
    #[error("Protocol error: expected CRLF")]
    ExpectedCrlf,
    /// A reply line (`+ - , (`) longer than `max_bulk_len`.
    #[error("Protocol error: too big reply line")]
    TooBigLine,
    /// A byte that starts no RESP2/RESP3 type.
    #[error("Protocol error: got '{}' as reply type byte", DisplayByte(*.0))]
    InvalidType(u8),
    /// RESP3 `#` not followed by exactly `t` or `f`.
    #[error("Protocol error: invalid boolean")]
    InvalidBoolean,
    /// RESP3 `_` followed by anything but `\r\n`.
    #[error("Protocol error: invalid null")]
    InvalidNull,
    /// RESP3 `,` with an empty payload.
    #[error("Protocol error: invalid double")]
    InvalidDouble,
    /// RESP3 `(` whose payload is not an optionally signed run of digits.
    #[error("Protocol error: invalid big number")]
    InvalidBigNumber,
    /// RESP3 `=` whose payload does not start with a 3-byte format and `:`.
    #[error("Protocol error: invalid verbatim string")]
    InvalidVerbatim,
}

/// Redis prints the offending byte with `%c`; we do the same for printable ASCII but escape
/// the rest, because the text ends up in a `-ERR` line that must stay one clean line.
struct DisplayByte(u8);

impl fmt::Display for DisplayByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "{}", char::from(self.0))
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}
