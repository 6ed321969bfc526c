//! Round-trip, robustness and efficiency tests of the public coding API.

use mirage_entropy::gaussian::{gaussian_tables, scale_index};
use mirage_entropy::{decode, encode, CdfTable, EntropyError, PRECISION};

/// Tiny deterministic generator: the tests need varied inputs, not
/// statistical quality, and a fixed seed keeps failures reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn random_table(rng: &mut XorShift) -> CdfTable {
    let regular = 1 + rng.below(40) as usize;
    // Cubing spreads the weights over several orders of magnitude.
    let weights: Vec<f64> = (0..regular).map(|_| rng.unit().powi(3) + 1e-6).collect();
    let total: f64 = weights.iter().sum::<f64>() * 1.01;
    let pmf: Vec<f64> = weights.iter().map(|w| w / total).collect();
    CdfTable::from_pmf(&pmf, rng.below(41) as i32 - 20)
}

/// Draws a value from a table's own distribution, so that escapes occur at
/// the rate the table predicts, plus occasional far-out values.
fn random_value(rng: &mut XorShift, table: &CdfTable) -> i32 {
    if rng.below(50) == 0 {
        let extremes = [i32::MIN, i32::MAX, -(1 << 20), 1 << 20, 0];
        return extremes[rng.below(extremes.len() as u64) as usize];
    }
    let cumulative = rng.below(1 << PRECISION) as u32;
    let slot = table.cdf()[1..].partition_point(|&c| c <= cumulative);
    if slot == table.len() - 1 {
        // Escape slot: any value outside the regular range.
        let far = rng.below(1 << 21) as i32 + 1;
        if rng.below(2) == 0 {
            table.offset() - far
        } else {
            table.offset() + (table.len() as i32 - 2) + far
        }
    } else {
        table.offset() + slot as i32
    }
}

struct Case {
    symbols: Vec<i32>,
    indexes: Vec<usize>,
    tables: Vec<CdfTable>,
}

fn random_case(rng: &mut XorShift, max_symbols: u64) -> Case {
    let tables: Vec<CdfTable> = (0..1 + rng.below(5)).map(|_| random_table(rng)).collect();
    let count = rng.below(max_symbols + 1) as usize;
    let indexes: Vec<usize> = (0..count)
        .map(|_| rng.below(tables.len() as u64) as usize)
        .collect();
    let symbols = indexes
        .iter()
        .map(|&i| random_value(rng, &tables[i]))
        .collect();
    Case {
        symbols,
        indexes,
        tables,
    }
}

#[test]
fn random_round_trips_including_escapes() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let case = random_case(&mut rng, 2000);
        let bytes = encode(&case.symbols, &case.indexes, &case.tables).unwrap();
        let decoded = decode(&bytes, &case.indexes, &case.tables).unwrap();
        assert_eq!(decoded, case.symbols);
    }
}

#[test]
fn every_escapable_value_round_trips() {
    // A one-slot-plus-escape table: everything but 0 is escaped.
    let tables = [CdfTable::from_pmf(&[0.9], 0)];
    let mut symbols = vec![i32::MIN, i32::MAX, i32::MIN + 1, i32::MAX - 1, -1, 1];
    for bits in 0..31 {
        symbols.extend([1 << bits, -(1 << bits), (1 << bits) - 1, -(1 << bits) + 1]);
    }
    let indexes = vec![0; symbols.len()];
    let bytes = encode(&symbols, &indexes, &tables).unwrap();
    assert_eq!(decode(&bytes, &indexes, &tables).unwrap(), symbols);
}

#[test]
fn escape_only_table_round_trips() {
    let tables = [CdfTable::from_pmf(&[], 5)];
    let symbols = [5, -7, 0, i32::MIN];
    let indexes = [0; 4];
    let bytes = encode(&symbols, &indexes, &tables).unwrap();
    assert_eq!(decode(&bytes, &indexes, &tables).unwrap(), symbols);
}

#[test]
fn empty_and_single_symbol() {
    let tables = [CdfTable::from_pmf(&[0.5, 0.5], -1)];
    let bytes = encode(&[], &[], &tables).unwrap();
    assert_eq!(bytes.len(), 4);
    assert_eq!(decode(&bytes, &[], &tables).unwrap(), Vec::<i32>::new());

    for value in [-1, 0, 1, 1000] {
        let bytes = encode(&[value], &[0], &tables).unwrap();
        assert_eq!(decode(&bytes, &[0], &tables).unwrap(), vec![value]);
    }
}

#[test]
fn skewed_single_table() {
    let tables = [CdfTable::from_pmf(&[0.001, 0.98, 0.0189], -1)];
    let mut rng = XorShift(77);
    let symbols: Vec<i32> = (0..50_000)
        .map(|_| random_value(&mut rng, &tables[0]))
        .collect();
    let indexes = vec![0; symbols.len()];
    let bytes = encode(&symbols, &indexes, &tables).unwrap();
    assert_eq!(decode(&bytes, &indexes, &tables).unwrap(), symbols);
}

#[test]
fn gaussian_tables_round_trip() {
    let tables = gaussian_tables();
    let mut rng = XorShift(0xdead_beef);
    let mut symbols = Vec::new();
    let mut indexes = Vec::new();
    for _ in 0..20_000 {
        let scale = (rng.unit() * 300.0) as f32;
        let index = scale_index(scale);
        indexes.push(index);
        symbols.push(random_value(&mut rng, &tables[index]));
    }
    let bytes = encode(&symbols, &indexes, tables).unwrap();
    assert_eq!(decode(&bytes, &indexes, tables).unwrap(), symbols);
}

