//! Exporting trained weights to model files: `export`, `export-flow`, `export-realism`, `export-predictor`.

use crate::args::*;
use crate::Models;
use anyhow::{Context, Result};
use mirage::codec::{default_model_path, Codec};
use mirage_nn::model::realism::RealismConfig;
use mirage_nn::model::ModelConfig;
use mirage_nn::model_file::{export, export_flow, export_realism, id_hex};

pub(crate) fn run(command: Command, models: &Models) -> Result<()> {
    match command {
        Command::ExportFlow {
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
        Command::ExportRealism {
            checkpoint,
            channels,
            blocks,
            out,
        } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let config = RealismConfig {
                channels,
                blocks,
                feature_channels: codec.config().n,
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
        Command::ExportPredictor { run_dir, out } => {
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
        Command::Export {
            checkpoint,
            n,
            m,
            context,
            out,
        } => {
            let id = export(&checkpoint, ModelConfig { n, m, context }, &out)?;
            println!("wrote {} (model id {})", out.display(), id_hex(&id));
            Ok(())
        }
        _ => unreachable!("not a command of this group"),
    }
}
