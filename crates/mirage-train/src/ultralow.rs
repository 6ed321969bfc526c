//! `mirage train ultralow`: trains the ultra-low-bitrate mode's grid networks and
//! codebooks (`model::ultralow`) on the frozen core's latents.
//!
//! The core's analysis of every training photo (and of its mirror image) is computed
//! once and cached beside the run (`latents-<core id>.safetensors`), so a training step
//! touches only latent grids, 1/256 of the pixels: all three operating points train
//! together, at a few steps per second on two cores.
//!
//! Loss per point: `‖ŷ − y‖² / var(y)` + the VQ codebook and commitment terms; from
//! `--adversarial-after` on, a latent discriminator adds a non-saturating GAN term
//! and feature matching, so the predicted latent gets the statistics of a real one
//! (detail the synthesis can draw) rather than the blurry conditional mean.
//! Codes unused for `RESTART_EVERY` steps restart at a random encoder output of the
//! batch, so the codebook does not collapse; the log reports each point's perplexity.
//!
//! `--freeze-codes` trains the grid decoder alone: the encoders and codebooks (what
//! the file carries) stay as they were. That is what makes the adversarial terms safe:
//! with gradients reaching the codebooks they collapsed them (perplexity 900 → 2).
//! `--pixel-adversarial` moves the discriminator from the latent to the pixels: a
//! HiFiC patch discriminator (conditioned on the code grid) judges the core's
//! synthesis of the predicted latent against the photo, with hinge losses, feature
//! matching, and the realism trainer's random circular shift so that its 16-pixel
//! patch grid cannot print itself on the decode. (On the latent, the frozen-code GAN
//! drew a fine grid and shifted colours: the latent discriminator cannot see pixels.)
//! `--captions` conditions the grid decoder on the COCO captions' sentence vectors
//! (FiLM in every block), each photo's caption dropped with probability
//! `--caption-drop` and absent for photos without one, so that decoding works both ways.
//!
//! A run directory holds `ultralow.safetensors`, the discriminator, both Adam states,
//! `log.csv`, `validation.csv` and `snapshots/`; re-running the command resumes.

