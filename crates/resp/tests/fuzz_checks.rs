//! Tier 3 on stable: the fuzz targets' properties (`fuzz/checks.rs`) on random and mutated
//! inputs. `cargo fuzz` explores far more; this keeps the properties compiling and true.

#[path = "../fuzz/checks.rs"]
mod checks;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bytes that make up RESP, so random inputs get past the first byte now and then.
const ALPHABET: &[u8] = b"*$:+-_,#(!=%~>|\r\n\r\n0123456789-1tfx :\"'\\ ";

const SEEDS: &[&[u8]] = &[
    b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
    b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*0\r\n*-1\r\nPING\r\n",
    b"set k \"a\\x41\\n\" 'b\\'c'\r\n\n",
    b"+OK\r\n-ERR x\r\n:1\r\n$3\r\nfoo\r\n$-1\r\n*-1\r\n",
    b"*2\r\n%1\r\n+k\r\n~2\r\n:1\r\n#t\r\n|1\r\n+a\r\n+b\r\n>1\r\n_\r\n",
    b",1.5\r\n(123\r\n!3\r\nERR\r\n=7\r\ntxt:abc\r\n",
    b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
];

fn random_input(rng: &mut StdRng) -> Vec<u8> {
    let len = rng.random_range(0..200);
    if rng.random() {
        (0..len)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
            .collect()
    } else {
        (0..len).map(|_| rng.random()).collect()
    }
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.repeat(rng.random_range(1..4));
    for _ in 0..rng.random_range(1..4) {
        let at = rng.random_range(0..=data.len());
        let byte = ALPHABET[rng.random_range(0..ALPHABET.len())];
        match rng.random_range(0..3) {
            0 if at < data.len() => data[at] = byte,
            1 if at < data.len() => {
                data.remove(at);
            }
            _ => data.insert(at, byte),
        }
    }
    data
}

fn inputs() -> impl Iterator<Item = Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let seeds = SEEDS.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
    (0..3000).map(move |i| {
        if i < seeds.len() {
            seeds[i].clone()
        } else if i % 2 == 0 {
            random_input(&mut rng)
        } else {
            let seed = SEEDS[rng.random_range(0..SEEDS.len())];
            mutate(&mut rng, seed)
        }
    })
}

#[test]
fn requests_target_properties() {
    for input in inputs() {
        checks::check_requests(&input);
    }
}

#[test]
fn replies_target_properties() {
    for input in inputs() {
        checks::check_replies(&input);
    }
}
