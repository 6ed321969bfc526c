//! The evaluation loop: every image × codec × target, rate-matched, decoded, measured and
//! cropped, collected into a [`Report`]. The `mirage eval` command is a thin layer on this.
//!
//! Images are independent, so [`EvalOptions::jobs`] workers take one image each at a time
//! (the classic codecs and butteraugli are single-threaded processes, so two workers keep
//! two cores busy). Results are put back in image order, so the report does not depend on
//! the number of workers except for the measured speeds. Set measures (MFD/MKD) need the
//! decodes of all images of a (codec, target): each decode is reduced to its feature rows
//! right away and the pixels are dropped, so memory stays at a few images per worker.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::block_edges::block_edge_excess;
use crate::codecs::{load_image, CodecUnderTest};
use crate::metrics;
use crate::rate_match::{
    Encoding, Matched, RateMatcher, Reach, DEFAULT_MAX_ITERATIONS, DEFAULT_TOLERANCE,
};
use crate::report::{
    Crop, CropRegion, FixedReport, Report, Row, SetMeasureInfo, SetRow, StageSeconds,
};
use crate::set_measure::{FeatureRows, SetMeasure};

/// Default targets: doubling from the very-low-rate regime Mirage is built for (0.03 bpp is
/// about AVIF's lowest setting on Kodak) up to 1 bpp.
pub const DEFAULT_TARGETS_BPP: [f64; 6] = [0.03, 0.06, 0.12, 0.25, 0.5, 1.0];

/// What to run and measure.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub targets_bpp: Vec<f64>,
    /// Bisection steps per target (see [`RateMatcher::with_max_iterations`]).
    pub max_iterations: usize,
    /// Relative rate tolerance of the search (see [`RateMatcher::with_tolerance`]).
    pub rate_tolerance: f64,
    /// Run libjxl's `butteraugli_main` on every decoded image (about as slow as an encode).
    pub butteraugli: bool,
    /// File names of the images to crop for the HTML page; empty = the first image.
    pub crop_images: Vec<String>,
    /// Side of the square crop, in pixels.
    pub crop_size: u32,
    /// Centre of the crop; `None` = image centre.
    pub crop_centre: Option<(u32, u32)>,
    /// Codec name that BD-rates are computed against; `None` = the first codec.
    pub anchor: Option<String>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Images evaluated at once; 0 = one per available core.
    pub jobs: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            targets_bpp: DEFAULT_TARGETS_BPP.to_vec(),
            max_iterations: DEFAULT_MAX_ITERATIONS,
            rate_tolerance: DEFAULT_TOLERANCE,
            butteraugli: true,
            crop_images: Vec::new(),
            crop_size: 256,
            crop_centre: None,
            anchor: None,
            progress: true,
            jobs: 0,
        }
    }
}

impl EvalOptions {
    /// The number of workers: [`EvalOptions::jobs`], or the available cores, at most one
    /// per image.
    pub fn workers(&self, images: usize) -> usize {
        let jobs = match self.jobs {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        jobs.clamp(1, images.max(1))
    }
}

/// Image files in a folder (PNG, JPEG, PPM, BMP, TIFF, WebP), sorted by name.
pub fn image_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    const EXTENSIONS: [&str; 9] = [
        "png", "jpg", "jpeg", "ppm", "pnm", "bmp", "tif", "tiff", "webp",
    ];
    let paths = files_with_extensions(dir, &EXTENSIONS)?;
    if paths.is_empty() {
        bail!("no images in {}", dir.display());
    }
    Ok(paths)
}