use super::adam::Adam;
use super::data::{mse_per_image, Dataset};
use crate::model::layers::ConvPrecision;
use crate::model::realism::Discriminator;
use crate::model::ultralow::{
    LatentDiscriminator, UltralowConfig, UltralowModel, CAPTION_DIM, NOISE_CHANNELS,
};
use crate::model::Hyperprior;
use crate::progress;
use anyhow::{bail, Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub struct UltralowTrainOptions {
    pub data: PathBuf,
    pub base_model: PathBuf,
    pub run_dir: PathBuf,
    pub steps: i64,
    pub batch: usize,
    /// Side of a training crop, in latent cells (16 pixels each); a multiple of 4.
    pub crop: usize,
    pub lr: f64,
    pub config: UltralowConfig,
    /// The step from which the adversarial terms are on (`i64::MAX`: never).
    pub adversarial_after: i64,
    /// Weight of the pixel MSE of the core's synthesis of the predicted latent (0: off).
    /// It is what removes the 16-pixel grid that the synthesis draws from a latent off
    /// the manifold of real ones, which the latent MSE alone does not see.
    pub k_pixel: f64,
    /// Crops of each batch that also get the pixel loss (it costs a synthesis and its
    /// backward pass per crop and point).
    pub pixel_batch: usize,
    /// Weight of the generator's adversarial term and of feature matching.
    pub k_adv: f64,
    pub k_feature: f64,
    /// A new run starts from these grid networks (a checkpoint of an earlier run),
    /// with a fresh optimizer.
    pub init_from: Option<PathBuf>,
    /// Weight of the latent NMSE (1 in the regression stages; lower lets the
    /// adversarial terms draw detail rather than the conditional mean).
    pub k_latent: f64,
    /// Train only the grid decoders: encoders and codebooks are frozen, and no code is
    /// restarted.
    pub freeze_codes: bool,
    /// A directory of COCO caption files (`captions_*.json`): condition on captions.
    pub captions: Option<PathBuf>,
    /// Probability that a captioned photo's caption is dropped in a step.
    pub caption_drop: f64,
    /// The adversarial terms judge pixels (the synthesis of the pixel-loss crops)
    /// rather than latents.
    pub pixel_adversarial: bool,
    pub checkpoint_every: i64,
    pub validate_every: i64,
    pub seed: u64,
}

/// Steps after which a code no batch has used is restarted.
const RESTART_EVERY: i64 = 200;

/// The core's latents of the training photos, each `[1, M, h, w]`.
struct Latents {
    train: Vec<Tensor>,
    /// The cell-aligned photos of `train` (one per pair: photo, mirror), `[1, 3, H, W]`,
    /// loaded only for the pixel loss.
    photos: Vec<Tensor>,
    /// Held-out photos (the dataset's validation split) with their latents.
    validation: Vec<(Tensor, Tensor)>,
    /// Sentence vectors `[n, 384]` of each training photo's captions (indexed like
    /// `photos`, one per photo–mirror pair), and of each held-out photo's; empty
    /// without `--captions`.
    captions: Vec<Option<Tensor>>,
    validation_captions: Vec<Option<Tensor>>,
    /// Mean squared value of the latents about their channel means (the loss's unit).
    variance: f64,
}

/// The photo cropped to whole latent cells, as a `[1, 3, H, W]` tensor.
fn cell_aligned(img: &image::RgbImage, cell: u32) -> Tensor {
    let (w, h) = (img.width() / cell * cell, img.height() / cell * cell);
    let view = image::imageops::crop_imm(img, 0, 0, w, h).to_image();
    crate::image_io::to_tensor(&view)
}

fn load_latents(o: &UltralowTrainOptions, core: &Hyperprior, core_id: &str) -> Result<Latents> {
    let data = Dataset::load(&o.data, 64)?;
    let cache = o.run_dir.join(format!("latents-{core_id}.safetensors"));
    let train: Vec<Tensor> = if cache.exists() {
        let mut named = Tensor::read_safetensors(&cache)
            .with_context(|| format!("reading {}", cache.display()))?;
        named.sort_by_key(|(name, _)| name[1..].parse::<usize>().unwrap_or(usize::MAX));
        named.into_iter().map(|(_, t)| t).collect()
    } else {
        let bar = progress::bar(data.train.len() as u64, "core latents of the photos");
        let mut all = vec![];
        tch::no_grad(|| {
            for img in &data.train {
                let x = cell_aligned(img, 16);
                all.push(core.analysis(&x));
                all.push(core.analysis(&x.flip([3])));
                bar.inc(1);
            }
        });
        bar.finish();
        let named: Vec<(String, Tensor)> = all
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("t{i}"), t.shallow_clone()))
            .collect();
        let tmp = cache.with_extension("tmp");
        Tensor::write_safetensors(&named, &tmp)?;
        std::fs::rename(&tmp, &cache)?;
        all
    };
    let validation = tch::no_grad(|| {
        data.validation
            .iter()
            .map(|img| {
                let x = cell_aligned(img, 64);
                let y = core.analysis(&x);
                (x, y)
            })
            .collect()
    });
    let variance = tch::no_grad(|| {
        let sample: Vec<Tensor> = train.iter().step_by(7).map(|t| t.flatten(2, 3)).collect();
        let all = Tensor::cat(&sample, 2);
        let mean = all.mean_dim(&[2i64][..], true, Kind::Float);
        (all - mean).square().mean(Kind::Float).double_value(&[])
    });
    let photos = if o.k_pixel > 0.0 || o.pixel_adversarial {
        data.train.iter().map(|img| cell_aligned(img, 16)).collect()
    } else {
        vec![]
    };
    if !photos.is_empty() && photos.len() * 2 != train.len() {
        bail!(
            "the latent cache does not match the photos; delete {}",
            cache.display()
        );
    }
    let (captions, validation_captions) = match &o.captions {
        None => (vec![], vec![]),
        Some(dir) => {
            let by_name = super::captions::load_coco_captions(dir)?;
            let encoder =
                mirage_text::SentenceEncoder::load(&mirage_text::SentenceEncoder::default_dir())?;
            let train = super::captions::embed_captions(&data.train_paths, &by_name, &encoder)?;
            let validation =
                super::captions::embed_captions(&data.validation_paths, &by_name, &encoder)?;
            eprintln!(
                "captions: {} of {} training photos, {} of {} held-out",
                train.iter().flatten().count(),
                train.len(),
                validation.iter().flatten().count(),
                validation.len()
            );
            (train, validation)
        }
    };
    Ok(Latents {
        train,
        photos,
        validation,
        variance,
        captions,
        validation_captions,
    })
}

