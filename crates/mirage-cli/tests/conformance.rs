//! Conformance, as docs/format.md states it: what a file means (its symbols and the
//! tables that code them) is bit-exact on every machine; its pixels are within one
//! 8-bit level of the reference decode, on at most 0.1 % of the values. Other CPUs are
//! simulated by limiting libtorch's oneDNN kernels to older instruction sets.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The stated pixel tolerance (docs/format.md, "Conformance").
const MAX_LEVEL_DIFFERENCE: i32 = 1;
const MAX_DIFFERING_FRACTION: f64 = 0.001;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mirage/tests/golden")
        .join(name)
}

fn mirage(args: &[&str], isa: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirage"));
    cmd.args(["--threads", "2"]).args(args);
    if let Some(isa) = isa {
        cmd.env("ONEDNN_MAX_CPU_ISA", isa);
    }
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{args:?} under {isa:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (largest difference in levels, fraction of values that differ).
fn difference(a: &image::RgbImage, b: &image::RgbImage) -> (i32, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let (mut worst, mut differing) = (0, 0usize);
    for (&x, &y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = (x as i32 - y as i32).abs();
        worst = worst.max(d);
        differing += usize::from(d > 0);
    }
    (worst, differing as f64 / a.as_raw().len() as f64)
}

#[test]
fn the_golden_file_decodes_within_the_stated_tolerance_under_each_instruction_set() {
    let file = golden("kodim23-crop-q50.mrg");
    let reference = image::open(golden("kodim23-crop-q50.png"))
        .expect("reference decode (written with GENERATE_EXPECTED=1 by mirage's golden test)")
        .to_rgb8();
    let dir = tempfile::tempdir().unwrap();
    let native_symbols = mirage(&["info", "--symbols", file.to_str().unwrap()], None);
    for isa in [None, Some("SSE41"), Some("AVX2"), Some("AVX512_CORE")] {
        let symbols = mirage(&["info", "--symbols", file.to_str().unwrap()], isa);
        assert_eq!(symbols, native_symbols, "symbols under {isa:?}");
        let out = dir.path().join(format!("{}.png", isa.unwrap_or("native")));
        mirage(
            &["decode", file.to_str().unwrap(), out.to_str().unwrap()],
            isa,
        );
        let decoded = image::open(&out).unwrap().to_rgb8();
        let (worst, fraction) = difference(&decoded, &reference);
        assert!(
            worst <= MAX_LEVEL_DIFFERENCE && fraction <= MAX_DIFFERING_FRACTION,
            "under {isa:?}: {worst} levels, {:.4} % of values differ",
            fraction * 100.0
        );
    }
}

/// The tolerance check is not vacuous: one value in 97 two levels off fails it.
#[test]
fn the_tolerance_check_rejects_a_different_decode() {
    let reference = image::open(golden("kodim23-crop-q50.png"))
        .unwrap()
        .to_rgb8();
    let mut other = reference.clone();
    for p in other.pixels_mut().step_by(97) {
        p[0] = p[0].wrapping_add(2);
    }
    let (worst, fraction) = difference(&other, &reference);
    assert!(worst > MAX_LEVEL_DIFFERENCE || fraction > MAX_DIFFERING_FRACTION);
}
