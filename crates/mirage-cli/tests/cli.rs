//! The command line end to end: thread-count independence, and bad input, which must
//! give a one-line `mirage:` error, a non-zero exit, no panic and no output file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn mirage(args: &[&str], threads: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["--threads", threads])
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .expect("runs")
}

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data/kodim23-crop.png")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a command that must fail cleanly, and returns its message.
fn fails(args: &[&str]) -> String {
    let out = mirage(args, "2");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("mirage: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn encoded(dir: &Path) -> PathBuf {
    let mrg = dir.join("a.mrg");
    let out = mirage(&["encode", s(&sample()), s(&mrg), "--quality", "40"], "1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    mrg
}

#[test]
fn encode_with_one_thread_decodes_identically_with_two() {
    let dir = tempfile::tempdir().unwrap();
    let mrg = encoded(dir.path());
    let (one, two) = (dir.path().join("one.png"), dir.path().join("two.png"));
    assert!(mirage(&["decode", s(&mrg), s(&one)], "1").status.success());
    assert!(mirage(&["decode", s(&mrg), s(&two)], "2").status.success());
    let a = image::open(&one).unwrap().to_rgb8();
    let b = image::open(&two).unwrap().to_rgb8();
    let differing = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .filter(|(x, y)| x != y)
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} values differ",
        a.as_raw().len()
    );
}

#[test]
fn info_shows_header_and_sections() {
    let dir = tempfile::tempdir().unwrap();
    let mrg = encoded(dir.path());
    let out = mirage(&["info", s(&mrg)], "1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("size:        200x136"), "{text}");
    assert!(text.contains("rate:        400 of 1000"), "{text}");
    assert!(text.contains("section 1:"), "{text}");
}

fn decode_fails_without_output(bytes: &[u8], expect: &str) {
    decode_fails_with_one_of(bytes, &[expect]);
}

/// Decoding `bytes` fails with a message that contains one of `expected`, and leaves no
/// output or temporary file behind.
fn decode_fails_with_one_of(bytes: &[u8], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.mrg");
    std::fs::write(&bad, bytes).unwrap();
    let out_png = dir.path().join("out.png");
    let err = fails(&["decode", s(&bad), s(&out_png)]);
    assert!(
        expected.iter().any(|e| err.contains(e)),
        "expected one of {expected:?} in: {err}"
    );
    assert!(!out_png.exists());
    // Nor any temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn truncated_corrupted_empty_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(encoded(dir.path())).unwrap();
    decode_fails_without_output(&good[..good.len() / 2], "truncated");
    decode_fails_without_output(&good[..10], "truncated");
    decode_fails_without_output(&[], "empty");
    decode_fails_without_output(&std::fs::read(sample()).unwrap(), "not a Mirage file");
    let mut corrupted = good.clone();
    let last = corrupted.len() - 5;
    corrupted[last] ^= 0x40;
    decode_fails_without_output(&corrupted, "checksum");
}

#[test]
fn wrong_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(encoded(dir.path())).unwrap();
    let mut c = mirage_format::read(&good).unwrap();
    c.header.model_id = [1, 2, 3, 4, 5, 6, 7, 8];
    decode_fails_without_output(
        &mirage_format::write(&c).unwrap(),
        "made with model 0102030405060708",
    );
}

#[test]
fn absurd_dimensions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(encoded(dir.path())).unwrap();
    let mut c = mirage_format::read(&good).unwrap();
    // Within the limits (64 Mi pixels), but the sections are far too short for so
    // large an image: a clear error, found before any image-sized allocation.
    // Which error depends on the model's tables: the rANS decoder either runs out of
    // bytes ("truncated") or first reads past them into a symbol no table allows.
    c.header.width = 8192;
    c.header.height = 8192;
    decode_fails_with_one_of(
        &mirage_format::write(&c).unwrap(),
        &["truncated", "corrupt compressed data"],
    );
    // A wide input image (valid PNG, tiny file) is refused at encode time.
    let wide = dir.path().join("wide.png");
    image::RgbImage::new(20000, 1).save(&wide).unwrap();
    let out = dir.path().join("wide.mrg");
    let err = fails(&["encode", s(&wide), s(&out)]);
    assert!(err.contains("wide.png"), "{err}");
    assert!(!out.exists());
}

