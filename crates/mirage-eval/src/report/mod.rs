//! Outputs of an evaluation run: CSV (every measurement), a second CSV of the set measures
//! (MFD/MKD: one value per codec and target, not per image), a Markdown summary (means,
//! set measures, unreachable targets, BD-rates, caveats), an SVG rate–quality plot and an
//! HTML page of side-by-side crops. [`FixedReport`] is the smaller output of runs at fixed
//! codec settings (`mirage eval --fixed`).
//!
//! Rows whose target was unreachable are kept everywhere they can be: in the CSV with
//! `reached=false`, listed by name in the Markdown, and marked on their crops. They are left
//! out of means, curves and BD-rates, because there they would be compared at a rate that is
//! not the target.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::RgbImage;

use crate::bd_rate::{bd_rate_checked, BdRateError, RatePoint};
use crate::rate_match::Reach;

mod fixed;
mod markdown;
mod pictures;

pub use fixed::FixedReport;

/// One codec on one image at one target rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Image file name (without directory).
    pub image: String,
    pub codec: String,
    pub target_bpp: f64,
    pub setting: f64,
    /// The setting as the codec prints it, e.g. `q40`.
    pub setting_label: String,
    pub bytes: usize,
    pub bpp: f64,
    pub psnr: f64,
    pub ms_ssim: f64,
    pub ssimulacra2: f64,
    /// Butteraugli max-norm and 3-norm, if computed.
    pub butteraugli: Option<f64>,
    pub butteraugli_3norm: Option<f64>,
    /// Steps along 16 × 16 block edges beyond the original's
    /// ([`crate::block_edges::block_edge_excess`]; NaN where undefined).
    pub block_edges: f64,
    pub encode_s: f64,
    pub decode_s: f64,
    /// Image megapixels; with the times gives MP/s.
    pub megapixels: f64,
    pub encode_peak_rss_kib: Option<u64>,
    pub decode_peak_rss_kib: Option<u64>,
    pub reach: Reach,
    /// False if the bisection budget ran out (the file is within target but maybe not the
    /// largest such).
    pub converged: bool,
    /// Encoder runs the rate match needed for this target (cache hits excluded).
    pub probes: usize,
}

impl Row {
    pub fn encode_mps(&self) -> f64 {
        self.megapixels / self.encode_s
    }
    pub fn decode_mps(&self) -> f64 {
        self.megapixels / self.decode_s
    }
}

/// The region cropped for the side-by-side page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl CropRegion {
    /// A `size`×`size` square centred on `centre` (default: the image centre), clamped to fit.
    pub fn square(image_w: u32, image_h: u32, size: u32, centre: Option<(u32, u32)>) -> Self {
        let (width, height) = (size.min(image_w), size.min(image_h));
        let (cx, cy) = centre.unwrap_or((image_w / 2, image_h / 2));
        let x = cx.saturating_sub(width / 2).min(image_w - width);
        let y = cy.saturating_sub(height / 2).min(image_h - height);
        CropRegion {
            x,
            y,
            width,
            height,
        }
    }

    pub fn cut(&self, img: &RgbImage) -> RgbImage {
        image::imageops::crop_imm(img, self.x, self.y, self.width, self.height).to_image()
    }
}

/// A crop of the original (`codec == None`) or of a decoded image at a target.
#[derive(Clone, Debug, PartialEq)]
pub struct Crop {
    pub image: String,
    pub codec: Option<String>,
    pub target_bpp: Option<f64>,
    pub region: CropRegion,
    pub pixels: RgbImage,
}

/// A set measure as the report shows it (from [`crate::SetMeasure`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SetMeasureInfo {
    pub title: String,
    pub description: String,
    /// Names of its values; in [`SetRow::values`] they follow those of the measures before.
    pub columns: Vec<String>,
}

/// The set measures of one codec at one target, over the images that reached the target
/// (their decodes against the same originals).
#[derive(Clone, Debug, PartialEq)]
pub struct SetRow {
    pub codec: String,
    pub target_bpp: f64,
    /// Images evaluated, and how many reached the target and so are in the set.
    pub images: usize,
    pub reached: usize,
    /// Mean bpp of the images in the set.
    pub bpp: f64,
    /// One value per column of every measure, in order; `None` where it could not be
    /// computed (the reason is in `notes`).
    pub values: Vec<Option<f64>>,
    pub notes: Vec<String>,
}

