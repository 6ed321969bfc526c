//! `mirage train extractor`: self-supervised training of the realism extractor
//! on `../shared/data/train` (never Kodak; [`Dataset::load`] refuses it), and
//! `mirage export extractor`, which writes the shipped file.
//!
//! The pretext task is a pair of tasks on random crops:
//! - **rotation**: the crop is turned by 0°, 90°, 180° or 270°, and a linear layer on the
//!   pooled features must say which (Gidaris et al. 2018). It asks for global structure
//!   (sky above, gravity, light from above) at every depth.
//! - **noise**: half the crops get Gaussian noise of a random strength, and a 1×1 head on
//!   the two finest taps must predict that noise (a denoiser's job). To tell noise from
//!   texture the fine layers must model what real fine detail looks like.
//!
//! Neither task rewards invariance to blur, ringing or compression (unlike contrastive
//! learning with blur augmentation), and neither is trained on the artefacts that the
//! validation checks (blur, JPEG, codec output), so passing the validation is evidence,
//! not a tautology.
//!
//! A run directory holds `model.safetensors` (f32, with the pretext heads),
//! `adam.safetensors`, `log.csv` and `elapsed_seconds`; re-running resumes.

use super::extractor::{Extractor, PretextHeads, FEATURE_DIM, ROTATIONS};
use super::extractor_file;
use super::patches::PatchGrid;
use crate::model::layers::ConvPrecision;
use crate::progress;
use anyhow::{Context, Result};
use mirage_train::{adam::Adam, data::Dataset};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub struct ExtractorTrainOptions {
    pub data: PathBuf,
    pub run_dir: PathBuf,
    /// Total steps of the run (a resumed run continues up to this).
    pub steps: i64,
    pub batch: usize,
    pub crop: u32,
    pub lr: f64,
    /// The learning rate decays linearly to `lr / 20` over the last `decay_steps` steps.
    pub decay_steps: i64,
    /// Weight of the noise-prediction loss (which is measured relative to a noise
    /// standard deviation of 0.05, so that both losses start near 1).
    pub noise_weight: f64,
    pub checkpoint_every: i64,
    pub seed: u64,
}

/// Largest noise standard deviation (in [0, 1] pixel units) the noise task adds.
const MAX_NOISE: f64 = 0.1;

fn learning_rate(o: &ExtractorTrainOptions, step: i64) -> f64 {
    let decay_start = o.steps - o.decay_steps;
    if step < decay_start {
        o.lr
    } else {
        let t = (step - decay_start) as f64 / o.decay_steps.max(1) as f64;
        o.lr * (1.0 - 0.95 * t.min(1.0))
    }
}

/// Turns each crop of `x` `[B, 3, S, S]` by `k[b]` quarter turns.
fn rotate(x: &Tensor, k: &[i64]) -> Tensor {
    let turned: Vec<Tensor> = k
        .iter()
        .enumerate()
        .map(|(b, &k)| x.get(b as i64).rot90(k, [1, 2]))
        .collect();
    Tensor::stack(&turned, 0)
}

/// One pretext forward pass: (rotation loss, rotation accuracy, noise loss).
fn pretext_losses(
    net: &Extractor,
    heads: &PretextHeads,
    clean: &Tensor,
    turns: &[i64],
    sigmas: &[f32],
) -> (Tensor, f64, Tensor) {
    let b = turns.len() as i64;
    let x = rotate(clean, turns);
    let sigma = Tensor::from_slice(sigmas).view([b, 1, 1, 1]);
    let noise = x.randn_like() * sigma;
    let out = heads.forward(&net.taps(&(&x + &noise)));
    let target = Tensor::from_slice(turns);
    let rotation_loss = out.rotation_logits.cross_entropy_for_logits(&target);
    let accuracy = out
        .rotation_logits
        .argmax(1, false)
        .eq_tensor(&target)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    let noise_loss = (out.noise - noise).square().mean(Kind::Float) / (0.05 * 0.05);
    (rotation_loss, accuracy, noise_loss)
}

/// Crops are taken at 1×, 2× and 4× their final size and area-averaged down, in turn.
/// At 1× the crop is a bit of texture whose rotation is mostly unguessable, but it is
/// the native scale of the artefacts the measure must see; at 4× the crop holds enough
/// of the scene (sky, ground, figures) for the rotation task to teach structure.
const SCALES: [i64; 3] = [1, 2, 4];

fn scaled_batch(data: &Dataset, rng: &mut impl Rng, batch: usize, crop: u32, step: i64) -> Tensor {
    let factor = SCALES[step as usize % SCALES.len()];
    let x = data.batch(rng, batch, crop * factor as u32);
    if factor == 1 {
        x
    } else {
        x.avg_pool2d(
            [factor, factor],
            [factor, factor],
            [0, 0],
            false,
            true,
            None,
        )
    }
}

