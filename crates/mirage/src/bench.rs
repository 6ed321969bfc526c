//! `mirage bench`: the Kodak rate–distortion and speed benchmark.
//!
//! For every image and rate point it compresses to a real `.mrg` file in memory,
//! decompresses it, and measures bpp from the file size (header included), PSNR,
//! MS-SSIM, SSIMULACRA2, encode/decode wall time with its split between the networks
//! and the entropy coding, and how far the entropy model's own bit estimate is from
//! the payload actually written. Writes a per-image CSV and a Markdown table of means.

use crate::codec::{Codec, RateTarget};
use crate::image_io::read_image;
use crate::metrics;
use crate::progress;
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct BenchOptions {
    pub images: PathBuf,
    pub qualities: Vec<f64>,
    pub out_dir: PathBuf,
}

#[derive(Clone, Debug, Default)]
struct Row {
    image: String,
    quality: f64,
    rate: u16,
    bytes: usize,
    bpp: f64,
    payload_bpp: f64,
    estimated_bpp: f64,
    table_bpp: f64,
    psnr: f64,
    ms_ssim: f64,
    ssimulacra2: f64,
    encode_s: f64,
    decode_s: f64,
    encode_networks_s: f64,
    encode_parameters_s: f64,
    encode_coding_s: f64,
    decode_networks_s: f64,
    decode_parameters_s: f64,
    decode_coding_s: f64,
}

const CSV_HEADER: &str = "image,quality,rate,bytes,bpp,payload_bpp,estimated_payload_bpp,table_payload_bpp,psnr,ms_ssim,ssimulacra2,encode_s,decode_s,encode_networks_s,encode_entropy_parameters_s,encode_entropy_coding_s,decode_networks_s,decode_entropy_parameters_s,decode_entropy_coding_s";

impl Row {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{:.5},{:.5},{:.5},{:.5},{:.4},{:.5},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}",
            self.image,
            self.quality,
            self.rate,
            self.bytes,
            self.bpp,
            self.payload_bpp,
            self.estimated_bpp,
            self.table_bpp,
            self.psnr,
            self.ms_ssim,
            self.ssimulacra2,
            self.encode_s,
            self.decode_s,
            self.encode_networks_s,
            self.encode_parameters_s,
            self.encode_coding_s,
            self.decode_networks_s,
            self.decode_parameters_s,
            self.decode_coding_s
        )
    }
}

fn image_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let paths = mirage_eval::suite::files_with_extensions(dir, &["png"])?;
    if paths.is_empty() {
        bail!("no PNG images in {}", dir.display());
    }
    Ok(paths)
}