impl SetRow {
    /// Every image reached the target, so the set is comparable with other codecs' sets.
    pub fn complete(&self) -> bool {
        self.reached == self.images && self.images > 0
    }
}

/// Everything an evaluation run measured, ready to be written out.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub crops: Vec<Crop>,
    /// `(name, description)` of each codec, in run order.
    pub codecs: Vec<(String, String)>,
    pub targets_bpp: Vec<f64>,
    pub images: Vec<String>,
    /// Codec the BD-rates are computed against.
    pub anchor: Option<String>,
    /// Set measures (MFD/MKD) and their values per codec and target.
    pub set_measures: Vec<SetMeasureInfo>,
    pub set_rows: Vec<SetRow>,
    /// Images evaluated at once (speeds were measured with this many workers busy).
    pub workers: usize,
    /// Where the time went, per codec in run order.
    pub stages: Vec<StageSeconds>,
    /// Time spent on the set measures' features of the originals.
    pub original_features_s: f64,
    /// Wall time of the whole run (0 if not measured).
    pub wall_s: f64,
    /// Relative rate tolerance of the search (0: the largest file on the grid).
    pub rate_tolerance: f64,
}

/// Time one codec's evaluation took, by stage: seconds summed over images and targets, as
/// the worker threads saw them (so with several workers the sum exceeds the wall time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageSeconds {
    pub codec: String,
    /// Every encoder run of the rate search, not only the file kept.
    pub rate_search: f64,
    pub decode: f64,
    /// PSNR, MS-SSIM and SSIMULACRA2, computed in the worker while butteraugli runs.
    pub fidelity: f64,
    /// The butteraugli process, in parallel with `fidelity`.
    pub butteraugli: f64,
    /// The set measures' features of the decodes (realism extractor).
    pub realism: f64,
}

impl StageSeconds {
    pub fn add(&mut self, other: &StageSeconds) {
        self.rate_search += other.rate_search;
        self.decode += other.decode;
        self.fidelity += other.fidelity;
        self.butteraugli += other.butteraugli;
        self.realism += other.realism;
    }

    /// The worker's time: butteraugli overlaps `fidelity`, so only the longer one counts.
    pub fn worker_total(&self) -> f64 {
        self.rate_search + self.decode + self.fidelity.max(self.butteraugli) + self.realism
    }
}

/// BD-rate of one codec against the anchor for one metric, computed per image and then
/// summarised over the images.
#[derive(Clone, Debug, PartialEq)]
pub struct BdRateSummary {
    /// Per image (in report order): the BD-rate in percent, or why there is none.
    pub per_image: Vec<(String, Result<f64, BdRateError>)>,
}

impl BdRateSummary {
    /// The BD-rates that could be computed.
    pub fn values(&self) -> Vec<f64> {
        self.per_image
            .iter()
            .filter_map(|(_, v)| v.as_ref().ok().copied())
            .collect()
    }

    pub fn mean(&self) -> Option<f64> {
        let v = self.values();
        (!v.is_empty()).then(|| mean(v.into_iter()))
    }

    pub fn median(&self) -> Option<f64> {
        let mut v = self.values();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }
}

/// Mean of one codec at one target over the images that reached it.
#[derive(Clone, Debug, PartialEq)]
pub struct MeanPoint {
    pub target_bpp: f64,
    pub images: usize,
    pub reached: usize,
    pub bpp: f64,
    pub psnr: f64,
    pub ms_ssim: f64,
    pub ssimulacra2: f64,
    pub butteraugli: Option<f64>,
    pub butteraugli_3norm: Option<f64>,
    pub block_edges: f64,
    /// Total megapixels / total seconds over the reached images.
    pub encode_mps: f64,
    pub decode_mps: f64,
    pub encode_peak_mib: Option<f64>,
    pub decode_peak_mib: Option<f64>,
}

impl MeanPoint {
    /// All images reached the target, so the mean is over the same images as other codecs'.
    pub fn complete(&self) -> bool {
        self.reached == self.images && self.images > 0
    }
}

