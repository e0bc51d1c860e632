//! Feeding a frame in tiny pieces must cost O(frame), not O(frame²): the decoders keep
//! their progress between calls instead of starting over. `work` counts every byte the
//! parsers look at.

use bytes::BytesMut;

use crate::{work, Limits, ReplyScanner, RequestDecoder};

/// Feeds `data` one byte at a time to `step`; returns how many items it produced and the
/// bytes examined meanwhile.
fn byte_by_byte<T>(
    data: &[u8],
    mut step: impl FnMut(&mut BytesMut) -> Option<T>,
) -> (usize, usize) {
    let mut buf = BytesMut::with_capacity(data.len());
    let mut produced = 0;
    work::take();
    for &b in data {
        buf.extend_from_slice(&[b]);
        while step(&mut buf).is_some() {
            produced += 1;
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    (produced, work::take())
}

fn requests(data: &[u8], limits: Limits) -> (usize, usize) {
    let mut decoder = RequestDecoder::new(limits);
    byte_by_byte(data, |buf| decoder.decode(buf).unwrap())
}

fn replies(data: &[u8]) -> (usize, usize) {
    let mut scanner = ReplyScanner::new(Limits::default());
    byte_by_byte(data, |buf| scanner.next_reply(buf).unwrap())
}

#[test]
fn ten_megabyte_bulk_request_is_not_rescanned() {
    let len = 10 * 1024 * 1024;
    let mut data = Vec::with_capacity(len + 64);
    data.extend_from_slice(format!("*2\r\n$3\r\nSET\r\n${len}\r\n").as_bytes());
    data.resize(data.len() + len, b'x');
    data.extend_from_slice(b"\r\n");
    let (n, examined) = requests(&data, Limits::default());
    assert_eq!(n, 1);
    // Only the headers are ever parsed (incomplete ones again, but each is < 24 bytes);
    // waiting for the payload costs nothing per byte.
    assert!(examined < 1000, "examined {examined} bytes");
}

#[test]
fn many_small_arguments_are_scanned_once() {
    let mut data = b"*20000\r\n".to_vec();
    for i in 0..20000 {
        let arg = format!("arg:{i}");
        data.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    let (n, examined) = requests(&data, Limits::default());
    assert_eq!(n, 1);
    // Each 4-byte header may be re-read once per byte while it is incomplete.
    assert!(
        examined < 4 * data.len(),
        "examined {examined} of {}",
        data.len()
    );
}

#[test]
fn long_inline_line_is_searched_once() {
    let limits = Limits {
        max_inline_len: 4 << 20,
        ..Limits::default()
    };
    let mut data = b"SET k ".to_vec();
    data.resize(2 << 20, b'v');
    data.extend_from_slice(b"\r\n");
    let (n, examined) = requests(&data, limits);
    assert_eq!(n, 1);
    assert!(
        examined <= data.len() + 8,
        "examined {examined} of {}",
        data.len()
    );
}

#[test]
fn ten_megabyte_bulk_reply_is_not_rescanned() {
    let len = 10 * 1024 * 1024;
    let mut data = format!("*2\r\n:1\r\n${len}\r\n").into_bytes();
    data.resize(data.len() + len, b'x');
    data.extend_from_slice(b"\r\n");
    let (n, examined) = replies(&data);
    assert_eq!(n, 1);
    assert!(examined < 1000, "examined {examined} bytes");
}

#[test]
fn long_reply_line_is_searched_once() {
    let mut data = b"+".to_vec();
    data.resize(2 << 20, b's');
    data.extend_from_slice(b"\r\n-ERR ");
    data.resize(data.len() + (1 << 20), b'e');
    data.extend_from_slice(b"\r\n");
    let (n, examined) = replies(&data);
    assert_eq!(n, 2);
    assert!(
        examined <= data.len() + 8,
        "examined {examined} of {}",
        data.len()
    );
}

#[test]
fn deep_and_wide_reply_is_scanned_once() {
    let mut data = Vec::new();
    for _ in 0..30 {
        data.extend_from_slice(b"*2\r\n");
    }
    data.extend_from_slice(b"%10000\r\n");
    for i in 0..10000 {
        data.extend_from_slice(format!("+k{i}\r\n,{i}.5\r\n").as_bytes());
    }
    for _ in 0..30 {
        data.extend_from_slice(b"|1\r\n#t\r\n_\r\n:-12345\r\n");
    }
    let (n, examined) = replies(&data);
    assert_eq!(n, 1);
    assert!(
        examined < 4 * data.len(),
        "examined {examined} of {}",
        data.len()
    );
}

#[test]
fn pending_hint_tracks_the_bulk_being_received() {
    let mut decoder = RequestDecoder::new(Limits::default());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1000000\r\n0123456789"[..]);
    assert_eq!(decoder.pending_hint(), 0);
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    assert_eq!(decoder.pending_hint(), 1_000_000 - 10 + 2);
    buf.extend_from_slice(&vec![b'a'; 999_990]);
    assert!(decoder.decode(&mut buf).unwrap().is_none());
    assert_eq!(decoder.pending_hint(), 2);
    buf.extend_from_slice(b"\r\n");
    let req = decoder.decode(&mut buf).unwrap().unwrap();
    assert_eq!(req.args[1].len(), 1_000_000);
    assert_eq!(decoder.pending_hint(), 0);

    let mut scanner = ReplyScanner::new(Limits::default());
    let mut buf = BytesMut::from(&b"*1\r\n$100\r\n"[..]);
    assert!(scanner.next_reply(&mut buf).unwrap().is_none());
    assert_eq!(scanner.pending_hint(), 102);
    buf.extend_from_slice(&[b'z'; 100]);
    assert!(scanner.next_reply(&mut buf).unwrap().is_none());
    assert_eq!(scanner.pending_hint(), 2);
    buf.extend_from_slice(b"\r\n");
    assert_eq!(
        scanner.next_reply(&mut buf).unwrap().unwrap().len(),
        4 + 6 + 102
    );
    assert_eq!(scanner.pending_hint(), 0);
}