pub fn run(codec: &Codec, o: &BenchOptions) -> Result<String> {
    let paths = image_paths(&o.images)?;
    std::fs::create_dir_all(&o.out_dir)?;
    let bar = progress::bar((paths.len() * o.qualities.len()) as u64, "bench");
    let mut rows = vec![];
    for path in &paths {
        let img = read_image(path)?.image;
        let pixels = (img.width() * img.height()) as f64;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if rows.is_empty() {
            // Warm-up: libtorch builds its convolution kernels on first use.
            let (bytes, _) = codec.compress(&img, RateTarget::Quality(50.0))?;
            codec.decompress(&bytes)?;
        }
        for &q in &o.qualities {
            let start = Instant::now();
            let (bytes, report) = codec.compress(&img, RateTarget::Quality(q))?;
            let encode_s = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let (decoded, dt) = codec.decompress(&bytes)?;
            let decode_s = start.elapsed().as_secs_f64();
            let et = report.timings;
            rows.push(Row {
                image: name.clone(),
                quality: q,
                rate: report.rate,
                bytes: bytes.len(),
                bpp: bytes.len() as f64 * 8.0 / pixels,
                payload_bpp: (bytes.len() - report.header_bytes) as f64 * 8.0 / pixels,
                estimated_bpp: report.estimated_payload_bits / pixels,
                table_bpp: report.table_payload_bits / pixels,
                psnr: metrics::psnr(&img, &decoded)?,
                ms_ssim: metrics::ms_ssim(&img, &decoded).unwrap_or(f64::NAN),
                ssimulacra2: metrics::ssimulacra2(&img, &decoded).unwrap_or(f64::NAN),
                encode_s,
                decode_s,
                encode_networks_s: et.networks.as_secs_f64(),
                encode_parameters_s: et.entropy_parameters.as_secs_f64(),
                encode_coding_s: et.entropy_coding.as_secs_f64(),
                decode_networks_s: dt.networks.as_secs_f64(),
                decode_parameters_s: dt.entropy_parameters.as_secs_f64(),
                decode_coding_s: dt.entropy_coding.as_secs_f64(),
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let mut csv = String::from(CSV_HEADER);
    csv.push('\n');
    for r in &rows {
        csv.push_str(&r.csv());
        csv.push('\n');
    }
    std::fs::write(o.out_dir.join("kodak.csv"), &csv)?;
    let table = markdown(&rows, &o.qualities, paths.len());
    std::fs::write(o.out_dir.join("kodak.md"), &table)?;
    plot(&rows, &o.qualities, &o.out_dir.join("kodak-rd.svg"))?;
    Ok(table)
}

/// Rate–distortion curves of the means: PSNR and SSIMULACRA2 against bpp.
fn plot(rows: &[Row], qualities: &[f64], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let means: Vec<(f64, f64, f64)> = qualities
        .iter()
        .map(|&q| {
            let rs: Vec<&Row> = rows.iter().filter(|r| r.quality == q).collect();
            let n = rs.len().max(1) as f64;
            let mean = |f: fn(&Row) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
            (mean(|r| r.bpp), mean(|r| r.psnr), mean(|r| r.ssimulacra2))
        })
        .collect();
    let x_max = means.iter().map(|m| m.0).fold(0.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    type Metric = fn(&(f64, f64, f64)) -> f64;
    let psnr: Metric = |m| m.1;
    let ssimulacra2: Metric = |m| m.2;
    for (area, label, value) in [
        (&left, "PSNR (dB)", psnr),
        (&right, "SSIMULACRA2", ssimulacra2),
    ] {
        let ys: Vec<f64> = means.iter().map(value).collect();
        let (lo, hi) = ys
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
        let pad = ((hi - lo) * 0.1).max(1.0);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("Mirage on Kodak: {label}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..x_max, (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc("bits per pixel (file size)")
            .y_desc(label)
            .draw()?;
        let points: Vec<(f64, f64)> = means.iter().map(|m| (m.0, value(m))).collect();
        chart.draw_series(LineSeries::new(points.clone(), &BLUE))?;
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, BLUE.filled())))?;
    }
    root.present()?;
    Ok(())
}

fn markdown(rows: &[Row], qualities: &[f64], images: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Mean over {images} images. bpp from the real file sizes (header of {} bytes included). Times are wall-clock seconds per image; the split is networks / entropy parameters / entropy coding.\n", mirage_format::header_size(2));
    let _ = writeln!(s, "Last two columns: payload (file minus header) against the entropy model's continuous estimate (the training objective's rate term), and against the ideal code length under the integer tables that the coder uses.\n");
    let _ = writeln!(s, "| quality | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | encode s (net/param/code) | decode s (net/param/code) | payload vs model estimate | payload vs table ideal |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for &q in qualities {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.quality == q).collect();
        let n = rs.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Row) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
        let payload = mean(&|r| r.payload_bpp);
        let estimate = mean(&|r| r.estimated_bpp);
        let ideal = mean(&|r| r.table_bpp);
        let _ = writeln!(
            s,
            "| {q} | {:.4} | {:.2} | {:.4} | {:.2} | {:.3} ({:.3}/{:.3}/{:.3}) | {:.3} ({:.3}/{:.3}/{:.3}) | {:+.2}% | {:+.2}% |",
            mean(&|r| r.bpp),
            mean(&|r| r.psnr),
            mean(&|r| r.ms_ssim),
            mean(&|r| r.ssimulacra2),
            mean(&|r| r.encode_s),
            mean(&|r| r.encode_networks_s),
            mean(&|r| r.encode_parameters_s),
            mean(&|r| r.encode_coding_s),
            mean(&|r| r.decode_s),
            mean(&|r| r.decode_networks_s),
            mean(&|r| r.decode_parameters_s),
            mean(&|r| r.decode_coding_s),
            (payload / estimate - 1.0) * 100.0,
            (payload / ideal - 1.0) * 100.0
        );
    }
    s
}
