//! Training: "how are the networks' weights made?" The data pipeline (`data`), the
//! optimizer (`adam`), the losses and the loop of each model: the hyperprior (this
//! file), the realism generator (`realism`), the flow refiner (`flow`) and the ConHa
//! predictor (`predictor`). A loss is changed in the loop's own file.
//!
//! It may depend on `mirage-nn` (the networks and model files) and on `mirage` for
//! image I/O and progress bars; nothing below depends on it.
//!
//! `mirage train core`: rate–distortion training of the hyperprior over the whole rate range.
//!
//! Each image of a batch gets its own continuous rate setting `r ~ U[0, levels − 1]`,
//! and its loss is `λ(r) · 255² · (MSE + k · block edges) + bpp`, with `k` from
//! `--block-edge-weight` (0 by default; [`block_edges`]); `log.csv`'s loss column is that
//! whole loss. A run directory holds:
//! `model.safetensors` (the weights, f32), `adam.safetensors` (optimizer state, never
//! committed), `log.csv` (the training curve) and `validation.csv` (held-out photos,
//! not Kodak, at three rate settings). Re-running the same command resumes.

pub mod adam;
pub mod block_edges;
pub mod captions;
pub mod data;
pub mod flow;
pub mod predictor;
pub mod realism;
pub mod ultralow;
pub mod votes;
pub mod weight_average;

use mirage::{image_io, progress};
use mirage_nn::{model, model_file};

use crate::model::{lambda_at, layers::ConvPrecision, Hyperprior, ModelConfig, RateProxy, LEVELS};
use adam::Adam;
use anyhow::{Context, Result};
use data::{mse_per_image, CropSampling, Dataset};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};
use weight_average::WeightAverage;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub run_dir: PathBuf,
    /// Total steps of the run (a resumed run continues up to this).
    pub steps: i64,
    pub batch: usize,
    pub crop: u32,
    /// How crops are drawn from the photos.
    pub sampling: CropSampling,
    /// The gradient's global norm is clipped to this (infinity: not clipped). At 1 it
    /// acts on about 95 % of steps, whose median norm is about 10, so Adam sees
    /// normalised gradients, and that measured 1.5 % better than clipping at 50,
    /// where the high-rate crops' ten times larger gradients dominate (model card).
    pub clip_norm: f64,
    /// Keep an exponential moving average of the weights at this decay per step, saved
    /// as `ema.safetensors` beside the weights (None: no average).
    pub ema_decay: Option<f64>,
    /// What the rate term scores. `log.csv`'s bpp column is that score, so it changes
    /// meaning with the proxy; the validation curve always uses uniform noise, so that
    /// runs stay comparable.
    pub rate_proxy: RateProxy,
    /// How each crop's rate setting is drawn.
    pub rate_sampling: RateSampling,
    /// Weight of the decode's excess steps across the latent's block edges
    /// ([`block_edges`]), relative to the MSE (0: the plain MSE loss).
    pub block_edge_weight: f64,
    /// The learning rate of the latent residual predictor, as a multiple of `lr`: it
    /// starts at zero inside a trained core, where the gradient reaching it is weak.
    pub latent_residual_lr_factor: f64,
    pub lr: f64,
    /// The learning rate decays linearly to `lr / 20` over the last `decay_steps` steps.
    pub decay_steps: i64,
    pub config: ModelConfig,
    /// A new run starts from this shipped model's weights (see `ModelFile::fill_available`).
    pub init_from: Option<PathBuf>,
    /// On resume, fit the density network to `init_from`'s tables again.
    pub refit_prior: bool,
    pub precision: ConvPrecision,
    pub checkpoint_every: i64,
    pub validate_every: i64,
    pub seed: u64,
}

