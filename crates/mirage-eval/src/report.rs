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

    fn set_markdown(&self) -> String {
        let mut md = String::new();
        let mut offset = 0;
        for measure in &self.set_measures {
            let columns = offset..offset + measure.columns.len();
            offset = columns.end;
            let _ = writeln!(md, "\n## {}\n\n{}\n", measure.title, measure.description);
            md.push_str(
                "Each value compares the set of one codec's decodes at one target with the set \
                 of the same originals, over the images that reached the target (`reached`); \
                 sets missing images are not comparable with complete ones. Lower is closer.\n\n",
            );
            let _ = writeln!(
                md,
                "| codec | target bpp | reached | bpp | {} |\n|---|---|---|---|{}",
                measure.columns.join(" | "),
                "---|".repeat(measure.columns.len())
            );
            for r in &self.set_rows {
                let cells: Vec<String> = r.values[columns.clone()]
                    .iter()
                    .map(|v| v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}")))
                    .collect();
                let bpp = if r.reached > 0 {
                    format!("{:.4}", r.bpp)
                } else {
                    "–".into()
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {}/{} | {bpp} | {} |",
                    r.codec,
                    r.target_bpp,
                    r.reached,
                    r.images,
                    cells.join(" | ")
                );
            }
            let notes: BTreeSet<String> = self
                .set_rows
                .iter()
                .flat_map(|r| {
                    r.notes
                        .iter()
                        .map(move |n| format!("{} at {} bpp: {n}", r.codec, r.target_bpp))
                })
                .collect();
            if !notes.is_empty() {
                md.push('\n');
            }
            for note in notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }

    /// The Markdown summary: codecs, means per codec and target, unreachable targets,
    /// BD-rates against the anchor, caveats.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Evaluation: {} images, targets {} bpp\n",
            self.images.len(),
            self.targets_bpp
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        md.push_str(
            "bpp = file bytes × 8 / pixels, whole file. Each codec's setting is searched per \
             image for the largest file not above the target",
        );
        if self.rate_tolerance > 0.0 {
            let _ = write!(
                md,
                " (or any file within {}% below it)",
                self.rate_tolerance * 100.0
            );
        }
        md.push_str(
            ". Means are over the images that reached the target (column `reached`). PSNR on \
             RGB; MS-SSIM per RGB channel, averaged; speeds are total megapixels / total wall \
             time of the codec's own process, one thread; peak memory is the largest peak RSS \
             of one process.",
        );
        if self.workers > 1 {
            let _ = write!(
                md,
                " {} images were evaluated at once, so each codec call shared the cores \
                 with other work: for speed alone, run with one worker (`--jobs 1`).",
                self.workers
            );
        }
        md.push_str("\n\n");
        md.push_str("## Codecs\n\n");
        for (name, description) in &self.codecs {
            let _ = writeln!(md, "- `{name}`: {description}");
        }
        md.push_str("\n## Means per codec and target\n\n");
        md.push_str(
            "| codec | target bpp | reached | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | \
             butteraugli | butteraugli 3-norm | enc MP/s | dec MP/s | enc peak MiB | \
             dec peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let opt = |v: Option<f64>, decimals: usize| {
            v.map(|v| format!("{v:.decimals$}"))
                .unwrap_or_else(|| "–".into())
        };
        for codec in self.codec_names() {
            for p in self.mean_curve(&codec) {
                if p.reached == 0 {
                    let _ = writeln!(
                        md,
                        "| {codec} | {} | 0/{} | – | – | – | – | – | – | – | – | – | – |",
                        p.target_bpp, p.images
                    );
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {codec} | {} | {}/{} | {:.4} | {:.2} | {:.4} | {:.1} | {} | {} | {:.1} | \
                     {:.1} | {} | {} |",
                    p.target_bpp,
                    p.reached,
                    p.images,
                    p.bpp,
                    p.psnr,
                    p.ms_ssim,
                    p.ssimulacra2,
                    opt(p.butteraugli, 2),
                    opt(p.butteraugli_3norm, 2),
                    p.encode_mps,
                    p.decode_mps,
                    opt(p.encode_peak_mib, 0),
                    opt(p.decode_peak_mib, 0),
                );
            }
        }

        md.push_str(&self.set_markdown());

        md.push_str("\n## Targets not reached\n\n");
        let unreached: Vec<&Row> = self.rows.iter().filter(|r| !r.reach.is_reached()).collect();
        if unreached.is_empty() {
            md.push_str("Every codec reached every target on every image.\n");
        } else {
            md.push_str(
                "| image | codec | nearest setting | bpp | reason |\n|---|---|---|---|---|\n",
            );
            for r in unreached {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.4} | {} |",
                    r.image,
                    r.codec,
                    r.setting_label,
                    r.bpp,
                    r.reach.explain(r.target_bpp)
                );
            }
        }
        let not_converged = self.rows.iter().filter(|r| !r.converged).count();
        if not_converged > 0 {
            let _ = writeln!(
                md,
                "\n{not_converged} matches ran out of bisection steps: within target, but a \
                 slightly larger file may exist."
            );
        }

        md.push_str(&self.bd_rate_markdown());
        md.push_str(&self.time_markdown());
        md
    }

    /// Where the time went: one row per codec, in seconds summed over images.
    fn time_markdown(&self) -> String {
        let mut md = String::new();
        if self.stages.is_empty() {
            return md;
        }
        md.push_str("\n## Time\n\n");
        if self.wall_s > 0.0 {
            let _ = writeln!(
                md,
                "Wall time {:.1} min with {} worker(s).",
                self.wall_s / 60.0,
                self.workers
            );
        }
        md.push_str(
            "Seconds summed over images as the workers saw them. Butteraugli runs in its own \
             process alongside the other metrics, so a worker's time counts the longer of the \
             two.\n\n| codec | rate search | decode | PSNR, MS-SSIM, SSIMULACRA2 | butteraugli \
             | realism features | worker total |\n|---|---|---|---|---|---|---|\n",
        );
        let mut total = StageSeconds::default();
        for stage in &self.stages {
            total.add(stage);
            let _ = writeln!(md, "{}", stage_row(&stage.codec, stage));
        }
        let _ = writeln!(md, "{}", stage_row("all", &total));
        if self.original_features_s > 0.0 {
            let _ = writeln!(
                md,
                "\nRealism features of the originals: {:.1} s.",
                self.original_features_s
            );
        }
        md
    }

    fn bd_rate_markdown(&self) -> String {
        let mut md = String::new();
        let Some(anchor) = &self.anchor else {
            return md;
        };
        let _ = writeln!(md, "\n## BD-rate against `{anchor}`\n");
        md.push_str(
            "Rate difference at equal quality, in percent (negative = fewer bits than the \
             anchor), computed on each image from all its distinct files (targets reached or \
             not), then summarised over the images: mean / median (images with a value). \
             Values per image are in `bd_rates.csv`.\n\n",
        );
        let _ = writeln!(
            md,
            "| codec | {} |\n|---|{}",
            Metric::ALL.map(|m| m.label()).join(" | "),
            "---|".repeat(Metric::ALL.len())
        );
        let mut reasons = BTreeSet::new();
        for codec in self.codec_names().iter().filter(|c| *c != anchor) {
            let cells: Vec<String> = Metric::ALL
                .iter()
                .map(|&m| {
                    let summary = self.bd_rate_summary(anchor, codec, m);
                    for (_, value) in &summary.per_image {
                        if let Err(e) = value {
                            reasons.insert(e.to_string());
                        }
                    }
                    match (summary.mean(), summary.median()) {
                        (Some(mean), Some(median)) => format!(
                            "{mean:+.1}% / {median:+.1}% ({}/{})",
                            summary.values().len(),
                            summary.per_image.len()
                        ),
                        _ => "n/a".into(),
                    }
                })
                .collect();
            let _ = writeln!(md, "| {codec} | {} |", cells.join(" | "));
        }
        if !reasons.is_empty() {
            md.push_str("\nImages without a value (or `n/a`): ");
            md.push_str(&reasons.into_iter().collect::<Vec<_>>().join("; "));
            md.push('\n');
        }
        md.push_str(
            "\nCaveats: Bjøntegaard with monotone piecewise cubic (PCHIP) interpolation of \
             log-rate against quality, over the quality interval both curves cover; no \
             extrapolation, so a codec is not credited outside the shared interval, and on an \
             image where the curves barely overlap the value rests on a narrow interval; needs \
             at least 4 points per curve; if curves cross, gains and losses cancel in the \
             average; the mean over images is pulled by outliers, hence the median; each \
             number holds for its metric only.\n",
        );
        md
    }

    /// Writes the rate–quality plot: PSNR and SSIMULACRA2 against bpp, one line per codec
    /// (means over complete targets, as for BD-rates), and one more panel per set-measure
    /// column (MFD, MKD: lower is better), over complete sets. Two panels per row.
    pub fn plot_svg(&self, path: &Path) -> Result<()> {
        use plotters::prelude::*;
        type Curves = Vec<(String, Vec<(f64, f64)>)>;
        let mut panels: Vec<(String, String, Curves)> = [Metric::Psnr, Metric::Ssimulacra2]
            .into_iter()
            .map(|metric| {
                let curves = self
                    .codec_names()
                    .into_iter()
                    .map(|c| {
                        let points = self.curve_points(&c, metric);
                        (c, points.iter().map(|p| (p.rate, p.quality)).collect())
                    })
                    .collect();
                let y_label = match metric {
                    Metric::Psnr => "PSNR (dB)".to_string(),
                    _ => metric.label().to_string(),
                };
                (format!("{} vs bpp", metric.label()), y_label, curves)
            })
            .collect();
        for (column, name) in self.set_columns().into_iter().enumerate() {
            let curves = self
                .codec_names()
                .into_iter()
                .map(|c| {
                    let points = self.set_curve(&c, column);
                    (c, points)
                })
                .collect();
            panels.push((format!("{name} vs bpp (lower is better)"), name, curves));
        }
        // A lossless decode has an infinite PSNR: it cannot be drawn (and an infinite axis
        // range would hang the plotting library).
        for (_, _, curves) in &mut panels {
            for (_, points) in curves.iter_mut() {
                points.retain(|(x, y)| x.is_finite() && y.is_finite());
            }
        }
        let rows = panels.len().div_ceil(2);
        let root = SVGBackend::new(path, (1200, 500 * rows as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((rows, 2));
        for (area, (caption, y_label, curves)) in areas.iter().zip(&panels) {
            let (mut x_max, mut y_min, mut y_max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
            for &(x, y) in curves.iter().flat_map(|(_, p)| p.iter()) {
                x_max = x_max.max(x);
                y_min = y_min.min(y);
                y_max = y_max.max(y);
            }
            if !y_min.is_finite() {
                (x_max, y_min, y_max) = (1.0, 0.0, 1.0);
            }
            let pad = ((y_max - y_min) * 0.05).max(0.5);
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 20))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..x_max * 1.05, (y_min - pad)..(y_max + pad))?;
            chart
                .configure_mesh()
                .x_desc("bpp")
                .y_desc(y_label.as_str())
                .draw()?;
            for (i, (codec, points)) in curves.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(codec.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Writes `report.html` and the crops it shows (PNG files in `crops/`, referenced
    /// relatively, so the folder can be moved or served as is).
    pub fn write_html(&self, dir: &Path, links: &[(&str, &str)]) -> Result<PathBuf> {
        let crop_dir = dir.join("crops");
        std::fs::create_dir_all(&crop_dir)
            .with_context(|| format!("cannot create {}", crop_dir.display()))?;
        let mut html = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Mirage evaluation</title>\n\
             <style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:0 8px 12px 0;\
             vertical-align:top}figcaption{font-size:12px;max-width:256px}img.crop{image-rendering:pixelated}\
             .miss{color:#b00}table{border-collapse:collapse}</style></head><body>\n\
             <h1>Mirage evaluation</h1>\n",
        );
        let _ = writeln!(
            html,
            "<p>{} images; targets {} bpp. {}</p>",
            self.images.len(),
            self.targets_bpp
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            links
                .iter()
                .map(|(href, text)| format!("<a href=\"{}\">{}</a>", escape(href), escape(text)))
                .collect::<Vec<_>>()
                .join(" · ")
        );
        if let Some((svg, _)) = links.iter().find(|(href, _)| href.ends_with(".svg")) {
            let _ = writeln!(
                html,
                "<p><img src=\"{}\" alt=\"rate-quality plot\" width=\"1200\"></p>",
                escape(svg)
            );
        }
        let crop_images: Vec<&str> = {
            let mut seen = Vec::new();
            for c in &self.crops {
                if !seen.contains(&c.image.as_str()) {
                    seen.push(c.image.as_str());
                }
            }
            seen
        };
        for image in crop_images {
            let original = self
                .crops
                .iter()
                .find(|c| c.image == image && c.codec.is_none());
            let region = self
                .crops
                .iter()
                .find(|c| c.image == image)
                .map(|c| c.region)
                .expect("image has crops");
            let _ = writeln!(
                html,
                "<h2>{} — crop {}×{} at ({}, {})</h2>",
                escape(image),
                region.width,
                region.height,
                region.x,
                region.y
            );
            for &target in &self.targets_bpp {
                let _ = writeln!(html, "<h3>{target} bpp</h3>\n<div>");
                if let Some(o) = original {
                    let file = save_crop(&crop_dir, o)?;
                    let _ = writeln!(
                        html,
                        "<figure><img class=\"crop\" src=\"crops/{}\"><figcaption>original</figcaption></figure>",
                        escape(&file)
                    );
                }
                for crop in self
                    .crops
                    .iter()
                    .filter(|c| c.image == image && c.target_bpp == Some(target))
                {
                    let codec = crop.codec.as_deref().unwrap_or("?");
                    let file = save_crop(&crop_dir, crop)?;
                    let row = self
                        .rows
                        .iter()
                        .find(|r| r.image == image && r.codec == codec && r.target_bpp == target);
                    let caption = match row {
                        Some(r) => {
                            let miss = if r.reach.is_reached() {
                                String::new()
                            } else {
                                format!(
                                    "<br><span class=\"miss\">not reached: {}</span>",
                                    escape(&r.reach.explain(target))
                                )
                            };
                            format!(
                                "<b>{}</b> {} · {:.4} bpp<br>PSNR {:.2} dB · SSIMULACRA2 {:.1}{}",
                                escape(codec),
                                escape(&r.setting_label),
                                r.bpp,
                                r.psnr,
                                r.ssimulacra2,
                                miss
                            )
                        }
                        None => escape(codec),
                    };
                    let _ = writeln!(
                        html,
                        "<figure><img class=\"crop\" src=\"crops/{}\"><figcaption>{caption}</figcaption></figure>",
                        escape(&file)
                    );
                }
                html.push_str("</div>\n");
            }
        }
        html.push_str("</body></html>\n");
        let path = dir.join("report.html");
        std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
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

/// Runs at fixed codec settings, without rate matching (`mirage eval --fixed`): to check
/// the classic codecs against published or noted figures for a given setting.
#[derive(Clone, Debug, Default)]
pub struct FixedReport {
    /// One per (image, codec, setting); `target_bpp` is NaN (there is no target).
    pub rows: Vec<Row>,
    /// `(name, description)` of each codec, in run order.
    pub codecs: Vec<(String, String)>,
    pub images: Vec<String>,
    pub workers: usize,
}

impl FixedReport {
    /// Means per (codec, setting), in run order: `(codec, setting label, means)`.
    pub fn means(&self) -> Vec<(String, String, MeanPoint)> {
        let mut keys: Vec<(String, String)> = Vec::new();
        for r in &self.rows {
            let key = (r.codec.clone(), r.setting_label.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys.into_iter()
            .filter_map(|(codec, setting)| {
                let rows: Vec<&Row> = self
                    .rows
                    .iter()
                    .filter(|r| r.codec == codec && r.setting_label == setting)
                    .collect();
                mean_point(f64::NAN, &rows).map(|p| (codec, setting, p))
            })
            .collect()
    }

    pub fn csv(&self) -> String {
        rows_csv(&self.rows)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Fixed settings: {} images\n\nbpp = file bytes × 8 / pixels, whole file. Mean \
             over the images; PSNR on RGB; MS-SSIM per RGB channel, averaged; speeds are total \
             megapixels / total wall time of the codec's own process ({} images at once).\n",
            self.images.len(),
            self.workers
        );
        for (name, description) in &self.codecs {
            let _ = writeln!(md, "- `{name}`: {description}");
        }
        md.push_str(
            "\n| codec | setting | images | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | butteraugli \
             | enc MP/s | dec MP/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (codec, setting, p) in self.means() {
            let butteraugli = p
                .butteraugli
                .map_or_else(|| "–".to_string(), |b| format!("{b:.2}"));
            let _ = writeln!(
                md,
                "| {codec} | {setting} | {} | {:.4} | {:.2} | {:.4} | {:.1} | {butteraugli} | \
                 {:.1} | {:.1} |",
                p.images, p.bpp, p.psnr, p.ms_ssim, p.ssimulacra2, p.encode_mps, p.decode_mps
            );
        }
        md
    }

    /// Writes `fixed.csv` and `fixed.md` into `dir`.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text) in [("fixed.csv", self.csv()), ("fixed.md", self.markdown())] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Rows as CSV, one line per row; missing values are empty, and so is `target_bpp` for
/// rows at a fixed setting (no target).
fn rows_csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "image,codec,target_bpp,setting,bytes,bpp,psnr,ms_ssim,ssimulacra2,butteraugli,\
         butteraugli_3norm,encode_s,decode_s,encode_mps,decode_mps,encode_peak_mib,\
         decode_peak_mib,reached,reach,converged,probes\n",
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
            "{},{},{},{},{},{:.6},{:.4},{:.6},{:.4},{},{},{:.4},{:.4},{:.3},{:.3},{},{},{},{},{},{}",
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

fn csv_field(s: &str) -> String {
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
mod tests {
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
}
