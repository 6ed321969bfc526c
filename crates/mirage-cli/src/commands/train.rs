//! Training: `train`, `train-flow`, `train-realism`, `train-predictor`.

use crate::args::*;
use crate::Models;
use anyhow::Result;
use mirage::codec::{default_model_path, default_realism_path};
use mirage_nn::model::realism::RealismConfig;
use mirage_nn::model::{layers::ConvPrecision, ModelConfig};
use mirage_train::realism::RealismTrainOptions;
use mirage_train::{train, TrainOptions};

pub(crate) fn run(command: Command, models: &Models) -> Result<()> {
    match command {
        Command::TrainPredictor {
            data,
            run_dir,
            crops_per_image,
            crop,
            steps,
            batch,
            lr,
            alpha,
            beta,
            seed,
        } => {
            let o = mirage_train::predictor::PredictorTrainOptions {
                data,
                base_model: models.model.clone().unwrap_or_else(default_model_path),
                realism_model: models
                    .realism_model
                    .clone()
                    .unwrap_or_else(default_realism_path),
                run_dir,
                crops_per_image,
                crop,
                steps,
                batch,
                lr,
                alpha,
                beta,
                seed,
            };
            print!("{}", mirage_train::predictor::train(&o)?);
            Ok(())
        }
        Command::Train {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            n,
            m,
            context,
            init_from,
            refit_prior,
            precision,
            checkpoint_every,
            validate_every,
            seed,
        } => train(&TrainOptions {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            config: ModelConfig { n, m, context },
            init_from,
            refit_prior,
            precision: match precision {
                Precision::F32 => ConvPrecision::F32,
                Precision::Bf16 => ConvPrecision::Bf16,
            },
            checkpoint_every,
            validate_every,
            seed,
        }),
        Command::TrainFlow {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            channels,
            checkpoint_every,
            validate_every,
            seed,
        } => mirage_train::flow::train(&mirage_train::flow::FlowTrainOptions {
            data,
            base_model: models.model.clone().unwrap_or_else(default_model_path),
            run_dir,
            steps,
            batch,
            crop,
            lr,
            config: mirage_nn::model::flow::FlowConfig { channels },
            checkpoint_every,
            validate_every,
            seed,
        }),
        Command::TrainRealism {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            channels,
            blocks,
            k_mse,
            k_fm,
            k_adv,
            checkpoint_every,
            validate_every,
            seed,
        } => mirage_train::realism::train(&RealismTrainOptions {
            data,
            base_model: models.model.clone().unwrap_or_else(default_model_path),
            run_dir,
            steps,
            batch,
            crop,
            lr,
            config: RealismConfig {
                channels,
                blocks,
                feature_channels: 0,
            },
            k_mse,
            k_fm,
            k_adv,
            checkpoint_every,
            validate_every,
            seed,
        }),
        _ => unreachable!("not a command of this group"),
    }
}