/// How each training crop's continuous rate setting `r` in `[0, LEVELS − 1]` is drawn.
/// The model interpolates its gains between the two levels around `r`, so a level's
/// share of the training signal is the mean of its hat function (1 at the level, 0 at
/// its neighbours) over the draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateSampling {
    /// `r ~ U[0, 7]`: the end levels have one neighbour each, so the lowest and the
    /// highest rate get half the share of an inner level (1/14 against 1/7).
    Uniform,
    /// `r ~ U[−½, 7½]`, clamped to `[0, 7]`: the clamped half-units land exactly on the
    /// end levels and make up their missing half, so all eight get 1/8. Tried because the
    /// high rates are where the core trails AVIF most; over 1,200 steps it gained a little
    /// at the ends and lost more in between (model card, "Even rate levels"), so uniform
    /// stays the default.
    EvenLevels,
}

impl RateSampling {
    /// One draw. Both kinds take exactly one number from `rng`, so two runs that differ
    /// only in this see the same crops.
    fn draw(self, rng: &mut impl Rng) -> f32 {
        let top = (LEVELS - 1) as f32;
        match self {
            RateSampling::Uniform => rng.gen_range(0.0..top),
            RateSampling::EvenLevels => rng.gen_range(-0.5..top + 0.5).clamp(0.0, top),
        }
    }
}

/// Steps of linear warm-up at the start of a run (fresh layers, a fresh density
/// network and a fresh Adam state all want small first steps).
const WARMUP_STEPS: i64 = 300;

/// The hyper-latent's density network learns at this multiple of the learning rate.
/// Its only job is to fit the histogram of `z`, and a warm-started run begins it from
/// scratch (the shipped file keeps only its integer tables): at the base rate its
/// excess bits took hundreds of steps to shrink, and meanwhile their gradient pulls on
/// the hyper-analysis.
const PRIOR_LR_FACTOR: f64 = 10.0;

fn learning_rate(o: &TrainOptions, step: i64) -> f64 {
    let decay_start = o.steps - o.decay_steps;
    if step < WARMUP_STEPS {
        o.lr * (step + 1) as f64 / WARMUP_STEPS as f64
    } else if step < decay_start {
        o.lr
    } else {
        let t = (step - decay_start) as f64 / o.decay_steps.max(1) as f64;
        o.lr * (1.0 - 0.95 * t.min(1.0))
    }
}

/// The shipped hyperprior, frozen, for training decoders on its bitstreams: exactly
/// the networks that make and decode the files (f32, as the codec runs them). The
/// returned store owns the weights and must outlive the network.
pub(crate) fn frozen_hyperprior(
    path: &std::path::Path,
) -> Result<(VarStore, Hyperprior, crate::model_file::ModelFile)> {
    frozen_hyperprior_at(path, ConvPrecision::F32)
}

/// [`frozen_hyperprior`] with its convolutions at `precision` (bf16 for speed where a
/// loss only needs gradients through it).
pub(crate) fn frozen_hyperprior_at(
    path: &std::path::Path,
    precision: ConvPrecision,
) -> Result<(VarStore, Hyperprior, crate::model_file::ModelFile)> {
    let base = crate::model_file::ModelFile::load(path)?;
    let mut vs = VarStore::new(Device::Cpu);
    let hyperprior = Hyperprior::new(&vs.root(), base.config, precision);
    base.fill(&vs)?;
    vs.freeze();
    Ok((vs, hyperprior, base))
}