/// Where a crop of the batch came from: latent grid `index`, top-left cell.
struct Crop {
    index: usize,
    y0: i64,
    x0: i64,
}

/// A batch `[B, M, crop, crop]` of random crops of the training latents.
fn batch(latents: &Latents, rng: &mut impl Rng, b: usize, crop: usize) -> (Tensor, Vec<Crop>) {
    let c = crop as i64;
    let mut origins = vec![];
    let crops: Vec<Tensor> = (0..b)
        .map(|_| loop {
            let index = rng.gen_range(0..latents.train.len());
            let y = &latents.train[index];
            let (h, w) = (y.size()[2], y.size()[3]);
            if h < c || w < c {
                continue;
            }
            let (y0, x0) = (rng.gen_range(0..=h - c), rng.gen_range(0..=w - c));
            origins.push(Crop { index, y0, x0 });
            break y.narrow(2, y0, c).narrow(3, x0, c);
        })
        .collect();
    (Tensor::cat(&crops, 0), origins)
}

/// Sentence vectors `[B, 384]` for a batch: one of the photo's captions at random,
/// or zeros (no caption) for a photo without one and with probability `drop`.
fn caption_batch(latents: &Latents, origins: &[Crop], drop: f64, rng: &mut impl Rng) -> Tensor {
    let rows: Vec<Tensor> = origins
        .iter()
        .map(|c| match &latents.captions[c.index / 2] {
            Some(e) if rng.gen::<f64>() >= drop => {
                e.get(rng.gen_range(0..e.size()[0])).unsqueeze(0)
            }
            _ => Tensor::zeros([1, CAPTION_DIM], (Kind::Float, Device::Cpu)),
        })
        .collect();
    Tensor::cat(&rows, 0)
}

/// The pixels of a latent crop, `[1, 3, 16·crop, 16·crop]` (mirrored for a mirror's latent).
fn photo_crop(latents: &Latents, crop: &Crop, c: i64) -> Tensor {
    let photo = &latents.photos[crop.index / 2];
    let (s, width) = (16, photo.size()[3]);
    if crop.index.is_multiple_of(2) {
        photo
            .narrow(2, crop.y0 * s, c * s)
            .narrow(3, crop.x0 * s, c * s)
    } else {
        // The mirror's column x is the photo's column width − 1 − x.
        photo
            .narrow(2, crop.y0 * s, c * s)
            .narrow(3, width - (crop.x0 + c) * s, c * s)
            .flip([3])
    }
}

