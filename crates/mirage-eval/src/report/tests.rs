use super::*;

fn row(codec: &str, image: &str, target: f64, bpp: f64, psnr: f64, reach: Reach) -> Row {
    Row {
        image: image.into(),
        codec: codec.into(),
        target_bpp: target,
        // One setting per target, so every row is its own file.
        setting: target,
        setting_label: format!("q{target}"),
        bytes: 100,
        bpp,
        psnr,
        ms_ssim: 0.9,
        ssimulacra2: psnr * 2.0,
        butteraugli: Some(40.0 - psnr),
        butteraugli_3norm: None,
        block_edges: 0.02,
        encode_s: 0.1,
        decode_s: 0.05,
        megapixels: 0.393216,
        encode_peak_rss_kib: Some(2048),
        decode_peak_rss_kib: None,
        reach,
        converged: true,
        probes: 3,
    }
}

fn report() -> Report {
    let targets = vec![0.1, 0.2, 0.4, 0.8];
    let mut rows = Vec::new();
    for (i, &t) in targets.iter().enumerate() {
        for image in ["a.png", "b.png"] {
            rows.push(row(
                "x",
                image,
                t,
                t * 0.98,
                25.0 + 3.0 * i as f64,
                Reach::Reached,
            ));
            rows.push(row(
                "y",
                image,
                t,
                t * 0.95,
                26.0 + 3.0 * i as f64,
                Reach::Reached,
            ));
        }
    }
    rows.push(row(
        "y",
        "c,d.png",
        0.1,
        0.15,
        24.0,
        Reach::BelowLowestRate { lowest_bpp: 0.15 },
    ));
    Report {
        rows,
        crops: Vec::new(),
        codecs: vec![("x".into(), "X codec".into()), ("y".into(), "Y".into())],
        targets_bpp: targets,
        images: vec!["a.png".into(), "b.png".into(), "c,d.png".into()],
        anchor: Some("x".into()),
        ..Report::default()
    }
}

#[test]
fn unreached_rows_are_reported_not_averaged() {
    let r = report();
    let curve = r.mean_curve("y");
    assert_eq!(curve[0].reached, 2);
    assert_eq!(curve[0].images, 3);
    assert!(!curve[0].complete());
    assert!((curve[0].bpp - 0.095).abs() < 1e-12);
    let md = r.markdown();
    assert!(md.contains("| c,d.png | y |"), "{md}");
    assert!(md.contains("below the lowest reachable rate"), "{md}");
    let csv = r.csv();
    assert!(csv.contains("\"c,d.png\",y,0.1,"), "{csv}");
    assert!(csv.contains(",false,below_lowest_rate,"), "{csv}");
}

#[test]
fn bd_rate_is_computed_per_image_on_all_distinct_files() {
    let r = report();
    let summary = r.bd_rate_summary("x", "y", Metric::Psnr);
    // a and b: 4 points each for both codecs. c,d: one y file, no x file.
    let values = summary.values();
    assert_eq!(values.len(), 2, "{summary:?}");
    assert!(matches!(
        summary.per_image[2],
        (_, Err(BdRateError::TooFewPoints(_)))
    ));
    // y is x with 1 dB more at 0.95/0.98 of the rate, on a log-linear curve (3 dB per
    // doubling): rate ratio 0.95/0.98 · 2^(−1/3) at equal quality.
    let expected = (0.95 / 0.98 * 2f64.powf(-1.0 / 3.0) - 1.0) * 100.0;
    for v in values {
        assert!((v - expected).abs() < 0.05, "{v} vs {expected}");
    }
    let md = r.markdown();
    assert!(md.contains("(2/3)"), "{md}");
    assert!(md.contains("at least 4"), "{md}");
    let csv = r.bd_rate_csv();
    assert!(csv.contains("\nx,y,PSNR,a.png,"), "{csv}");
    assert!(
        csv.contains("\nx,y,PSNR,\"c,d.png\",,a curve has 0 points"),
        "{csv}"
    );
}

#[test]
fn bd_rate_counts_a_file_once_even_when_several_targets_ended_on_it() {
    let mut r = report();
    // Two more rows of x on image a that repeat the file of target 0.8.
    let repeat = r
        .rows
        .iter()
        .find(|row| row.codec == "x" && row.image == "a.png" && row.target_bpp == 0.8)
        .unwrap()
        .clone();
    for target in [1.6, 3.2] {
        r.rows.push(Row {
            target_bpp: target,
            reach: Reach::AboveHighestRate {
                highest_bpp: repeat.bpp,
            },
            ..repeat.clone()
        });
    }
    assert_eq!(r.image_points("x", "a.png", Metric::Psnr).len(), 4);
    let before = report().bd_rate_summary("x", "y", Metric::Psnr);
    assert_eq!(r.bd_rate_summary("x", "y", Metric::Psnr), before);
}

#[test]
fn writes_all_outputs() {
    let mut r = report();
    let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 0]));
    let region = CropRegion::square(64, 48, 32, None);
    assert_eq!(
        region,
        CropRegion {
            x: 16,
            y: 8,
            width: 32,
            height: 32
        }
    );
    r.crops.push(Crop {
        image: "a.png".into(),
        codec: None,
        target_bpp: None,
        region,
        pixels: region.cut(&img),
    });
    r.crops.push(Crop {
        image: "a.png".into(),
        codec: Some("x".into()),
        target_bpp: Some(0.1),
        region,
        pixels: region.cut(&img),
    });
    let dir = tempfile::tempdir().unwrap();
    let written = r.write_all(dir.path()).unwrap();
    assert_eq!(written.len(), 5);
    assert!(dir.path().join("bd_rates.csv").exists());
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("src=\"crops/a_x_0.1bpp.png\""), "{html}");
    assert!(dir.path().join("crops/a_x_0.1bpp.png").exists());
    assert!(dir.path().join("crops/a_original.png").exists());
    let svg = std::fs::read_to_string(dir.path().join("rate_quality.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("SSIMULACRA2"));
}

#[test]
fn crop_region_clamps() {
    let r = CropRegion::square(100, 80, 256, None);
    assert_eq!((r.x, r.y, r.width, r.height), (0, 0, 100, 80));
    let r = CropRegion::square(768, 512, 256, Some((760, 0)));
    assert_eq!((r.x, r.y), (512, 0));
}

/// Columns are only ever appended, so scripts that read the CSV by position keep
/// working; the block-edge measure came last.
#[test]
fn csv_rows_end_with_the_block_edge_measure() {
    let csv = report().csv();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",probes,block_edges"));
    assert!(lines.all(|line| line.ends_with(",0.0200")), "{csv}");
}