/// A metric a BD-rate and plot can use, oriented so that higher is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    Psnr,
    MsSsim,
    Ssimulacra2,
    Butteraugli,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::Psnr,
        Metric::MsSsim,
        Metric::Ssimulacra2,
        Metric::Butteraugli,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            Metric::Psnr => "PSNR",
            Metric::MsSsim => "MS-SSIM",
            Metric::Ssimulacra2 => "SSIMULACRA2",
            Metric::Butteraugli => "butteraugli (max-norm)",
        }
    }

    /// One row's value with "higher is better" orientation (butteraugli is negated);
    /// `None` if missing or not finite (an identical decode has infinite PSNR).
    fn row_quality(&self, r: &Row) -> Option<f64> {
        let q = match self {
            Metric::Psnr => Some(r.psnr),
            Metric::MsSsim => Some(r.ms_ssim),
            Metric::Ssimulacra2 => Some(r.ssimulacra2),
            Metric::Butteraugli => r.butteraugli.map(|b| -b),
        };
        q.filter(|q| q.is_finite())
    }

    /// The metric with "higher is better" orientation (butteraugli is negated).
    fn quality(&self, p: &MeanPoint) -> Option<f64> {
        match self {
            Metric::Psnr => Some(p.psnr),
            Metric::MsSsim => Some(p.ms_ssim),
            Metric::Ssimulacra2 => Some(p.ssimulacra2),
            Metric::Butteraugli => p.butteraugli.map(|b| -b),
        }
    }
}

/// Means of `all` (one codec at one target or setting) over the rows that reached their
/// target; `None` if there are no rows.
fn mean_point(target: f64, all: &[&Row]) -> Option<MeanPoint> {
    let ok: Vec<&Row> = all
        .iter()
        .copied()
        .filter(|r| r.reach.is_reached())
        .collect();
    if ok.is_empty() {
        return (!all.is_empty()).then_some(MeanPoint {
            target_bpp: target,
            images: all.len(),
            reached: 0,
            bpp: f64::NAN,
            psnr: f64::NAN,
            ms_ssim: f64::NAN,
            ssimulacra2: f64::NAN,
            butteraugli: None,
            butteraugli_3norm: None,
            block_edges: f64::NAN,
            encode_mps: f64::NAN,
            decode_mps: f64::NAN,
            encode_peak_mib: None,
            decode_peak_mib: None,
        });
    }
    let optional_mean = |f: fn(&Row) -> Option<f64>| {
        let v: Option<Vec<f64>> = ok.iter().map(|r| f(r)).collect();
        v.map(|v| mean(v.into_iter()))
    };
    let peak = |f: fn(&Row) -> Option<u64>| ok.iter().filter_map(|r| f(r)).max().map(kib_to_mib);
    let mp: f64 = ok.iter().map(|r| r.megapixels).sum();
    Some(MeanPoint {
        target_bpp: target,
        images: all.len(),
        reached: ok.len(),
        bpp: mean(ok.iter().map(|r| r.bpp)),
        psnr: mean(ok.iter().map(|r| r.psnr)),
        ms_ssim: mean(ok.iter().map(|r| r.ms_ssim)),
        ssimulacra2: mean(ok.iter().map(|r| r.ssimulacra2)),
        butteraugli: optional_mean(|r| r.butteraugli),
        butteraugli_3norm: optional_mean(|r| r.butteraugli_3norm),
        block_edges: mean(ok.iter().map(|r| r.block_edges)),
        encode_mps: mp / ok.iter().map(|r| r.encode_s).sum::<f64>(),
        decode_mps: mp / ok.iter().map(|r| r.decode_s).sum::<f64>(),
        encode_peak_mib: peak(|r| r.encode_peak_rss_kib),
        decode_peak_mib: peak(|r| r.decode_peak_rss_kib),
    })
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n as f64
}

/// One row of the time table.
fn stage_row(codec: &str, s: &StageSeconds) -> String {
    format!(
        "| {codec} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        s.rate_search,
        s.decode,
        s.fidelity,
        s.butteraugli,
        s.realism,
        s.worker_total()
    )
}

fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    fn codec_names(&self) -> Vec<String> {
        self.codecs.iter().map(|(n, _)| n.clone()).collect()
    }

    fn rows_for<'a>(&'a self, codec: &'a str, target: f64) -> impl Iterator<Item = &'a Row> {
        self.rows
            .iter()
            .filter(move |r| r.codec == codec && r.target_bpp == target)
    }

    /// Per-target means of one codec, over the images that reached each target.
    pub fn mean_curve(&self, codec: &str) -> Vec<MeanPoint> {
        self.targets_bpp
            .iter()
            .filter_map(|&target| {
                let all: Vec<&Row> = self.rows_for(codec, target).collect();
                mean_point(target, &all)
            })
            .collect()
    }

    /// Points of the curve used for plots and BD-rates: complete targets only.
    fn curve_points(&self, codec: &str, metric: Metric) -> Vec<RatePoint> {
        self.mean_curve(codec)
            .iter()
            .filter(|p| p.complete())
            .filter_map(|p| metric.quality(p).map(|q| RatePoint::new(p.bpp, q)))
            .collect()
    }

    /// One codec's rate–quality points on one image: every distinct file the searches kept,
    /// reached or not (a file that missed its target is still a true point of the codec's
    /// curve), once each even when several targets ended on it.
    fn image_points(&self, codec: &str, image: &str, metric: Metric) -> Vec<RatePoint> {
        let mut seen = BTreeSet::new();
        self.rows
            .iter()
            .filter(|r| r.codec == codec && r.image == image)
            .filter(|r| seen.insert(r.setting.to_bits()))
            .filter_map(|r| metric.row_quality(r).map(|q| RatePoint::new(r.bpp, q)))
            .collect()
    }

    /// BD-rate of `codec` against `anchor` for `metric`, image by image (Bjøntegaard on each
    /// image's own points; see [`Report::image_points`]).
    ///
    /// Per image rather than on curves of means: a mean over images at a target is only
    /// comparable when every image reached it, which at the lowest and highest targets
    /// leaves most codecs with fewer than the 4 points a curve needs.
    pub fn bd_rate_summary(&self, anchor: &str, codec: &str, metric: Metric) -> BdRateSummary {
        BdRateSummary {
            per_image: self
                .images
                .iter()
                .map(|image| {
                    let value = bd_rate_checked(
                        &self.image_points(anchor, image, metric),
                        &self.image_points(codec, image, metric),
                    );
                    (image.clone(), value)
                })
                .collect(),
        }
    }

    /// Every per-image BD-rate as CSV: anchor, codec, metric, image, value (empty, with the
    /// reason, when there is none).
    pub fn bd_rate_csv(&self) -> String {
        let mut out = String::from("anchor,codec,metric,image,bd_rate_percent,reason\n");
        let Some(anchor) = &self.anchor else {
            return out;
        };
        for codec in self.codec_names().iter().filter(|c| *c != anchor) {
            for metric in Metric::ALL {
                for (image, value) in self.bd_rate_summary(anchor, codec, metric).per_image {
                    let (value, reason) = match value {
                        Ok(v) => (format!("{v:.4}"), String::new()),
                        Err(e) => (String::new(), e.to_string()),
                    };
                    let _ = writeln!(
                        out,
                        "{},{},{},{},{value},{}",
                        csv_field(anchor),
                        csv_field(codec),
                        csv_field(metric.label()),
                        csv_field(&image),
                        csv_field(&reason)
                    );
                }
            }
        }
        out
    }

    /// All rows as CSV, one line per (image, codec, target). Missing values are empty.
    pub fn csv(&self) -> String {
        rows_csv(&self.rows)
    }

    /// All set columns, in [`SetRow::values`] order.
    pub fn set_columns(&self) -> Vec<String> {
        self.set_measures
            .iter()
            .flat_map(|m| m.columns.iter().cloned())
            .collect()
    }

    /// The set measures as CSV, one line per (codec, target); empty cells where a value
    /// could not be computed. `reached < images` marks a set missing some images.
    pub fn set_csv(&self) -> String {
        let mut out = String::from("codec,target_bpp,images,reached,bpp");
        for column in self.set_columns() {
            out.push(',');
            out.push_str(&csv_field(&column));
        }
        out.push_str(",notes\n");
        for r in &self.set_rows {
            // No image in the set: no mean bpp, an empty field like the missing values.
            let bpp = if r.reached > 0 {
                format!("{:.6}", r.bpp)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "{},{},{},{},{bpp}",
                csv_field(&r.codec),
                r.target_bpp,
                r.images,
                r.reached,
            );
            for v in &r.values {
                out.push(',');
                if let Some(v) = v {
                    let _ = write!(out, "{v:.6}");
                }
            }
            let _ = writeln!(out, ",{}", csv_field(&r.notes.join("; ")));
        }
        out
    }

    /// Values of one set column for one codec, over complete sets: `(mean bpp, value)`.
    fn set_curve(&self, codec: &str, column: usize) -> Vec<(f64, f64)> {
        self.set_rows
            .iter()
            .filter(|r| r.codec == codec && r.complete())
            .filter_map(|r| r.values.get(column).copied().flatten().map(|v| (r.bpp, v)))
            .collect()
    }

    /// Writes everything into `dir`: `results.csv`, `summary.md`, `set_measures.csv` (if
    /// there are set measures), `rate_quality.svg`, `report.html` and `crops/`. Returns the
    /// paths written.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        };
        let mut written = vec![
            write("results.csv", self.csv())?,
            write("summary.md", self.markdown())?,
        ];
        let mut links = vec![("results.csv", "CSV"), ("summary.md", "summary")];
        if self.anchor.is_some() {
            written.push(write("bd_rates.csv", self.bd_rate_csv())?);
            links.push(("bd_rates.csv", "BD-rates per image"));
        }
        if !self.set_measures.is_empty() {
            written.push(write("set_measures.csv", self.set_csv())?);
            links.push(("set_measures.csv", "MFD/MKD CSV"));
        }
        let svg = dir.join("rate_quality.svg");
        self.plot_svg(&svg)?;
        written.push(svg);
        links.push(("rate_quality.svg", "plot"));
        written.push(self.write_html(dir, &links)?);
        Ok(written)
    }
}