#[test]
fn unreadable_input_and_unwritable_output() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"this is not a png").unwrap();
    let out = dir.path().join("junk.mrg");
    let err = fails(&["encode", s(&junk), s(&out)]);
    assert!(err.contains("junk.png"), "{err}");
    assert!(!out.exists());
    let err = fails(&["encode", s(&dir.path().join("missing.png")), s(&out)]);
    assert!(err.contains("missing.png"), "{err}");
    let err = fails(&["encode", s(&sample()), "/nonexistent-dir/x.mrg"]);
    assert!(err.contains("cannot write /nonexistent-dir/x.mrg"), "{err}");
}

#[test]
fn existing_output_is_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let mrg = encoded(dir.path());
    let precious = dir.path().join("precious.png");
    std::fs::write(&precious, b"user data").unwrap();
    let err = fails(&["decode", s(&mrg), s(&precious)]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"user data");
    assert!(mirage(&["decode", s(&mrg), s(&precious), "--force"], "2")
        .status
        .success());
    assert!(image::open(&precious).is_ok());
}

#[test]
fn outputs_are_refused_before_the_work_when_they_would_replace_something() {
    let dir = tempfile::tempdir().unwrap();
    // The input itself, even with --force.
    let copy = dir.path().join("photo.png");
    std::fs::copy(sample(), &copy).unwrap();
    let err = fails(&["decode", s(&copy), s(&copy), "--force"]);
    assert!(err.contains("replace the input"), "{err}");
    // A .mrg written under an image's name is a typo, not a wish.
    let err = fails(&["encode", s(&copy), s(&dir.path().join("other.png"))]);
    assert!(err.contains("image extension"), "{err}");
    assert!(!dir.path().join("other.png").exists());
    // roundtrip leaves existing files alone unless told to replace them.
    let out = dir.path().join("rt");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("photo.decoded.png"), b"user data").unwrap();
    let err = fails(&["roundtrip", s(&copy), s(&out)]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(
        std::fs::read(out.join("photo.decoded.png")).unwrap(),
        b"user data"
    );
    assert!(!out.join("photo.mrg").exists(), "refused before encoding");
    let done = mirage(&["roundtrip", s(&copy), s(&out), "--force"], "2");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(image::open(out.join("photo.decoded.png")).is_ok());
    // A dangling symbolic link is something there too.
    #[cfg(unix)]
    {
        let link = dir.path().join("link.mrg");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let err = fails(&["encode", s(&copy), s(&link)]);
        assert!(err.contains("exists"), "{err}");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }
}

#[test]
fn a_folder_whose_files_would_share_an_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (src, enc) = (dir.path().join("src"), dir.path().join("enc"));
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(sample(), src.join("a.png")).unwrap();
    image::open(sample())
        .unwrap()
        .save(src.join("a.bmp"))
        .unwrap();
    let err = fails(&["encode", s(&src), s(&enc), "--force"]);
    assert!(err.contains("a.mrg"), "{err}");
    assert!(!enc.join("a.mrg").exists());
}

