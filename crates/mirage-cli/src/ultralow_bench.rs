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
use mirage::ultralow::{CaptionUse, POINT_COUNT};
use mirage_eval::codecs::{ClassicCodec, ClassicKind, CodecUnderTest};
use mirage_eval::rate_match::RateMatcher;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct UltralowBenchOptions {
    pub images: PathBuf,
    pub out_dir: PathBuf,
    /// Images (file stems) shown full size in the side-by-side sheet.
    pub sheet_images: Vec<String>,
    /// Realism weights to decode each file at; the sheets show the first.
    pub weights: Vec<f32>,
    /// Captions by file name (`--captions`): each Mirage row then comes twice, with the
    /// image's caption in the file (and counted in its bytes) and without.
    pub captions: Option<HashMap<String, String>>,
}

/// Reads a caption table: lines of `file name<TAB>caption`; `#` starts a comment.
pub fn read_caption_table(path: &Path) -> Result<HashMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut table = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, caption)) = line.split_once('\t') else {
            anyhow::bail!(
                "{}:{}: expected `file name<TAB>caption`",
                path.display(),
                n + 1
            );
        };
        table.insert(name.trim().to_string(), caption.trim().to_string());
    }
    Ok(table)
}

/// One row of the table: how each image was coded and decoded.
#[derive(Clone, Copy, Debug)]
enum Row {
    /// The ultra-low mode at a point, decoded at a realism weight, with the image's
    /// caption in the file or without.
    Mirage {
        point: usize,
        weight: f32,
        caption: bool,
    },
    /// A classic codec at its lowest-rate setting.
    ClassicLowest(ClassicKind),
    /// A classic codec at the largest file no bigger than Mirage's at `point` (or its
    /// lowest rate when it cannot go that low; the table says how often).
    ClassicMatched(ClassicKind, usize),
}

impl Row {
    fn label(&self) -> String {
        match *self {
            Row::Mirage {
                point,
                weight,
                caption,
            } => format!(
                "Mirage ultra-low p{point}, w = {weight}{}",
                if caption { ", caption" } else { "" }
            ),
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

fn rows(weights: &[f32], captions: bool) -> Vec<Row> {
    let mut rows = vec![];
    for point in 0..POINT_COUNT {
        for &weight in weights {
            for caption in [false, true] {
                if caption && !captions {
                    continue;
                }
                rows.push(Row::Mirage {
                    point,
                    weight,
                    caption,
                });
            }
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
    let ultralow = add_ons.ultralow(codec)?;
    let paths = crate::bench::image_paths(&o.images)?;
    std::fs::create_dir_all(&o.out_dir)?;
    let originals: Vec<RgbImage> = paths
        .iter()
        .map(|p| Ok(read_image(p)?.image))
        .collect::<Result<_>>()?;
    for kind in [JXL_R8, ClassicKind::Avif] {
        ClassicCodec::new(kind).check_available()?;
    }
    // Each image's ultra-low files, one per point: without a caption, and (with
    // `--captions`) with the image's caption; an image the table does not name gets
    // the plain file in both rows.
    let caption_of = |path: &PathBuf| {
        let name = path.file_name()?.to_string_lossy().to_string();
        o.captions.as_ref()?.get(&name).cloned()
    };
    let captioned_images = paths.iter().filter(|p| caption_of(p).is_some()).count();
    let files: Vec<[Vec<Vec<u8>>; 2]> = paths
        .iter()
        .zip(&originals)
        .map(|(path, img)| {
            let caption = caption_of(path);
            let code = |caption: Option<&str>| -> Result<Vec<Vec<u8>>> {
                (0..POINT_COUNT)
                    .map(|p| Ok(ultralow.compress(codec, img, p, caption)?.0))
                    .collect()
            };
            let plain = code(None)?;
            let captioned = match &caption {
                Some(text) => code(Some(text))?,
                None => plain.clone(),
            };
            Ok([plain, captioned])
        })
        .collect::<Result<_>>()?;
    // Warm-up: libtorch builds its kernels on first use.
    if let Some(bytes) = files.last().and_then(|f| f[1].first()) {
        add_ons.decompress_any(codec, bytes, Realism::Weight(1.0), CaptionUse::FromFile)?;
    }
    let rows = rows(&o.weights, o.captions.is_some());
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
                Row::Mirage {
                    point,
                    weight,
                    caption,
                } => {
                    let file = &files[caption as usize][point];
                    let start = Instant::now();
                    let (out, _, _) = add_ons.decompress_any(
                        codec,
                        file,
                        Realism::Weight(weight),
                        CaptionUse::FromFile,
                    )?;
                    (out, file.len(), start.elapsed().as_secs_f64(), true)
                }
                Row::ClassicLowest(kind) | Row::ClassicMatched(kind, _) => {
                    let classic = ClassicCodec::new(kind);
                    let target = match *row {
                        Row::ClassicMatched(_, point) => {
                            files[0][point].len() as f64 * 8.0 / pixels
                        }
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
                "{},\"{}\",{bytes},{:.5},{:.3},{:.3},{:.3},{reached}",
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
    let caption_note = match &o.captions {
        None => "Mirage's files hold the header and the index grid (no caption)".to_string(),
        Some(_) => format!(
            "Mirage's files hold the header and the index grid; \"caption\" rows also hold the image's caption ({captioned_images} of the images have one), counted in their bytes. \
             The grid decoder {} captions",
            if ultralow.reads_captions { "reads" } else { "ignores" }
        ),
    };
    let mut table = format!(
        "Mean over {} images. {caption_note}; the classic codecs' files are whole files too. \
         \"≤ bytes of pN\": the largest file no bigger than Mirage's (without caption) at point N, per image. Decode: wall-clock seconds per image, {} threads.\n\n",
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

    // Full-image sheets: original, p0, p1, p2 (first weight; with the caption when
    // there are captions), JPEG XL r8 lowest, AVIF lowest.
    let row_of = |wanted: &dyn Fn(&Row) -> bool| rows.iter().position(wanted).expect("a row");
    let mut shown: Vec<usize> = (0..POINT_COUNT)
        .map(|p| {
            row_of(&|r| {
                matches!(*r, Row::Mirage { point, weight, caption }
                    if point == p && weight == o.weights[0] && caption == o.captions.is_some())
            })
        })
        .collect();
    shown.push(row_of(&|r| matches!(r, Row::ClassicLowest(JXL_R8))));
    shown.push(row_of(&|r| {
        matches!(r, Row::ClassicLowest(ClassicKind::Avif))
    }));
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
