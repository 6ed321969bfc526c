//! What Mirage's decoders must survive, as plain functions of arbitrary bytes: "can a
//! crafted file make the libtorch-free decoding path panic, hang or allocate without
//! bound?" Each function is one fuzz target. `fuzz/` (cargo-fuzz, nightly) runs them
//! under libFuzzer; `tests/corpora.rs` runs every committed corpus file and crash
//! regression through them, so a regression fails the ordinary tests.
//!
//! Every target returns normally for any input; a panic is the bug. Where an input is
//! valid, the target also checks a round trip, so the fuzzer looks for wrong answers
//! as well as crashes.
//!
//! It depends only on `mirage-format`, `mirage-entropy` and `mirage-prior`.

use mirage_entropy::{gaussian, CdfTable};
use mirage_format::realism_map::RealismMap;
use mirage_prior::context::{ContextModel, GroupLayers};
pub use mirage_prior::latent::EntropyModel as Model;
use mirage_prior::latent::EntropyModel;
use mirage_prior::{Conv, HyperSynthesis};

/// The container parser. Checksums are recomputed first, so that mutations reach the
/// header fields and section lengths; a container that parses writes back to itself.
pub fn container(data: &[u8]) {
    let mut bytes = data.to_vec();
    mirage_format::recompute_checksums(&mut bytes);
    if let Ok(c) = mirage_format::read(&bytes) {
        let written = mirage_format::write(&c).expect("a container that reads must write");
        assert_eq!(written, bytes, "read then write must give the same bytes");
    }
}

/// A little-endian reader over fuzz input that yields zeros once the input runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
}

/// The rANS decoder over arbitrary integer tables (1–8 tables of 1–64 entries, each a
/// CDF given as raw increments, validated by `CdfTable::from_cdf`) and an arbitrary
/// stream. Decoded symbols, coded again, decode to themselves.
pub fn rans(data: &[u8]) {
    let mut input = Bytes(data);
    let mut tables = vec![];
    for _ in 0..1 + input.u8() % 8 {
        let entries = 1 + usize::from(input.u8() % 64);
        let offset = i32::from(input.u8() as i8);
        // Increments spread over the coder's 16-bit total; the last entry takes the
        // rest, so most tables are valid, and the checks see the invalid ones.
        let mut cdf = vec![0u32];
        for _ in 0..entries {
            let last = *cdf.last().unwrap();
            cdf.push(last + u32::from(input.u16() % 4096));
        }
        if input.u8() % 4 != 0 {
            *cdf.last_mut().unwrap() = 1 << mirage_entropy::PRECISION;
        }
        if let Ok(table) = CdfTable::from_cdf(cdf, offset) {
            tables.push(table);
        }
    }
    if tables.is_empty() {
        return;
    }
    let count = usize::from(input.u16() % 2048);
    let indexes: Vec<usize> = (0..count)
        .map(|_| usize::from(input.u8()) % tables.len())
        .collect();
    let stream = input.0;
    if let Ok(symbols) = mirage_entropy::decode(stream, &indexes, &tables) {
        let again = mirage_entropy::encode(&symbols, &indexes, &tables)
            .expect("decoded symbols must encode");
        let decoded = mirage_entropy::decode(&again, &indexes, &tables).expect("and decode");
        assert_eq!(decoded, symbols);
    }
}

/// The realism-map section reader, for an image of any size the header allows (the
/// first four bytes). A map that reads writes back to the same bytes.
pub fn realism_map(data: &[u8]) {
    let mut input = Bytes(data);
    let (width, height) = (1 + u32::from(input.u16()), 1 + u32::from(input.u16()));
    if let Ok(map) = RealismMap::from_bytes(input.0, width, height) {
        assert_eq!(map.to_bytes().expect("a map that reads writes"), input.0);
    }
}

/// Channels of the small model the symbol decode is fuzzed with: the same layer types
/// and channel grouping as the shipped core (groups of M/8, M/8, M/4, M/2), at widths
/// that keep one execution fast.
const N: usize = 4;
const M: usize = 16;
const CONTEXT_WIDTH: usize = 8;
const HIDDEN: usize = 8;

/// Deterministic small weights (an LCG), so every run builds the same model.
fn weights(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, transposed: bool, seed: u32) -> Conv {
    Conv::new(
        &weights(c_in * c_out * k * k, seed),
        &weights(c_out, seed + 1000),
        c_in,
        c_out,
        k,
        stride,
        transposed,
    )
    .expect("the fuzz model's shapes are consistent")
}

