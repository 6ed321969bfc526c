//! Every committed corpus file and crash regression, through its fuzz target: a
//! regression fails here, without a fuzzer. Corpora live in `corpus/<target>/`;
//! inputs that once crashed a target are kept in `regressions/<target>/`, named after
//! what they broke.

use mirage_fuzz::{container, fuzz_model, rans, realism_map, symbols, symbols_seed};
use std::path::Path;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![];
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn container_corpus() {
    let files = inputs("container");
    assert!(!files.is_empty(), "the container corpus is committed");
    for (_, data) in files {
        container(&data);
    }
}

#[test]
fn rans_corpus() {
    let files = inputs("rans");
    assert!(!files.is_empty());
    for (_, data) in files {
        rans(&data);
    }
}

#[test]
fn realism_map_corpus() {
    let files = inputs("realism_map");
    assert!(!files.is_empty());
    for (_, data) in files {
        realism_map(&data);
    }
}

#[test]
fn symbols_corpus() {
    let models = [fuzz_model(false), fuzz_model(true)];
    let files = inputs("symbols");
    assert!(!files.is_empty());
    for (_, data) in files {
        symbols(&data, &models);
    }
}

/// The seeds are valid files: the symbol decode gets through both models on them, so
/// the target is not stopped early by a check on every input; damage to the latent's
/// stream is an error, not a panic.
#[test]
fn symbol_seeds_decode_and_damage_is_an_error() {
    let models = [fuzz_model(false), fuzz_model(true)];
    for context in [false, true] {
        let bytes = symbols_seed(190, 136, context);
        assert!(symbols(&bytes, &models), "seed with context = {context}");
        let mut damaged = bytes.clone();
        damaged.truncate(bytes.len() - 5);
        assert!(!symbols(&damaged, &models), "a truncated latent must fail");
    }
}

/// Writes the seed corpora (with `GENERATE_EXPECTED=1`): valid inputs of each target,
/// from which the fuzzer mutates. Always checks that the committed seeds are these.
#[test]
fn seed_corpora_are_the_generated_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/golden/kodim23-crop-q50.mrg");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = vec![];
    for (w, h, context) in [
        (64, 64, false),
        (190, 136, true),
        (130, 70, false),
        (65, 180, true),
    ] {
        let file = symbols_seed(w, h, context);
        seeds.push(("symbols", format!("seed-{w}x{h}-{context}"), file.clone()));
        seeds.push(("container", format!("seed-{w}x{h}-{context}"), file));
    }
    seeds.push((
        "container",
        "golden-kodim23".into(),
        std::fs::read(golden).unwrap(),
    ));
    let map = mirage_format::realism_map::RealismMap {
        cols: 4,
        rows: 3,
        levels: (0..12).map(|i| (i % 4) as u8).collect(),
    };
    let mut bytes = vec![255, 0, 159, 0]; // 256 × 160 pixels: a 4 × 3 grid
    bytes.extend(map.to_bytes().unwrap());
    seeds.push(("realism_map", "seed-4x3".into(), bytes));
    // One table of 4 symbols, 16 indexes, and a stream of their encoding.
    let table = mirage_entropy::CdfTable::from_pmf(&[0.4, 0.3, 0.2, 0.1], -1);
    let symbols: Vec<i32> = (0..16).map(|i| i % 4 - 1).collect();
    let stream = mirage_entropy::encode(&symbols, &[0; 16], std::slice::from_ref(&table)).unwrap();
    let mut rans_seed = vec![0, 3, 0xff];
    for pair in table.cdf().windows(2) {
        rans_seed.extend(((pair[1] - pair[0]) as u16).to_le_bytes());
    }
    rans_seed.extend([1, 16, 0]);
    rans_seed.extend([0; 16]);
    rans_seed.extend(stream);
    seeds.push(("rans", "seed-one-table".into(), rans_seed));
    for (target, name, bytes) in seeds {
        let path = root.join(target).join(name);
        if std::env::var_os("GENERATE_EXPECTED").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(std::fs::read(&path).ok(), Some(bytes), "{}", path.display());
    }
}