fn random_pretext(rng: &mut impl Rng, batch: usize) -> (Vec<i64>, Vec<f32>) {
    let turns = (0..batch).map(|_| rng.gen_range(0..ROTATIONS)).collect();
    let sigmas = (0..batch)
        .map(|_| {
            if rng.gen_bool(0.5) {
                0.0
            } else {
                rng.gen_range(0.0..MAX_NOISE) as f32
            }
        })
        .collect();
    (turns, sigmas)
}

pub fn train_extractor(o: &ExtractorTrainOptions) -> Result<()> {
    std::fs::create_dir_all(&o.run_dir)
        .with_context(|| format!("cannot create {}", o.run_dir.display()))?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    tch::manual_seed(o.seed as i64);
    eprintln!("loading training images from {}", o.data.display());
    let data = Dataset::load(&o.data, o.crop * SCALES[SCALES.len() - 1] as u32)?;
    eprintln!(
        "{} training and {} held-out images",
        data.train.len(),
        data.validation.len()
    );
    // Held-out crops at 4× scale, the one where rotation is well posed.
    let held_out: Vec<Tensor> = data
        .validation_crops(o.crop * 4)
        .iter()
        .map(|x| x.avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None))
        .collect();

    let mut vs = VarStore::new(Device::Cpu);
    // bf16 convolutions train about twice as fast here; the shipped measure runs in f32.
    let net = Extractor::new(&vs.root(), ConvPrecision::fastest_for_training());
    let heads = PretextHeads::new(&vs.root());
    let mut adam = Adam::new(&vs);
    let model_path = o.run_dir.join("model.safetensors");
    let adam_path = o.run_dir.join("adam.safetensors");
    if model_path.exists() {
        vs.load(&model_path).context("resuming weights")?;
        if adam_path.exists() {
            adam.load(&adam_path).context("resuming optimizer state")?;
        }
        eprintln!("resumed at step {}", adam.step);
        // Fresh randomness after a resume; the same seed again would replay old crops.
        rng = StdRng::seed_from_u64(o.seed ^ adam.step as u64);
        tch::manual_seed(o.seed as i64 ^ adam.step);
    }
    let elapsed_path = o.run_dir.join("elapsed_seconds");
    let elapsed_before = mirage_train::elapsed_seconds(&elapsed_path);
    let mut log = mirage_train::open_log(
        &o.run_dir.join("log.csv"),
        "step,wall_seconds,lr,rotation_loss,rotation_accuracy,noise_loss,held_out_rotation_accuracy,held_out_noise_loss",
    )?;

    let bar = progress::bar((o.steps - adam.step).max(0) as u64, "extractor");
    let start = Instant::now();
    let (mut acc_rot, mut acc_acc, mut acc_noise, mut acc_n) = (0.0, 0.0, 0.0, 0);
    while adam.step < o.steps {
        let step = adam.step;
        let x = scaled_batch(&data, &mut rng, o.batch, o.crop, step);
        let (turns, sigmas) = random_pretext(&mut rng, o.batch);
        let (rotation_loss, accuracy, noise_loss) =
            pretext_losses(&net, &heads, &x, &turns, &sigmas);
        let loss = &rotation_loss + &noise_loss * o.noise_weight;
        adam.zero_grad();
        loss.backward();
        adam.clip_grad_norm(5.0);
        let lr = learning_rate(o, step);
        adam.update(lr);

        let loss_v = loss.double_value(&[]);
        if !loss_v.is_finite() {
            anyhow::bail!("loss became {loss_v} at step {step}; resume from the last checkpoint with a lower --lr");
        }
        acc_rot += rotation_loss.double_value(&[]);
        acc_acc += accuracy;
        acc_noise += noise_loss.double_value(&[]);
        acc_n += 1;
        bar.inc(1);
        let done = adam.step;
        let wall = elapsed_before + start.elapsed().as_secs_f64();
        let checkpoint = done % o.checkpoint_every == 0 || done == o.steps;
        if done % 50 == 0 || checkpoint {
            let n = acc_n as f64;
            let (held_acc, held_noise) = if checkpoint {
                let (a, l) = held_out_scores(&net, &heads, &held_out);
                (format!("{a:.4}"), format!("{l:.4}"))
            } else {
                (String::new(), String::new())
            };
            writeln!(
                log,
                "{done},{wall:.1},{lr:.3e},{:.4},{:.4},{:.4},{held_acc},{held_noise}",
                acc_rot / n,
                acc_acc / n,
                acc_noise / n
            )?;
            bar.set_message(format!(
                "rotation loss {:.3} acc {:.2} noise loss {:.3}",
                acc_rot / n,
                acc_acc / n,
                acc_noise / n
            ));
            (acc_rot, acc_acc, acc_noise, acc_n) = (0.0, 0.0, 0.0, 0);
        }
        if checkpoint {
            let tmp = model_path.with_extension("tmp.safetensors");
            vs.save(&tmp)?;
            std::fs::rename(&tmp, &model_path)?;
            adam.save(&adam_path)?;
            std::fs::write(&elapsed_path, format!("{wall:.1}\n"))?;
            log.flush()?;
        }
    }
    bar.finish();
    vs.freeze();
    Ok(())
}