#[test]
fn index_out_of_range_is_an_error() {
    let tables = [CdfTable::from_pmf(&[0.5], 0)];
    let expected = EntropyError::IndexOutOfRange {
        position: 1,
        index: 1,
        tables: 1,
    };
    assert_eq!(encode(&[0, 0], &[0, 1], &tables), Err(expected.clone()));
    let bytes = encode(&[0, 0], &[0, 0], &tables).unwrap();
    assert_eq!(decode(&bytes, &[0, 1], &tables), Err(expected));
    assert!(matches!(
        decode(&bytes, &[0], &[]),
        Err(EntropyError::IndexOutOfRange { .. })
    ));
}

#[test]
fn length_mismatch_is_an_error() {
    let tables = [CdfTable::from_pmf(&[0.5], 0)];
    assert_eq!(
        encode(&[0, 0], &[0], &tables),
        Err(EntropyError::LengthMismatch {
            symbols: 2,
            indexes: 1
        })
    );
}

#[test]
fn every_truncation_is_an_error() {
    let mut rng = XorShift(0x1234_5678);
    for _ in 0..20 {
        let case = random_case(&mut rng, 300);
        let bytes = encode(&case.symbols, &case.indexes, &case.tables).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len], &case.indexes, &case.tables).is_err(),
                "truncation to {len} of {} bytes was accepted",
                bytes.len()
            );
        }
    }
}

#[test]
fn extra_or_missing_symbols_are_errors() {
    let tables = [CdfTable::from_pmf(&[0.3, 0.3, 0.3], 0)];
    let symbols = [0, 1, 2, 1, 0, 2, 2, 1];
    let indexes = [0; 8];
    let bytes = encode(&symbols, &indexes, &tables).unwrap();
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer, &indexes, &tables).is_err());
    assert!(decode(&bytes, &indexes[..7], &tables).is_err());
    assert!(decode(&bytes, &[0; 9], &tables).is_err());
}

#[test]
fn bit_flips_never_panic() {
    let mut rng = XorShift(0xfeed_f00d);
    let mut detected = 0;
    let mut flips = 0;
    for _ in 0..30 {
        let case = random_case(&mut rng, 400);
        let bytes = encode(&case.symbols, &case.indexes, &case.tables).unwrap();
        for _ in 0..200 {
            let mut corrupted = bytes.clone();
            let at = rng.below(bytes.len() as u64) as usize;
            corrupted[at] ^= 1 << rng.below(8);
            flips += 1;
            match decode(&corrupted, &case.indexes, &case.tables) {
                Err(_) => detected += 1,
                Ok(symbols) => assert_ne!(symbols, case.symbols, "flip went unnoticed"),
            }
        }
    }
    // The final-state check should catch the great majority of flips.
    assert!(detected * 10 >= flips * 9, "{detected} of {flips} detected");
}

#[test]
fn random_streams_never_panic() {
    let mut rng = XorShift(0xabcd_ef01);
    let tables: Vec<CdfTable> = (0..4).map(|_| random_table(&mut rng)).collect();
    for _ in 0..5_000 {
        let len = rng.below(64) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let count = rng.below(200) as usize;
        let indexes: Vec<usize> = (0..count).map(|_| rng.below(4) as usize).collect();
        let _ = decode(&data, &indexes, &tables);
    }
}

/// Ideal code length in bits of `symbols` under the tables' quantized
/// frequencies (no escapes in the input).
fn ideal_bits(symbols: &[i32], table: &CdfTable) -> f64 {
    let total = f64::from(1u32 << PRECISION);
    symbols
        .iter()
        .map(|&v| {
            let slot = (v - table.offset()) as usize;
            let freq = table.cdf()[slot + 1] - table.cdf()[slot];
            -(f64::from(freq) / total).log2()
        })
        .sum()
}

#[test]
fn compression_is_within_one_percent_of_entropy() {
    let skewed = [
        vec![0.8, 0.1, 0.05, 0.03, 0.02],
        (0..16).map(|k| 0.3 * 0.7f64.powi(k)).collect(),
        vec![0.995, 0.004],
    ];
    let mut rng = XorShift(0x5eed);
    for pmf in skewed {
        let table = CdfTable::from_pmf(&pmf, -3);
        let escape = table.len() - 1;
        let symbols: Vec<i32> = (0..100_000)
            .map(|_| loop {
                let cumulative = rng.below(1 << PRECISION) as u32;
                let slot = table.cdf()[1..].partition_point(|&c| c <= cumulative);
                if slot != escape {
                    break table.offset() + slot as i32;
                }
            })
            .collect();
        let tables = [table];
        let indexes = vec![0; symbols.len()];
        let bytes = encode(&symbols, &indexes, &tables).unwrap();
        let actual = (bytes.len() * 8) as f64;
        let ideal = ideal_bits(&symbols, &tables[0]);
        assert!(
            actual <= ideal * 1.01,
            "{actual} bits, ideal {ideal:.0} for {pmf:?}"
        );
    }
}

#[test]
fn decoding_is_fast_enough() {
    // Not a benchmark: a loose guard against accidentally quadratic decoding.
    let tables = gaussian_tables();
    let mut rng = XorShift(99);
    let indexes: Vec<usize> = (0..1_000_000).map(|_| rng.below(20) as usize).collect();
    let symbols: Vec<i32> = indexes
        .iter()
        .map(|&i| random_value(&mut rng, &tables[i]))
        .collect();
    let bytes = encode(&symbols, &indexes, tables).unwrap();
    let start = std::time::Instant::now();
    let decoded = decode(&bytes, &indexes, tables).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(decoded, symbols);
    // Generous even for an unoptimised build on a busy machine.
    assert!(
        elapsed.as_secs() < 10,
        "decoding 1M symbols took {elapsed:?}"
    );
}