#[test]
fn tiny_images_roundtrip_and_bad_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.png");
    image::RgbImage::from_pixel(3, 5, image::Rgb([200, 40, 90]))
        .save(&tiny)
        .unwrap();
    let out = mirage(&["roundtrip", s(&tiny), s(dir.path())], "2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("PSNR") && stdout.contains("n/a"),
        "{stdout}"
    );
    // Zero threads is a usage error (clap's exit status 2), not a panic in libtorch.
    let zero = mirage(&["info", s(&tiny)], "0");
    let err = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(zero.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Out-of-range rate flags are usage errors too, found before the models load.
    for flags in [
        ["--quality", "101"],
        ["--quality", "nan"],
        ["--bpp", "0"],
        ["--bpp", "inf"],
        ["--target-size", "0"],
        ["--effort", "4"],
    ] {
        let bad = mirage(
            &[
                &["encode", s(&tiny), s(&dir.path().join("bad.mrg"))][..],
                &flags[..],
            ]
            .concat(),
            "2",
        );
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains("invalid value"), "{flags:?}: {err}");
    }
    // Training settings out of range are refused before any photo loads.
    for flag in [
        ["--min-scale", "0"],
        ["--min-scale", "0.01"],
        ["--min-scale", "1.5"],
        ["--min-scale", "nan"],
        ["--clip-norm", "0"],
        ["--clip-norm", "nan"],
        ["--ema-decay", "1"],
        ["--ema-decay", "0"],
        ["--ema-decay", "nan"],
    ] {
        let run_dir = dir.path().join("run");
        let core = ["train", "core", "--run-dir", s(&run_dir)];
        let bad = mirage(&[&core[..], &flag[..]].concat(), "2");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{flag:?}: {err}");
        assert!(err.contains("invalid value"), "{flag:?}: {err}");
        assert!(!run_dir.exists());
    }
    let run_dir = dir.path().join("run");
    let err = fails(&[
        "train",
        "core",
        "--run-dir",
        s(&run_dir),
        "--min-scale",
        "0.5",
    ]);
    assert!(err.contains("--crops by-area"), "{err}");
    assert!(!run_dir.exists());
    // Flow settings without the flow decoder, and a weight with it, would be ignored.
    let mrg = dir.path().join("tiny.mrg");
    let png = dir.path().join("x.png");
    let err = fails(&["decode", s(&mrg), s(&png), "--steps", "8"]);
    assert!(err.contains("--decoder flow"), "{err}");
    let err = fails(&[
        "decode",
        s(&mrg),
        s(&png),
        "--decoder",
        "flow",
        "--realism",
        "0.5",
    ]);
    assert!(err.contains("--realism"), "{err}");
    assert!(!png.exists());
}

#[test]
fn an_image_over_the_pixel_limit_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    // 16384² one-bit pixels: a 32 KB PNG within the side limit, 268 M pixels.
    let big = dir.path().join("big.png");
    let file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
    let mut png = png::Encoder::new(file, 16384, 16384);
    png.set_color(png::ColorType::Grayscale);
    png.set_depth(png::BitDepth::One);
    let mut writer = png.write_header().unwrap().into_stream_writer().unwrap();
    let row = vec![0u8; 16384 / 8];
    for _ in 0..16384 {
        std::io::Write::write_all(&mut writer, &row).unwrap();
    }
    writer.finish().unwrap();
    // Refused by the reader from the header ("cannot read image"), not by the codec
    // after a 1.2 GB decode.
    let err = fails(&["encode", s(&big), s(&dir.path().join("big.mrg"))]);
    assert!(
        err.contains("cannot read image") && err.contains("16384x16384"),
        "{err}"
    );
}

#[test]
fn greyscale_and_alpha_inputs_are_converted_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = image::open(sample()).unwrap();
    for (name, img) in [
        ("grey.png", image::DynamicImage::ImageLuma8(rgb.to_luma8())),
        ("alpha.png", image::DynamicImage::ImageRgba8(rgb.to_rgba8())),
    ] {
        let src = dir.path().join(name);
        img.save(&src).unwrap();
        let dst = dir.path().join(format!("{name}.mrg"));
        let out = mirage(&["encode", s(&src), s(&dst)], "2");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("note:"), "{err}");
        assert!(dst.exists());
    }
}

#[test]
fn folders_are_processed_in_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (src, enc, dec) = (
        dir.path().join("src"),
        dir.path().join("enc"),
        dir.path().join("dec"),
    );
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(sample(), src.join("a.png")).unwrap();
    std::fs::copy(sample(), src.join("b.png")).unwrap();
    assert!(mirage(&["encode", s(&src), s(&enc)], "2").status.success());
    assert!(enc.join("a.mrg").exists() && enc.join("b.mrg").exists());
    assert!(mirage(&["decode", s(&enc), s(&dec)], "2").status.success());
    assert!(dec.join("a.png").exists() && dec.join("b.png").exists());
}

