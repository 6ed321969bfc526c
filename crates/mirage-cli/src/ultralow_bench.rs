//! `mirage bench ultralow`: the ultra-low mode on Kodak at each operating point, beside
//! the classic codecs at the lowest rates they can reach (JPEG XL with 8× resampling,
//! AVIF at its lowest setting), with fidelity (PSNR, SSIMULACRA2), the set-level
//! realism and naturalness measures, and decode time; plus full-image side-by-sides.

use crate::bench::SetMeasure;
use crate::codec::Codec;
use crate::image_io::read_image;
use crate::{metrics, progress};
use anyhow::{Context, Result};
use image::RgbImage;
use mirage::decoders::{AddOns, Realism};
use mirage::ultralow::POINT_COUNT;
use mirage_eval::codecs::{ClassicCodec, ClassicKind, CodecUnderTest};
use mirage_eval::rate_match::RateMatcher;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

pub struct UltralowBenchOptions {
    pub images: PathBuf,
    pub out_dir: PathBuf,
    /// Images (file stems) shown full size in the side-by-side sheet.
    pub sheet_images: Vec<String>,
    /// Realism weights to decode each file at; the sheets show the first.
    pub weights: Vec<f32>,
}

/// One row of the table: how each image was coded and decoded.
#[derive(Clone, Copy, Debug)]
enum Row {
    /// The ultra-low mode at a point, decoded at a realism weight.
    Mirage { point: usize, weight: f32 },
    /// A classic codec at its lowest-rate setting.
    ClassicLowest(ClassicKind),
    /// A classic codec at the largest file no bigger than Mirage's at `point` (or its
    /// lowest rate when it cannot go that low; the table says how often).
    ClassicMatched(ClassicKind, usize),
}

impl Row {
    fn label(&self) -> String {
        match *self {
            Row::Mirage { point, weight } => format!("Mirage ultra-low p{point}, w = {weight}"),
            Row::ClassicLowest(kind) => {
                format!("{} lowest setting", ClassicCodec::new(kind).name())
            }
            Row::ClassicMatched(kind, point) => {
                format!("{} ≤ bytes of p{point}", ClassicCodec::new(kind).name())
            }
        }
    }
}

const JXL_R8: ClassicKind = ClassicKind::JpegXl {
    resampling: Some(8),
};

fn rows(weights: &[f32]) -> Vec<Row> {
    let mut rows = vec![];
    for point in 0..POINT_COUNT {
        for &weight in weights {
            rows.push(Row::Mirage { point, weight });
        }
    }
    rows.push(Row::ClassicLowest(JXL_R8));
    rows.push(Row::ClassicMatched(JXL_R8, 1));
    rows.push(Row::ClassicMatched(JXL_R8, 2));
    rows.push(Row::ClassicLowest(ClassicKind::Avif));
    rows.push(Row::ClassicMatched(ClassicKind::Avif, 2));
    rows
}