/// The files directly in `dir` whose extension (any case) is one of `extensions`, sorted
/// by name so that every run sees the same order.
pub fn files_with_extensions(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Fails before any work if a codec's tools (or butteraugli) are missing, listing all of
/// them with their install commands.
fn check_tools(codecs: &[&dyn CodecUnderTest], options: &EvalOptions) -> Result<()> {
    let mut missing: Vec<String> = codecs
        .iter()
        .filter_map(|c| c.check_available().err().map(|e| format!("{e}")))
        .collect();
    if options.butteraugli {
        if let Err(e) = metrics::BUTTERAUGLI_TOOL.locate() {
            missing.push(format!("{e} (or disable butteraugli)"));
        }
    }
    if !missing.is_empty() {
        missing.dedup();
        // One line, as the command line prints errors.
        bail!("missing tools: {}", missing.join("; "));
    }
    Ok(())
}

fn progress_bar(total: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// `work(i)` for every `i < n` on `workers` threads, results in index order. Stops handing
/// out new indices after the first failure and returns the failure of the lowest index.
fn parallel_map<T: Send>(
    n: usize,
    workers: usize,
    work: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let result = work(i);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(n);
    for result in results {
        match result {
            Some(r) => out.push(r?),
            // Only indices after a failure are left undone; the failure comes first.
            None => bail!("evaluation stopped after an error"),
        }
    }
    Ok(out)
}

/// What one image contributed: its rows (codec-major, then target), its crops, and the
/// feature rows of the set measures (`features[measure]` of the original; of each decode
/// that reached its target, `decoded[codec * targets + target][measure]`).
struct ImageOutcome {
    rows: Vec<Row>,
    crops: Vec<Crop>,
    original_features: Vec<FeatureRows>,
    /// Time spent on `original_features`.
    original_features_s: f64,
    decoded_features: Vec<Option<Vec<FeatureRows>>>,
    /// Time per stage, per codec (in run order).
    stages: Vec<StageSeconds>,
}

/// Runs every codec on every image at every target and collects the measurements, and the
/// set measures of every (codec, target) over the images that reached the target.
///
/// Fails before any work if a codec's tools are missing (listing all of them), and names the
/// image, codec and target of any later failure.
pub fn run(
    codecs: &[&dyn CodecUnderTest],
    images: &[PathBuf],
    set_measures: &[&dyn SetMeasure],
    options: &EvalOptions,
) -> Result<Report> {
    if codecs.is_empty() || images.is_empty() || options.targets_bpp.is_empty() {
        bail!("nothing to evaluate: need at least one codec, image and target");
    }
    check_tools(codecs, options)?;
    let anchor = options.anchor.clone().unwrap_or_else(|| codecs[0].name());
    if !codecs.iter().any(|c| c.name() == anchor) {
        bail!("anchor codec `{anchor}` is not among the codecs evaluated");
    }

    let names: Vec<String> = images.iter().map(|p| file_name(p)).collect();
    let crop_names: Vec<String> = if options.crop_images.is_empty() {
        vec![names[0].clone()]
    } else {
        options.crop_images.clone()
    };
    if let Some(unknown) = crop_names.iter().find(|n| !names.contains(n)) {
        bail!("crop image {unknown} is not among the images evaluated");
    }

    let run_start = Instant::now();
    let targets = &options.targets_bpp;
    let bar = progress_bar(
        (images.len() * codecs.len() * targets.len()) as u64,
        options.progress,
    );
    let workers = options.workers(images.len());
    let outcomes = parallel_map(images.len(), workers, |i| {
        let (path, name) = (&images[i], &names[i]);
        let img = load_image(path)?;
        let crop = crop_names.contains(name).then(|| {
            CropRegion::square(
                img.width(),
                img.height(),
                options.crop_size,
                options.crop_centre,
            )
        });
        let start = Instant::now();
        let original_features = set_features(set_measures, &img)
            .with_context(|| format!("{name}: set measure of the original"))?;
        let mut outcome = ImageOutcome {
            rows: Vec::new(),
            crops: Vec::new(),
            original_features,
            original_features_s: start.elapsed().as_secs_f64(),
            decoded_features: Vec::new(),
            stages: vec![StageSeconds::default(); codecs.len()],
        };
        if let Some(region) = crop {
            outcome.crops.push(Crop {
                image: name.clone(),
                codec: None,
                target_bpp: None,
                region,
                pixels: region.cut(&img),
            });
        }
        for (c, &codec) in codecs.iter().enumerate() {
            let mut matcher = RateMatcher::new(codec, &img)
                .with_max_iterations(options.max_iterations)
                .with_tolerance(options.rate_tolerance);
            // Several targets often end on the same file (all the targets beyond a codec's
            // reach, or two close targets on a coarse grid): it is decoded and scored once.
            let mut scored_by_setting: HashMap<u64, (Scored, Option<Vec<FeatureRows>>)> =
                HashMap::new();
            for &target in targets {
                bar.set_message(format!("{name} {} {target} bpp", codec.name()));
                let context = || format!("{name}: codec {} at {target} bpp", codec.name());
                let matched = matcher.encode_at_bpp(target).with_context(context)?;
                let mut stage = StageSeconds {
                    rate_search: matched.search_s,
                    ..StageSeconds::default()
                };
                let (scored, features) =
                    match scored_by_setting.entry(matched.encoding.setting.to_bits()) {
                        Entry::Occupied(entry) => entry.into_mut(),
                        Entry::Vacant(entry) => {
                            let scored = score(codec, &img, name, &matched, options)
                                .with_context(context)?;
                            stage.decode = scored.decode_s;
                            stage.fidelity = scored.fidelity_s;
                            stage.butteraugli = scored.butteraugli_s;
                            entry.insert((scored, None))
                        }
                    };
                let row = Row {
                    target_bpp: target,
                    reach: matched.reach,
                    converged: matched.converged,
                    probes: matched.encodes,
                    ..scored.row.clone()
                };
                let decoded = &scored.decoded;
                let features = if row.reach.is_reached() {
                    if features.is_none() {
                        let start = Instant::now();
                        *features =
                            Some(set_features(set_measures, decoded).with_context(context)?);
                        stage.realism = start.elapsed().as_secs_f64();
                    }
                    features.clone()
                } else {
                    None
                };
                outcome.stages[c].add(&stage);
                if let Some(region) = crop {
                    outcome.crops.push(Crop {
                        image: name.clone(),
                        codec: Some(codec.name()),
                        target_bpp: Some(target),
                        region,
                        pixels: region.cut(decoded),
                    });
                }
                outcome.rows.push(row);
                outcome.decoded_features.push(features);
                bar.inc(1);
            }
        }
        Ok(outcome)
    });
    bar.finish_and_clear();
    let outcomes = outcomes?;

    let mut report = Report {
        codecs: codecs.iter().map(|c| (c.name(), c.description())).collect(),
        targets_bpp: targets.clone(),
        images: names,
        anchor: Some(anchor),
        set_measures: set_measures
            .iter()
            .map(|m| SetMeasureInfo {
                title: m.title(),
                description: m.description(),
                columns: m.columns(),
            })
            .collect(),
        workers,
        rate_tolerance: options.rate_tolerance,
        ..Report::default()
    };
    report.stages = codecs
        .iter()
        .enumerate()
        .map(|(c, codec)| {
            let mut total = StageSeconds {
                codec: codec.name(),
                ..StageSeconds::default()
            };
            outcomes.iter().for_each(|o| total.add(&o.stages[c]));
            total
        })
        .collect();
    report.original_features_s = outcomes.iter().map(|o| o.original_features_s).sum();
    if !set_measures.is_empty() {
        for (c, codec) in codecs.iter().enumerate() {
            for (t, &target) in targets.iter().enumerate() {
                let group = c * targets.len() + t;
                report.set_rows.push(set_row(
                    set_measures,
                    &outcomes,
                    group,
                    codec.name(),
                    target,
                ));
            }
        }
    }
    for outcome in outcomes {
        report.rows.extend(outcome.rows);
        report.crops.extend(outcome.crops);
    }
    report.wall_s = run_start.elapsed().as_secs_f64();
    Ok(report)
}

/// The feature rows of one image for each set measure.
fn set_features(measures: &[&dyn SetMeasure], img: &RgbImage) -> Result<Vec<FeatureRows>> {
    measures.iter().map(|m| m.features(img)).collect()
}

/// The set measures of one (codec, target) group over the images that reached the target.
fn set_row(
    measures: &[&dyn SetMeasure],
    outcomes: &[ImageOutcome],
    group: usize,
    codec: String,
    target_bpp: f64,
) -> SetRow {
    let in_set: Vec<(&ImageOutcome, &Vec<FeatureRows>)> = outcomes
        .iter()
        .filter_map(|o| o.decoded_features[group].as_ref().map(|f| (o, f)))
        .collect();
    let bpp = in_set.iter().map(|(o, _)| o.rows[group].bpp).sum::<f64>() / in_set.len() as f64;
    let mut row = SetRow {
        codec,
        target_bpp,
        images: outcomes.len(),
        reached: in_set.len(),
        bpp,
        values: Vec::new(),
        notes: Vec::new(),
    };
    for (m, measure) in measures.iter().enumerate() {
        let columns = measure.columns().len();
        let values = if in_set.is_empty() {
            Err(anyhow!("no image reached the target"))
        } else {
            FeatureRows::concat(in_set.iter().map(|(o, _)| &o.original_features[m])).and_then(
                |originals| {
                    let decoded = FeatureRows::concat(in_set.iter().map(|(_, f)| &f[m]))?;
                    measure.distance(&originals, &decoded)
                },
            )
        };
        match values {
            Ok(v) if v.len() == columns => row.values.extend(v.into_iter().map(Some)),
            Ok(v) => {
                row.notes.push(format!(
                    "{} gave {} values for {columns} columns",
                    measure.title(),
                    v.len()
                ));
                row.values.extend(std::iter::repeat_n(None, columns));
            }
            Err(e) => {
                row.notes.push(format!("{}: {e:#}", measure.title()));
                row.values.extend(std::iter::repeat_n(None, columns));
            }
        }
    }
    row
}

/// Runs each codec at fixed settings on every image (no rate matching): `points` pairs a
/// codec with one of its settings. For checking codecs against noted or published figures.
pub fn run_fixed(
    points: &[(&dyn CodecUnderTest, f64)],
    images: &[PathBuf],
    options: &EvalOptions,
) -> Result<FixedReport> {
    if points.is_empty() || images.is_empty() {
        bail!("nothing to evaluate: need at least one codec setting and image");
    }
    let mut codecs: Vec<&dyn CodecUnderTest> = Vec::new();
    for &(codec, setting) in points {
        let range = codec.settings();
        if !(range.min..=range.max).contains(&setting) {
            bail!(
                "setting {setting} of {} is outside its range {}..={}",
                codec.name(),
                range.min,
                range.max
            );
        }
        if !codecs.iter().any(|c| c.name() == codec.name()) {
            codecs.push(codec);
        }
    }
    check_tools(&codecs, options)?;
    let names: Vec<String> = images.iter().map(|p| file_name(p)).collect();
    let bar = progress_bar((images.len() * points.len()) as u64, options.progress);
    let workers = options.workers(images.len());
    let per_image = parallel_map(images.len(), workers, |i| {
        let name = &names[i];
        let img = load_image(&images[i])?;
        let pixels = f64::from(img.width()) * f64::from(img.height());
        let mut rows = Vec::new();
        for &(codec, setting) in points {
            let label = codec.format_setting(setting);
            bar.set_message(format!("{name} {} {label}", codec.name()));
            let context = || format!("{name}: codec {} at {label}", codec.name());
            let start = Instant::now();
            let bytes = codec.encode(&img, setting).with_context(context)?;
            let caller_s = start.elapsed().as_secs_f64();
            let stats = codec.last_call_stats();
            let matched = Matched {
                target_bpp: f64::NAN,
                encoding: Encoding {
                    setting,
                    bpp: bytes.len() as f64 * 8.0 / pixels,
                    bytes,
                    encode_s: stats.map_or(caller_s, |s| s.wall_s),
                    encode_peak_rss_kib: stats.and_then(|s| s.peak_rss_kib),
                },
                reach: Reach::Reached,
                converged: true,
                encodes: 1,
                search_s: caller_s,
            };
            rows.push(
                score(codec, &img, name, &matched, options)
                    .with_context(context)?
                    .row,
            );
            bar.inc(1);
        }
        Ok(rows)
    });
    bar.finish_and_clear();
    Ok(FixedReport {
        rows: per_image?.into_iter().flatten().collect(),
        codecs: codecs.iter().map(|c| (c.name(), c.description())).collect(),
        images: names,
        workers,
    })
}

/// One scored encoding: its row, the decoded image, and how long each stage took.
struct Scored {
    row: Row,
    decoded: RgbImage,
    decode_s: f64,
    fidelity_s: f64,
    butteraugli_s: f64,
}

/// Decodes and scores one encoding of `img`.
fn score(
    codec: &dyn CodecUnderTest,
    img: &RgbImage,
    name: &str,
    matched: &Matched,
    options: &EvalOptions,
) -> Result<Scored> {
    let encoding = &matched.encoding;
    let start = Instant::now();
    let decoded = codec.decode(&encoding.bytes)?;
    let caller_decode_s = start.elapsed().as_secs_f64();
    let decode_stats = codec.last_call_stats();
    if decoded.dimensions() != img.dimensions() {
        bail!(
            "decoded image is {}x{}, original {}x{}",
            decoded.width(),
            decoded.height(),
            img.width(),
            img.height()
        );
    }
    // Butteraugli is an external process: run it while this thread computes the others.
    let (butteraugli, psnr, ms_ssim, ssimulacra2, fidelity_s) = std::thread::scope(|scope| {
        let butteraugli = options.butteraugli.then(|| {
            scope.spawn(|| {
                let start = Instant::now();
                metrics::butteraugli(img, &decoded).map(|b| (b, start.elapsed().as_secs_f64()))
            })
        });
        let start = Instant::now();
        let psnr = metrics::psnr(img, &decoded);
        // Only fails on images too small for 5 scales; recorded as NaN then.
        let ms_ssim = metrics::ms_ssim(img, &decoded).unwrap_or(f64::NAN);
        let ssimulacra2 = metrics::ssimulacra2(img, &decoded);
        let fidelity_s = start.elapsed().as_secs_f64();
        let butteraugli = butteraugli
            .map(|handle| handle.join().expect("butteraugli thread panicked"))
            .transpose();
        (butteraugli, psnr, ms_ssim, ssimulacra2, fidelity_s)
    });
    let (butteraugli, butteraugli_s) = match butteraugli? {
        Some((b, seconds)) => (Some(b), seconds),
        None => (None, 0.0),
    };
    let row = Row {
        image: name.to_string(),
        codec: codec.name(),
        target_bpp: matched.target_bpp,
        setting: encoding.setting,
        setting_label: codec.format_setting(encoding.setting),
        bytes: encoding.bytes.len(),
        bpp: encoding.bpp,
        psnr: psnr?,
        ms_ssim,
        ssimulacra2: ssimulacra2?,
        butteraugli: butteraugli.map(|b| b.max_norm),
        butteraugli_3norm: butteraugli.map(|b| b.pnorm3),
        block_edges: block_edge_excess(img, &decoded).unwrap_or(f64::NAN),
        encode_s: encoding.encode_s,
        decode_s: decode_stats.map_or(caller_decode_s, |s| s.wall_s),
        megapixels: f64::from(img.width()) * f64::from(img.height()) / 1e6,
        encode_peak_rss_kib: encoding.encode_peak_rss_kib,
        decode_peak_rss_kib: decode_stats.and_then(|s| s.peak_rss_kib),
        reach: matched.reach,
        converged: matched.converged,
        probes: matched.encodes,
    };
    Ok(Scored {
        row,
        decoded,
        decode_s: caller_decode_s,
        fidelity_s,
        butteraugli_s,
    })
}

#[cfg(test)]
mod tests;