pub fn train(o: &UltralowTrainOptions) -> Result<()> {
    if !o.crop.is_multiple_of(4) || o.crop < 4 {
        bail!(
            "--crop must be a multiple of 4 latent cells, not {}",
            o.crop
        );
    }
    std::fs::create_dir_all(&o.run_dir)?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    tch::manual_seed(o.seed as i64);
    let (_core_vs, core, base) = super::frozen_hyperprior(&o.base_model)?;
    let core_id = crate::model_file::id_hex(&base.id);
    eprintln!("loading training photos from {}", o.data.display());
    let latents = load_latents(o, &core, &core_id)?;
    eprintln!(
        "{} latent grids, {} held-out photos, latent variance {:.4}",
        latents.train.len(),
        latents.validation.len(),
        latents.variance
    );

    let precision = ConvPrecision::fastest_for_training();
    let mut vs = VarStore::new(Device::Cpu);
    let model = UltralowModel::new(&vs.root(), o.config, precision);
    let mut d_vs = VarStore::new(Device::Cpu);
    let discriminators: Vec<LatentDiscriminator> = (0..model.points.len())
        .filter(|_| !o.pixel_adversarial)
        .map(|i| LatentDiscriminator::new(&(d_vs.root() / format!("point{i}")), o.config))
        .collect();
    let pixel_discriminators: Vec<Discriminator> = (0..model.points.len())
        .filter(|_| o.pixel_adversarial)
        .map(|i| {
            Discriminator::new(
                &(d_vs.root() / format!("pixel{i}")),
                o.config.code_dim,
                precision,
            )
        })
        .collect();
    let mut adam = Adam::new(&vs);
    let mut d_adam = Adam::with_betas(&d_vs, 0.5, 0.999);
    let path = |name: &str| o.run_dir.join(format!("{name}.safetensors"));
    if path("ultralow").exists() {
        vs.load(path("ultralow"))
            .context("resuming the grid networks")?;
        adam.load(&path("ultralow-adam"))?;
        if path("discriminator").exists() {
            d_vs.load(path("discriminator"))?;
            d_adam.load(&path("discriminator-adam"))?;
        }
        eprintln!("resumed at step {}", adam.step);
        rng = StdRng::seed_from_u64(o.seed ^ adam.step as u64);
        tch::manual_seed(o.seed as i64 ^ adam.step);
    } else if let Some(init) = &o.init_from {
        vs.load(init)
            .with_context(|| format!("loading {} to start from", init.display()))?;
        eprintln!("new run from {}", init.display());
    }
    std::fs::write(o.run_dir.join("base_model"), format!("{core_id}\n"))?;
    let elapsed_path = o.run_dir.join("elapsed_seconds");
    let elapsed_before = super::elapsed_seconds(&elapsed_path);
    let mut log = super::open_log(
        &o.run_dir.join("log.csv"),
        "step,wall_seconds,latent_nmse0,latent_nmse1,latent_nmse2,perplexity0,perplexity1,perplexity2,d_loss,pixel_psnr0,pixel_psnr1,pixel_psnr2",
    )?;
    let mut val_log = super::open_log(
        &o.run_dir.join("validation.csv"),
        "step,wall_seconds,point,latent_nmse,psnr,perplexity,psnr_captioned_with,psnr_captioned_without",
    )?;

    let points = model.points.len();
    let mut usage: Vec<Tensor> = model
        .points
        .iter()
        .map(|p| Tensor::zeros([p.point.codebook as i64], (Kind::Int64, Device::Cpu)))
        .collect();
    let mut window_usage: Vec<Tensor> = usage.iter().map(|u| u.zeros_like()).collect();
    let (mut acc, mut acc_d, mut acc_n) = (vec![0.0; points], 0.0, 0);
    let mut acc_pixel = vec![0.0; points];
    // The core again, with bf16 convolutions where fast, for the pixel loss's
    // synthesis (its backward pass is most of a step's cost).
    let (_fast_vs, fast_core, _) = super::frozen_hyperprior_at(&o.base_model, precision)?;
    let bar = progress::bar((o.steps - adam.step).max(0) as u64, "training ultra-low");
    let start = Instant::now();
    while adam.step < o.steps {
        let (y, origins) = batch(&latents, &mut rng, o.batch, o.crop);
        let pb = o.pixel_batch.min(o.batch) as i64;
        let photos = (o.k_pixel > 0.0 || o.pixel_adversarial).then(|| {
            let crops: Vec<Tensor> = origins[..pb as usize]
                .iter()
                .map(|c| photo_crop(&latents, c, o.crop as i64))
                .collect();
            Tensor::cat(&crops, 0)
        });
        let captions = (!latents.captions.is_empty())
            .then(|| caption_batch(&latents, &origins, o.caption_drop, &mut rng));
        let adversarial = adam.step >= o.adversarial_after;
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        let mut fakes = vec![];
        let mut pixel_fakes = vec![];
        let mut last_encoded = vec![];
        // One circular shift per step for real and fake alike (see the module comment).
        let shift = [rng.gen_range(0..16i64), rng.gen_range(0..16i64)];
        let off_grid = |t: &Tensor| t.roll(&shift[..], &[2i64, 3][..]);
        for (i, net) in model.points.iter().enumerate() {
            let q = if o.freeze_codes {
                tch::no_grad(|| net.quantize(&y, precision))
            } else {
                net.quantize(&y, precision)
            };
            let noise = Tensor::randn(
                [o.batch as i64, NOISE_CHANNELS, o.crop as i64, o.crop as i64],
                (Kind::Float, Device::Cpu),
            );
            let y_pred = net.decode(&q.codes, &noise, captions.as_ref(), precision);
            let nmse = (&y_pred - &y).square().mean(Kind::Float) / latents.variance;
            acc[i] += nmse.double_value(&[]);
            loss += &nmse * o.k_latent;
            if !o.freeze_codes {
                loss += &q.vq_loss;
            }
            if let Some(x) = &photos {
                let x_hat = fast_core.synthesis(&y_pred.narrow(0, 0, pb));
                let mse = (&x_hat - x).square().mean(Kind::Float);
                acc_pixel[i] += mse.double_value(&[]);
                loss += mse * o.k_pixel;
                if adversarial && o.pixel_adversarial {
                    let d = &pixel_discriminators[i];
                    let c = o.crop as i64;
                    let codes =
                        q.codes
                            .narrow(0, 0, pb)
                            .detach()
                            .upsample_nearest2d([c, c], None, None);
                    let (logits, fake_features) = d.forward(&off_grid(&x_hat), &codes);
                    let (_, real_features) = tch::no_grad(|| d.forward(&off_grid(x), &codes));
                    let matching = feature_matching(&fake_features, &real_features);
                    loss = loss - logits.mean(Kind::Float) * o.k_adv + matching * o.k_feature;
                    pixel_fakes.push((off_grid(&x_hat.detach()), off_grid(x), codes));
                }
            }
            if adversarial && !o.pixel_adversarial {
                let d = &discriminators[i];
                let (logits, fake_features) = d.forward(&y_pred, &q.codes, precision);
                let (_, real_features) =
                    tch::no_grad(|| d.forward(&y, &q.codes.detach(), precision));
                let matching = feature_matching(&fake_features, &real_features);
                loss = loss
                    + (-logits).softplus().mean(Kind::Float) * o.k_adv
                    + matching * o.k_feature;
            }
            let counts = q
                .indices
                .flatten(0, -1)
                .bincount::<Tensor>(None, net.point.codebook as i64);
            usage[i] += &counts;
            window_usage[i] += &counts;
            fakes.push((y_pred.detach(), q.codes.detach()));
            last_encoded.push(q.encoded);
        }
        adam.zero_grad();
        loss.backward();
        adam.clip_grad_norm(1.0);
        adam.update(o.lr);
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            bail!(
                "the loss became {l} at step {}; resume with a lower --lr",
                adam.step
            );
        }

        if adversarial && o.pixel_adversarial {
            // Hinge loss, as the realism generator's discriminator.
            let mut d_loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
            for (d, (fake, real, codes)) in pixel_discriminators.iter().zip(&pixel_fakes) {
                let (real_logits, _) = d.forward(real, codes);
                let (fake_logits, _) = d.forward(fake, codes);
                d_loss = d_loss
                    + (-real_logits + 1.0).relu().mean(Kind::Float)
                    + (fake_logits + 1.0).relu().mean(Kind::Float);
            }
            d_adam.zero_grad();
            d_loss.backward();
            d_adam.clip_grad_norm(10.0);
            d_adam.update(o.lr);
            acc_d += d_loss.double_value(&[]);
        } else if adversarial {
            let mut d_loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
            for (d, (fake, codes)) in discriminators.iter().zip(&fakes) {
                let (real_logits, _) = d.forward(&y, codes, precision);
                let (fake_logits, _) = d.forward(fake, codes, precision);
                d_loss = d_loss
                    + (-real_logits).softplus().mean(Kind::Float)
                    + fake_logits.softplus().mean(Kind::Float);
            }
            d_adam.zero_grad();
            d_loss.backward();
            d_adam.clip_grad_norm(10.0);
            d_adam.update(o.lr);
            acc_d += d_loss.double_value(&[]);
        }

        let done = adam.step;
        if done % RESTART_EVERY == 0 && !o.freeze_codes {
            restart_dead_codes(&model, &mut usage, &last_encoded, &mut rng);
        }
        acc_n += 1;
        bar.inc(1);
        let wall = elapsed_before + start.elapsed().as_secs_f64();
        if done % 50 == 0 {
            let perplexities: Vec<f64> = window_usage.iter().map(perplexity).collect();
            let nmse: Vec<String> = acc
                .iter()
                .map(|a| format!("{:.4}", a / acc_n as f64))
                .collect();
            let psnr: Vec<String> = acc_pixel
                .iter()
                .map(|a| match a / acc_n as f64 {
                    m if m > 0.0 => format!("{:.3}", -10.0 * m.log10()),
                    _ => String::new(),
                })
                .collect();
            writeln!(
                log,
                "{done},{wall:.1},{},{:.1},{:.1},{:.1},{:.4},{}",
                nmse.join(","),
                perplexities[0],
                perplexities[1],
                perplexities[2],
                acc_d / acc_n as f64,
                psnr.join(",")
            )?;
            bar.set_message(format!(
                "nmse {} ppl {:.0}/{:.0}/{:.0}",
                nmse.join("/"),
                perplexities[0],
                perplexities[1],
                perplexities[2]
            ));
            for u in &mut window_usage {
                let _ = u.zero_();
            }
            (acc, acc_d, acc_n) = (vec![0.0; points], 0.0, 0);
            acc_pixel = vec![0.0; points];
        }
        if done % o.validate_every == 0 || done == o.steps {
            for (i, v) in validate(&core, &model, &latents).into_iter().enumerate() {
                let captioned = match v.captioned {
                    Some((with, without)) => format!("{with:.3},{without:.3}"),
                    None => ",".into(),
                };
                writeln!(
                    val_log,
                    "{done},{wall:.1},{i},{:.4},{:.3},{:.1},{captioned}",
                    v.nmse, v.psnr, v.perplexity
                )?;
            }
            val_log.flush()?;
            super::save_snapshot(&vs, &o.run_dir, "ultralow", done)?;
        }
        if done % o.checkpoint_every == 0 || done == o.steps {
            super::save_atomically(&vs, &path("ultralow"))?;
            adam.save(&path("ultralow-adam"))?;
            if adversarial {
                super::save_atomically(&d_vs, &path("discriminator"))?;
                d_adam.save(&path("discriminator-adam"))?;
            }
            std::fs::write(&elapsed_path, format!("{wall:.1}\n"))?;
            log.flush()?;
        }
    }
    bar.finish();
    Ok(())
}

