//! `mirage train realism`: trains the realism generator against a conditional
//! discriminator on top of the shipped hyperprior, which stays frozen, so every
//! existing bitstream decodes with the new decoder.
//!
//! Per image of a batch: a rate setting (biased towards low rates, where hallucination
//! matters) and a hallucination weight `w ~ U[0, 1]`. The generator's loss is
//!
//! ```text
//! k_mse · MSE(x, x̂)  +  k_chroma · chroma(x̂ − x)  +  k_grid · Σ_P grid_P(x̂ − x)
//!   +  k_excess · excess(x̂ − x̂_mse, x − x̂_mse)  +  w · (k_fm · FM(x, x̂)  +  k_adv · (−D(x̂)))
//! ```
//!
//! `chroma` is the mean square of the error's Cb and Cr (BT.601). Texture in photos is
//! mostly luminance; a generator pushed by its discriminator also invents colour, and
//! at w = 1 that showed as purple-green speckle over dark and flat areas (v3, step
//! 6,000). The extra weight on the error's colour leaves luminance texture to the
//! adversary and keeps the colour of the MSE decode.
//!
//! `grid_P` is the energy of the mean `P × P` block of the error, P ∈ {4, 8, 16}: the
//! part of the error that repeats with the pixel shuffle's and the latent's grid. v1's
//! generator drew such a pattern over flat areas (docs/realism-marks.md); natural
//! images have none, so the term costs realism nothing. Two more changes against those
//! marks: the generator's blocks get seeded noise (a texture source that does not
//! repeat with the latent), and the discriminator sees real and decoded images shifted
//! by the same random offset, so its 16-pixel patch grid is not locked to the latent's.
//!
//! `excess` is the fine detail the generator adds beyond what the original has over the
//! MSE decode, region by region: per 16 × 16 cell, the positive part of the mean square
//! Laplacian (luma) of the added texture minus twice that of the original's own detail
//! (`mirage_eval::excess_detail` measures the same on decodes). v3 hatched flat areas
//! with a diagonal pattern of 2–4.5-pixel periods that no grid sees
//! (docs/realism-hatching.md). Natural detail is not penalised where the original has as
//! much, so the term leaves texture to the adversary where texture belongs.
//!
//! FM is the discriminator feature-matching loss (pix2pixHD): the mean L1 distance
//! between the discriminator's activations on the real and the decoded image, every
//! layer weighted equally. It stands in for LPIPS, which needs pretrained VGG/AlexNet
//! weights that do not exist here; it is a learned perceptual distance that needs no
//! download, and it steadies the adversarial game. The discriminator uses the hinge
//! loss. Two stabilisers of the anchors are options: `--scales 2` adds a second
//! discriminator on 2×-downsampled images and latents (multi-scale, as in pix2pixHD),
//! whose features join the feature matching; `--r1-gamma γ` adds the R1 penalty
//! (Mescheder et al. 2018) `γ/2 · E‖∇ₓD(x)‖²` on real images, where `D(x)` is an
//! image's mean patch logit, summed over the scales,
//! computed lazily every fourth step. A run directory holds `generator.safetensors`, `discriminator.safetensors`,
//! their Adam states, `log.csv` and `validation.csv`; re-running resumes.

