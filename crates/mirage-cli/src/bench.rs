//! `mirage bench core`: the Kodak rate–distortion and speed benchmark.
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
use mirage::decoders::AddOns;
use mirage_eval::block_edges::block_edge_excess;
use mirage_eval::excess_detail::excess_detail;
use mirage_eval::grid_marks::GridMarks;
use mirage_eval::report::csv_field;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct BenchOptions {
    pub images: PathBuf,
    pub qualities: Vec<f64>,
    /// Encoder effort levels; the first is the reference of the BD-rate table.
    pub efforts: Vec<u8>,
    pub out_dir: PathBuf,
}

#[derive(Clone, Debug, Default)]
struct Row {
    image: String,
    effort: u8,
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
    /// Steps along the latent's block edges beyond the original's
    /// (`mirage_eval::block_edges`).
    block_edges: f64,
}

const CSV_HEADER: &str = "image,effort,quality,rate,bytes,bpp,payload_bpp,estimated_payload_bpp,table_payload_bpp,psnr,ms_ssim,ssimulacra2,encode_s,decode_s,encode_networks_s,encode_entropy_parameters_s,encode_entropy_coding_s,decode_networks_s,decode_entropy_parameters_s,decode_entropy_coding_s,block_edges";

impl Row {
    fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{:.5},{:.5},{:.5},{:.5},{:.4},{:.5},{:.3},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4}",
            self.image,
            self.effort,
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
            self.decode_coding_s,
            self.block_edges
        )
    }
}

pub(crate) fn image_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let paths = mirage_eval::suite::files_with_extensions(dir, &["png"])?;
    if paths.is_empty() {
        bail!("no PNG images in {}", dir.display());
    }
    Ok(paths)
}

