//! The ultra-low mode with the bundled models: files of the documented size, decodes
//! that keep the image's layout and colours, the same pixels with any thread count or
//! instruction set, and clear errors (no output written) for bad input.

use mirage::decoders::{AddOns, Realism};
use mirage::ultralow::{is_ultralow, CaptionUse, POINT_COUNT};
use mirage::{Codec, RateTarget};
use std::path::{Path, PathBuf};
use std::process::Command;

fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data/kodim23-crop.png")
}

fn sample() -> image::RgbImage {
    mirage::image_io::read_image(&sample_path()).unwrap().image
}

fn codec() -> (Codec, AddOns) {
    let codec = Codec::load_default().expect("bundled core loads");
    let add_ons = AddOns::bundled(&codec).expect("bundled add-ons load");
    assert!(
        add_ons.ultralow(&codec).is_ok(),
        "the ultra-low model is bundled"
    );
    (codec, add_ons)
}

fn mean_colour(img: &image::RgbImage) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for p in img.pixels() {
        for c in 0..3 {
            sum[c] += p[c] as f64;
        }
    }
    sum.map(|s| s / (img.width() * img.height()) as f64)
}

#[test]
fn every_point_has_the_documented_size_and_keeps_the_image() {
    let (codec, add_ons) = codec();
    let img = sample();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    let mut last = 0;
    for point in 0..POINT_COUNT {
        let (bytes, report) = ultralow.compress(&codec, &img, point, None).unwrap();
        assert!(is_ultralow(&bytes).unwrap());
        // Header (39 bytes for one section) + exactly ceil(cells · bits / 8).
        let p = mirage_nn::model::ultralow::POINTS[point];
        let (rows, cols) = (
            mirage::layout::padded(img.height()) / p.stride,
            mirage::layout::padded(img.width()) / p.stride,
        );
        let index_bytes = (rows * cols * p.index_bits() as usize).div_ceil(8);
        assert_eq!(bytes.len(), 39 + index_bytes);
        assert_eq!(report.bytes, bytes.len());
        assert!(bytes.len() > last, "points are ordered by rate");
        last = bytes.len();
        let (decoded, _, caption) = add_ons
            .decompress_any(&codec, &bytes, Realism::Auto, CaptionUse::FromFile)
            .unwrap();
        assert_eq!(caption, None);
        assert_eq!(decoded.dimensions(), img.dimensions());
        // Layout and colours: far closer to the image than a flat grey, and the mean
        // colour within a few levels.
        let psnr = mirage::metrics::psnr(&img, &decoded).unwrap();
        let grey = image::RgbImage::from_pixel(img.width(), img.height(), image::Rgb([128; 3]));
        let grey_psnr = mirage::metrics::psnr(&img, &grey).unwrap();
        assert!(
            psnr > grey_psnr + 4.0,
            "point {point}: {psnr:.2} dB vs grey {grey_psnr:.2}"
        );
        let (a, b) = (mean_colour(&img), mean_colour(&decoded));
        for c in 0..3 {
            assert!(
                (a[c] - b[c]).abs() < 12.0,
                "point {point}: mean colours {a:?} vs {b:?}"
            );
        }
    }
}

#[test]
fn a_size_target_picks_the_largest_point_that_fits() {
    let (codec, add_ons) = codec();
    let img = sample();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    let sizes: Vec<usize> = (0..POINT_COUNT)
        .map(|p| ultralow.compress(&codec, &img, p, None).unwrap().0.len())
        .collect();
    let (bytes, report) = ultralow
        .compress_target(&codec, &img, RateTarget::Bytes(sizes[1]), None)
        .unwrap();
    assert_eq!((report.point, bytes.len()), (1, sizes[1]));
    let (_, report) = ultralow
        .compress_target(&codec, &img, RateTarget::Bytes(sizes[2] - 1), None)
        .unwrap();
    assert_eq!(report.point, 1);
    let err = ultralow
        .compress_target(&codec, &img, RateTarget::Bytes(sizes[0] - 1), None)
        .unwrap_err();
    assert!(err.to_string().contains("smallest file"), "{err}");
}

