//! The evaluation loop: every image × codec × target, rate-matched, decoded, measured and
//! cropped, collected into a [`Report`]. The `mirage eval` command is a thin layer on this.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};

use crate::codecs::{load_image, CodecUnderTest};
use crate::metrics;
use crate::rate_match::{RateMatcher, DEFAULT_MAX_ITERATIONS};
use crate::report::{Crop, CropRegion, Report, Row};

/// Default targets: doubling from the very-low-rate regime Mirage is built for (0.03 bpp is
/// about AVIF's lowest setting on Kodak) up to 1 bpp.
pub const DEFAULT_TARGETS_BPP: [f64; 6] = [0.03, 0.06, 0.12, 0.25, 0.5, 1.0];

/// What to run and measure.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub targets_bpp: Vec<f64>,
    /// Bisection steps per target (see [`RateMatcher::with_max_iterations`]).
    pub max_iterations: usize,
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
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            targets_bpp: DEFAULT_TARGETS_BPP.to_vec(),
            max_iterations: DEFAULT_MAX_ITERATIONS,
            butteraugli: true,
            crop_images: Vec::new(),
            crop_size: 256,
            crop_centre: None,
            anchor: None,
            progress: true,
        }
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

/// Runs every codec on every image at every target and collects the measurements.
///
/// Fails before any work if a codec's tools are missing (listing all of them), and names the
/// image, codec and target of any later failure.
pub fn run(
    codecs: &[&dyn CodecUnderTest],
    images: &[PathBuf],
    options: &EvalOptions,
) -> Result<Report> {
    if codecs.is_empty() || images.is_empty() || options.targets_bpp.is_empty() {
        bail!("nothing to evaluate: need at least one codec, image and target");
    }
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
        bail!("missing tools:\n  {}", missing.join("\n  "));
    }
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

    let total = (images.len() * codecs.len() * options.targets_bpp.len()) as u64;
    let bar = if options.progress {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut report = Report {
        codecs: codecs.iter().map(|c| (c.name(), c.description())).collect(),
        targets_bpp: options.targets_bpp.clone(),
        images: names.clone(),
        anchor: Some(anchor),
        ..Report::default()
    };
    for (path, name) in images.iter().zip(&names) {
        let img = load_image(path)?;
        let crop = crop_names.contains(name).then(|| {
            CropRegion::square(
                img.width(),
                img.height(),
                options.crop_size,
                options.crop_centre,
            )
        });
        if let Some(region) = crop {
            report.crops.push(Crop {
                image: name.clone(),
                codec: None,
                target_bpp: None,
                region,
                pixels: region.cut(&img),
            });
        }
        for &codec in codecs {
            let mut matcher =
                RateMatcher::new(codec, &img).with_max_iterations(options.max_iterations);
            for &target in &options.targets_bpp {
                bar.set_message(format!("{name} {} {target} bpp", codec.name()));
                let (row, decoded) = measure(codec, &mut matcher, &img, name, target, options)
                    .with_context(|| format!("{name}: codec {} at {target} bpp", codec.name()))?;
                if let Some(region) = crop {
                    report.crops.push(Crop {
                        image: name.clone(),
                        codec: Some(codec.name()),
                        target_bpp: Some(target),
                        region,
                        pixels: region.cut(&decoded),
                    });
                }
                report.rows.push(row);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

/// Rate-matches, decodes and scores one (image, codec, target).
fn measure(
    codec: &dyn CodecUnderTest,
    matcher: &mut RateMatcher,
    img: &RgbImage,
    name: &str,
    target: f64,
    options: &EvalOptions,
) -> Result<(Row, RgbImage)> {
    let matched = matcher.encode_at_bpp(target)?;
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
    let (butteraugli, psnr, ms_ssim, ssimulacra2) = std::thread::scope(|scope| {
        let butteraugli = options
            .butteraugli
            .then(|| scope.spawn(|| metrics::butteraugli(img, &decoded)));
        let psnr = metrics::psnr(img, &decoded);
        // Only fails on images too small for 5 scales; recorded as NaN then.
        let ms_ssim = metrics::ms_ssim(img, &decoded).unwrap_or(f64::NAN);
        let ssimulacra2 = metrics::ssimulacra2(img, &decoded);
        let butteraugli = butteraugli
            .map(|handle| handle.join().expect("butteraugli thread panicked"))
            .transpose();
        (butteraugli, psnr, ms_ssim, ssimulacra2)
    });
    let butteraugli = butteraugli?;
    let row = Row {
        image: name.to_string(),
        codec: codec.name(),
        target_bpp: target,
        setting: encoding.setting,
        setting_label: codec.format_setting(encoding.setting),
        bytes: encoding.bytes.len(),
        bpp: encoding.bpp,
        psnr: psnr?,
        ms_ssim,
        ssimulacra2: ssimulacra2?,
        butteraugli: butteraugli.map(|b| b.max_norm),
        butteraugli_3norm: butteraugli.map(|b| b.pnorm3),
        encode_s: encoding.encode_s,
        decode_s: decode_stats.map_or(caller_decode_s, |s| s.wall_s),
        megapixels: f64::from(img.width()) * f64::from(img.height()) / 1e6,
        encode_peak_rss_kib: encoding.encode_peak_rss_kib,
        decode_peak_rss_kib: decode_stats.and_then(|s| s.peak_rss_kib),
        reach: matched.reach,
        converged: matched.converged,
        probes: matched.encodes,
    };
    Ok((row, decoded))
}
