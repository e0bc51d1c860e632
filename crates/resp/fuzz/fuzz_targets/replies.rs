//! Server bytes through `ReplyScanner` (one-shot and chunked) and `Frame::parse`, which must
//! agree on every reply boundary and every error.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_replies(data));
