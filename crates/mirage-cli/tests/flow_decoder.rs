//! The flow decoder with the bundled models: seeded and deterministic, independent of
//! the thread count, at no extra bits (it decodes the very files the MSE decoder does).

use mirage::decoders::{Decoder, FlowSettings};
use mirage::{Codec, RateTarget};
use std::path::Path;

mod common;

fn sample() -> image::RgbImage {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../mirage/tests/data/kodim23-crop.png");
    mirage::image_io::read_image(&path).unwrap().image
}

fn differing(a: &image::RgbImage, b: &image::RgbImage) -> usize {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .filter(|(x, y)| x != y)
        .count()
}

#[test]
fn flow_decode_is_seeded_and_refines_the_mse_decode() {
    // Each refiner is bundled with the core it was trained on: v1's, the fourth
    // release's (which the fifth to thirteenth take), and the current one's.
    let fourth_release = mirage::codec::default_model_path()
        .parent()
        .unwrap()
        .join("v2.3/hyperprior.safetensors");
    for core in [
        mirage::codec::v1_model_path(),
        fourth_release,
        mirage::codec::default_model_path(),
    ] {
        check_flow_decode(&core);
    }
}

fn check_flow_decode(core: &Path) {
    let codec = Codec::load(core).unwrap();
    let add_ons = mirage::AddOns::bundled(&codec).unwrap();
    let flow = add_ons.flow().expect("the flow model is bundled");
    let img = sample();
    let (bytes, _) = codec.compress(&img, RateTarget::Quality(15.0)).unwrap();
    let (mse, _) = codec.decompress(&bytes).unwrap();
    let decode = |steps, seed, temperature| {
        let settings = FlowSettings {
            steps,
            seed,
            temperature,
        };
        Decoder::Flow(flow, settings).decompress(&codec, &bytes)
    };
    let (a, _) = decode(2, 1, 1.0).unwrap();
    let (b, _) = decode(2, 1, 1.0).unwrap();
    let (c, _) = decode(2, 2, 1.0).unwrap();
    assert_eq!((a.width(), a.height()), (img.width(), img.height()));
    assert_eq!(differing(&a, &b), 0, "same seed, same pixels");
    assert!(differing(&a, &c) > 0, "another seed, other detail");
    assert!(differing(&a, &mse) > 0, "the flow changes the MSE decode");
    // It refines, it does not replace: close to the MSE decode in PSNR.
    let (p_mse, p_flow) = (
        mirage::metrics::psnr(&img, &mse).unwrap(),
        mirage::metrics::psnr(&img, &a).unwrap(),
    );
    assert!(
        p_flow > p_mse - 4.0,
        "flow {p_flow:.2} dB, MSE {p_mse:.2} dB"
    );
    assert!(decode(0, 1, 1.0).is_err());
    assert!(decode(17, 1, 1.0).is_err());
    assert!(decode(2, 1, 1.5).is_err());
    // At temperature 0 the source noise is gone: the seed no longer matters.
    let (cold1, _) = decode(2, 1, 0.0).unwrap();
    let (cold2, _) = decode(2, 2, 0.0).unwrap();
    assert_eq!(cold1.as_raw(), cold2.as_raw());
}

#[test]
fn flow_decode_is_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    // 600×400: several overlapping tiles.
    let img = image::RgbImage::from_fn(600, 400, |x, y| {
        image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x * y) % 251) as u8])
    });
    let input = dir.path().join("in.png");
    img.save(&input).unwrap();
    let mrg = dir.path().join("a.mrg");
    // The flow refiner and the ConHa predictor belong to the v1 core (models/v1).
    let run = |args: &[&str], threads: &str| {
        common::run_with_model(&mirage::codec::v1_model_path(), args, threads)
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&["encode", &s(&input), &s(&mrg), "--quality", "20"], "2");
    let (one, two) = (dir.path().join("1.png"), dir.path().join("2.png"));
    let flow = ["--decoder", "flow", "--steps", "2", "--seed", "5"];
    run(
        &[&["decode", &s(&mrg), &s(&one)][..], &flow[..]].concat(),
        "1",
    );
    run(
        &[&["decode", &s(&mrg), &s(&two)][..], &flow[..]].concat(),
        "2",
    );
    let a = image::open(&one).unwrap().to_rgb8();
    let b = image::open(&two).unwrap().to_rgb8();
    assert_eq!(differing(&a, &b), 0);
}

/// `bench decoders` names a flow column "flow N steps, T t": its CSV quotes that label, so
/// every row keeps its columns (an unquoted comma shifted the figures of flow rows).
#[test]
fn the_decoder_benchmark_csv_keeps_the_flow_rows_columns() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    // Large enough for the realism measures' two 256² patches per set.
    let photo = image::imageops::resize(&sample(), 512, 512, image::imageops::FilterType::Triangle);
    photo.save(images.join("crop.png")).unwrap();
    let out = dir.path().join("out");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    common::run_with_model(
        &mirage::codec::default_model_path(),
        &[
            "bench",
            "decoders",
            "--images",
            &s(&images),
            "--bpp",
            "0.3",
            "--decoders",
            "0,flow1",
            "--out-dir",
            &s(&out),
        ],
        "2",
    );
    let csv = std::fs::read_to_string(out.join("decoders.csv")).unwrap();
    let mut lines = csv.lines();
    let columns = lines.next().unwrap().split(',').count();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let flow = rows.iter().find(|r| r.contains("flow 1 steps")).unwrap();
    assert!(
        flow.starts_with("crop,0.3,\"flow 1 steps, T 0.6\","),
        "{flow}"
    );
    // Outside the quotes, the flow row has as many fields as the header.
    let unquoted: String = flow.split('"').step_by(2).collect();
    assert_eq!(unquoted.split(',').count(), columns, "{flow}");
}