pub fn run_ultralow(
    codec: &Codec,
    add_ons: &AddOns,
    o: &UltralowBenchOptions,
    set_measures: &[SetMeasure],
) -> Result<String> {
    let ultralow = add_ons.ultralow()?;
    let paths = crate::bench::image_paths(&o.images)?;
    std::fs::create_dir_all(&o.out_dir)?;
    let originals: Vec<RgbImage> = paths
        .iter()
        .map(|p| Ok(read_image(p)?.image))
        .collect::<Result<_>>()?;
    for kind in [JXL_R8, ClassicKind::Avif] {
        ClassicCodec::new(kind).check_available()?;
    }
    // Each image's ultra-low files, one per point (no caption: Kodak has none).
    let files: Vec<Vec<Vec<u8>>> = originals
        .iter()
        .map(|img| {
            (0..POINT_COUNT)
                .map(|p| Ok(ultralow.compress(codec, img, p, None)?.0))
                .collect::<Result<_>>()
        })
        .collect::<Result<_>>()?;
    // Warm-up: libtorch builds its kernels on first use.
    if let Some(bytes) = files.first().and_then(|f| f.first()) {
        add_ons.decompress_any(codec, bytes, Realism::Weight(1.0))?;
    }
    let rows = rows(&o.weights);
    let bar = progress::bar((rows.len() * originals.len()) as u64, "decodes");
    let mut csv = String::from("image,row,bytes,bpp,psnr,ssimulacra2,decode_s,reached\n");
    let mut lines = vec![];
    let mut names: Vec<String> = vec![];
    let mut decodes_by_row: Vec<Vec<RgbImage>> = vec![];
    for row in &rows {
        let mut decoded = vec![];
        let mut sums = [0f64; 4];
        let mut unreached = 0;
        for ((path, img), files) in paths.iter().zip(&originals).zip(&files) {
            let pixels = (img.width() * img.height()) as f64;
            let (out, bytes, decode_s, reached) = match *row {
                Row::Mirage { point, weight } => {
                    let start = Instant::now();
                    let (out, _, _) =
                        add_ons.decompress_any(codec, &files[point], Realism::Weight(weight))?;
                    (out, files[point].len(), start.elapsed().as_secs_f64(), true)
                }
                Row::ClassicLowest(kind) | Row::ClassicMatched(kind, _) => {
                    let classic = ClassicCodec::new(kind);
                    let target = match *row {
                        Row::ClassicMatched(_, point) => files[point].len() as f64 * 8.0 / pixels,
                        _ => 1e-6,
                    };
                    let matched = RateMatcher::new(&classic, img)
                        .with_tolerance(0.0)
                        .encode_at_bpp(target)?;
                    let start = Instant::now();
                    let out = classic.decode(&matched.encoding.bytes)?;
                    let reached =
                        matches!(row, Row::ClassicLowest(_)) || matched.reach.is_reached();
                    let bytes = matched.encoding.bytes.len();
                    (out, bytes, start.elapsed().as_secs_f64(), reached)
                }
            };
            if !reached {
                unreached += 1;
            }
            let values = [
                bytes as f64 * 8.0 / pixels,
                metrics::psnr(img, &out)?,
                metrics::ssimulacra2(img, &out).unwrap_or(f64::NAN),
                decode_s,
            ];
            let _ = writeln!(
                csv,
                "{},{},{bytes},{:.5},{:.3},{:.3},{:.3},{reached}",
                path.file_stem().unwrap_or_default().to_string_lossy(),
                row.label(),
                values[0],
                values[1],
                values[2],
                values[3]
            );
            for (s, v) in sums.iter_mut().zip(values) {
                *s += v;
            }
            decoded.push(out);
            bar.inc(1);
        }
        let n = originals.len() as f64;
        let note = if unreached > 0 {
            format!(" (lowest rate on {unreached})")
        } else {
            String::new()
        };
        let mut line = format!(
            "| {}{note} | {:.4} | {:.2} | {:.2} | {:.3} |",
            row.label(),
            sums[0] / n,
            sums[1] / n,
            sums[2] / n,
            sums[3] / n
        );
        for measure in set_measures {
            for (name, value) in bar.suspend(|| measure(&originals, &decoded))? {
                if !names.contains(&name) {
                    names.push(name.clone());
                }
                let _ = write!(line, " {value:.3} |");
            }
        }
        lines.push(line);
        decodes_by_row.push(decoded);
    }
    bar.finish_and_clear();
    let mut table = format!(
        "Mean over {} images. Mirage's files hold the header and the index grid (no caption); the classic codecs' files are whole files too. \
         \"≤ bytes of pN\": the largest file no bigger than Mirage's at point N, per image. Decode: wall-clock seconds per image, {} threads.\n\n",
        originals.len(),
        tch::get_num_threads()
    );
    let mut header = "| coding | bpp | PSNR dB | SSIMULACRA2 | decode s |".to_string();
    let mut rule = "|---|---|---|---|---|".to_string();
    for name in &names {
        header += &format!(" {name} |");
        rule += "---|";
    }
    let _ = writeln!(table, "{header}\n{rule}");
    for line in lines {
        let _ = writeln!(table, "{line}");
    }
    std::fs::write(o.out_dir.join("ultralow.csv"), &csv)?;
    std::fs::write(o.out_dir.join("ultralow.md"), &table)?;

    // Full-image sheets: original, p0, p1, p2 (w = 1), JPEG XL r8 lowest, AVIF lowest.
    let nw = o.weights.len();
    let shown = [0, nw, 2 * nw, 3 * nw, 3 * nw + 3];
    for stem in &o.sheet_images {
        let Some(i) = paths
            .iter()
            .position(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == *stem))
        else {
            continue;
        };
        let mut panels = vec![originals[i].clone()];
        panels.extend(shown.iter().map(|&r| decodes_by_row[r][i].clone()));
        let sheet = sheet(&panels);
        let out = o.out_dir.join(format!("ultralow-{stem}.png"));
        sheet
            .save(&out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(table)
}

/// Panels side by side in two rows of three, 8 px apart on white.
fn sheet(panels: &[RgbImage]) -> RgbImage {
    let (w, h) = (panels[0].width(), panels[0].height());
    let gap = 8;
    let cols = 3;
    let rows = panels.len().div_ceil(cols) as u32;
    let mut out = RgbImage::from_pixel(
        cols as u32 * w + (cols as u32 - 1) * gap,
        rows * h + (rows - 1) * gap,
        image::Rgb([255, 255, 255]),
    );
    for (k, p) in panels.iter().enumerate() {
        let (x, y) = ((k % cols) as u32 * (w + gap), (k / cols) as u32 * (h + gap));
        image::imageops::replace(&mut out, p, x as i64, y as i64);
    }
    out
}

/// The row labels of the sheets, for captions.
pub fn sheet_caption() -> &'static str {
    "top: original, ultra-low p0, p1; bottom: p2 (all at the first weight), JPEG XL --resampling 8 at its lowest setting, AVIF at its lowest setting"
}