/// The fuzz model: hyper-synthesis, and optionally the spatial–channel context model.
pub fn fuzz_model(context: bool) -> EntropyModel {
    let hyper_synthesis = HyperSynthesis::new(vec![
        conv(N, M, 5, 2, true, 1),
        conv(M, M * 3 / 2, 5, 2, true, 2),
        conv(M * 3 / 2, 2 * M, 3, 1, false, 3),
    ])
    .expect("consistent");
    let context = context.then(|| {
        let sizes = [M / 8, M / 8, M / 4, M / 2];
        let mut start = 0;
        let groups = sizes
            .iter()
            .enumerate()
            .map(|(k, &size)| {
                let seed = 10 * (k as u32 + 1);
                let group = GroupLayers {
                    channel: (k > 0).then(|| conv(start, CONTEXT_WIDTH, 3, 1, false, seed)),
                    spatial: conv(size, 2 * size, 5, 1, false, seed + 1),
                    delta: [
                        conv(
                            2 * M + 2 * size + CONTEXT_WIDTH,
                            HIDDEN,
                            1,
                            1,
                            false,
                            seed + 2,
                        ),
                        conv(HIDDEN, HIDDEN, 1, 1, false, seed + 3),
                        conv(HIDDEN, 2 * size, 1, 1, false, seed + 4),
                    ],
                };
                start += size;
                group
            })
            .collect();
        ContextModel::new(groups, &sizes).expect("consistent")
    });
    EntropyModel {
        hyper_synthesis,
        context,
    }
}

/// The hyper-latent's tables of the fuzz model: one per channel, as a model file ships
/// them.
fn hyper_tables() -> Vec<CdfTable> {
    (0..N)
        .map(|c| {
            let pmf: Vec<f64> = (0..33)
                .map(|i| (-((i as f64 - 16.0) / (2.0 + c as f64)).powi(2)).exp())
                .collect();
            CdfTable::from_pmf(&pmf, -16)
        })
        .collect()
}

/// The table of each hyper-latent element, channel-first.
fn hyper_indexes(zh: usize, zw: usize) -> Vec<usize> {
    (0..N)
        .flat_map(|c| std::iter::repeat_n(c, zh * zw))
        .collect()
}

/// Largest image side the symbol target decodes: the networks' cost grows with the
/// area, and the container's own limits are checked by [`container`].
pub const SYMBOLS_MAX_SIDE: u32 = 192;

/// The whole symbol decode without libtorch, as `mirage decode` runs it up to the
/// synthesis: the container, the hyper-latent under its integer tables, the
/// deterministic entropy parameters (with the context model when the rate is odd),
/// and the latent's rANS stream. For images up to [`SYMBOLS_MAX_SIDE`] a side. Returns
/// whether the latent decoded (for checks on the seeds; the fuzzer ignores it).
pub fn symbols(data: &[u8], models: &[EntropyModel; 2]) -> bool {
    let mut bytes = data.to_vec();
    mirage_format::recompute_checksums(&mut bytes);
    let Ok(c) = mirage_format::read(&bytes) else {
        return false;
    };
    let h = &c.header;
    if h.width > SYMBOLS_MAX_SIDE || h.height > SYMBOLS_MAX_SIDE || c.sections.len() < 2 {
        return false;
    }
    let (zh, zw) = (
        (h.height as usize).div_ceil(64),
        (h.width as usize).div_ceil(64),
    );
    let hyper_tables = hyper_tables();
    let indexes = hyper_indexes(zh, zw);
    let Ok(z) = mirage_entropy::decode(&c.sections[0], &indexes, &hyper_tables) else {
        return false;
    };
    let model = &models[usize::from(h.rate % 2 == 1)];
    let inverse_hyper_gain = vec![1.0f32; N];
    match model.decode(&z, &inverse_hyper_gain, (zh, zw), &c.sections[1]) {
        Ok(coded) => {
            assert_eq!(coded.symbols.len(), M * zh * 4 * zw * 4);
            assert_eq!(coded.indexes.len(), coded.symbols.len());
            assert!(coded
                .indexes
                .iter()
                .all(|&i| i < gaussian::gaussian_tables().len()));
            true
        }
        Err(_) => false,
    }
}

/// A valid file for [`symbols`]: a `width × height` image's hyper-latent and latent,
/// pseudo-random, coded by the fuzz model (the context model when `context`). The seed
/// corpora start from these, so the fuzzer begins past every check.
pub fn symbols_seed(width: u32, height: u32, context: bool) -> Vec<u8> {
    let (zh, zw) = (
        (height as usize).div_ceil(64),
        (width as usize).div_ceil(64),
    );
    let model = fuzz_model(context);
    let hyper_tables = hyper_tables();
    let z: Vec<i32> = weights(N * zh * zw, 7)
        .iter()
        .map(|v| (v * 20.0).round() as i32)
        .collect();
    let indexes = hyper_indexes(zh, zw);
    let hyper = mirage_entropy::encode(&z, &indexes, &hyper_tables).expect("in range");
    let y: Vec<f32> = weights(M * zh * zw * 16, 8)
        .iter()
        .map(|v| v * 30.0)
        .collect();
    let (latent, _) = model
        .encode(&z, &[1.0; N], (zh, zw), &y)
        .expect("consistent sizes");
    let header = mirage_format::Header {
        model_id: [0; 8],
        width,
        height,
        rate: if context { 501 } else { 500 },
        realism: None,
        decoder: 0,
    };
    mirage_format::write(&mirage_format::Container {
        header,
        sections: vec![hyper, latent],
    })
    .expect("valid")
}
