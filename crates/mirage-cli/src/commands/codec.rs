//! Everyday use: `encode`, `decode`, `info`, `roundtrip`.

use crate::args::*;
use crate::{load_codec, Models};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use mirage::codec::Codec;
use mirage::decoders::{suggest_realism, AddOns, Decoder, FlowSettings, Realism};
use mirage::image_io::{exists_error, occupied, read_image, write_atomically, write_image};
use mirage::ultralow::CaptionUse;
use mirage::{metrics, progress};
use mirage_eval::suite;
use mirage_nn::model_file::id_hex;
use std::path::Path;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum CodecCommand {
    /// Compress an image (or every image in a folder) to .mrg.
    Encode {
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        rate: Rate,
        /// What `decode --realism auto` will use: a weight (0–1) stored in the header;
        /// `fixed`, the realism predictor's one weight (ConHa-fixed, ⅓ for the bundled
        /// predictor), stored the same way; or `auto`, the predictor's per-region map
        /// (ConHa; a size target keeps room for the map's bytes). Without it the file
        /// decodes faithfully (w = 0).
        #[arg(long, value_parser = parse_realism_setting)]
        realism: Option<RealismSetting>,
        #[command(flatten)]
        mode: ModeArgs,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
    },
    /// Decompress a .mrg file (or a folder of them); the output format follows the
    /// extension (PNG for folders).
    Decode {
        input: PathBuf,
        output: PathBuf,
        /// Hallucination weight: 0 is the faithful (MSE) decode, 1 full realism;
        /// `auto` uses the file's suggestion, or 0 if it has none.
        #[arg(long, default_value = "auto", value_parser = parse_realism)]
        realism: Realism,
        /// `default`: the synthesis (MSE at w = 0, realism generator above); `flow`:
        /// the MSE decode refined by the rectified flow.
        #[arg(long, value_enum, default_value = "default")]
        decoder: DecoderChoice,
        /// Euler steps of the flow decoder (1–16; default 4).
        #[arg(long)]
        steps: Option<usize>,
        /// Seed of the flow decoder's noise (same seed, same pixels; default 0).
        #[arg(long)]
        seed: Option<u64>,
        /// Scale of the flow decoder's source noise, 0–1: lower invents less detail
        /// (default 0.6).
        #[arg(long)]
        temperature: Option<f32>,
        /// Ultra-low files: decode as if the file had no caption (the caption is
        /// still printed).
        #[arg(long)]
        ignore_caption: bool,
        #[arg(long)]
        force: bool,
    },
    /// Show a .mrg file's header and the bytes in each section.
    Info {
        file: PathBuf,
        /// Also decode the file's symbols and print digests of them and of the chosen
        /// Gaussian tables: what the bitstream means, which must be the same on every
        /// machine, thread count and instruction set.
        #[arg(long)]
        symbols: bool,
    },
    /// Compress and decompress one image into a folder, and report size and quality.
    Roundtrip {
        input: PathBuf,
        out_dir: PathBuf,
        #[command(flatten)]
        rate: Rate,
        /// Hallucination weight of the decode: a weight (0–1); `fixed`, the realism
        /// predictor's one weight (ConHa-fixed, ⅓ for the bundled predictor); or `auto`,
        /// its per-region map (ConHa). It is written into the file, and the decode follows
        /// the file. Default: `fixed` where the core has a predictor (blind votes preferred
        /// the constant ⅔ to the map, then ⅓ to ⅔ and to the MSE decode; docs/conha.md),
        /// else the MSE decode; the report says which.
        #[arg(long, value_parser = parse_realism_setting)]
        realism: Option<RealismSetting>,
        #[command(flatten)]
        mode: ModeArgs,
        /// Replace the .mrg and .decoded.png already in the folder.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(command: CodecCommand, models: &Models) -> Result<()> {
    match command {
        CodecCommand::Encode {
            input,
            output,
            rate,
            realism,
            mode,
            force,
        } => {
            if !input.is_dir() && has_image_extension(&output) {
                bail!(
                    "{}: an image extension for a .mrg file; name it .mrg (to decode, use `mirage decode`)",
                    output.display()
                );
            }
            if !input.is_dir() {
                refuse_to_replace(&input, &output, force)?;
            }
            let (codec, add_ons) = load_codec(models)?;
            let job = Job {
                codec: &codec,
                add_ons: &add_ons,
                rate: &rate,
                suggestion: Suggestion::resolve(realism, mode.mode, &add_ons)?,
                mode: &mode,
            };
            for_each_file(
                &input,
                &output,
                IMAGE_EXTENSIONS,
                "mrg",
                force,
                |src, dst| job.encode(src, dst, force).map(|_| ()),
            )
        }
        CodecCommand::Decode {
            input,
            output,
            realism,
            decoder,
            steps,
            seed,
            temperature,
            ignore_caption,
            force,
        } => {
            let defaults = FlowSettings::default();
            let flow_settings = FlowSettings {
                steps: steps.unwrap_or(defaults.steps),
                seed: seed.unwrap_or(defaults.seed),
                temperature: temperature.unwrap_or(defaults.temperature),
            };
            flow_settings.check()?;
            match decoder {
                DecoderChoice::Default
                    if steps.is_some() || seed.is_some() || temperature.is_some() =>
                {
                    bail!("--steps, --seed and --temperature are for the flow decoder (--decoder flow)")
                }
                DecoderChoice::Flow if realism != Realism::Auto => {
                    bail!("--realism is for the default decoder; the flow decoder has no weight")
                }
                _ => {}
            }
            if !input.is_dir() {
                refuse_to_replace(&input, &output, force)?;
            }
            let (codec, add_ons) = load_codec(models)?;
            let caption_use = if ignore_caption {
                CaptionUse::Ignore
            } else {
                CaptionUse::FromFile
            };
            for_each_file(&input, &output, &["mrg"], "png", force, |src, dst| {
                let bytes =
                    std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
                if mirage::ultralow::is_ultralow(&bytes)
                    .with_context(|| src.display().to_string())?
                {
                    if decoder == DecoderChoice::Flow {
                        bail!(
                            "{}: the flow decoder does not decode ultra-low files",
                            src.display()
                        );
                    }
                    let (img, _, caption) = add_ons
                        .decompress_any(&codec, &bytes, realism, caption_use)
                        .with_context(|| src.display().to_string())?;
                    if let Some(caption) = caption {
                        eprintln!("mirage: {}: caption: {caption}", src.display());
                    }
                    write_image(&img, dst, force)?;
                    return Ok(());
                }
                let decoder = match decoder {
                    DecoderChoice::Default => add_ons.decoder_for(&bytes, realism),
                    DecoderChoice::Flow => add_ons
                        .flow()
                        .map(|flow| Decoder::Flow(flow, flow_settings)),
                };
                let (img, _) = decoder
                    .and_then(|d| d.decompress(&codec, &bytes))
                    .with_context(|| src.display().to_string())?;
                write_image(&img, dst, force)?;
                Ok(())
            })
        }
        CodecCommand::Info { file, symbols } => {
            info(&file)?;
            let bytes = std::fs::read(&file)?;
            if symbols && mirage::ultralow::is_ultralow(&bytes)? {
                use sha2::Digest;
                let c = mirage_format::read(&bytes)?;
                let digest = sha2::Sha256::digest(&c.sections[0]);
                println!("symbols:     {} (the index section)", id_hex_long(&digest));
            } else if symbols {
                let (codec, _) = load_codec(models)?;
                let (z, y) = codec.decode_symbols(&bytes)?;
                let indexes = codec.scale_indexes(&bytes)?;
                let digest = |values: &mut dyn Iterator<Item = i64>| {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    values.for_each(|v| h.update(v.to_le_bytes()));
                    id_hex_long(&h.finalize())
                };
                let zy = digest(&mut z.iter().chain(&y).map(|&v| v as i64));
                let ix = digest(&mut indexes.iter().map(|&v| v as i64));
                println!("symbols:     {zy}");
                println!("tables:      {ix}");
            }
            Ok(())
        }
        CodecCommand::Roundtrip {
            input,
            out_dir,
            rate,
            realism,
            mode,
            force,
        } => {
            let stem = input
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let mrg = out_dir.join(format!("{stem}.mrg"));
            let png = out_dir.join(format!("{stem}.decoded.png"));
            for output in [&mrg, &png] {
                refuse_to_replace(&input, output, force)?;
            }
            let (codec, add_ons) = load_codec(models)?;
            // A core file carries its weight (or ConHa map) and the decode follows the
            // file, so a later `mirage decode` of it gives the same picture. An ultra-low
            // file has no such field: a weight there is the decoder's alone.
            let (setting, decode_realism) = match (mode.mode, realism) {
                (Mode::Ultralow, None) => (None, Realism::Auto),
                (Mode::Ultralow, Some(RealismSetting::Weight(w))) => (None, Realism::Weight(w)),
                (Mode::Ultralow, Some(_)) => {
                    bail!("--realism auto and fixed are for the core mode; give an ultra-low file a weight, or none (w = 1)")
                }
                (Mode::Core, None) if add_ons.predictor.is_none() => (None, Realism::Auto),
                (Mode::Core, None) => (Some(RealismSetting::Fixed), Realism::Auto),
                (Mode::Core, explicit) => (explicit, Realism::Auto),
            };
            let job = Job {
                codec: &codec,
                add_ons: &add_ons,
                rate: &rate,
                suggestion: Suggestion::resolve(setting, mode.mode, &add_ons)?,
                mode: &mode,
            };
            // Only now that `--realism` is known to work: a refused setting leaves no
            // empty folder behind.
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let original = job.encode(&input, &mrg, force)?;
            let bytes = std::fs::read(&mrg)?;
            let (decoded, _, caption) =
                add_ons.decompress_any(&codec, &bytes, decode_realism, CaptionUse::FromFile)?;
            if let Some(caption) = caption {
                println!("caption: {caption}");
            }
            write_image(&decoded, &png, force)?;
            let weight = decoded_weight(&bytes, decode_realism)?;
            let pixels = (original.width() * original.height()) as f64;
            // SSIMULACRA2 needs 8×8 pixels; a smaller image still gets its other figures.
            let ssimulacra2 = if original.width().min(original.height()) >= 8 {
                format!("{:.2}", metrics::ssimulacra2(&original, &decoded)?)
            } else {
                "n/a (under 8×8 pixels)".to_string()
            };
            println!(
                "{}: {} bytes, {:.4} bpp, PSNR {:.2} dB, SSIMULACRA2 {ssimulacra2}{weight}\n  wrote {} and {}",
                input.display(),
                bytes.len(),
                bytes.len() as f64 * 8.0 / pixels,
                metrics::psnr(&original, &decoded)?,
                mrg.display(),
                png.display()
            );
            Ok(())
        }
    }
}

/// How much `roundtrip`'s decode of a core file invented, for its report (empty for an
/// ultra-low file): the weight comes from the file unless the user gave one, so a file
/// without a suggestion (no realism predictor for this core) says it was the MSE decode
/// rather than leaving the user to guess.
fn decoded_weight(bytes: &[u8], realism: Realism) -> Result<String> {
    if mirage::ultralow::is_ultralow(bytes)? {
        return Ok(String::new());
    }
    let c = mirage_format::read(bytes)?;
    let stored = c.header.realism.map(|v| v as f32 / 255.0);
    let has_map = c.sections.len() > mirage::layout::REALISM_MAP_SECTION;
    Ok(match (realism, stored) {
        (Realism::Weight(w), _) => format!(", realism w = {w:.2}"),
        (Realism::Auto, Some(mean)) if has_map => {
            format!(", realism: the file's ConHa map (mean w = {mean:.2})")
        }
        (Realism::Auto, Some(w)) => format!(", realism w = {w:.2} (the file's)"),
        (Realism::Auto, None) => ", realism w = 0 (the file suggests none)".to_string(),
    })
}

/// What an encoded core file tells `decode --realism auto`, once `--realism` is resolved.
#[derive(Clone, Copy)]
enum Suggestion {
    /// The realism predictor's per-region map (ConHa).
    Map,
    /// One weight for the whole image.
    Weight(f32),
}

impl Suggestion {
    /// Resolves `--realism` once, before any image is encoded, so that a missing
    /// predictor or a setting the mode cannot store fails up front rather than after
    /// every file of a folder has been compressed: `fixed` becomes the predictor's weight.
    fn resolve(
        setting: Option<RealismSetting>,
        mode: Mode,
        add_ons: &AddOns,
    ) -> Result<Option<Suggestion>> {
        Ok(match (mode, setting) {
            (_, None) => None,
            (Mode::Ultralow, Some(_)) => bail!(
                "--realism is for the core mode; an ultra-low file decodes at w = 1 unless `decode --realism` says otherwise"
            ),
            (Mode::Core, Some(RealismSetting::Map)) => {
                add_ons.predictor()?;
                Some(Suggestion::Map)
            }
            (Mode::Core, Some(RealismSetting::Fixed)) => {
                Some(Suggestion::Weight(add_ons.predictor()?.fixed_weight()))
            }
            (Mode::Core, Some(RealismSetting::Weight(w))) => Some(Suggestion::Weight(w)),
        })
    }
}

/// What `encode` does to each file.
struct Job<'a> {
    codec: &'a Codec,
    add_ons: &'a AddOns,
    rate: &'a Rate,
    suggestion: Option<Suggestion>,
    mode: &'a ModeArgs,
}

