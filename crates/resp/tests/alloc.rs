//! Decoding a pipeline allocates exactly one `Vec` (the args) per request, and nothing when
//! the caller hands requests back with `recycle`: the raw frame is split off the read
//! buffer and the arguments are refcounted slices of it.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; it lives alone in this test
//! binary so the library itself stays `forbid(unsafe_code)`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use shardis_resp::{Limits, RequestDecoder};

struct Counting;

thread_local! {
    // Per thread, so the harness's own threads do not disturb the count.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers every operation to the system allocator; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(|c| c.get())
}

fn pipeline() -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..16 {
        let key = format!("key:{i:06}");
        wire.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$3\r\nxxx\r\n",
                key.len()
            )
            .as_bytes(),
        );
    }
    wire
}

#[test]
fn one_vec_per_request() {
    let wire = pipeline();
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut requests = Vec::with_capacity(64);

    // Warm-up: the first split of a fresh buffer makes it shared (one allocation per buffer,
    // not per frame), and the decoder's reusable argument-range list grows once.
    buf.extend_from_slice(&wire);
    while let Some(req) = decoder.decode(&mut buf).unwrap() {
        requests.push(req);
    }
    assert_eq!(requests.len(), 16);
    requests.clear();

    buf.extend_from_slice(&wire);
    let before = allocations();
    while let Some(req) = decoder.decode(&mut buf).unwrap() {
        requests.push(req);
    }
    let used = allocations() - before;
    assert_eq!(requests.len(), 16);
    assert_eq!(requests[15].args[1].as_ref(), b"key:000015");
    assert!(used <= 16, "{used} allocations for 16 requests");
}

#[test]
fn nothing_per_request_when_recycled() {
    let wire = pipeline();
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(64 * 1024);

    // Warm-up, as above.
    buf.extend_from_slice(&wire);
    while let Some(req) = decoder.decode(&mut buf).unwrap() {
        decoder.recycle(req);
    }

    buf.extend_from_slice(&wire);
    let before = allocations();
    let mut n = 0;
    while let Some(req) = decoder.decode(&mut buf).unwrap() {
        assert_eq!(req.args.len(), 3);
        decoder.recycle(req);
        n += 1;
    }
    let used = allocations() - before;
    assert_eq!(n, 16);
    assert_eq!(used, 0, "{used} allocations for 16 recycled requests");
}