/// What a file decodes to (its symbols and the tables that code them) must not depend
/// on the CPU: everything that feeds the entropy coder runs outside libtorch. Limiting
/// libtorch's oneDNN kernels to older instruction sets simulates other CPUs; the
/// decoded symbols and table indexes must be bit-identical under each.
#[test]
fn symbols_are_identical_under_other_instruction_sets() {
    let dir = tempfile::tempdir().unwrap();
    let mrg = encoded(dir.path());
    let digests = |isa: Option<&str>| -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirage"));
        cmd.args(["--threads", "2", "info", "--symbols", s(&mrg)]);
        if let Some(isa) = isa {
            cmd.env("ONEDNN_MAX_CPU_ISA", isa);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("symbols:") || l.starts_with("tables:"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        lines.join("\n")
    };
    let native = digests(None);
    for isa in ["SSE41", "AVX2", "AVX512_CORE"] {
        assert_eq!(digests(Some(isa)), native, "under ONEDNN_MAX_CPU_ISA={isa}");
    }
}

/// A file made by an earlier core (v1, kept in models/v1 for its decoder add-ons, and
/// each earlier release of core v2 still bundled) is refused by the current core with
/// the way to decode it, and decodes with that model to the symbols recorded when it was
/// made. Releases kept decode-only also refuse to encode, with a clear message.
#[test]
fn a_file_of_an_earlier_core_names_the_model_it_needs() {
    // The earlier releases still in models/ (codec::paths::earlier_model_paths).
    for name in ["v1", "v2.3", "v2.10", "v2.15", "v2.16"] {
        let dir = tempfile::tempdir().unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../../models/{name}/hyperprior.safetensors"));
        let err = fails(&[
            "decode",
            s(&release_file(name)),
            s(&dir.path().join("x.png")),
        ]);
        let hint = format!("--model models/{name}/hyperprior.safetensors");
        assert!(err.contains(&hint), "{err}");
        decodes_as_recorded(name, &model);
        // v1 and v2.3 (which the ultra-low mode encodes through) are kept whole.
        let encode = mirage(
            &[
                "--model",
                s(&model),
                "encode",
                s(&sample()),
                s(&dir.path().join("new.mrg")),
            ],
            "2",
        );
        if matches!(name, "v1" | "v2.3") {
            assert!(encode.status.success(), "{name}");
        } else {
            let err = String::from_utf8_lossy(&encode.stderr);
            assert!(err.contains("decode-only"), "{name}: {err}");
        }
    }
}

/// A file of a release retired from models/ (codec::paths::RETIRED_CORES) is refused
/// with a git command that gets its model back; in a clone with history, that command
/// is run and the model it gives decodes the file to the recorded symbols.
#[test]
fn a_file_of_a_retired_core_says_how_to_get_its_model_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for name in [
        "v2.0", "v2.1", "v2.2", "v2.4", "v2.5", "v2.6", "v2.7", "v2.8", "v2.9", "v2.11", "v2.12",
        "v2.13", "v2.14",
    ] {
        assert!(
            !root.join(format!("models/{name}")).exists(),
            "{name} is still bundled"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = fails(&[
            "decode",
            s(&release_file(name)),
            s(&dir.path().join("x.png")),
        ]);
        assert!(
            err.contains(&format!("core release {name}, no longer bundled")),
            "{err}"
        );
        let command = err.split('`').nth(1).expect("a command in backticks");
        let object = command
            .strip_prefix("git show ")
            .and_then(|c| c.split(' ').next())
            .unwrap_or_else(|| panic!("{command}"));
        assert!(object.ends_with(&format!(":models/{name}/hyperprior.safetensors")));
        // A copy without history (a tarball, a shallow clone) cannot run the command.
        let in_history = Command::new("git")
            .args(["-C", s(&root), "cat-file", "-e", object])
            .status()
            .is_ok_and(|status| status.success());
        if !in_history {
            eprintln!("{object} is not in this copy's history: its model is not fetched back");
            continue;
        }
        let shown = Command::new("git")
            .args(["-C", s(&root), "show", object])
            .output()
            .expect("git runs");
        assert!(
            shown.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&shown.stderr)
        );
        let model = dir.path().join(format!("{name}.safetensors"));
        std::fs::write(&model, shown.stdout).unwrap();
        decodes_as_recorded(name, &model);
    }
}