/// Rotation accuracy over all four turns of each held-out crop, and the noise loss at
/// σ = 0.05, with fixed noise so that checkpoints are comparable.
fn held_out_scores(net: &Extractor, heads: &PretextHeads, crops: &[Tensor]) -> (f64, f64) {
    tch::no_grad(|| {
        if crops.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        let x = Tensor::cat(crops, 0);
        let n = x.size()[0] as usize;
        let (mut acc, mut noise) = (0.0, 0.0);
        for k in 0..ROTATIONS {
            tch::manual_seed(1000 + k);
            let (_, a, l) = pretext_losses(net, heads, &x, &vec![k; n], &vec![0.05; n]);
            acc += a;
            noise += l.double_value(&[]);
        }
        (acc / ROTATIONS as f64, noise / ROTATIONS as f64)
    })
}

/// Writes the shipped extractor from a run directory's checkpoint. The feature mean and
/// scale (1 / standard deviation of each feature) are measured on HiFiC-grid patches of the
/// training photos, never on Kodak.
pub fn export_extractor(
    run_dir: &Path,
    data: &Path,
    out: &Path,
    overwrite: bool,
) -> Result<String> {
    let mut vs = VarStore::new(Device::Cpu);
    let net = Extractor::new(&vs.root(), ConvPrecision::F32);
    let _heads = PretextHeads::new(&vs.root());
    let checkpoint = run_dir.join("model.safetensors");
    vs.load(&checkpoint)
        .with_context(|| format!("loading {}", checkpoint.display()))?;
    let adam_path = run_dir.join("adam.safetensors");
    let mut adam = Adam::new(&vs);
    if adam_path.exists() {
        adam.load(&adam_path)?;
    }
    let wall = std::fs::read_to_string(run_dir.join("elapsed_seconds")).unwrap_or_default();

    let dataset = Dataset::load(data, PatchGrid::HIFIC.size)?;
    // Every 4th photo: enough patches (several hundred) for a stable spread per feature.
    let images: Vec<_> = dataset.train.iter().step_by(4).collect();
    let bar = progress::bar(images.len() as u64, "feature scale");
    let mut parts = vec![];
    tch::no_grad(|| {
        for img in images {
            let patches = PatchGrid::HIFIC.cut(img);
            for start in (0..patches.size()[0]).step_by(16) {
                let len = 16.min(patches.size()[0] - start);
                parts.push(
                    net.features(&patches.narrow(0, start, len))
                        .to_kind(Kind::Double),
                );
            }
            bar.inc(1);
        }
    });
    bar.finish_and_clear();
    let features = Tensor::cat(&parts, 0);
    let mean = Vec::<f32>::try_from(features.mean_dim(0, false, Kind::Float))?;
    let std = features.std_dim(0, true, false);
    let std = Vec::<f64>::try_from(std)?;
    let mut sorted = std.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    // A feature that is (nearly) constant over all training patches gets weight 0: scaled
    // to unit spread it would blow rounding noise up into a distance.
    let scale: Vec<f32> = std
        .iter()
        .map(|&s| {
            if s > 1e-3 * median {
                (1.0 / s) as f32
            } else {
                0.0
            }
        })
        .collect();
    assert_eq!(scale.len(), FEATURE_DIM as usize);
    eprintln!(
        "feature scale from {} patches; {} dead features",
        features.size()[0],
        scale.iter().filter(|&&s| s == 0.0).count()
    );
    let id = extractor_file::write(
        &vs,
        &mean,
        &scale,
        &[
            ("training_steps", adam.step.to_string()),
            ("training_wall_seconds", wall.trim().to_string()),
            ("pretext", "rotation + noise prediction".to_string()),
            ("scale_patches", features.size()[0].to_string()),
        ],
        out,
        overwrite,
    )?;
    Ok(id)
}