use super::adam::Adam;
use super::data::{mse_per_image, Dataset};
use crate::model::layers::ConvPrecision;
use crate::model::realism::{Discriminator, RealismConfig, RealismGenerator, NOISE_STRIDE};
use crate::model::{Hyperprior, LEVELS};
use crate::progress;
use anyhow::{Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub struct RealismTrainOptions {
    pub data: PathBuf,
    /// The shipped hyperprior model file the generator is trained on (frozen).
    pub base_model: PathBuf,
    pub run_dir: PathBuf,
    pub steps: i64,
    pub batch: usize,
    pub crop: u32,
    pub lr: f64,
    pub config: RealismConfig,
    pub k_mse: f64,
    pub k_fm: f64,
    pub k_adv: f64,
    /// Weight of the grid-locked error energy (images in [0, 1]).
    pub k_grid: f64,
    /// Extra weight of the error's chroma (Cb, Cr) energy (images in [0, 1]).
    pub k_chroma: f64,
    /// Weight of the excess detail energy (images in [0, 1]; 0: off, as for v1–v3).
    pub k_excess: f64,
    /// A shipped generator to start from when the run directory is new (a warm start;
    /// its noise gains, if it has none, start at zero).
    pub init_from: Option<PathBuf>,
    /// R1 gradient penalty on real images, `γ/2 · E‖∇D(x)‖²` (0: off), applied every
    /// [`R1_EVERY`] steps with the weight scaled up to match (lazy regularisation).
    pub r1_gamma: f64,
    /// Discriminator scales: 1, or 2 for a second one on 2×-downsampled images.
    pub scales: usize,
    /// Discriminator-only steps at the start of a new run (for a warm-started generator).
    pub d_warmup: i64,
    pub checkpoint_every: i64,
    pub validate_every: i64,
    pub seed: u64,
}

/// Lazy R1: the penalty is computed on one step in this many.
pub const R1_EVERY: i64 = 4;

/// The rate setting of a training image: 70 % in the lower half of the range.
pub(crate) fn sample_rate(rng: &mut impl Rng) -> f32 {
    let half = (LEVELS - 1) as f32 / 2.0;
    if rng.gen_bool(0.7) {
        rng.gen_range(0.0..half)
    } else {
        rng.gen_range(half..2.0 * half)
    }
}

/// Mean L1 distance between two lists of activations, per image `[B]`, each layer
/// weighted equally.
fn feature_matching(real: &[Tensor], fake: &[Tensor]) -> Tensor {
    let per_layer: Vec<Tensor> = real
        .iter()
        .zip(fake)
        .map(|(r, f)| {
            (f - r.detach())
                .abs()
                .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
        })
        .collect();
    Tensor::stack(&per_layer, 0).mean_dim(&[0i64][..], false, Kind::Float)
}

/// Per image `[B]`: the mean square of the Cb and Cr (BT.601) of `d` `[B, 3, H, W]`.
pub(crate) fn chroma_energy(d: &Tensor) -> Tensor {
    let (r, g, b) = (d.select(1, 0), d.select(1, 1), d.select(1, 2));
    let cb = &r * -0.168_736 + &g * -0.331_264 + &b * 0.5;
    let cr = &r * 0.5 + &g * -0.418_688 + &b * -0.081_312;
    (cb.square() + cr.square()).mean_dim(&[1i64, 2][..], false, Kind::Float) / 2.0
}

/// Side of the cells over which the excess-detail term compares detail energies.
const EXCESS_CELL: i64 = 16;

/// Added detail up to this multiple of the original's own, per cell, costs nothing.
/// Restored random texture matches the original's energy only on average: cell by cell
/// it falls above and below it by chance, and without the margin the term also taxes
/// that. With the margin the term bites where the original is (nearly) flat, where the
/// hatching is.
const EXCESS_TOLERANCE: f64 = 2.0;

/// Per image `[B]`: the mean over `EXCESS_CELL`² cells of the positive part of the mean
/// square Laplacian of `added`'s luma minus [`EXCESS_TOLERANCE`] times that of `own`'s
/// (`[B, 3, H, W]` each). With a tolerance of 1 it is `mirage_eval::excess_detail`
/// (squared, images in [0, 1]).
pub(crate) fn excess_detail_energy(added: &Tensor, own: &Tensor) -> Tensor {
    let luma_weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
    let laplacian = Tensor::from_slice(&[0f32, 1., 0., 1., -4., 1., 0., 1., 0.]).view([1, 1, 3, 3]);
    let cell_energy = |d: &Tensor| {
        let luma = (d * &luma_weights).sum_dim_intlist(&[1i64][..], true, Kind::Float);
        luma.conv2d(&laplacian, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)
            .square()
            .avg_pool2d(
                [EXCESS_CELL, EXCESS_CELL],
                [EXCESS_CELL, EXCESS_CELL],
                [0, 0],
                false,
                true,
                None,
            )
    };
    (cell_energy(added) - cell_energy(own) * EXCESS_TOLERANCE)
        .relu()
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
}

/// The periods of the grid penalty: the pixel shuffle (4), the synthesis' last stride-2
/// stages (8) and the latent (16).
const GRID_PERIODS: [i64; 3] = [4, 8, 16];

/// Per image `[B]`: the mean square of the mean `period × period` block of `d`
/// `[B, C, H, W]`, its mean removed; the sum over [`GRID_PERIODS`]. The same quantity
/// as `mirage_eval::grid_marks::grid_pattern` (squared, per channel).
pub(crate) fn grid_energy(d: &Tensor) -> Tensor {
    let [b, c, h, w] = d.size()[..] else {
        panic!("grid_energy needs [B, C, H, W]")
    };
    let per_period: Vec<Tensor> = GRID_PERIODS
        .iter()
        .map(|&p| {
            let (bh, bw) = (h / p, w / p);
            let blocks = d
                .narrow(2, 0, bh * p)
                .narrow(3, 0, bw * p)
                .reshape([b, c, bh, p, bw, p])
                .mean_dim(&[2i64, 4][..], false, Kind::Float);
            let pattern = &blocks - blocks.mean_dim(&[2i64, 3][..], true, Kind::Float);
            pattern
                .square()
                .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
        })
        .collect();
    Tensor::stack(&per_period, 0).sum_dim_intlist(&[0i64][..], false, Kind::Float)
}

/// Standard normal noise for the generator's noise inputs, one value per cell of its
/// grid under `x` `[B, 3, H, W]`. Training draws it from libtorch; the decoder from a
/// seed (`mirage::noise`).
pub fn generator_noise(x: &Tensor) -> Tensor {
    let size = x.size();
    let s = NOISE_STRIDE as i64;
    Tensor::randn(
        [size[0], 1, size[2] / s, size[3] / s],
        (Kind::Float, Device::Cpu),
    )
}

/// Mean absolute Laplacian: a crude measure of how much fine detail an image has.
/// Only for the training log (how much texture comes back as `w` rises); the realism
/// measure of the evaluation suite is the real judge.
pub fn detail(x: &Tensor) -> f64 {
    let k = Tensor::from_slice(&[0f32, 1., 0., 1., -4., 1., 0., 1., 0.])
        .view([1, 1, 3, 3])
        .repeat([3, 1, 1, 1]);
    x.conv2d(&k, None::<Tensor>, [1, 1], [0, 0], [1, 1], 3)
        .abs()
        .mean(Kind::Float)
        .double_value(&[])
}

pub fn train(o: &RealismTrainOptions) -> Result<()> {
    std::fs::create_dir_all(&o.run_dir)?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    tch::manual_seed(o.seed as i64);

    let (_base_vs, hyperprior, base) = super::frozen_hyperprior(&o.base_model)?;
    let config = RealismConfig {
        feature_channels: base.config.n,
        ..o.config
    };

    eprintln!("loading training images from {}", o.data.display());
    let data = Dataset::load(&o.data, o.crop.max(256))?;
    let validation = data.validation_crops(256);

    let g_vs = VarStore::new(Device::Cpu);
    let generator =
        RealismGenerator::new(&g_vs.root(), config, ConvPrecision::fastest_for_training());
    let d_vs = VarStore::new(Device::Cpu);
    let discriminator = Discriminator::new(
        &d_vs.root(),
        base.config.m,
        ConvPrecision::fastest_for_training(),
    );
    // The multi-scale discriminator (pix2pixHD, HiFiC's successors): a second one sees
    // the images and the latent at half resolution, so its patches span 32 pixels and
    // judge larger structure; it shares the Adam state of the first (one VarStore).
    if !(1..=2).contains(&o.scales) {
        anyhow::bail!("--scales must be 1 or 2");
    }
    let coarse = (o.scales == 2).then(|| {
        Discriminator::new(
            &(d_vs.root() / "coarse"),
            base.config.m,
            ConvPrecision::fastest_for_training(),
        )
    });
    let discriminate = |x: &Tensor, y_hat: &Tensor| -> (Vec<Tensor>, Vec<Tensor>) {
        let (logits, mut features) = discriminator.forward(x, y_hat);
        let mut all = vec![logits];
        if let Some(c) = &coarse {
            let half = |t: &Tensor| t.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
            let (l, f) = c.forward(&half(x), &half(y_hat));
            all.push(l);
            features.extend(f);
        }
        (all, features)
    };
    let mut g_adam = Adam::with_betas(&g_vs, 0.5, 0.999);
    let mut d_adam = Adam::with_betas(&d_vs, 0.5, 0.999);
    let paths = |name: &str| o.run_dir.join(format!("{name}.safetensors"));
    let mut g_vs = g_vs;
    let mut d_vs = d_vs;
    if paths("generator").exists() {
        g_vs.load(paths("generator"))
            .context("resuming the generator")?;
        d_vs.load(paths("discriminator"))
            .context("resuming the discriminator")?;
        g_adam.load(&paths("generator-adam"))?;
        d_adam.load(&paths("discriminator-adam"))?;
        eprintln!("resumed at step {}", g_adam.step);
        rng = StdRng::seed_from_u64(o.seed ^ g_adam.step as u64);
        tch::manual_seed(o.seed as i64 ^ g_adam.step);
    } else if let Some(init) = &o.init_from {
        let file =
            crate::model_file::DecoderFile::load(init, crate::model_file::REALISM_FORMAT_NAME)
                .with_context(|| format!("loading {} to start from", init.display()))?;
        let from = file.realism_config()?;
        if (from.channels, from.blocks, from.feature_channels)
            != (config.channels, config.blocks, config.feature_channels)
        {
            anyhow::bail!("{} has other widths than this run", init.display());
        }
        // A v1 file has no noise gains: those start at zero (the v1 generator exactly).
        file.fill_warm_start(&g_vs, &|name| {
            name.ends_with("noise_gain") && !file.has_tensor(name)
        })?;
        eprintln!("new run from {}", init.display());
    }
    std::fs::write(
        o.run_dir.join("base_model"),
        crate::model_file::id_hex(&base.id) + "\n",
    )?;

    let elapsed_path = o.run_dir.join("elapsed_seconds");
    let elapsed_before = super::elapsed_seconds(&elapsed_path);
    let open_log = |name: &str, header: &str| super::open_log(&o.run_dir.join(name), header);
    let mut log = open_log(
        "log.csv",
        "step,wall_seconds,psnr,d_loss,g_adv,g_fm,d_real,d_fake,grid,excess",
    )?;
    let mut val_log = open_log(
        "validation.csv",
        "step,wall_seconds,rate,w,psnr,detail_ratio,grid_levels",
    )?;

    let bar = progress::bar((o.steps - g_adam.step).max(0) as u64, "training realism");
    let start = Instant::now();
    let mut acc = [0f64; 8];
    let mut acc_n = 0;
    // A warm-started generator meets fresh discriminators: train them alone first, so
    // their first, random gradients do not undo what the generator had learnt.
    let mut warmup_left = if g_adam.step == 0 { o.d_warmup } else { 0 };
    if warmup_left > 0 {
        eprintln!("{warmup_left} discriminator-only steps first");
    }
    while g_adam.step < o.steps {
        let x = data.batch(&mut rng, o.batch, o.crop);
        let rates: Vec<f32> = (0..o.batch).map(|_| sample_rate(&mut rng)).collect();
        let ws: Vec<f32> = (0..o.batch).map(|_| rng.gen_range(0.0..1.0)).collect();
        let w = Tensor::from_slice(&ws);
        let (y_hat, x_mse, features) = tch::no_grad(|| {
            let y_hat = hyperprior.decoded_latent(&x, &Tensor::from_slice(&rates));
            let (x_mse, features) = hyperprior.synthesis.forward_with_features(&y_hat);
            (y_hat, x_mse, features)
        });
        let x_hat = generator.forward(&x_mse, &features, &w, &generator_noise(&x_mse));

        // Discriminator: hinge loss on real images and (detached) decodes, both shifted
        // by the same random offset off the latent grid (the wrapped seam is in both).
        let shift = [rng.gen_range(0..16i64), rng.gen_range(0..16i64)];
        let off_grid = |t: &Tensor| t.roll(&shift[..], &[2i64, 3][..]);
        let real_in = off_grid(&x).detach().set_requires_grad(o.r1_gamma > 0.0);
        let (d_reals, real_features) = discriminate(&real_in, &y_hat);
        let (d_fakes, _) = discriminate(&off_grid(&x_hat.detach()), &y_hat);
        let mut d_loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for (r, f) in d_reals.iter().zip(&d_fakes) {
            d_loss += (-r + 1.0).relu().mean(Kind::Float) + (f + 1.0).relu().mean(Kind::Float);
        }
        if o.r1_gamma > 0.0 && g_adam.step % R1_EVERY == 0 {
            // The penalty is on each image's score, the mean of its patch logits, as
            // for a discriminator with one output. The gradient of their *sum* grows
            // with the number of patches (256 per 256² crop), which made γ = 1 hundreds
            // of times stronger than meant: the 2026-12-04 run's discriminator never
            // left chance (hinge loss 3.99 for two scales).
            let total = d_reals
                .iter()
                .map(|r| {
                    r.mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
                        .sum(Kind::Float)
                })
                .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
            let grad = Tensor::run_backward(&[total], &[&real_in], true, true).remove(0);
            let r1 = grad
                .square()
                .sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
                .mean(Kind::Float);
            d_loss += r1 * (0.5 * o.r1_gamma * R1_EVERY as f64);
        }
        let (d_real, d_fake) = (&d_reals[0], &d_fakes[0]);
        d_adam.zero_grad();
        d_loss.backward();
        d_adam.clip_grad_norm(10.0);
        d_adam.update(o.lr);

        if warmup_left > 0 {
            warmup_left -= 1;
            continue;
        }

        // Generator: distortion for all, realism terms weighted by w.
        let (g_fakes, fake_features) = discriminate(&off_grid(&x_hat), &y_hat);
        let adv = g_fakes
            .iter()
            .map(|g| -g.mean_dim(&[1i64, 2, 3][..], false, Kind::Float))
            .fold(
                Tensor::zeros([o.batch as i64], (Kind::Float, Device::Cpu)),
                |a, b| a + b,
            );
        let fm = feature_matching(&real_features, &fake_features);
        let mse = mse_per_image(&x_hat, &x);
        let grid = grid_energy(&(&x_hat - &x));
        let chroma = chroma_energy(&(&x_hat - &x));
        // Computed (and logged) even when it is not trained on: it is cheap, and the
        // log then shows a run drifting into hatching.
        let excess = excess_detail_energy(&(&x_hat - &x_mse), &(&x - &x_mse));
        let g_loss = (&mse * o.k_mse
            + &chroma * o.k_chroma
            + &grid * o.k_grid
            + &excess * o.k_excess
            + &w * (&fm * o.k_fm + &adv * o.k_adv))
            .mean(Kind::Float);
        g_adam.zero_grad();
        g_loss.backward();
        g_adam.clip_grad_norm(10.0);
        g_adam.update(o.lr);

        let loss_d = d_loss.double_value(&[]);
        if !loss_d.is_finite() || !g_loss.double_value(&[]).is_finite() {
            anyhow::bail!(
                "a loss became non-finite at step {}; resume from the last checkpoint with a lower --lr",
                g_adam.step
            );
        }
        let values = [
            (mse.log10() * -10.0).mean(Kind::Float).double_value(&[]),
            loss_d,
            adv.mean(Kind::Float).double_value(&[]),
            fm.mean(Kind::Float).double_value(&[]),
            d_real.mean(Kind::Float).double_value(&[]),
            d_fake.mean(Kind::Float).double_value(&[]),
            grid.mean(Kind::Float).sqrt().double_value(&[]) * 255.0,
            // As an RMS in levels, like `mirage_eval::excess_detail` (which has no
            // margin, so it reads higher on the same decodes).
            excess.mean(Kind::Float).sqrt().double_value(&[]) * 255.0,
        ];
        for (a, v) in acc.iter_mut().zip(values) {
            *a += v;
        }
        acc_n += 1;
        bar.inc(1);
        let done = g_adam.step;
        let wall = elapsed_before + start.elapsed().as_secs_f64();
        if done % 50 == 0 {
            let m: Vec<String> = acc
                .iter()
                .map(|a| format!("{:.4}", a / acc_n as f64))
                .collect();
            writeln!(log, "{done},{wall:.1},{}", m.join(","))?;
            bar.set_message(format!("psnr {} d {} fm {}", m[0], m[1], m[3]));
            acc = [0.0; 8];
            acc_n = 0;
        }
        if done % o.validate_every == 0 || done == o.steps {
            for rate in [1.0f32, 3.0] {
                for wv in [0.0f32, 0.5, 1.0] {
                    let (psnr, ratio, grid) =
                        validate(&hyperprior, &generator, &validation, rate, wv);
                    writeln!(
                        val_log,
                        "{done},{wall:.1},{rate},{wv},{psnr:.3},{ratio:.4},{grid:.3}"
                    )?;
                }
            }
            val_log.flush()?;
            super::save_snapshot(&g_vs, &o.run_dir, "generator", done)?;
        }
        if done % o.checkpoint_every == 0 || done == o.steps {
            super::save_atomically(&g_vs, &paths("generator"))?;
            super::save_atomically(&d_vs, &paths("discriminator"))?;
            g_adam.save(&paths("generator-adam"))?;
            d_adam.save(&paths("discriminator-adam"))?;
            std::fs::write(&elapsed_path, format!("{wall:.1}\n"))?;
            log.flush()?;
        }
    }
    bar.finish();
    Ok(())
}

/// PSNR, detail ratio (decoded / original mean |Laplacian|) and the RMS in 8-bit
/// levels of the grid-locked part of the added texture (decode − MSE decode, summed
/// over the penalty's periods), on the held-out crops.
fn validate(
    hyperprior: &Hyperprior,
    generator: &RealismGenerator,
    crops: &[Tensor],
    rate: f32,
    w: f32,
) -> (f64, f64, f64) {
    tch::no_grad(|| {
        let (mut psnr, mut ratio, mut grid) = (0.0, 0.0, 0.0);
        for x in crops {
            let y_hat = hyperprior.decoded_latent(x, &Tensor::from_slice(&[rate]));
            let (x_mse, features) = hyperprior.synthesis.forward_with_features(&y_hat);
            let x_hat = generator
                .forward(
                    &x_mse,
                    &features,
                    &Tensor::from_slice(&[w]),
                    &generator_noise(&x_mse),
                )
                .clamp(0.0, 1.0);
            grid += grid_energy(&(&x_hat - &x_mse)).sqrt().double_value(&[0]) * 255.0;
            let mse = mse_per_image(&x_hat, x).double_value(&[0]);
            psnr += -10.0 * mse.log10();
            ratio += detail(&x_hat) / detail(x).max(1e-9);
        }
        let n = crops.len().max(1) as f64;
        (psnr / n, ratio / n, grid / n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The penalty sees a pattern repeated on the 16-pixel grid and hardly sees noise of
    /// the same power, which has no preferred phase.
    #[test]
    fn chroma_energy_sees_colour_not_grey() {
        tch::manual_seed(0);
        let grey = Tensor::randn([2, 1, 16, 16], (Kind::Float, Device::Cpu)).repeat([1, 3, 1, 1]);
        assert!(chroma_energy(&grey).max().double_value(&[]) < 1e-10);
        let colour = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
        let e = chroma_energy(&colour);
        assert_eq!(e.size(), [2]);
        // Independent unit noise per channel: (Cb² + Cr²) / 2 ≈ (0.388 + 0.432) / 2.
        assert!(
            (e.mean(Kind::Float).double_value(&[]) - 0.410).abs() < 0.05,
            "{e}"
        );
    }

    #[test]
    fn grid_energy_sees_grid_patterns_not_noise() {
        tch::manual_seed(0);
        let tile = Tensor::randn([1, 3, 16, 16], (Kind::Float, Device::Cpu));
        let grid = tile.repeat([2, 1, 8, 8]);
        let noise = Tensor::randn([2, 3, 128, 128], (Kind::Float, Device::Cpu));
        let on_grid = grid_energy(&grid);
        let off_grid = grid_energy(&noise);
        assert_eq!(on_grid.size(), [2]);
        // The P = 16 term keeps the whole power of a 16-periodic pattern (≈ 1).
        assert!(on_grid.min().double_value(&[]) > 0.8, "{on_grid}");
        // Noise averages out over the blocks: ≈ 1/64 at P = 16, less at P = 8 and 4.
        assert!(off_grid.max().double_value(&[]) < 0.05, "{off_grid}");
    }

    #[test]
    fn excess_detail_sees_hatching_on_flat_areas_not_restored_detail() {
        tch::manual_seed(0);
        let flat = Tensor::zeros([1, 3, 64, 64], (Kind::Float, Device::Cpu));
        let detail = Tensor::randn([1, 3, 64, 64], (Kind::Float, Device::Cpu)) * 0.02;
        // Diagonal stripes with a 6.4-pixel period along x − y, as v3 drew them.
        let coords = Tensor::arange(64, (Kind::Float, Device::Cpu));
        let phase = (coords.view([1, 64]) - coords.view([64, 1])) * (std::f64::consts::TAU / 6.4);
        let stripes = (phase.sin() * 0.02)
            .view([1, 1, 64, 64])
            .repeat([1, 3, 1, 1]);
        let none = excess_detail_energy(&detail, &detail);
        let on_flat = excess_detail_energy(&stripes, &flat);
        assert_eq!(on_flat.size(), [1]);
        assert_eq!(none.double_value(&[0]), 0.0);
        assert!(on_flat.double_value(&[0]) > 1e-4, "{on_flat}");
        // Less added than the original has, or a little more: no excess at all.
        for scale in [0.5, 1.2] {
            let close = excess_detail_energy(&(&detail * scale), &detail);
            assert_eq!(close.double_value(&[0]), 0.0, "{scale}");
        }
    }
}