impl Job<'_> {
    /// Compresses one image file to `dst`; returns the original (for reporting).
    fn encode(&self, src: &Path, dst: &Path, force: bool) -> Result<image::RgbImage> {
        let (codec, add_ons) = (self.codec, self.add_ons);
        let target = self.rate.target();
        let loaded = read_image(src)?;
        if let Some(note) = &loaded.note {
            eprintln!("mirage: note: {note}");
        }
        let in_context =
            |e: mirage::MirageError| anyhow::Error::new(e).context(src.display().to_string());
        let bytes = match (self.mode.mode, self.suggestion) {
            // `Suggestion::resolve` refused a suggestion for this mode.
            (Mode::Ultralow, _) => {
                if self.rate.effort != 0 {
                    bail!("--effort is for the core mode");
                }
                let caption = match (&self.mode.caption, self.mode.no_caption) {
                    (Some(text), _) => Some(text.clone()),
                    (None, true) => None,
                    (None, false) => loaded
                        .description
                        .clone()
                        .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?,
                };
                add_ons
                    .ultralow(codec)?
                    .compress_target(codec, &loaded.image, target, caption.as_deref())
                    .map_err(in_context)?
                    .0
            }
            (Mode::Core, _) if self.mode.caption.is_some() => {
                bail!("--caption is for the ultra-low mode (--mode ultralow)")
            }
            (Mode::Core, Some(Suggestion::Map)) => {
                add_ons
                    .predictor()?
                    .compress(codec, &loaded.image, target, self.rate.effort)
                    .map_err(in_context)?
                    .0
            }
            (Mode::Core, Some(Suggestion::Weight(w))) => suggest_realism(
                &codec
                    .compress_with_effort(&loaded.image, target, self.rate.effort)
                    .map_err(in_context)?
                    .0,
                w,
            )?,
            (Mode::Core, None) => {
                codec
                    .compress_with_effort(&loaded.image, target, self.rate.effort)
                    .map_err(in_context)?
                    .0
            }
        };
        write_atomically(dst, &bytes, force)?;
        Ok(loaded.image)
    }
}

