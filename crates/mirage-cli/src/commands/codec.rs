//! Everyday use: `encode`, `decode`, `info`, `roundtrip`.

use crate::args::*;
use crate::{load_codec, Models};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use mirage::codec::Codec;
use mirage::decoders::{suggest_realism, AddOns, Decoder, FlowSettings, Realism};
use mirage::image_io::{read_image, write_atomically, write_image};
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
        /// What `decode --realism auto` will use: a weight (0–1) stored in the header,
        /// or `auto`, the realism predictor's per-region map (ConHa; a size target
        /// keeps room for the map's bytes).
        #[arg(long, value_parser = parse_realism)]
        realism: Option<Realism>,
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
        /// Euler steps of the flow decoder (1–16).
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Seed of the flow decoder's noise (same seed, same pixels).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Scale of the flow decoder's source noise, 0–1: lower invents less detail.
        #[arg(long, default_value_t = mirage::decoders::DEFAULT_FLOW_TEMPERATURE)]
        temperature: f32,
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
        /// Hallucination weight of the decode (0–1), or `auto`: the realism predictor's
        /// per-region map (ConHa), written by the encoder and followed by the decoder.
        #[arg(long, default_value = "auto", value_parser = parse_realism)]
        realism: Realism,
        #[command(flatten)]
        mode: ModeArgs,
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
            let (codec, add_ons) = load_codec(models)?;
            let job = Job {
                codec: &codec,
                add_ons: &add_ons,
                rate: &rate,
                realism,
                mode: &mode,
            };
            for_each_file(
                &input,
                &output,
                &[
                    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pnm", "gif",
                ],
                "mrg",
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
            let (codec, add_ons) = load_codec(models)?;
            let caption_use = if ignore_caption {
                CaptionUse::Ignore
            } else {
                CaptionUse::FromFile
            };
            for_each_file(&input, &output, &["mrg"], "png", |src, dst| {
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
                    DecoderChoice::Flow => add_ons.flow().map(|flow| {
                        let settings = FlowSettings {
                            steps,
                            seed,
                            temperature,
                        };
                        Decoder::Flow(flow, settings)
                    }),
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
        } => {
            let (codec, add_ons) = load_codec(models)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let stem = input
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let mrg = out_dir.join(format!("{stem}.mrg"));
            let png = out_dir.join(format!("{stem}.decoded.png"));
            // `auto` is the whole ConHa path when the predictor is there: the encoder
            // writes its realism map and the decoder follows it.
            let encode_realism = match realism {
                Realism::Auto if add_ons.predictor.is_some() && mode.mode == Mode::Core => {
                    Some(Realism::Auto)
                }
                _ => None,
            };
            let job = Job {
                codec: &codec,
                add_ons: &add_ons,
                rate: &rate,
                realism: encode_realism,
                mode: &mode,
            };
            let original = job.encode(&input, &mrg, true)?;
            let bytes = std::fs::read(&mrg)?;
            let (decoded, _, caption) =
                add_ons.decompress_any(&codec, &bytes, realism, CaptionUse::FromFile)?;
            if let Some(caption) = caption {
                println!("caption: {caption}");
            }
            write_image(&decoded, &png, true)?;
            let pixels = (original.width() * original.height()) as f64;
            println!(
                "{}: {} bytes, {:.4} bpp, PSNR {:.2} dB, SSIMULACRA2 {:.2}\n  wrote {} and {}",
                input.display(),
                bytes.len(),
                bytes.len() as f64 * 8.0 / pixels,
                metrics::psnr(&original, &decoded)?,
                metrics::ssimulacra2(&original, &decoded)?,
                mrg.display(),
                png.display()
            );
            Ok(())
        }
    }
}

/// What `encode` does to each file.
struct Job<'a> {
    codec: &'a Codec,
    add_ons: &'a AddOns,
    rate: &'a Rate,
    realism: Option<Realism>,
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
        let bytes = match (self.mode.mode, self.realism) {
            (Mode::Ultralow, realism) => {
                if realism.is_some() {
                    bail!("--realism is for the core mode; an ultra-low file decodes at w = 1 unless `decode --realism` says otherwise");
                }
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
            (Mode::Core, Some(Realism::Auto)) => {
                add_ons
                    .predictor()?
                    .compress(codec, &loaded.image, target, self.rate.effort)
                    .map_err(in_context)?
                    .0
            }
            (Mode::Core, Some(Realism::Weight(w))) => suggest_realism(
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

/// Runs `job` on one file, or on every file with one of `extensions` in a folder
/// (writing `<stem>.<out_ext>` into the output folder), with a progress bar.
fn for_each_file(
    input: &Path,
    output: &Path,
    extensions: &[&str],
    out_ext: &str,
    mut job: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    if !input.is_dir() {
        return job(input, output);
    }
    let files = suite::files_with_extensions(input, extensions)?;
    if files.is_empty() {
        bail!("no {} files in {}", extensions.join("/"), input.display());
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let bar = progress::bar(files.len() as u64, "files");
    let mut failures = 0;
    for src in &files {
        let stem = src.file_stem().unwrap_or_default().to_string_lossy();
        let dst = output.join(format!("{stem}.{out_ext}"));
        if let Err(e) = job(src, &dst) {
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