#[test]
fn the_caption_is_stored_counted_and_returned() {
    let (codec, add_ons) = codec();
    let img = sample();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    let text = "Two parrots, one red and one blue and yellow, in front of green leaves.";
    let (plain, _) = ultralow.compress(&codec, &img, 0, None).unwrap();
    let (captioned, report) = ultralow.compress(&codec, &img, 0, Some(text)).unwrap();
    assert_eq!(captioned.len(), plain.len() + 4 + report.caption_bytes);
    assert!(report.caption_bytes > 0 && report.caption_bytes < text.len());
    let (_, _, caption) = add_ons
        .decompress_any(&codec, &captioned, Realism::Auto, CaptionUse::FromFile)
        .unwrap();
    assert_eq!(caption.as_deref(), Some(text));
    let too_long = "a".repeat(mirage_format::ultralow::MAX_CAPTION_BYTES + 1);
    let err = ultralow
        .compress(&codec, &img, 0, Some(&too_long))
        .unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
}

const PARROTS: &str =
    "Two parrots, a blue and yellow macaw and a red macaw, in front of green leaves.";

/// The bundled model reads captions: a caption changes the decode, another caption
/// changes it otherwise, and ignoring the caption gives exactly the decode of the same
/// file without one.
#[test]
fn the_caption_conditions_the_decode() {
    let (codec, add_ons) = codec();
    let img = sample();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    assert!(
        ultralow.reads_captions,
        "the bundled ultra-low model is trained with captions"
    );
    let (plain, _) = ultralow.compress(&codec, &img, 0, None).unwrap();
    let (parrots, _) = ultralow.compress(&codec, &img, 0, Some(PARROTS)).unwrap();
    let (snow, _) = ultralow
        .compress(&codec, &img, 0, Some("A snowy mountain under a grey sky."))
        .unwrap();
    let decode = |bytes: &[u8], caption: CaptionUse| {
        add_ons
            .decompress_any(&codec, bytes, Realism::Weight(0.0), caption)
            .unwrap()
            .0
    };
    let without = decode(&plain, CaptionUse::FromFile);
    assert!(decode(&parrots, CaptionUse::Ignore) == without);
    let with_parrots = decode(&parrots, CaptionUse::FromFile);
    assert!(with_parrots != without, "the caption changed nothing");
    assert!(with_parrots != decode(&snow, CaptionUse::FromFile));
    assert!(with_parrots == decode(&parrots, CaptionUse::FromFile));
}

/// Without the sentence encoder a captioned file is a clear error (and no output),
/// unless the caption is ignored.
#[test]
fn a_captioned_file_without_the_sentence_encoder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.mrg");
    let input = sample_path();
    let args = [
        "encode",
        s(&input),
        s(&file),
        "--mode",
        "ultralow",
        "--caption",
        PARROTS,
    ];
    assert!(mirage(&args, "2", None).status.success());
    let png = dir.path().join("c.png");
    let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["decode", s(&file), s(&png)])
        .env("MIRAGE_TEXT_MODEL", dir.path().join("no-encoder-here"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("setup-text-encoder"), "{stderr}");
    assert!(!png.exists());
    let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .args(["decode", s(&file), s(&png), "--ignore-caption"])
        .env("MIRAGE_TEXT_MODEL", dir.path().join("no-encoder-here"))
        .output()
        .unwrap();
    succeeded(&out);
    assert!(png.exists());
}

/// The bundled model replaced one whose files are in users' hands: it has the same
/// encoders and codebooks, so it decodes their files (to the same pixels as its own
/// file of the same indices), and says so in its metadata.
#[test]
fn files_of_the_superseded_model_still_decode() {
    let (codec, add_ons) = codec();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    let superseded = ultralow.reads_files_of();
    assert!(
        superseded.contains(&"661ebc827195eecf".to_string()),
        "{superseded:?}"
    );
    let (bytes, _) = ultralow.compress(&codec, &sample(), 1, None).unwrap();
    let mut c = mirage_format::read(&bytes).unwrap();
    c.header.model_id = [0x66, 0x1e, 0xbc, 0x82, 0x71, 0x95, 0xee, 0xcf];
    let old = mirage_format::write(&c).unwrap();
    let decode = |b: &[u8]| {
        add_ons
            .decompress_any(&codec, b, Realism::Auto, CaptionUse::FromFile)
            .unwrap()
            .0
    };
    assert!(decode(&old) == decode(&bytes));
}

