//! Tier 2: random frames and commands, encoded, concatenated and fed in random short chunks
//! (1..=7 bytes), byte by byte and all at once: always the same results, equal to what was
//! encoded.

#[path = "../fuzz/checks.rs"]
mod checks;

use bytes::{Bytes, BytesMut};
use checks::{decode_requests, scan_replies, End};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardis_resp::{encode_command, write_bulk, Frame, Limits, Protocol};

const CHUNKINGS: [Option<usize>; 3] = [None, Some(1), Some(7)];

fn gen_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

/// Bytes valid inside a line frame: anything but CR and LF.
fn gen_line(rng: &mut StdRng, max: usize) -> Vec<u8> {
    gen_bytes(rng, max)
        .into_iter()
        .map(|b| if b == b'\r' || b == b'\n' { b'.' } else { b })
        .collect()
}

fn gen_payload(rng: &mut StdRng) -> Vec<u8> {
    if rng.random_ratio(1, 20) {
        gen_bytes(rng, 3000)
    } else {
        gen_bytes(rng, 24)
    }
}

fn gen_frame(rng: &mut StdRng, depth: usize) -> Frame {
    let kinds = if depth < 4 { 14 } else { 10 };
    let items = |rng: &mut StdRng| {
        (0..rng.random_range(0..5))
            .map(|_| gen_frame(rng, depth + 1))
            .collect::<Vec<_>>()
    };
    match rng.random_range(0..kinds) {
        0 => Frame::Simple(gen_line(rng, 20).into()),
        1 => Frame::Error(gen_line(rng, 20).into()),
        2 => Frame::Integer(match rng.random_range(0..3) {
            0 => rng.random(),
            1 => rng.random_range(-1000..1000),
            _ => *[i64::MIN, i64::MAX, 0, -1]
                .get(rng.random_range(0..4))
                .unwrap(),
        }),
        3 => Frame::Bulk(gen_payload(rng).into()),
        4 => Frame::Null,
        5 => Frame::Double(Bytes::from(match rng.random_range(0..4) {
            0 => "inf".to_string(),
            1 => "-nan".to_string(),
            _ => format!("{}", rng.random::<f64>() * 1e6 - 5e5),
        })),
        6 => Frame::Boolean(rng.random()),
        7 => {
            let digits = rng.random_range(1..40);
            let mut n = if rng.random() {
                "-".to_string()
            } else {
                String::new()
            };
            n.extend((0..digits).map(|_| char::from(b'0' + rng.random_range(0..10u8))));
            Frame::BigNumber(n.into())
        }
        8 => Frame::BulkError(gen_payload(rng).into()),
        9 => Frame::Verbatim {
            format: Bytes::from_static(if rng.random() { b"txt" } else { b"mkd" }),
            text: gen_payload(rng).into(),
        },
        10 => Frame::Array(items(rng)),
        11 => Frame::Set(items(rng)),
        12 => Frame::Push(items(rng)),
        _ => Frame::Map(
            (0..rng.random_range(0..4))
                .map(|_| (gen_frame(rng, depth + 1), gen_frame(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// What a RESP2 client gets back for `frame`, parsed.
fn downgrade(frame: Frame) -> Frame {
    let all = |items: Vec<Frame>| Frame::Array(items.into_iter().map(downgrade).collect());
    match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => all(items),
        Frame::Map(pairs) => all(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Frame::Double(t) | Frame::BigNumber(t) => Frame::Bulk(t),
        Frame::Boolean(b) => Frame::Integer(i64::from(b)),
        Frame::BulkError(t) => Frame::Error(
            t.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                .collect::<Vec<_>>()
                .into(),
        ),
        Frame::Verbatim { text, .. } => Frame::Bulk(text),
        other => other,
    }
}

fn encode(frame: &Frame, proto: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(proto, &mut out);
    out.to_vec()
}

#[test]
fn random_replies_in_random_chunks() {
    for seed in 0..60 {
        let mut rng = StdRng::seed_from_u64(seed);
        for proto in [Protocol::Resp3, Protocol::Resp2] {
            let mut expected = Vec::new();
            let mut stream = Vec::new();
            for _ in 0..40 {
                let frame = gen_frame(&mut rng, 0);
                let mut chunk = Vec::new();
                if proto == Protocol::Resp3 && rng.random_ratio(1, 8) {
                    // An attribute travels with the reply it annotates.
                    chunk.extend_from_slice(b"|1\r\n");
                    chunk.extend(encode(&gen_frame(&mut rng, 3), proto));
                    chunk.extend(encode(&gen_frame(&mut rng, 3), proto));
                }
                chunk.extend(encode(&frame, proto));
                let frame = match proto {
                    Protocol::Resp3 => frame,
                    Protocol::Resp2 => downgrade(frame),
                };
                stream.extend_from_slice(&chunk);
                expected.push((chunk, frame));
            }
            for chunking in CHUNKINGS {
                let (chunks, end) = scan_replies(&stream, chunking, Limits::default());
                assert_eq!(end, End::NeedMore(0), "seed {seed} {chunking:?}");
                assert_eq!(chunks.len(), expected.len());
                for (chunk, (raw, frame)) in chunks.iter().zip(&expected) {
                    assert_eq!(&chunk[..], &raw[..], "seed {seed} {chunking:?}");
                    let (parsed, consumed) =
                        Frame::parse(chunk, &Limits::default()).unwrap().unwrap();
                    assert_eq!(consumed, chunk.len());
                    assert_eq!(&parsed, frame, "seed {seed}");
                }
            }
            // Everything the fuzz target checks holds here too.
            checks::check_replies(&stream[..stream.len().min(4096)]);
        }
    }
}

/// A request's args and raw bytes.
type Expected = (Vec<Vec<u8>>, Vec<u8>);

/// One random client command: its wire bytes, and the request it must decode to (args and
/// raw), or `None` for the frames Redis skips.
fn gen_command(rng: &mut StdRng) -> (Vec<u8>, Option<Expected>) {
    match rng.random_range(0..10) {
        0 => {
            let skipped: &[&[u8]] = &[b"*0\r\n", b"*-1\r\n", b"\r\n", b"\n", b" \t \r\n"];
            (skipped[rng.random_range(0..skipped.len())].to_vec(), None)
        }
        1..=3 => {
            let args: Vec<Vec<u8>> = (0..rng.random_range(1..6))
                .map(|_| gen_line(rng, 12).into_iter().filter(|&b| b != 0).collect())
                .collect();
            let mut line = Vec::new();
            for (i, arg) in args.iter().enumerate() {
                if i > 0 {
                    line.extend_from_slice([&b" "[..], b"  ", b"\t"][rng.random_range(0..3)]);
                }
                inline_quote(rng, arg, &mut line);
            }
            line.extend_from_slice(if rng.random() { b"\r\n" } else { b"\n" });
            let mut raw = BytesMut::new();
            encode_command(&mut raw, &args);
            (line, Some((args, raw.to_vec())))
        }
        _ => {
            let args: Vec<Vec<u8>> = (0..rng.random_range(1..8))
                .map(|_| gen_payload(rng))
                .collect();
            let mut raw = BytesMut::new();
            encode_command(&mut raw, &args);
            (raw.to_vec(), Some((args, raw.to_vec())))
        }
    }
}

/// Writes `arg` as one inline argument, quoted whichever way `sdssplitargs` can read back.
fn inline_quote(rng: &mut StdRng, arg: &[u8], out: &mut Vec<u8>) {
    let plain = !arg.is_empty()
        && arg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b":_-.".contains(b));
    let single = !arg.contains(&b'\\');
    match rng.random_range(0..3) {
        0 if plain => out.extend_from_slice(arg),
        1 if single => {
            out.push(b'\'');
            for &b in arg {
                if b == b'\'' {
                    out.extend_from_slice(b"\\'");
                } else {
                    out.push(b);
                }
            }
            out.push(b'\'');
        }
        _ => {
            out.push(b'"');
            for &b in arg {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x07 => out.extend_from_slice(b"\\a"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    b' '..=b'~' if rng.random_ratio(9, 10) => out.push(b),
                    _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            out.push(b'"');
        }
    }
}

#[test]
fn random_requests_in_random_chunks() {
    for seed in 0..100 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..40 {
            let (wire, request) = gen_command(&mut rng);
            stream.extend_from_slice(&wire);
            expected.extend(request);
        }
        for chunking in CHUNKINGS {
            let (requests, end) = decode_requests(&stream, chunking, Limits::default());
            assert_eq!(end, End::NeedMore(0), "seed {seed} {chunking:?}");
            let got: Vec<Expected> = requests
                .iter()
                .map(|r| (r.args.iter().map(|a| a.to_vec()).collect(), r.raw.to_vec()))
                .collect();
            assert_eq!(got, expected, "seed {seed} {chunking:?}");
            for r in &requests {
                // Every run of arguments copies out as its canonical encoding.
                let n = r.args.len();
                for (first, last) in [(0, n - 1), (n / 2, n - 1), (0, n / 2)] {
                    let mut canonical = BytesMut::new();
                    for a in &r.args[first..=last] {
                        write_bulk(&mut canonical, a);
                    }
                    assert_eq!(
                        r.arg_frames(first, last),
                        Some(&canonical[..]),
                        "seed {seed} {chunking:?}"
                    );
                }
            }
        }
        checks::check_requests(&stream[..stream.len().min(4096)]);
    }
}