/// Rows as CSV, one line per row; missing values are empty, and so is `target_bpp` for
/// rows at a fixed setting (no target).
fn rows_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "image,codec,target_bpp,setting,bytes,bpp,psnr,ms_ssim,ssimulacra2,butteraugli,\
         butteraugli_3norm,encode_s,decode_s,encode_mps,decode_mps,encode_peak_mib,\
         decode_peak_mib,reached,reach,converged,probes,block_edges\n",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for r in rows {
        let target = if r.target_bpp.is_finite() {
            r.target_bpp.to_string()
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{:.6},{:.4},{:.6},{:.4},{},{},{:.4},{:.4},{:.3},{:.3},{},{},{},{},{},{},{:.4}",
            csv_field(&r.image),
            csv_field(&r.codec),
            target,
            r.setting,
            r.bytes,
            r.bpp,
            r.psnr,
            r.ms_ssim,
            r.ssimulacra2,
            opt(r.butteraugli),
            opt(r.butteraugli_3norm),
            r.encode_s,
            r.decode_s,
            r.encode_mps(),
            r.decode_mps(),
            opt(r.encode_peak_rss_kib.map(kib_to_mib)),
            opt(r.decode_peak_rss_kib.map(kib_to_mib)),
            r.reach.is_reached(),
            r.reach.label(),
            r.converged,
            r.probes,
            r.block_edges,
        );
    }
    out
}

/// File name of a crop, unique per (image, codec, target).
fn save_crop(dir: &Path, crop: &Crop) -> Result<String> {
    let stem = Path::new(&crop.image)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| crop.image.clone());
    let name = match (&crop.codec, crop.target_bpp) {
        (Some(codec), Some(t)) => format!("{stem}_{codec}_{t}bpp.png"),
        _ => format!("{stem}_original.png"),
    };
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(&name);
    if !path.exists() || crop.codec.is_some() {
        crop.pixels
            .save(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(name)
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180): decoder
/// labels such as "flow 4 steps, T 0.6" do.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests;