#[test]
fn damaged_or_foreign_files_are_refused() {
    let (codec, add_ons) = codec();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    let (bytes, _) = ultralow.compress(&codec, &sample(), 1, None).unwrap();
    let mut c = mirage_format::read(&bytes).unwrap();
    // An index section one byte short, rewritten with valid checksums.
    c.sections[0].pop();
    let short = mirage_format::write(&c).unwrap();
    let err = add_ons
        .decompress_any(&codec, &short, Realism::Auto, CaptionUse::FromFile)
        .unwrap_err();
    assert!(err.to_string().contains("index section"), "{err}");
    // Another model's file.
    let mut c = mirage_format::read(&bytes).unwrap();
    c.header.model_id = [7; 8];
    let foreign = mirage_format::write(&c).unwrap();
    let err = add_ons
        .decompress_any(&codec, &foreign, Realism::Auto, CaptionUse::FromFile)
        .unwrap_err();
    assert!(err.to_string().contains("made with model"), "{err}");
    // An operating point this model does not have.
    let mut c = mirage_format::read(&bytes).unwrap();
    c.header.rate = POINT_COUNT as u16;
    let unknown = mirage_format::write(&c).unwrap();
    assert!(add_ons
        .decompress_any(&codec, &unknown, Realism::Auto, CaptionUse::FromFile)
        .is_err());
    // A flipped payload byte is caught by the container's checksum.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x10;
    assert!(add_ons
        .decompress_any(&codec, &flipped, Realism::Auto, CaptionUse::FromFile)
        .is_err());
}

fn mirage(args: &[&str], threads: &str, isa: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirage"));
    // RAYON_NUM_THREADS too: the sentence encoder (candle) splits its work by it.
    cmd.args(["--threads", threads])
        .args(args)
        .env("RAYON_NUM_THREADS", threads);
    if let Some(isa) = isa {
        cmd.env("ONEDNN_MAX_CPU_ISA", isa);
    }
    cmd.output().unwrap()
}

/// Asserts that a `mirage` run succeeded, showing its stderr if not.
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The same file (with a caption, so the sentence encoder runs too) decodes to the
/// same pixels with 1 or 2 threads, and the file itself does not depend on the
/// encoder's thread count. With libtorch's kernels limited to
/// other instruction sets (other CPUs) the pixels may differ in the last bit, as the
/// core's do, but by no more than one level.
#[test]
fn decodes_are_identical_across_threads_and_instruction_sets() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.mrg"), dir.path().join("b.mrg"));
    let input = sample_path();
    for (file, threads) in [(&a, "1"), (&b, "2")] {
        let args = [
            "encode",
            s(&input),
            s(file),
            "--mode",
            "ultralow",
            "--quality",
            "50",
            "--caption",
            PARROTS,
        ];
        let out = mirage(&args, threads, None);
        succeeded(&out);
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    let decode = |threads: &str| -> Vec<u8> {
        let png = dir.path().join(format!("{threads}.png"));
        let out = mirage(&["decode", s(&a), s(&png)], threads, None);
        succeeded(&out);
        image::open(&png).unwrap().to_rgb8().into_raw()
    };
    let reference = decode("1");
    assert!(
        reference == decode("2"),
        "1 and 2 threads decode differently"
    );
    for isa in ["SSE41", "AVX2", "AVX512_CORE"] {
        let png = dir.path().join(format!("{isa}.png"));
        let out = mirage(&["decode", s(&a), s(&png)], "2", Some(isa));
        succeeded(&out);
        let other = image::open(&png).unwrap().to_rgb8().into_raw();
        let worst = reference
            .iter()
            .zip(&other)
            .map(|(&x, &y)| x.abs_diff(y))
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "ONEDNN_MAX_CPU_ISA={isa}: a pixel differs by {worst}"
        );
    }
    // `info --symbols` reads the index section (no network involved).
    let out = mirage(&["info", "--symbols", s(&a)], "1", None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("symbols:"));
}

