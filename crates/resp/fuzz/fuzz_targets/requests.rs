//! Client bytes through `RequestDecoder`, one-shot and in small chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_requests(data));