/// The training wall time a run directory has recorded so far (0 for a new run).
pub fn elapsed_seconds(path: &std::path::Path) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Opens a CSV log for appending, writing its header if it is new.
///
/// An existing log must have the same columns: rows of a newer trainer appended under an
/// older header would be read as the wrong quantities.
pub fn open_log(path: &std::path::Path, header: &str) -> Result<std::fs::File> {
    // An empty file (a run killed before its first line) counts as new.
    let new = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    if !new {
        let text = std::fs::read_to_string(path)?;
        let existing = text.lines().next().unwrap_or("");
        if existing != header {
            anyhow::bail!(
                "{} has the columns {existing:?}, this trainer writes {header:?}; move it aside to resume",
                path.display()
            );
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(f, "{header}")?;
    }
    Ok(f)
}

/// Writes a file through a temporary name and a rename, so a crash never leaves a
/// half-written checkpoint in place of a good one.
pub(crate) fn save_atomically(vs: &VarStore, path: &std::path::Path) -> Result<()> {
    let tmp = path.with_extension("tmp.safetensors");
    vs.save(&tmp)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Writes a small text file through a temporary one, so a reader never sees half of it.
fn save_text_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Keeps a copy of the weights at each validation in `snapshots/NAME-STEP.safetensors`,
/// so the best point of a run (GANs do not improve monotonically) can be shipped
/// rather than whichever step the run happened to stop at.
pub(crate) fn save_snapshot(
    vs: &VarStore,
    run_dir: &std::path::Path,
    name: &str,
    step: i64,
) -> Result<()> {
    let dir = run_dir.join("snapshots");
    std::fs::create_dir_all(&dir)?;
    save_atomically(vs, &dir.join(format!("{name}-{step}.safetensors")))
}

/// The latent width a core run goes on with when none is asked for: its checkpoint's
/// (resuming), else that of the core it starts from, else the default.
pub fn latent_channels_of(
    run_dir: &std::path::Path,
    init_from: Option<&std::path::Path>,
) -> Result<i64> {
    let checkpoint = run_dir.join("model.safetensors");
    Ok(if checkpoint.exists() {
        model_file::widths_in(&checkpoint)?.1
    } else if let Some(init) = init_from {
        crate::model_file::ModelFile::load(init)?.config.m
    } else {
        ModelConfig::default().m
    })
}

/// Fits the density network of the hyper-latent to the `--init-from` model's tables.
fn refit_prior(model: &Hyperprior, o: &TrainOptions) -> Result<()> {
    let Some(init) = &o.init_from else {
        anyhow::bail!("--refit-prior needs --init-from");
    };
    let base = crate::model_file::ModelFile::load(init)?;
    let started = Instant::now();
    model
        .prior
        .fit_to_pmf(&base.hyper_pmf(), crate::model_file::RADIUS, 400);
    eprintln!(
        "density network fitted to {}'s tables in {:.1} s",
        init.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn train(o: &TrainOptions) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(o.seed);
    tch::manual_seed(o.seed as i64);
    eprintln!("loading training images from {}", o.data.display());
    // Worth a line in the log: bf16 convolutions measured 2× faster per layer where the
    // CPU has AVX-512 BF16, and a virtual machine may hide it (the core's seventh
    // session ran on such a Zen 4, in f32).
    eprintln!(
        "convolutions in {}",
        match o.precision {
            ConvPrecision::Bf16 => "bf16 (AVX-512 BF16)",
            ConvPrecision::F32 => "f32",
        }
    );
    let data = Dataset::load(&o.data, o.crop.max(256))?;
    eprintln!(
        "{} training and {} validation images, crops {:?}",
        data.train.len(),
        data.validation.len(),
        o.sampling
    );
    let validation = data.validation_crops(256);
    if o.rate_proxy == RateProxy::Rounded {
        eprintln!("the rate is scored on the rounded latents");
    }

    let mut vs = VarStore::new(Device::Cpu);
    let model = Hyperprior::new(&vs.root(), o.config, o.precision);
    let mut adam = Adam::new(&vs);
    let model_path = o.run_dir.join("model.safetensors");
    let adam_path = o.run_dir.join("adam.safetensors");
    if model_path.exists() {
        let (n, m) = model_file::widths_in(&model_path)?;
        if (n, m) != (o.config.n, o.config.m) {
            anyhow::bail!(
                "{} has n = {n}, m = {m}; resume it with --n {n} --m {m}",
                model_path.display()
            );
        }
        // `VarStore::load` would fail on blocks the checkpoint lacks but silently drop
        // blocks it has that this run would not build.
        let in_checkpoint = model_file::residual_blocks_in(&model_path)?;
        if in_checkpoint != o.config.residual_blocks {
            anyhow::bail!(
                "{} has {in_checkpoint} residual blocks per stage; resume it with --residual-blocks {in_checkpoint} (to deepen a core, start a new run with --init-from)",
                model_path.display()
            );
        }
        if model_file::latent_residual_in(&model_path)? != o.config.latent_residual {
            anyhow::bail!(
                "{} {} latent residual prediction; resume it with --latent-residual {}",
                model_path.display(),
                if o.config.latent_residual {
                    "lacks"
                } else {
                    "has"
                },
                !o.config.latent_residual
            );
        }
        vs.load(&model_path).context("resuming weights")?;
        if adam_path.exists() {
            adam.load(&adam_path).context("resuming optimizer state")?;
        }
        eprintln!("resumed at step {}", adam.step);
        // Each resume gets fresh randomness; the same seed again would replay old crops.
        rng = StdRng::seed_from_u64(o.seed ^ adam.step as u64);
        tch::manual_seed(o.seed as i64 ^ adam.step);
        if o.refit_prior {
            refit_prior(&model, o)?;
        }
    } else if let Some(init) = &o.init_from {
        let base = crate::model_file::ModelFile::load(init)?;
        // Filling a shallower network would drop the file's blocks without a word.
        let in_file = base.config.residual_blocks;
        if in_file > o.config.residual_blocks {
            anyhow::bail!(
                "{} has {in_file} residual blocks per stage; pass --residual-blocks {in_file} or more",
                init.display()
            );
        }
        let start = base.fill_available(&vs, o.config)?;
        let fresh = start.fresh;
        if !start.grown.is_empty() {
            eprintln!(
                "latent grown from {} to {} channels: {} tensors moved into the wider layout",
                base.config.m,
                o.config.m,
                start.grown.len()
            );
        }
        refit_prior(&model, o)?;
        // Say which parts start fresh: the density network always (it is refitted to
        // the shipped tables above), the context model only if the file had none, the
        // residual blocks when this run deepens a plain core.
        let parts: Vec<&str> = [
            ("prior.", "density network"),
            ("context.", "context model"),
            ("analysis.block", "residual blocks, as the identity"),
            (
                "latent_residual.",
                "latent residual prediction, as the identity",
            ),
        ]
        .iter()
        .filter(|(prefix, _)| fresh.iter().any(|name| name.starts_with(prefix)))
        .map(|&(_, part)| part)
        .collect();
        eprintln!(
            "new run from {}: {} tensors start fresh ({})",
            init.display(),
            fresh.len(),
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(", ")
            }
        );
    }
    if adam.step == 0 {
        // A new run draws its training noise from the seed whatever the network drew
        // for its initial weights, so that two runs that differ only in their residual
        // blocks also see the same noise.
        tch::manual_seed(o.seed as i64);
    }
    // Made only now, so that a refused start leaves no empty run directory behind.
    std::fs::create_dir_all(&o.run_dir)?;
    if !model_path.exists() {
        // The step-0 checkpoint: a grown or deepened start can be exported and measured
        // before any training (`--steps 0`), and a run killed early resumes from it.
        save_atomically(&vs, &model_path)?;
        adam.save(&adam_path)?;
    }
    // The average starts at the weights as they are now, or takes up the run's file.
    let ema_path = o.run_dir.join("ema.safetensors");
    let mut ema = o.ema_decay.map(|decay| WeightAverage::new(&vs, decay));
    if let Some(ema) = &mut ema {
        if ema_path.exists() {
            ema.load(&ema_path).context("resuming the weight average")?;
        } else {
            eprintln!("weight average starts at step {}", adam.step);
        }
    }
    let elapsed_path = o.run_dir.join("elapsed_seconds");
    let elapsed_before = elapsed_seconds(&elapsed_path);

    let mut log = open_log(
        &o.run_dir.join("log.csv"),
        "step,wall_seconds,lr,loss,bpp,psnr_mixed_rates,grad_norm",
    )?;
    let mut val_log = open_log(
        &o.run_dir.join("validation.csv"),
        "step,wall_seconds,rate,bpp_estimate,psnr",
    )?;

    let bar = progress::bar((o.steps - adam.step).max(0) as u64, "training");
    let start = Instant::now();
    let pixels = (o.crop * o.crop) as f64;
    let (mut acc_loss, mut acc_bpp, mut acc_psnr, mut acc_n): (f64, f64, f64, i64) =
        (0.0, 0.0, 0.0, 0);
    while adam.step < o.steps {
        let step = adam.step;
        let x = data.batch_sampled(&mut rng, o.batch, o.crop, o.sampling);
        let rates: Vec<f32> = (0..o.batch)
            .map(|_| o.rate_sampling.draw(&mut rng))
            .collect();
        let lambdas: Vec<f32> = rates.iter().map(|&r| lambda_at(r as f64) as f32).collect();
        let rate = Tensor::from_slice(&rates);
        let lambda = Tensor::from_slice(&lambdas);

        let out = model.forward_train_with(&x, &rate, o.rate_proxy);
        let mse = mse_per_image(&out.x_hat, &x);
        let distortion = if o.block_edge_weight > 0.0 {
            &mse + block_edges::block_edge_loss_per_image(&out.x_hat) * o.block_edge_weight
        } else {
            mse.shallow_clone()
        };
        let bpp = (&out.bits_y + &out.bits_z) / pixels;
        let loss = (&lambda * 255.0 * 255.0 * &distortion + &bpp).mean(Kind::Float);
        adam.zero_grad();
        loss.backward();
        let grad_norm = adam.clip_grad_norm(o.clip_norm);
        let lr = learning_rate(o, step);
        adam.update_scaled(lr, |name| {
            if name.starts_with("prior.") {
                PRIOR_LR_FACTOR
            } else if name.starts_with("latent_residual.") {
                o.latent_residual_lr_factor
            } else {
                1.0
            }
        });
        model.project_gdn_parameters();
        if let Some(ema) = &mut ema {
            ema.update();
        }

        let loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() {
            anyhow::bail!("loss became {loss_v} at step {step}; resume from the last checkpoint with a lower --lr");
        }
        acc_loss += loss_v;
        acc_bpp += bpp.mean(Kind::Float).double_value(&[]);
        acc_psnr += (mse.log10() * -10.0).mean(Kind::Float).double_value(&[]);
        acc_n += 1;
        bar.inc(1);
        let done = adam.step;
        let wall = elapsed_before + start.elapsed().as_secs_f64();
        if done % 50 == 0 {
            let n = acc_n as f64;
            writeln!(
                log,
                "{done},{wall:.1},{lr:.3e},{:.4},{:.4},{:.3},{grad_norm:.3}",
                acc_loss / n,
                acc_bpp / n,
                acc_psnr / n
            )?;
            bar.set_message(format!(
                "loss {:.3} bpp {:.3} psnr {:.2}",
                acc_loss / n,
                acc_bpp / n,
                acc_psnr / n
            ));
            (acc_loss, acc_bpp, acc_psnr, acc_n) = (0.0, 0.0, 0.0, 0);
        }
        if done % o.validate_every == 0 || done == o.steps {
            for r in [0.0f32, 3.5, 7.0] {
                let (bpp, psnr) = validate(&model, &validation, r);
                writeln!(val_log, "{done},{wall:.1},{r},{bpp:.4},{psnr:.3}")?;
            }
        }
        if done % o.checkpoint_every == 0 || done == o.steps {
            save_atomically(&vs, &model_path)?;
            adam.save(&adam_path)?;
            if let Some(ema) = &ema {
                ema.save(&ema_path)?;
            }
            std::fs::write(&elapsed_path, format!("{wall:.1}\n"))?;
            log.flush()?;
            val_log.flush()?;
        }
    }
    bar.finish();
    if adam.step == o.steps {
        // Every trained level at the end (after the last checkpoint, so the file never
        // stands for weights that were not saved), for comparing runs on equal steps
        // without exporting them: the rate is the entropy model's estimate on the
        // latents plus noise, not a file's.
        let mut all = String::from("step,rate,bpp_estimate,psnr\n");
        for level in 0..LEVELS {
            let (bpp, psnr) = validate(&model, &validation, level as f32);
            all += &format!("{},{level},{bpp:.5},{psnr:.4}\n", adam.step);
        }
        save_text_atomically(&o.run_dir.join("final-validation.csv"), &all)?;
    }
    vs.freeze();
    Ok(())
}

/// Estimated bpp (from the likelihoods) and PSNR on the held-out crops at one rate.
fn validate(model: &Hyperprior, crops: &[Tensor], rate: f32) -> (f64, f64) {
    tch::no_grad(|| {
        let (mut bpp, mut psnr) = (0.0, 0.0);
        for x in crops {
            let r = Tensor::from_slice(&[rate]);
            let out = model.forward_train(x, &r);
            let pixels = (x.size()[2] * x.size()[3]) as f64;
            bpp += (&out.bits_y + &out.bits_z).double_value(&[0]) / pixels;
            let mse = mse_per_image(&out.x_hat.clamp(0.0, 1.0), x).double_value(&[0]);
            psnr += -10.0 * mse.log10();
        }
        let n = crops.len().max(1) as f64;
        (bpp / n, psnr / n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each level's share of the draws, measured through its hat function: uniform
    /// draws give the end levels half an inner level's share, even-level draws give all
    /// eight the same.
    #[test]
    fn even_level_sampling_gives_every_level_the_same_share() {
        let shares = |sampling: RateSampling| {
            let mut rng = StdRng::seed_from_u64(3);
            let n = 400_000;
            let mut share = [0.0f64; LEVELS];
            for _ in 0..n {
                let r = sampling.draw(&mut rng) as f64;
                for (level, s) in share.iter_mut().enumerate() {
                    *s += (1.0 - (r - level as f64).abs()).max(0.0) / n as f64;
                }
            }
            share
        };
        let uniform = shares(RateSampling::Uniform);
        let even = shares(RateSampling::EvenLevels);
        let inner = 1.0 / (LEVELS - 1) as f64;
        for level in [0, LEVELS - 1] {
            assert!((uniform[level] - inner / 2.0).abs() < 0.003, "{uniform:?}");
        }
        assert!((uniform[3] - inner).abs() < 0.003, "{uniform:?}");
        for s in even {
            assert!((s - 1.0 / LEVELS as f64).abs() < 0.003, "{even:?}");
        }
        // One number per draw: the crops that follow stay the same.
        let (mut a, mut b) = (StdRng::seed_from_u64(5), StdRng::seed_from_u64(5));
        RateSampling::Uniform.draw(&mut a);
        RateSampling::EvenLevels.draw(&mut b);
        assert_eq!(a.gen::<u64>(), b.gen::<u64>());
    }

    /// A run resumed by a trainer that logs other columns is refused, rather than
    /// appending rows that the old header would misname.
    #[test]
    fn a_log_with_other_columns_is_not_appended_to() {
        let dir = std::env::temp_dir().join(format!("mirage-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.csv");
        // An empty file (a run killed before its header) counts as new.
        std::fs::write(&path, "").unwrap();
        writeln!(open_log(&path, "step,psnr").unwrap(), "50,30.1").unwrap();
        writeln!(open_log(&path, "step,psnr").unwrap(), "100,30.2").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "step,psnr\n50,30.1\n100,30.2\n"
        );
        let refused = open_log(&path, "step,psnr,excess").unwrap_err().to_string();
        assert!(refused.contains("move it aside"), "{refused}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