pub fn run(codec: &Codec, o: &BenchOptions) -> Result<String> {
    let paths = image_paths(&o.images)?;
    std::fs::create_dir_all(&o.out_dir)?;
    let efforts = if o.efforts.is_empty() {
        vec![0]
    } else {
        o.efforts.clone()
    };
    let bar = progress::bar(
        (paths.len() * o.qualities.len() * efforts.len()) as u64,
        "bench",
    );
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
        for (&effort, &q) in efforts
            .iter()
            .flat_map(|e| o.qualities.iter().map(move |q| (e, q)))
        {
            let start = Instant::now();
            let (bytes, report) =
                codec.compress_with_effort(&img, RateTarget::Quality(q), effort)?;
            let encode_s = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let (decoded, dt) = codec.decompress(&bytes)?;
            let decode_s = start.elapsed().as_secs_f64();
            let et = report.timings;
            rows.push(Row {
                image: name.clone(),
                effort,
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
                block_edges: block_edge_excess(&img, &decoded).unwrap_or(f64::NAN),
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
    let mut table = String::new();
    for &effort in &efforts {
        let these: Vec<Row> = rows
            .iter()
            .filter(|r| r.effort == effort)
            .cloned()
            .collect();
        if efforts.len() > 1 {
            let _ = writeln!(table, "### Effort {effort}\n");
        }
        table.push_str(&markdown(&these, &o.qualities, paths.len()));
        table.push('\n');
        if effort == efforts[0] {
            plot(&these, &o.qualities, &o.out_dir.join("kodak-rd.svg"))?;
        }
    }
    if efforts.len() > 1 {
        table.push_str(&effort_bd_rates(&rows, &efforts));
    }
    std::fs::write(o.out_dir.join("kodak.md"), &table)?;
    Ok(table)
}

/// BD-rate (PSNR and SSIMULACRA2) of each effort level against the first, per image
/// (PCHIP over the quality points), and the mean encode time.
fn effort_bd_rates(rows: &[Row], efforts: &[u8]) -> String {
    use mirage_eval::bd_rate::{bd_rate, RatePoint};
    let mut s = String::new();
    let _ = writeln!(s, "### Encoder effort against effort {}\n", efforts[0]);
    let _ = writeln!(s, "BD-rate per image over the quality points (negative: smaller files for the same quality), mean over images.\n");
    let _ = writeln!(
        s,
        "| effort | BD-rate PSNR | BD-rate SSIMULACRA2 | mean encode s |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    let curve = |image: &str, effort: u8, q: fn(&Row) -> f64| -> Vec<RatePoint> {
        rows.iter()
            .filter(|r| r.image == image && r.effort == effort)
            .map(|r| RatePoint::new(r.bpp, q(r)))
            .collect()
    };
    let mut images: Vec<&str> = rows.iter().map(|r| r.image.as_str()).collect();
    images.dedup();
    for &effort in efforts {
        let mean_bd = |q: fn(&Row) -> f64| {
            let v: Vec<f64> = images
                .iter()
                .filter_map(|im| bd_rate(&curve(im, efforts[0], q), &curve(im, effort, q)))
                .collect();
            // BD-rate needs at least 4 points per curve: say so rather than print 0.
            if v.is_empty() {
                "n/a (needs 4+ qualities)".to_string()
            } else {
                format!("{:+.1}%", v.iter().sum::<f64>() / v.len() as f64)
            }
        };
        let these: Vec<&Row> = rows.iter().filter(|r| r.effort == effort).collect();
        let time = these.iter().map(|r| r.encode_s).sum::<f64>() / these.len().max(1) as f64;
        let _ = writeln!(
            s,
            "| {effort} | {} | {} | {time:.2} |",
            mean_bd(|r| r.psnr),
            mean_bd(|r| r.ssimulacra2)
        );
    }
    s
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
    let _ = writeln!(s, "Block edges: how much larger the luma steps across the latent's 16 × 16 block edges are than elsewhere, beyond the original's (`mirage_eval::block_edges`; 0: no block edges, 0.3: steps 30 % larger).\n");
    let _ = writeln!(s, "| quality | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | block edges | encode s (net/param/code) | decode s (net/param/code) | payload vs model estimate | payload vs table ideal |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for &q in qualities {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.quality == q).collect();
        let n = rs.len().max(1) as f64;
        let mean = |f: &dyn Fn(&Row) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
        let payload = mean(&|r| r.payload_bpp);
        let estimate = mean(&|r| r.estimated_bpp);
        let ideal = mean(&|r| r.table_bpp);
        let _ = writeln!(
            s,
            "| {q} | {:.4} | {:.2} | {:.4} | {:.2} | {:.3} | {:.3} ({:.3}/{:.3}/{:.3}) | {:.3} ({:.3}/{:.3}/{:.3}) | {:+.2}% | {:+.2}% |",
            mean(&|r| r.bpp),
            mean(&|r| r.psnr),
            mean(&|r| r.ms_ssim),
            mean(&|r| r.ssimulacra2),
            mean(&|r| r.block_edges),
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

/// A measure computed on a whole set of decoded images against the originals (the
/// realism measure: a distance between distributions, not a per-image score). Returns
/// named values.
pub type SetMeasure<'a> =
    &'a dyn Fn(&[image::RgbImage], &[image::RgbImage]) -> Result<Vec<(String, f64)>>;

pub struct DecoderBenchOptions {
    pub images: PathBuf,
    /// Each image is encoded once per target, at the largest file not above it.
    pub targets_bpp: Vec<f64>,
    /// The decodes of each file.
    pub columns: Vec<crate::comparison::Column>,
    pub out_dir: PathBuf,
}

/// `mirage bench decoders`: the same bitstreams decoded several ways (hallucination
/// weights), with fidelity (PSNR, MS-SSIM, SSIMULACRA2), the detail ratio (mean
/// |Laplacian| of the decode over that of the original: 1 means as much fine detail as
/// the original, whatever it is), grid marks and excess detail (texture added over the
/// MSE decode beyond the original's own), the set-level measures, and decode time.
pub fn run_decoders(
    codec: &Codec,
    add_ons: &AddOns,
    o: &DecoderBenchOptions,
    set_measures: &[SetMeasure],
) -> Result<String> {
    let paths = image_paths(&o.images)?;
    std::fs::create_dir_all(&o.out_dir)?;
    let originals: Vec<image::RgbImage> = paths
        .iter()
        .map(|p| Ok(read_image(p)?.image))
        .collect::<Result<_>>()?;
    let bar = progress::bar(
        (paths.len() * o.targets_bpp.len() * o.columns.len()) as u64,
        "decodes",
    );
    let mut csv = String::from(
        "image,target_bpp,decoder,bpp,psnr,ms_ssim,ssimulacra2,detail_ratio,grid_marks,excess_detail,decode_s\n",
    );
    let mut table = String::new();
    let _ = writeln!(table, "Mean over {} images; each image is encoded once per target (largest file at or under it) and every decoder decodes that same file. Detail ratio: mean |Laplacian| of the decode over the original's. Grid marks: the largest excess, over periods 2–16 pixels, of the grid-locked texture the decoder adds to the MSE decode over the original's own (RMS levels of the mean P×P pattern, `mirage_eval::grid_marks`; 0 for the MSE decode, and periodic marks raise it). Excess detail: the fine detail the decoder adds to the MSE decode beyond the original's own, per 16×16 cell (RMS Laplacian of luma in levels, `mirage_eval::excess_detail`; 0 for the MSE decode, and hatching of flat areas raises it). Decode time: wall-clock seconds per image, {} threads.\n", paths.len(), tch::get_num_threads());
    let mut header = "| target bpp | decoder | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | detail ratio | grid marks | excess detail | decode s |".to_string();
    let mut rule = "|---|---|---|---|---|---|---|---|---|---|".to_string();
    let mut measure_names: Vec<String> = vec![];
    // Warm-up: libtorch builds its convolution kernels on first use.
    if let Some(img) = originals.first() {
        let (bytes, _) = codec.compress(img, RateTarget::Quality(50.0))?;
        for c in &o.columns {
            c.decode(codec, add_ons, img, &bytes)?;
        }
    }
    let mut lines = vec![];
    for &target in &o.targets_bpp {
        let files: Vec<Vec<u8>> = originals
            .iter()
            .map(|img| Ok(codec.compress(img, RateTarget::Bpp(target))?.0))
            .collect::<Result<_>>()?;
        // The reference for the grid-marks and excess-detail measures: what the decoder
        // adds to this.
        let mse_decodes: Vec<image::RgbImage> = files
            .iter()
            .map(|bytes| Ok(codec.decompress(bytes)?.0))
            .collect::<Result<_>>()?;
        for column in &o.columns {
            let mut decoded = vec![];
            let mut sums = [0f64; 8];
            for (((path, img), bytes), mse) in
                paths.iter().zip(&originals).zip(&files).zip(&mse_decodes)
            {
                let start = Instant::now();
                let (out, file_bytes) = column.decode(codec, add_ons, img, bytes)?;
                let decode_s = start.elapsed().as_secs_f64();
                let values = [
                    file_bytes as f64 * 8.0 / (img.width() * img.height()) as f64,
                    metrics::psnr(img, &out)?,
                    metrics::ms_ssim(img, &out).unwrap_or(f64::NAN),
                    metrics::ssimulacra2(img, &out).unwrap_or(f64::NAN),
                    detail_ratio(img, &out),
                    GridMarks::measure(img, mse, &out).map_or(f64::NAN, |g| g.worst_excess()),
                    excess_detail(img, mse, &out).unwrap_or(f64::NAN),
                    decode_s,
                ];
                let _ = writeln!(
                    csv,
                    "{},{target},{},{:.5},{:.4},{:.5},{:.3},{:.4},{:.3},{:.3},{:.4}",
                    csv_field(&path.file_stem().unwrap_or_default().to_string_lossy()),
                    csv_field(&column.label()),
                    values[0],
                    values[1],
                    values[2],
                    values[3],
                    values[4],
                    values[5],
                    values[6],
                    values[7]
                );
                for (s, v) in sums.iter_mut().zip(values) {
                    *s += v;
                }
                decoded.push(out);
                bar.inc(1);
            }
            let n = paths.len() as f64;
            let mut line = format!(
                "| {target} | {} | {:.4} | {:.2} | {:.4} | {:.2} | {:.3} | {:.2} | {:.2} | {:.3} |",
                column.label(),
                sums[0] / n,
                sums[1] / n,
                sums[2] / n,
                sums[3] / n,
                sums[4] / n,
                sums[5] / n,
                sums[6] / n,
                sums[7] / n
            );
            for measure in set_measures {
                for (name, value) in bar.suspend(|| measure(&originals, &decoded))? {
                    if !measure_names.contains(&name) {
                        measure_names.push(name.clone());
                    }
                    let _ = write!(line, " {value:.3} |");
                }
            }
            lines.push(line);
        }
    }
    bar.finish_and_clear();
    for name in &measure_names {
        header += &format!(" {name} |");
        rule += "---|";
    }
    let _ = writeln!(table, "{header}\n{rule}");
    for line in lines {
        let _ = writeln!(table, "{line}");
    }
    std::fs::write(o.out_dir.join("decoders.csv"), &csv)?;
    std::fs::write(o.out_dir.join("decoders.md"), &table)?;
    Ok(table)
}

/// Mean |Laplacian| of the decode over that of the original (luma-free, all channels).
fn detail_ratio(original: &image::RgbImage, decoded: &image::RgbImage) -> f64 {
    fn detail(img: &image::RgbImage) -> f64 {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let p = img.as_raw();
        let at = |x: usize, y: usize, c: usize| p[(y * w + x) * 3 + c] as f64;
        let mut sum = 0.0;
        for y in 1..h.saturating_sub(1) {
            for x in 1..w.saturating_sub(1) {
                for c in 0..3 {
                    sum += (4.0 * at(x, y, c)
                        - at(x - 1, y, c)
                        - at(x + 1, y, c)
                        - at(x, y - 1, c)
                        - at(x, y + 1, c))
                    .abs();
                }
            }
        }
        sum
    }
    detail(decoded) / detail(original).max(1.0)
}

/// `mirage bench predictor`: the realism predictor's cost at the encoder, per image
/// (prediction time with the current thread count) and in the file (the map's bytes,
/// section length included, against the whole file at each target).
pub fn run_predictor(
    codec: &Codec,
    add_ons: &AddOns,
    images: &Path,
    targets_bpp: &[f64],
) -> Result<String> {
    let predictor = add_ons.predictor()?;
    let paths = image_paths(images)?;
    let originals: Vec<image::RgbImage> = paths
        .iter()
        .map(|p| Ok(read_image(p)?.image))
        .collect::<Result<_>>()?;
    let bar = progress::bar((paths.len() * targets_bpp.len()) as u64, "predictions");
    // Warm-up: libtorch builds its kernels on first use.
    if let Some(img) = originals.first() {
        predictor.predict(img, 100)?;
    }
    let mut table = format!(
        "Realism predictor on {} images, {} threads. Map: bytes of the map section plus its 4-byte length (0 when the map is uniform and only the header weight is stored).\n\n| target bpp | predict ms (mean) | predict ms (max) | mean w | uniform maps | map bytes (mean) | file bytes (mean) | map share of file |\n|---|---|---|---|---|---|---|---|\n",
        paths.len(),
        tch::get_num_threads()
    );
    for &target in targets_bpp {
        let (mut ms, mut ms_max, mut w, mut uniform, mut map_bytes, mut file_bytes) =
            (0.0, 0f64, 0.0, 0, 0.0, 0.0);
        for img in &originals {
            let (bytes, report) = codec.compress(img, RateTarget::Bpp(target))?;
            let start = Instant::now();
            let map = predictor.predict(img, report.rate)?;
            let t = start.elapsed().as_secs_f64() * 1000.0;
            let with_map = crate::codec::attach_realism_map(&bytes, &map)?;
            ms += t;
            ms_max = ms_max.max(t);
            w += map.mean_weight() as f64;
            uniform += map.uniform().is_some() as usize;
            map_bytes += (with_map.len() - bytes.len()) as f64;
            file_bytes += with_map.len() as f64;
            bar.inc(1);
        }
        let n = originals.len().max(1) as f64;
        let _ = writeln!(
            table,
            "| {target} | {:.1} | {ms_max:.1} | {:.3} | {uniform} | {:.1} | {:.0} | {:.2} % |",
            ms / n,
            w / n,
            map_bytes / n,
            file_bytes / n,
            100.0 * map_bytes / file_bytes.max(1.0)
        );
    }
    bar.finish_and_clear();
    // Where the weight goes: the regions of `mirage bench crops`, at the first target.
    let regions: Vec<_> = crate::comparison::KODAK_REGIONS
        .iter()
        .filter_map(|r| {
            let i = paths
                .iter()
                .position(|p| p.file_stem().is_some_and(|s| s == r.image))?;
            Some((r, &originals[i]))
        })
        .collect();
    if let (false, Some(&target)) = (regions.is_empty(), targets_bpp.first()) {
        let _ = writeln!(
            table,
            "\nPredicted weight on the crop regions at {target} bpp (mean of the cells each region touches):\n\n| image | region | content | w |\n|---|---|---|---|"
        );
        for (r, img) in regions {
            let (_, report) = codec.compress(img, RateTarget::Bpp(target))?;
            let map = predictor.predict(img, report.rate)?;
            let w = crate::conha::region_weight(&map, r.x, r.y, r.size);
            let _ = writeln!(
                table,
                "| {} | {}+{}, {}² | {} | {w:.2} |",
                r.image, r.x, r.y, r.size, r.content
            );
        }
    }
    Ok(table)
}
