//! RESP2/RESP3 on top of [`bytes`]: the request decoder and reply scanner that sit on the
//! proxy's hot path, a zero-copy [`Frame`] tree for the few replies the proxy has to look
//! into, and allocation-free encoding helpers.
//!
//! Everything that reads network data is incremental (state survives between calls while
//! the buffer grows at its end, so a frame is never rescanned from its start), bounded by
//! [`Limits`] before any memory is reserved, and never panics.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

mod encode;
mod error;
mod frame;
mod inline;
mod num;
mod reply;
mod request;
mod wire;

pub use encode::{
    encode_command, write_array_header, write_bulk, write_error, write_integer, write_map_header,
    write_null, write_simple, Protocol,
};
pub use error::ProtoError;
pub use frame::Frame;
pub use reply::{array_elements, reply_integer, reply_is_error, ArrayCursor, ReplyScanner};
pub use request::{Request, RequestDecoder};

/// Hard bounds applied to untrusted input. Every length and count is checked against these
/// before anything is reserved, so a hostile header cannot make us allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one bulk string (`$`, and RESP3 `!` / `=`). In replies it also bounds
    /// the length of line frames (`+ - , (`), which otherwise would have no bound at all.
    pub max_bulk_len: usize,
    /// Largest element count of one aggregate; a map or attribute of N pairs counts as 2N.
    pub max_elements: usize,
    /// Deepest nesting of aggregates (a top-level array is depth 1).
    pub max_depth: usize,
    /// Longest inline command line: the bytes before its `\n`, a `\r` included.
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: 512 * 1024 * 1024,
            max_elements: 1_048_576,
            max_depth: 32,
            max_inline_len: 64 * 1024,
        }
    }
}

impl Limits {
    /// Bounds for the replies of a Redis server (the proxy's own backends): whatever a
    /// server sends as an answer is valid, however many elements it has (`LRANGE` of a
    /// list of 10M) or however deep it nests (a Lua script's tables). The request limits
    /// are for clients; applied here they would turn a valid reply into a protocol error.
    /// Only the bulk length keeps a bound, Redis's own hard limit on a string (512 MiB;
    /// a server configured past it with `proto-max-bulk-len` gets 4 GiB). The
    /// [`ReplyScanner`] walks aggregates with a stack of its own, so depth cannot
    /// exhaust the thread's stack.
    pub const SERVER_REPLIES: Limits = Limits {
        max_bulk_len: 4 << 30,
        max_elements: usize::MAX,
        max_depth: usize::MAX,
        max_inline_len: usize::MAX,
    };

    /// Bounds for re-walking replies that were already validated by a [`ReplyScanner`]
    /// (whose limits we do not know here): only structure matters, and every walker that
    /// uses this is iterative, so depth cannot exhaust the stack.
    pub(crate) const UNBOUNDED: Limits = Limits {
        max_bulk_len: usize::MAX,
        max_elements: usize::MAX,
        max_depth: usize::MAX,
        max_inline_len: usize::MAX,
    };
}

/// Test-only accounting of the bytes the parsers look at, so tests can prove that feeding a
/// frame in tiny pieces costs O(n) rather than O(n²).
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static EXAMINED: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn add(n: usize) {
        EXAMINED.with(|c| c.set(c.get() + n));
    }

    pub(crate) fn take() -> usize {
        EXAMINED.with(|c| c.replace(0))
    }
}

#[inline(always)]
pub(crate) fn examined(_n: usize) {
    #[cfg(test)]
    work::add(_n);
}

#[cfg(test)]
mod tests;