/// Feature matching: the mean L1 distance of each discriminator layer's activations,
/// summed over the layers.
fn feature_matching(fake: &[Tensor], real: &[Tensor]) -> Tensor {
    fake.iter()
        .zip(real)
        .map(|(f, r)| (f - r).abs().mean(Kind::Float))
        .sum::<Tensor>()
}

/// `exp(entropy)` of a histogram of code usage: the number of codes in effective use.
fn perplexity(counts: &Tensor) -> f64 {
    let counts = counts.to_kind(Kind::Double);
    let total = counts.sum(Kind::Double).double_value(&[]);
    if total == 0.0 {
        return 0.0;
    }
    let p = counts / total;
    let entropy = -(&p * p.clamp_min(1e-30).log())
        .sum(Kind::Double)
        .double_value(&[]);
    entropy.exp()
}

/// Moves every code that no batch chose since the last restart onto a random encoder
/// output of the last batch (plus a little noise, so that two restarts differ).
fn restart_dead_codes(
    model: &UltralowModel,
    usage: &mut [Tensor],
    encoded: &[Tensor],
    rng: &mut impl Rng,
) {
    tch::no_grad(|| {
        for ((net, counts), encoded) in model.points.iter().zip(usage.iter_mut()).zip(encoded) {
            let dead = counts
                .eq_tensor(&counts.zeros_like())
                .nonzero()
                .flatten(0, -1);
            let n = dead.size()[0];
            if n > 0 {
                let rows = encoded.size()[0];
                let pick: Vec<i64> = (0..n).map(|_| rng.gen_range(0..rows)).collect();
                let samples = encoded.index_select(0, &Tensor::from_slice(&pick))
                    + Tensor::randn([n, encoded.size()[1]], (Kind::Float, Device::Cpu)) * 0.01;
                let mut codebook = net.codebook.shallow_clone();
                let _ = codebook.index_copy_(0, &dead, &samples);
            }
            let _ = counts.zero_();
        }
    });
}

