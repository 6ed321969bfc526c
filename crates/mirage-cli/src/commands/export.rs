//! `mirage export <model>`: a training run's weights written as a shipped model file.

use crate::Models;
use anyhow::{Context, Result};
use clap::Subcommand;
use mirage::codec::{default_model_path, Codec};
use mirage_nn::model::realism::RealismConfig;
use mirage_nn::model_file::{export, export_flow, export_realism, id_hex};
use mirage_realism_measure::train::export_extractor;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum ExportCommand {
    /// Write the shipped model file from a training checkpoint.
    Core {
        #[arg(long, default_value = "runs/hyperprior/model.safetensors")]
        /// The widths (n, m) and residual blocks are read from its tensors.
        checkpoint: PathBuf,
        /// The checkpoint has the spatial–channel context model.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        context: bool,
        #[arg(long, default_value = "models/hyperprior.safetensors")]
        out: PathBuf,
        /// The shipped core this checkpoint continues, whose add-ons (realism generator,
        /// flow refiner, ConHa predictor, ultra-low model) were measured on the new one
        /// and are carried over to it.
        #[arg(long)]
        takes_add_ons_of: Option<PathBuf>,
    },
    /// Write the shipped realism generator from a training checkpoint, tied to the
    /// loaded hyperprior.
    Realism {
        #[arg(long, default_value = "runs/realism/generator.safetensors")]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 64)]
        channels: i64,
        #[arg(long, default_value_t = 4)]
        blocks: i64,
        /// The generator has noise inputs (v2; false for v1's).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        noise: bool,
        #[arg(long, default_value = "models/realism.safetensors")]
        out: PathBuf,
    },
    /// Write the shipped flow refiner from a training checkpoint, tied to the loaded
    /// hyperprior.
    Flow {
        #[arg(long, default_value = "runs/flow/flow.safetensors")]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 48)]
        channels: i64,
        #[arg(long, default_value = "models/flow.safetensors")]
        out: PathBuf,
    },
    /// Write the shipped ultra-low model from a training checkpoint, tied to the
    /// loaded core and to its bundled realism generator (which decodes its files).
    Ultralow {
        #[arg(long, default_value = "runs/ultralow/ultralow.safetensors")]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 128)]
        channels: i64,
        #[arg(long, default_value_t = 32)]
        code_dim: i64,
        /// An earlier shipped ultra-low model whose files the new one must decode too
        /// (its encoders and codebooks must be unchanged: `train ultralow --freeze-codes`).
        #[arg(long)]
        supersedes: Option<PathBuf>,
        #[arg(long, default_value = "models/ultralow.safetensors")]
        out: PathBuf,
    },
    /// Write the shipped realism predictor from a `train predictor` run, tied to the
    /// loaded hyperprior.
    Predictor {
        #[arg(long, default_value = "runs/predictor")]
        run_dir: PathBuf,
        #[arg(long, default_value = "models/realism-predictor.safetensors")]
        out: PathBuf,
    },
    /// Cut a core down to what decoding needs (an earlier release kept so that its files
    /// still decode): about a third smaller, the same id, and it refuses to encode.
    DecodeOnly {
        /// The full core.
        core: PathBuf,
        out: PathBuf,
        /// Replace an existing file (which may be `core` itself).
        #[arg(long)]
        force: bool,
    },
    /// Write the shipped extractor (f16 weights, feature scale, metadata) from a run.
    Extractor {
        #[arg(long, default_value = "runs/realism-extractor")]
        run_dir: PathBuf,
        /// Training photos, for the feature scale (never Kodak).
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "models/realism-extractor.safetensors")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

pub(crate) fn run(command: ExportCommand, models: &Models) -> Result<()> {
    match command {
        ExportCommand::DecodeOnly { core, out, force } => cut_decode_only(&core, &out, force),
        ExportCommand::Extractor {
            run_dir,
            data,
            out,
            force,
        } => {
            let id = export_extractor(&run_dir, &data, &out, force)?;
            println!("wrote {} (extractor id {id})", out.display());
            Ok(())
        }
        ExportCommand::Flow {
            checkpoint,
            channels,
            out,
        } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let config = mirage_nn::model::flow::FlowConfig { channels };
            let id = export_flow(&checkpoint, config, &codec.id(), &out)?;
            println!(
                "wrote {} (flow model {}, for model {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id())
            );
            Ok(())
        }
        ExportCommand::Realism {
            checkpoint,
            channels,
            blocks,
            noise,
            out,
        } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let config = RealismConfig {
                channels,
                blocks,
                feature_channels: codec.config().n,
                noise,
            };
            let id = export_realism(&checkpoint, config, &codec.id(), &out)?;
            println!(
                "wrote {} (realism model {}, for model {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id())
            );
            Ok(())
        }
        ExportCommand::Ultralow {
            checkpoint,
            channels,
            code_dim,
            supersedes,
            out,
        } => {
            // Read before writing: `--out` may be the superseded file itself.
            let supersedes = supersedes
                .map(|p| {
                    mirage_nn::model_file::DecoderFile::load(
                        &p,
                        mirage_nn::model_file::ULTRALOW_FORMAT_NAME,
                    )
                })
                .transpose()?;
            let (codec, add_ons) = crate::load_codec(models)?;
            let generator = add_ons.realism()?.id;
            let config = mirage_nn::model::ultralow::UltralowConfig {
                channels,
                code_dim,
                latent_channels: codec.config().m,
            };
            let id = mirage_nn::model_file::export_ultralow(
                &checkpoint,
                config,
                &codec.id(),
                &generator,
                supersedes.as_ref(),
                &out,
            )?;
            println!(
                "wrote {} (ultra-low model {}, for model {} and realism generator {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id()),
                id_hex(&generator)
            );
            Ok(())
        }
        ExportCommand::Predictor { run_dir, out } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let fixed_path = run_dir.join("fixed_level");
            let fixed_level: u8 = std::fs::read_to_string(&fixed_path)
                .with_context(|| format!("cannot read {}", fixed_path.display()))?
                .trim()
                .parse()
                .with_context(|| format!("{} is not a level", fixed_path.display()))?;
            let id = mirage_nn::model_file::export_predictor(
                &run_dir.join("predictor.safetensors"),
                fixed_level,
                &codec.id(),
                &out,
            )?;
            println!(
                "wrote {} (realism predictor {}, for model {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id())
            );
            Ok(())
        }
        ExportCommand::Core {
            checkpoint,
            context,
            out,
            takes_add_ons_of,
        } => {
            let earlier = takes_add_ons_of
                .as_deref()
                .map(mirage_nn::model_file::ModelFile::load)
                .transpose()?;
            let id = export(&checkpoint, context, earlier.as_ref(), &out)?;
            println!("wrote {} (model id {})", out.display(), id_hex(&id));
            Ok(())
        }
    }
}