/// The image files `encode` reads from a folder.
const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pnm", "gif",
];

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Refuses, before any work, an output that is the input itself (even with `--force`:
/// that would replace the user's file with its own transcoding) or that exists
/// without `--force`.
fn refuse_to_replace(input: &Path, output: &Path, force: bool) -> Result<()> {
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!("{}: the output would replace the input", output.display());
    }
    if !force && occupied(output) {
        return Err(exists_error(output).into());
    }
    Ok(())
}

/// Runs `job` on one file, or on every file with one of `extensions` in a folder
/// (writing `<stem>.<out_ext>` into the output folder), with a progress bar. A folder in
/// which two inputs would share an output is refused before any work; an output that
/// exists (without `force`) is refused before its own file's work, and counts as that
/// file's failure.
fn for_each_file(
    input: &Path,
    output: &Path,
    extensions: &[&str],
    out_ext: &str,
    force: bool,
    mut job: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    if !input.is_dir() {
        refuse_to_replace(input, output, force)?;
        return job(input, output);
    }
    let files = suite::files_with_extensions(input, extensions)?;
    if files.is_empty() {
        bail!("no {} files in {}", extensions.join("/"), input.display());
    }
    let outputs: Vec<PathBuf> = files
        .iter()
        .map(|src| {
            let stem = src.file_stem().unwrap_or_default().to_string_lossy();
            output.join(format!("{stem}.{out_ext}"))
        })
        .collect();
    // a.png and a.bmp would both become a.mrg. Compared without case, so that a folder
    // behaves the same on file systems that ignore it (A.png and a.png are refused too).
    let mut seen = std::collections::HashMap::new();
    for (src, dst) in files.iter().zip(&outputs) {
        let key = dst.to_string_lossy().to_lowercase();
        if let Some(other) = seen.insert(key, src) {
            bail!(
                "{} and {} would both be written to {} (names are compared without case); rename one",
                other.display(),
                src.display(),
                dst.display()
            );
        }
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let bar = progress::bar(files.len() as u64, "files");
    let mut failures = 0;
    for (src, dst) in files.iter().zip(&outputs) {
        if let Err(e) = refuse_to_replace(src, dst, force).and_then(|_| job(src, dst)) {
            bar.suspend(|| eprintln!("mirage: {e:#}"));
            failures += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failures > 0 {
        bail!("{failures} of {} files failed", files.len());
    }
    Ok(())
}

fn id_hex_long(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn info(file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let c = mirage_format::read(&bytes).with_context(|| file.display().to_string())?;
    let h = &c.header;
    let ultralow = h.decoder == mirage_format::ultralow::ULTRALOW_DECODER;
    let pixels = h.width as f64 * h.height as f64;
    println!("file:        {}", file.display());
    println!("format:      Mirage v{}", mirage_format::VERSION);
    println!("model id:    {}", id_hex(&h.model_id));
    println!("size:        {}x{}", h.width, h.height);
    if !ultralow {
        println!(
            "rate:        {} of {} (quality {:.1})",
            h.rate,
            mirage_format::RATE_MAX,
            h.rate as f64 / 10.0
        );
    }
    match h.realism {
        Some(w) => println!("realism:     {:.3}", w as f64 / 255.0),
        None => println!("realism:     not set"),
    }
    if let Some(map) = c.sections.get(2) {
        let map = mirage_format::realism_map::RealismMap::from_bytes(map, h.width, h.height)
            .with_context(|| file.display().to_string())?;
        println!(
            "realism map: {}x{} cells of {} px (w per cell, row by row):",
            map.cols,
            map.rows,
            mirage_format::realism_map::CELL
        );
        for row in map.levels.chunks(map.cols as usize) {
            let cells: Vec<String> = row
                .iter()
                .map(|&l| format!("{:.2}", mirage_format::realism_map::RealismMap::weight(l)))
                .collect();
            println!("             {}", cells.join(" "));
        }
    }
    if ultralow {
        let point = mirage_nn::model::ultralow::POINTS.get(h.rate as usize);
        match point {
            Some(p) => println!(
                "mode:        ultra-low, point {} (grid stride {} px, {} codes, {} bits per index)",
                h.rate,
                p.stride,
                p.codebook,
                p.index_bits()
            ),
            None => println!("mode:        ultra-low, unknown point {}", h.rate),
        }
        if let Some(section) = c.sections.get(1) {
            match mirage_format::ultralow::decompress_caption(section) {
                Ok(text) => println!("caption:     {text}"),
                Err(e) => println!("caption:     unreadable ({e})"),
            }
        }
    } else {
        println!("decoder:     {}", h.decoder);
    }
    println!(
        "total:       {} bytes, {:.4} bpp",
        bytes.len(),
        bytes.len() as f64 * 8.0 / pixels
    );
    println!(
        "header:      {} bytes",
        mirage_format::header_size(c.sections.len())
    );
    let names: &[&str] = if ultralow {
        &["codebook indices", "caption (DEFLATE)"]
    } else {
        &["hyper-latent (z)", "latent (y)", "realism map"]
    };
    for (i, s) in c.sections.iter().enumerate() {
        println!(
            "section {i}:   {} bytes  {}",
            s.len(),
            names.get(i).unwrap_or(&"")
        );
    }
    Ok(())
}