/// One point's figures on the held-out photos.
struct Validation {
    nmse: f64,
    psnr: f64,
    perplexity: f64,
    /// On the held-out photos that have captions: PSNR decoded with their first
    /// caption, and without (`None` without `--captions`).
    captioned: Option<(f64, f64)>,
}

/// Per point, on the held-out photos: the latent's normalised MSE, the PSNR of the
/// core's synthesis of the predicted latent (the mode's fidelity end, before the
/// realism generator) and the codebook's perplexity.
fn validate(core: &Hyperprior, model: &UltralowModel, latents: &Latents) -> Vec<Validation> {
    tch::no_grad(|| {
        model
            .points
            .iter()
            .map(|net| {
                let (mut nmse, mut psnr) = (0.0, 0.0);
                let (mut with, mut without, mut captioned) = (0.0, 0.0, 0);
                let mut counts =
                    Tensor::zeros([net.point.codebook as i64], (Kind::Int64, Device::Cpu));
                for (k, (x, y)) in latents.validation.iter().enumerate() {
                    let indices = net.nearest(&net.encode(y, model.precision));
                    counts += indices
                        .flatten(0, -1)
                        .bincount::<Tensor>(None, net.point.codebook as i64);
                    let (_, _, h, w) = y.size4().expect("a 4-D latent");
                    let noise =
                        Tensor::zeros([1, NOISE_CHANNELS, h, w], (Kind::Float, Device::Cpu));
                    let codes = net.lookup(&indices);
                    let decode_psnr = |caption: Option<&Tensor>| {
                        let y_pred = net.decode(&codes, &noise, caption, model.precision);
                        let out = core.synthesis(&y_pred).clamp(0.0, 1.0);
                        let p = -10.0 * mse_per_image(&out, x).double_value(&[0]).log10();
                        (y_pred, p)
                    };
                    let (y_pred, p) = decode_psnr(None);
                    nmse += (&y_pred - y).square().mean(Kind::Float).double_value(&[])
                        / latents.variance;
                    psnr += p;
                    if let Some(Some(e)) = latents.validation_captions.get(k) {
                        with += decode_psnr(Some(&e.get(0).unsqueeze(0))).1;
                        without += p;
                        captioned += 1;
                    }
                }
                let n = latents.validation.len().max(1) as f64;
                let c = captioned.max(1) as f64;
                Validation {
                    nmse: nmse / n,
                    psnr: psnr / n,
                    perplexity: perplexity(&counts),
                    captioned: (captioned > 0).then(|| (with / c, without / c)),
                }
            })
            .collect()
    })
}
