//! `mirage train <model>`: training (or resuming) each of Mirage's networks.

use crate::args::*;
use crate::Models;
use anyhow::Result;
use clap::Subcommand;
use mirage::codec::{default_model_path, default_realism_path};
use mirage_nn::model::realism::RealismConfig;
use mirage_nn::model::{layers::ConvPrecision, ModelConfig, RateProxy};
use mirage_realism_measure::train::{train_extractor, ExtractorTrainOptions};
use mirage_train::data::CropSampling;
use mirage_train::realism::RealismTrainOptions;
use mirage_train::{train, RateSampling, TrainOptions};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum TrainCommand {
    /// Train (or resume training) the hyperprior on ../shared/data/train.
    Core {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/hyperprior")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 28_000)]
        steps: i64,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        crop: u32,
        /// How crops are drawn from the photos.
        #[arg(long, value_enum, default_value = "per-photo")]
        crops: CropChoice,
        /// With --crops by-area, the smallest scale a crop is taken at, 0.05–1 (default
        /// 0.5; a photo's own floor is the crop over its short side).
        #[arg(long, value_parser = parse_min_scale)]
        min_scale: Option<f32>,
        /// Clip the gradient's global norm to this ("inf": no clipping).
        #[arg(long, default_value_t = 1.0, value_parser = parse_clip_norm)]
        clip_norm: f64,
        /// Also keep an exponential moving average of the weights, at this decay per
        /// step (e.g. 0.999: about the last 1,000 steps), in RUN_DIR/ema.safetensors.
        #[arg(long, value_parser = parse_ema_decay)]
        ema_decay: Option<f64>,
        /// What the rate term scores: the latents plus uniform noise, or the rounded
        /// latents the coder pays for.
        #[arg(long, value_enum, default_value = "noise")]
        rate_proxy: RateProxyChoice,
        /// How each crop's rate setting is drawn: uniform over the range (the end levels
        /// get half an inner level's share), or so that every level gets the same share.
        #[arg(long, value_enum, default_value = "uniform")]
        rate_sampling: RateSamplingChoice,
        /// Also charge the decode's steps across the latent's 16 × 16 block edges beyond
        /// its steps one pixel to either side, at this weight relative to the MSE (0:
        /// off), against the faint grid of lines that low-rate decodes show.
        /// (`mirage_train::block_edges`; 1 was chosen by an A/B.)
        #[arg(long, default_value_t = 0.0, value_parser = parse_block_edge_weight)]
        block_edge_weight: f64,
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value_t = 6_000)]
        decay_steps: i64,
        /// Width of the transforms and of the hyper-latent.
        #[arg(long, default_value_t = 96)]
        n: i64,
        /// Latent channels (a multiple of 8; default: the run's checkpoint's, else the
        /// --init-from core's, else 128). With --init-from a core that has fewer, the
        /// latent grows: the new channels start at zero, so the run begins at that core's
        /// decoded images and about its rate (+0.0024 bpp for 64 new channels), and
        /// training puts them to use.
        #[arg(long)]
        m: Option<i64>,
        /// Train with the spatial–channel context model.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        context: bool,
        /// Residual bottleneck blocks on each low-resolution stage of both transforms
        /// (at most 4). With --init-from a core that has fewer, the new ones start as the
        /// identity, so the run begins exactly at that core and grows them.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=4))]
        residual_blocks: i64,
        /// Latent residual prediction between the decoded latent and the synthesis
        /// (Minnen & Singh 2020; `mirage_nn::model::LatentResidual`). Experimental: it
        /// starts as the identity on an --init-from core, but model files cannot carry it
        /// yet, so such a run can be compared (RUN_DIR/final-validation.csv), not exported.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        latent_residual: bool,
        /// The latent residual predictor's learning rate, as a multiple of --lr.
        #[arg(long, default_value_t = 1.0, value_parser = parse_lr_factor)]
        latent_residual_lr_factor: f64,
        /// A new run starts from this shipped model's transforms (its density network
        /// and any missing context layers start fresh).
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// On resume, fit the density network to the --init-from model's tables again.
        #[arg(long)]
        refit_prior: bool,
        #[arg(long, value_enum, default_value = "auto")]
        precision: Precision,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 1000)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train (or resume training) the realism generator on the frozen shipped hyperprior.
    Realism {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/realism")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 8_000)]
        steps: i64,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        crop: u32,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
        #[arg(long, default_value_t = 64)]
        channels: i64,
        #[arg(long, default_value_t = 4)]
        blocks: i64,
        /// Weight of the MSE (images in [0, 1]).
        #[arg(long, default_value_t = 150.0)]
        k_mse: f64,
        /// Weight of discriminator feature matching, times w.
        #[arg(long, default_value_t = 1.0)]
        k_fm: f64,
        /// Weight of the adversarial loss, times w.
        #[arg(long, default_value_t = 0.15)]
        k_adv: f64,
        /// Weight of the grid-locked part of the error (periods 4, 8, 16).
        #[arg(long, default_value_t = 3000.0)]
        k_grid: f64,
        /// Extra weight of the error's colour (Cb, Cr), against invented colour speckle.
        #[arg(long, default_value_t = 0.0)]
        k_chroma: f64,
        /// Weight of the fine detail added beyond the original's, per 16×16 cell, against
        /// hatching on flat areas (0: off, as v1–v3 were trained).
        #[arg(long, default_value_t = 0.0)]
        k_excess: f64,
        /// Give every block seeded noise inputs (v2; false builds v1's generator).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        noise: bool,
        /// Start a new run from this shipped generator (for example models/v1/realism.safetensors).
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// R1 gradient penalty weight γ on real images (0: off), lazily every 4 steps.
        #[arg(long, default_value_t = 0.0)]
        r1_gamma: f64,
        /// Discriminator scales: 1, or 2 (a second discriminator at half resolution).
        #[arg(long, default_value_t = 1)]
        scales: usize,
        /// Discriminator-only steps at the start of a new run (useful with --init-from).
        #[arg(long, default_value_t = 0)]
        d_warmup: i64,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 500)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train (or resume training) the rectified-flow refiner on the frozen shipped
    /// hyperprior's MSE decodes.
    Flow {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/flow")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 8_000)]
        steps: i64,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        crop: u32,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
        #[arg(long, default_value_t = 48)]
        channels: i64,
        /// Start a new run from this shipped refiner (for example models/v1/flow.safetensors).
        #[arg(long)]
        init_from: Option<PathBuf>,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 500)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train (or resume training) the ultra-low-bitrate mode's grid networks and
    /// codebooks on the frozen bundled core's latents (docs/ultralow.md).
    Ultralow {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/ultralow")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 6_000)]
        steps: i64,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Side of a training crop in latent cells (16 pixels each), a multiple of 4.
        #[arg(long, default_value_t = 16)]
        crop: usize,
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value_t = 128)]
        channels: i64,
        #[arg(long, default_value_t = 32)]
        code_dim: i64,
        /// The step from which the latent discriminator's terms are on.
        #[arg(long, default_value_t = i64::MAX)]
        adversarial_after: i64,
        /// Weight of the pixel MSE through the frozen synthesis (0: latent loss only).
        #[arg(long, default_value_t = 0.0)]
        k_pixel: f64,
        /// Crops per batch that get the pixel loss.
        #[arg(long, default_value_t = 4)]
        pixel_batch: usize,
        /// Start a new run from this checkpoint's grid networks (fresh optimizer).
        #[arg(long)]
        init_from: Option<PathBuf>,
        #[arg(long, default_value_t = 0.05)]
        k_adv: f64,
        #[arg(long, default_value_t = 0.5)]
        k_feature: f64,
        /// Weight of the latent NMSE.
        #[arg(long, default_value_t = 1.0)]
        k_latent: f64,
        /// Train the grid decoders only: encoders and codebooks (what files carry) stay
        /// fixed, so files made before keep their meaning.
        #[arg(long)]
        freeze_codes: bool,
        /// Condition on captions: a directory of COCO caption files (captions_*.json),
        /// for example ../shared/data/train/coco. Needs scripts/setup-text-encoder.sh.
        #[arg(long)]
        captions: Option<PathBuf>,
        /// Probability of dropping a photo's caption in a step.
        #[arg(long, default_value_t = 0.5)]
        caption_drop: f64,
        /// The discriminator judges pixels (the synthesis of the pixel-loss crops,
        /// `--pixel-batch`), not latents.
        #[arg(long)]
        pixel_adversarial: bool,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 500)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train the realism predictor (ConHa) on proxy labels computed on the training
    /// photos with the bundled hyperprior and realism generator; prints its held-out
    /// error against constant weights.
    Predictor {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/predictor")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        crops_per_image: usize,
        #[arg(long, default_value_t = 256)]
        crop: u32,
        #[arg(long, default_value_t = 3_000)]
        steps: i64,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Learning rate (default 1e-3 on proxy labels, 3e-4 with --votes: the vote loss
        /// saturates the predictor's sigmoid at higher rates).
        #[arg(long)]
        lr: Option<f64>,
        /// Weight of the realism term against the fidelity term of the proxy label.
        #[arg(long, default_value_t = mirage_train::predictor::DEFAULT_ALPHA)]
        alpha: f64,
        /// Weight of the line-structure term (straight edges, strokes: less w).
        #[arg(long, default_value_t = mirage_train::predictor::DEFAULT_BETA)]
        beta: f64,
        /// Pairwise votes to learn from (the CSV of `vote_campaign.py score`), on the
        /// study pool given by --pool; fitted with a Bradley–Terry loss.
        #[arg(long, requires = "pool")]
        votes: Option<PathBuf>,
        /// The study pool the votes were cast on (its originals and pool.toml).
        #[arg(long, requires = "votes")]
        pool: Option<PathBuf>,
        /// Weight of the proxy-label loss beside the votes; 0 learns from the votes alone.
        #[arg(long, default_value_t = 1.0)]
        proxy_weight: f64,
        /// Weight of the vote loss; 0 only reports agreement with the (held-out) votes.
        #[arg(long, default_value_t = 1.0)]
        vote_weight: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train (or resume training) the realism extractor, self-supervised, on
    /// ../shared/data/train (rotation and noise prediction on random crops).
    Extractor {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/realism-extractor")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 3_000)]
        steps: i64,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        crop: u32,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 1_000)]
        decay_steps: i64,
        /// Weight of the noise-prediction loss against the rotation loss.
        #[arg(long, default_value_t = 1.0)]
        noise_weight: f64,
        #[arg(long, default_value_t = 100)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

pub(crate) fn run(command: TrainCommand, models: &Models) -> Result<()> {
    match command {
        TrainCommand::Extractor {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            noise_weight,
            checkpoint_every,
            seed,
        } => train_extractor(&ExtractorTrainOptions {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            noise_weight,
            checkpoint_every,
            seed,
        }),
        TrainCommand::Predictor {
            data,
            run_dir,
            crops_per_image,
            crop,
            steps,
            batch,
            lr,
            alpha,
            beta,
            votes,
            pool,
            proxy_weight,
            vote_weight,
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
                lr: lr.unwrap_or(if votes.is_some() { 3e-4 } else { 1e-3 }),
                alpha,
                beta,
                votes: votes.zip(pool),
                proxy_weight,
                vote_weight,
                seed,
            };
            print!("{}", mirage_train::predictor::train(&o)?);
            Ok(())
        }
        TrainCommand::Core {
            data,
            run_dir,
            steps,
            batch,
            crop,
            crops,
            min_scale,
            clip_norm,
            ema_decay,
            rate_proxy,
            rate_sampling,
            block_edge_weight,
            lr,
            decay_steps,
            n,
            m,
            context,
            residual_blocks,
            latent_residual,
            latent_residual_lr_factor,
            init_from,
            refit_prior,
            precision,
            checkpoint_every,
            validate_every,
            seed,
        } => {
            if latent_residual_lr_factor != 1.0 && !latent_residual {
                anyhow::bail!(
                    "--latent-residual-lr-factor applies with --latent-residual true only"
                );
            }
            train(&TrainOptions {
                config: ModelConfig {
                    n,
                    m: match m {
                        Some(m) => m,
                        None => mirage_train::latent_channels_of(&run_dir, init_from.as_deref())?,
                    },
                    context,
                    residual_blocks,
                    latent_residual,
                },
                data,
                run_dir,
                steps,
                batch,
                crop,
                sampling: match (crops, min_scale) {
                    (CropChoice::PerPhoto, None) => CropSampling::PerPhoto,
                    (CropChoice::PerPhoto, Some(_)) => {
                        anyhow::bail!("--min-scale applies to --crops by-area only")
                    }
                    (CropChoice::ByArea, scale) => CropSampling::ByArea {
                        min_scale: scale.unwrap_or(0.5),
                    },
                },
                clip_norm,
                ema_decay,
                rate_proxy: match rate_proxy {
                    RateProxyChoice::Noise => RateProxy::UniformNoise,
                    RateProxyChoice::Rounded => RateProxy::Rounded,
                },
                rate_sampling: match rate_sampling {
                    RateSamplingChoice::Uniform => RateSampling::Uniform,
                    RateSamplingChoice::EvenLevels => RateSampling::EvenLevels,
                },
                block_edge_weight,
                latent_residual_lr_factor,
                lr,
                decay_steps,
                init_from,
                refit_prior,
                precision: match precision {
                    Precision::Auto => ConvPrecision::fastest_for_training(),
                    Precision::F32 => ConvPrecision::F32,
                    Precision::Bf16 => ConvPrecision::Bf16,
                },
                checkpoint_every,
                validate_every,
                seed,
            })
        }
        TrainCommand::Flow {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            channels,
            init_from,
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
            init_from,
            checkpoint_every,
            validate_every,
            seed,
        }),
        TrainCommand::Ultralow {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            channels,
            code_dim,
            adversarial_after,
            k_pixel,
            pixel_batch,
            init_from,
            k_adv,
            k_feature,
            k_latent,
            freeze_codes,
            captions,
            caption_drop,
            pixel_adversarial,
            checkpoint_every,
            validate_every,
            seed,
        } => {
            let base_model = models.model.clone().unwrap_or_else(default_model_path);
            let latent_channels = mirage::codec::Codec::load(&base_model)?.config().m;
            mirage_train::ultralow::train(&mirage_train::ultralow::UltralowTrainOptions {
                data,
                base_model,
                run_dir,
                steps,
                batch,
                crop,
                lr,
                config: mirage_nn::model::ultralow::UltralowConfig {
                    channels,
                    code_dim,
                    latent_channels,
                },
                adversarial_after,
                k_pixel,
                pixel_batch,
                init_from,
                k_adv,
                k_feature,
                k_latent,
                freeze_codes,
                captions,
                caption_drop,
                pixel_adversarial,
                checkpoint_every,
                validate_every,
                seed,
            })
        }
        TrainCommand::Realism {
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
            k_grid,
            k_chroma,
            k_excess,
            noise,
            init_from,
            r1_gamma,
            scales,
            d_warmup,
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
                noise,
            },
            k_mse,
            k_fm,
            k_adv,
            k_grid,
            k_chroma,
            k_excess,
            init_from,
            r1_gamma,
            scales,
            d_warmup,
            checkpoint_every,
            validate_every,
            seed,
        }),
    }
}

/// `--min-scale`: a scale in [0.05, 1] (below that a 256² crop would need a
/// 5,000-pixel square of photo).
fn parse_min_scale(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.05..=1.0).contains(&v) => Ok(v),
        Ok(v) => Err(format!("{v} is not in [0.05, 1]")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--ema-decay`: a decay in (0, 1); 1 would never move, 0 is the weights themselves.
fn parse_ema_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not in (0, 1)")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--block-edge-weight`: a weight in [0, 100]. 1 makes the term a few per cent of the
/// loss; 100 would let it outweigh the MSE, which only a typo would ask for.
fn parse_block_edge_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if (0.0..=100.0).contains(&w) => Ok(w),
        Ok(w) => Err(format!("{w} is not a weight in [0, 100]")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--latent-residual-lr-factor`: a multiple of the learning rate in (0, 100].
fn parse_lr_factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 100.0 => Ok(f),
        Ok(f) => Err(format!("{f} is not a factor in (0, 100]")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--clip-norm`: a positive norm, or infinity.
fn parse_clip_norm(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not a positive norm")),
        Err(e) => Err(e.to_string()),
    }
}