fn release_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/releases/{name}.mrg"))
}

/// Decodes release `name`'s file with `model`: a good image, and the symbols and
/// tables recorded in tests/data/releases/symbols.txt when the file was made.
fn decodes_as_recorded(name: &str, model: &Path) {
    let releases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/releases");
    let recorded = std::fs::read_to_string(releases.join("symbols.txt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mrg = release_file(name);
    let png = dir.path().join("old.png");
    let out = mirage(&["--model", s(model), "decode", s(&mrg), s(&png)], "2");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = image::open(&png).unwrap().to_rgb8();
    let original = image::open(sample()).unwrap().to_rgb8();
    assert!(psnr(&decoded, &original) > 25.0, "{name}");
    let out = mirage(&["--model", s(model), "info", "--symbols", s(&mrg)], "2");
    let text = String::from_utf8(out.stdout).unwrap();
    for kind in ["symbols:", "tables:"] {
        let now = text.lines().find(|l| l.starts_with(kind)).unwrap();
        let then = format!("{name} {kind} {}", now[kind.len()..].trim());
        assert!(recorded.lines().any(|l| l == then), "{then}");
    }
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let se: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    10.0 * (255f64.powi(2) / (se / a.as_raw().len() as f64)).log10()
}

/// The grouped verbs (`train <model>`, `export <model>`, `bench <what>`, `study pool`)
/// parse, and the old flat names are gone rather than silently kept.
#[test]
fn command_groups_parse() {
    for group in [
        ["train", "core"],
        ["train", "realism"],
        ["train", "flow"],
        ["train", "predictor"],
        ["train", "extractor"],
        ["export", "core"],
        ["export", "extractor"],
        ["bench", "core"],
        ["bench", "decoders"],
        ["bench", "crops"],
        ["bench", "predictor"],
        ["study", "pool"],
        ["study", "serve"],
        ["realism", "distance"],
    ] {
        let out = mirage(&[group[0], group[1], "--help"], "1");
        assert!(out.status.success(), "{group:?}");
        assert!(!out.stdout.is_empty(), "{group:?}");
    }
    for old in [
        "train-flow",
        "export-realism",
        "bench-decoders",
        "study-pool",
        "crops",
    ] {
        let out = mirage(&[old, "--help"], "1");
        assert!(!out.status.success(), "{old} should no longer exist");
    }
}

/// `study pool` can put a classic codec beside Mirage at the same bytes: its file is no
/// bigger than the one Mirage decodes, and the pool lists both conditions.
#[test]
fn a_study_pool_can_hold_avif_at_the_same_bytes() {
    if Command::new("avifenc").arg("--version").output().is_err() {
        eprintln!("skipped: avifenc is not installed (scripts/setup-eval-codecs.sh)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(sample(), images.join("crop.png")).unwrap();
    let pool = dir.path().join("pool");
    let out = mirage(
        &[
            "study",
            "pool",
            "--images",
            s(&images),
            "--bpp",
            "0.25",
            "--conditions",
            "0,avif",
            "--out",
            s(&pool),
        ],
        "2",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = std::fs::read_to_string(pool.join("pool.toml")).unwrap();
    let bpp = |name: &str| -> f64 {
        let line = toml
            .lines()
            .find(|l| l.starts_with(&format!("\"crop/{name}\"")))
            .unwrap_or_else(|| panic!("{name} missing from {toml}"));
        line.rsplit('=').next().unwrap().trim().parse().unwrap()
    };
    let (mirage_bpp, avif_bpp) = (bpp("mirage-w0"), bpp("avif"));
    assert!(
        avif_bpp <= mirage_bpp && avif_bpp > 0.5 * mirage_bpp,
        "{avif_bpp} vs {mirage_bpp}"
    );
    assert!(pool.join("crop/avif.png").exists());
    // Unknown conditions are refused with the list of what is accepted.
    let out = mirage(&["study", "pool", "--conditions", "0,avif2"], "1");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("classic codec"),
        "{err}"
    );
}