/// `export decode-only`: cuts `core` and checks the cut decodes a test image to the same
/// pixels as the full core before writing it (atomically, so `out` may be `core`).
fn cut_decode_only(core: &std::path::Path, out: &std::path::Path, force: bool) -> Result<()> {
    let full_bytes =
        std::fs::read(core).with_context(|| format!("cannot read {}", core.display()))?;
    let full = Codec::load(core)?;
    // Cores something still encodes through must stay whole.
    if full.id() == Codec::load_default()?.id() {
        anyhow::bail!(
            "{} is the bundled core, which encodes; cut an earlier release",
            core.display()
        );
    }
    let ultralow = mirage::ultralow::default_ultralow_path();
    if ultralow.exists() {
        let file = mirage_nn::model_file::DecoderFile::load(
            &ultralow,
            mirage_nn::model_file::ULTRALOW_FORMAT_NAME,
        )?;
        if file.base_model == id_hex(&full.id()) {
            anyhow::bail!(
                "the ultra-low mode ({}) encodes through {}; it must stay whole",
                ultralow.display(),
                core.display()
            );
        }
    }
    let cut = mirage_nn::model_file::decode_only(&full_bytes)
        .with_context(|| core.display().to_string())?;
    let check = std::env::temp_dir().join(format!(
        "mirage-decode-only-{}.safetensors",
        std::process::id()
    ));
    std::fs::write(&check, &cut)?;
    let loaded = Codec::load(&check);
    std::fs::remove_file(&check).ok();
    let decode_only = loaded?;
    let img = image::RgbImage::from_fn(128, 96, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
    });
    let (file, _) = full.compress(&img, mirage::RateTarget::Quality(50.0))?;
    anyhow::ensure!(
        decode_only.id() == full.id()
            && decode_only.decompress(&file)?.0 == full.decompress(&file)?.0,
        "the cut core does not decode as the full one"
    );
    mirage::image_io::write_atomically(out, &cut, force)?;
    println!(
        "wrote {} ({} bytes, was {}): model {}, decode-only",
        out.display(),
        cut.len(),
        full_bytes.len(),
        id_hex(&full.id())
    );
    Ok(())
}