#[test]
fn bad_captions_and_metadata_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("x.mrg");
    let long = "word ".repeat(60);
    let input = sample_path();
    let out = mirage(
        &[
            "encode",
            s(&input),
            s(&out_file),
            "--mode",
            "ultralow",
            "--caption",
            &long,
        ],
        "1",
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 256"));
    assert!(!out_file.exists(), "no partial output");
    // JPEGs whose EXIF ImageDescription is not UTF-8, or too long for a caption.
    for (name, description) in [
        ("latin1", b"Caf\xe9 au lait".to_vec()),
        ("long", vec![b'x'; 300]),
    ] {
        let jpeg = dir.path().join(format!("{name}.jpg"));
        write_jpeg_with_description(&jpeg, &description);
        let out = mirage(
            &["encode", s(&jpeg), s(&out_file), "--mode", "ultralow"],
            "1",
            None,
        );
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("EXIF ImageDescription") && stderr.contains("--no-caption"),
            "{stderr}"
        );
        assert!(!out_file.exists());
        // --no-caption encodes it anyway.
        let out = mirage(
            &[
                "encode",
                s(&jpeg),
                s(&out_file),
                "--mode",
                "ultralow",
                "--no-caption",
            ],
            "1",
            None,
        );
        succeeded(&out);
        std::fs::remove_file(&out_file).unwrap();
    }
    // A good EXIF description becomes the caption; so does an XMP dc:description.
    let jpeg = dir.path().join("good.jpg");
    write_jpeg_with_description(&jpeg, b"Two parrots");
    let captioned = dir.path().join("e.mrg");
    let out = mirage(
        &["encode", s(&jpeg), s(&captioned), "--mode", "ultralow"],
        "1",
        None,
    );
    succeeded(&out);
    let info = mirage(&["info", s(&captioned)], "1", None);
    assert!(String::from_utf8_lossy(&info.stdout).contains("caption:     Two parrots"));
    let good = dir.path().join("good-xmp.png");
    let packet = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt><rdf:li xml:lang="x-default">Parrots</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"#;
    write_png_with_xmp(&good, packet.as_bytes());
    let captioned = dir.path().join("c.mrg");
    let out = mirage(
        &["encode", s(&good), s(&captioned), "--mode", "ultralow"],
        "1",
        None,
    );
    succeeded(&out);
    let info = mirage(&["info", s(&captioned)], "1", None);
    assert!(String::from_utf8_lossy(&info.stdout).contains("caption:     Parrots"));
}

/// The sample as a JPEG with an EXIF block whose ImageDescription (tag 0x010E, ASCII)
/// holds `description`: a little-endian TIFF header and one IFD entry, in APP1.
fn write_jpeg_with_description(path: &Path, description: &[u8]) {
    let mut jpeg = vec![];
    sample()
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let mut text = description.to_vec();
    text.push(0);
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x010Eu16.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&(text.len() as u32).to_le_bytes());
    tiff.extend_from_slice(&(8 + 2 + 12 + 4u32).to_le_bytes());
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(&text);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    std::fs::write(path, out).unwrap();
}

/// The sample as a PNG with an `iTXt` chunk `XML:com.adobe.xmp` holding `packet`.
fn write_png_with_xmp(path: &Path, packet: &[u8]) {
    let img = sample();
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, img.width(), img.height());
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    let mut data = b"XML:com.adobe.xmp\0\0\0\0\0".to_vec();
    data.extend_from_slice(packet);
    writer
        .write_chunk(png::chunk::ChunkType(*b"iTXt"), &data)
        .unwrap();
    writer.write_image_data(img.as_raw()).unwrap();
}

#[test]
fn roundtrip_runs_the_ultralow_mode() {
    let dir = tempfile::tempdir().unwrap();
    let input = sample_path();
    let out = mirage(
        &[
            "roundtrip",
            s(&input),
            s(dir.path()),
            "--mode",
            "ultralow",
            "--quality",
            "0",
        ],
        "2",
        None,
    );
    succeeded(&out);
    let bytes = std::fs::read(dir.path().join("kodim23-crop.mrg")).unwrap();
    assert!(is_ultralow(&bytes).unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{} bytes", bytes.len())));
}

/// `bench decoders`, `study pool` (a column) and `eval` (a codec under test) code with
/// the ultra-low mode too.
#[test]
fn the_benchmarks_and_the_evaluation_take_the_ultralow_mode() {
    use mirage_eval::codecs::CodecUnderTest;
    let (codec, add_ons) = codec();
    let img = sample();
    let (core_file, _) = codec.compress(&img, RateTarget::Quality(30.0)).unwrap();
    let column = mirage_cli::comparison::Column::parse("ultralow0").unwrap();
    let (decoded, bytes) = column.decode(&codec, &add_ons, &img, &core_file).unwrap();
    let (own, _) = add_ons
        .ultralow(&codec)
        .unwrap()
        .compress(&codec, &img, 0, None)
        .unwrap();
    assert_eq!(bytes, own.len());
    assert_eq!(decoded.dimensions(), img.dimensions());
    let under_test = mirage_cli::evaluation::UltralowUnderTest::new(codec, add_ons).unwrap();
    assert_eq!(under_test.settings().steps() as usize, POINT_COUNT - 1);
    let file = under_test.encode(&img, 1.0).unwrap();
    assert!(is_ultralow(&file).unwrap());
    assert_eq!(
        under_test.decode(&file).unwrap().dimensions(),
        img.dimensions()
    );
    assert!(under_test.encode(&img, 3.0).is_err());
}

#[test]
fn the_mode_decodes_with_the_generator_it_was_trained_with() {
    let (codec, add_ons) = codec();
    let ultralow = add_ons.ultralow(&codec).unwrap();
    // The bundled add-ons find the generator the ultra-low model names, even when the
    // main realism generator has moved on (it stays beside its core, models/v2.3/).
    assert_eq!(
        add_ons.ultralow_realism(&codec).unwrap().id,
        ultralow.generator_id()
    );
    let (bytes, _) = ultralow.compress(&codec, &sample(), 1, None).unwrap();
    let decode = |a: &AddOns| {
        a.decompress_any(&codec, &bytes, Realism::Weight(1.0), CaptionUse::FromFile)
            .unwrap()
            .0
    };
    let before = decode(&add_ons);
    // Another main generator (as with `--realism-model`) leaves ultra-low pixels alone.
    let mut swapped = AddOns::bundled(&codec).unwrap();
    swapped.realism = None;
    assert!(decode(&swapped) == before);
    // So does $MIRAGE_REALISM_MODEL naming the main generator: the mode still finds its
    // own among the bundled ones.
    let dir = tempfile::tempdir().unwrap();
    let mrg = dir.path().join("u.mrg");
    std::fs::write(&mrg, &bytes).unwrap();
    let main_generator = mirage::codec::default_realism_path();
    let decoded: Vec<image::RgbImage> = [None, Some(&main_generator)]
        .iter()
        .enumerate()
        .map(|(i, env)| {
            let png = dir.path().join(format!("{i}.png"));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_mirage"));
            cmd.args(["--threads", "2", "decode", s(&mrg), s(&png)]);
            if let Some(path) = env {
                cmd.env("MIRAGE_REALISM_MODEL", path);
            }
            succeeded(&cmd.output().unwrap());
            image::open(&png).unwrap().to_rgb8()
        })
        .collect();
    assert!(decoded[0] == decoded[1]);
}

/// A later release of the core, exported with `takes_add_ons_of` the bundled one, or
/// without it: the bundled weights scaled by 2 % and a fresh density network, so its
/// transforms, tables and model id differ.
fn later_core(takes_add_ons: bool, name: &str) -> Codec {
    use mirage_nn::model::{layers::ConvPrecision, Hyperprior};
    use mirage_nn::model_file::{export, ModelFile};
    let bundled = ModelFile::load(&mirage::codec::default_model_path()).unwrap();
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _net = Hyperprior::new(&vs.root(), bundled.config, ConvPrecision::F32);
    bundled.fill(&vs).unwrap();
    // Other transforms too, as after more training: were the ultra-low mode to run
    // through this core, its indices and pixels would change.
    tch::no_grad(|| {
        for (_, mut t) in vs.variables() {
            let _ = t.f_mul_scalar_(1.02).unwrap();
        }
    });
    let dir = std::env::temp_dir().join(format!("mirage-later-core-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("model.safetensors");
    vs.save(&checkpoint).unwrap();
    let out = dir.join("core.safetensors");
    export(
        &checkpoint,
        bundled.config.context,
        takes_add_ons.then_some(&bundled),
        &out,
    )
    .unwrap();
    let core = Codec::load(&out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    core
}

/// A core release that takes the bundled core's add-ons loads them all; the ultra-low
/// mode then keeps working through the core it was trained with, so its files are the
/// same bytes and decode to the same pixels. A release that does not take them gets
/// none.
#[test]
fn a_later_core_takes_the_add_ons_and_the_mode_keeps_its_own_core() {
    let (codec, add_ons) = codec();
    let later = later_core(true, "takes");
    assert_ne!(later.id(), codec.id());
    // The bundled core's own list follows it (it may take an earlier core's add-ons).
    assert_eq!(later.takes_add_ons_of()[0], codec.id());
    assert_eq!(&later.takes_add_ons_of()[1..], codec.takes_add_ons_of());
    let carried = AddOns::bundled(&later).unwrap();
    assert!(carried.realism.is_some() && carried.flow.is_some() && carried.predictor.is_some());
    let img = sample();
    let (bytes, _) = add_ons
        .ultralow(&codec)
        .unwrap()
        .compress(&codec, &img, 1, None)
        .unwrap();
    let (again, _) = carried
        .ultralow(&later)
        .unwrap()
        .compress(&later, &img, 1, None)
        .unwrap();
    assert!(
        again == bytes,
        "the same indices through the mode's own core"
    );
    let decode = |a: &AddOns, core: &Codec| {
        a.decompress_any(core, &bytes, Realism::Weight(1.0), CaptionUse::FromFile)
            .unwrap()
            .0
    };
    assert!(decode(&carried, &later) == decode(&add_ons, &codec));

    let unrelated = later_core(false, "unrelated");
    let none = AddOns::bundled(&unrelated).unwrap();
    assert!(none.realism.is_none() && none.flow.is_none() && none.ultralow(&unrelated).is_err());
}

/// The mode loads only when a file or `--mode ultralow` needs it: a damaged ultra-low
/// model leaves core-mode encodes and decodes alone, and the ultra-low ones fail with a
/// clear error naming it.
#[test]
fn the_mode_loads_only_when_needed() {
    let dir = tempfile::tempdir().unwrap();
    let damaged = dir.path().join("ultralow.safetensors");
    std::fs::write(&damaged, b"not a model").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mirage"))
            .args(["--threads", "2"])
            .args(args)
            .env("MIRAGE_ULTRALOW_MODEL", &damaged)
            .output()
            .unwrap()
    };
    let core = dir.path().join("core.mrg");
    succeeded(&run(&[
        "encode",
        s(&sample_path()),
        s(&core),
        "--quality",
        "30",
    ]));
    succeeded(&run(&["decode", s(&core), s(&dir.path().join("core.png"))]));
    let out = run(&[
        "encode",
        s(&sample_path()),
        s(&dir.path().join("u.mrg")),
        "--mode",
        "ultralow",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ultralow.safetensors"), "{err}");
    assert!(!dir.path().join("u.mrg").exists());
}
