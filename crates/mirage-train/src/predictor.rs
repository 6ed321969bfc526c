//! `mirage train predictor`: the realism predictor (ConHa) learns, per 64×64 cell, the
//! hallucination weight that balances fidelity against realism, from *proxy labels*
//! computed on the training photos (never Kodak), from *pairwise votes* on a study pool
//! of training photos (`--votes`, the Bradley–Terry loss of [`super::votes`]), or from
//! both (`--proxy-weight` sets the labels' share). See docs/conha.md.
//!
//! ## The proxy label
//!
//! Each crop is coded by the frozen shipped hyperprior at a random rate (biased low, as
//! for the realism decoder) and decoded by the shipped realism generator at every map
//! level `w ∈ {0, 1/3, 2/3, 1}`. For each cell and level two terms are measured:
//!
//! ```text
//! fidelity(w) = 1 − SSIM(luma of x, luma of x̂_w)             over the cell (7×7 windows)
//! realism(w)  = | ln( (D(x̂_w) + ε) / (D(x) + ε) ) |            D = mean |Laplacian| of luma
//! label       = argmin_w  fidelity(w) + α · realism(w)
//! ```
//!
//! SSIM is structure-sensitive: invented strokes on text, wobble on straight edges and
//! speckle on smooth skin lower it sharply, while on grass the MSE decode has already
//! lost the structure SSIM would reward. The realism term asks the decode to have the
//! original's amount of fine detail, no less (the MSE decode's blur) and no more
//! (over-texturing); it is a per-region stand-in for the realism measure, which
//! compares distributions and cannot score one cell. `α` sets the exchange rate; its
//! default is documented in docs/conha.md with the label statistics it gives.

use super::adam::Adam;
use super::data::Dataset;
use super::realism::{generator_noise, sample_rate};
use super::votes::Vote;
use crate::model::layers::ConvPrecision;
use crate::model::predictor::RealismPredictor;
use crate::model::realism::RealismGenerator;
use crate::model::LEVELS;
use crate::progress;
use anyhow::{Context, Result};
use mirage_format::realism_map::{RealismMap, CELL, LEVELS as MAP_LEVELS};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use tch::{nn::VarStore, Device, Kind, Tensor};

const LEVEL_COUNT: usize = MAP_LEVELS as usize;
/// The default weight `α` of the realism term (docs/conha.md gives the reasons and
/// the label statistics it yields).
pub const DEFAULT_ALPHA: f64 = 0.5;
/// The default weight `β` of the line-structure term.
pub const DEFAULT_BETA: f64 = 0.25;
/// Floor of the detail measure, so flat cells (sky) do not turn tiny absolute changes
/// into large ratios. About the mean |Laplacian| of a smooth photo region's noise.
const DETAIL_FLOOR: f64 = 0.004;
/// Gradient energy (squared luma gradient) below which a cell has no structure to
/// protect: a gradient of about 0.03 per pixel, faint texture.
const COHERENCE_ENERGY_FLOOR: f64 = 1e-3;

#[derive(Clone, Debug)]
pub struct PredictorTrainOptions {
    pub data: PathBuf,
    pub base_model: PathBuf,
    pub realism_model: PathBuf,
    pub run_dir: PathBuf,
    pub crops_per_image: usize,
    pub crop: u32,
    pub steps: i64,
    pub batch: usize,
    pub lr: f64,
    /// Weight of the realism term against the fidelity term.
    pub alpha: f64,
    /// Weight of the line-structure term (coherence × w).
    pub beta: f64,
    /// Pairwise votes (`vote_campaign.py score` CSV) on the study pool `pool`, fitted with
    /// the Bradley–Terry loss of [`super::votes`] beside (or instead of) the proxy labels.
    pub votes: Option<(PathBuf, PathBuf)>,
    /// Weight of the proxy-label loss; 0 trains on the votes alone (no labels computed).
    pub proxy_weight: f64,
    /// Weight of the vote loss; 0 only reports how well the predictor agrees with them.
    pub vote_weight: f64,
    pub seed: u64,
}

/// The votes, the pool images they refer to, and each image's rate setting.
struct VoteData {
    train: Vec<Vote>,
    test: Vec<Vote>,
    images: HashMap<String, image::RgbImage>,
    rates: HashMap<String, f32>,
    skipped: usize,
}

impl VoteData {
    fn load(votes: &std::path::Path, pool: &std::path::Path) -> Result<VoteData> {
        let set = super::votes::read_votes(votes)?;
        if set.votes.is_empty() {
            anyhow::bail!(
                "{} has no vote between two constant weights (mirage-w…)",
                votes.display()
            );
        }
        if pool
            .components()
            .any(|c| c.as_os_str().to_string_lossy().contains("kodak"))
            || set.votes.iter().any(|v| v.image.starts_with("kodim"))
        {
            anyhow::bail!("refusing to train on votes about Kodak: Kodak is the evaluation set");
        }
        let size = set.votes[0].size;
        let rates = super::votes::pool_rates(pool)?;
        let mut images = HashMap::new();
        for v in &set.votes {
            if v.size != size || !v.size.is_multiple_of(CELL) {
                anyhow::bail!(
                    "every voted crop must have the same size, a multiple of {CELL} (got {} and {size})",
                    v.size
                );
            }
            if !rates.contains_key(&v.image) {
                anyhow::bail!("the pool's pool.toml has no rate for {}", v.image);
            }
            if !images.contains_key(&v.image) {
                let path = pool.join(&v.image).join("original.png");
                let img = crate::image_io::read_image(&path)
                    .with_context(|| format!("the pool image {}", path.display()))?
                    .image;
                images.insert(v.image.clone(), img);
            }
            let img = &images[&v.image];
            if v.x0 + v.size > img.width() || v.y0 + v.size > img.height() {
                anyhow::bail!("a vote's crop lies outside {}", v.image);
            }
        }
        let held = super::votes::held_out_images(&set.votes);
        let (test, train) = set.votes.into_iter().partition(|v| held.contains(&v.image));
        Ok(VoteData {
            train,
            test,
            images,
            rates,
            skipped: set.skipped,
        })
    }

    /// Inputs of some votes' crops: pixels `[B, 3, S, S]` and rate inputs `[B]`.
    fn inputs(&self, votes: &[&Vote]) -> (Tensor, Tensor) {
        let x = Tensor::cat(
            &votes
                .iter()
                .map(|v| crop_tensor(&self.images[&v.image], v.x0, v.y0, v.size))
                .collect::<Vec<_>>(),
            0,
        );
        let rate: Vec<f32> = votes
            .iter()
            // The pool stores the codec's rate setting (0..=RATE_MAX), which the
            // predictor sees scaled to [0, 1], as at the encoder.
            .map(|v| self.rates[&v.image] / mirage_format::RATE_MAX as f32)
            .collect();
        (x, Tensor::from_slice(&rate))
    }

    /// The predicted ŵ (mean of the map over the crop) of each vote.
    fn predicted(&self, predictor: &RealismPredictor, votes: &[&Vote]) -> Tensor {
        let (x, rate) = self.inputs(votes);
        predictor
            .forward(&x, &rate)
            .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
    }

    /// Held-out agreement of the predictor and of the best constant on the training votes.
    fn report(&self, predictor: &RealismPredictor) -> String {
        let train: Vec<&Vote> = self.train.iter().collect();
        let test: Vec<&Vote> = self.test.iter().collect();
        let constant = super::votes::best_constant(&train);
        let (mut by_map, mut by_constant) = (0.0, 0.0);
        for chunk in test.chunks(16) {
            let w = Vec::<f32>::try_from(tch::no_grad(|| self.predicted(predictor, chunk)))
                .unwrap_or_default();
            for (v, &w) in chunk.iter().zip(&w) {
                by_map += super::votes::agrees(w, v);
                by_constant += super::votes::agrees(constant, v);
            }
        }
        let n = test.len().max(1) as f64;
        let images: std::collections::BTreeSet<&str> =
            test.iter().map(|v| v.image.as_str()).collect();
        format!(
            "Votes: {} for training, {} held out (on {} images: every fifth voted image), {} skipped (a side was not a constant weight).\n\n| predictor | held-out votes it agrees with |\n|---|---|\n| ConHa predictor (mean of its map over the crop) | {:.1} % |\n| best constant on the training votes (w = {constant:.3}) | {:.1} % |\n",
            train.len(),
            test.len(),
            images.len(),
            self.skipped,
            100.0 * by_map / n,
            100.0 * by_constant / n,
        )
    }
}

/// A labelled crop: where it is, its rate, and the two terms for every cell and level.
#[derive(Clone, Debug)]
struct LabelledCrop {
    image: usize,
    x0: u32,
    y0: u32,
    /// Continuous rate setting in [0, LEVELS − 1].
    rate: f32,
    /// `[cell][level] = (fidelity, realism)`, cells row-major.
    terms: Vec<[(f32, f32); LEVEL_COUNT]>,
    /// The original's line structure per cell (see [`coherence`]).
    coherence: Vec<f32>,
}

/// The weights of the label's terms.
#[derive(Clone, Copy, Debug)]
pub struct Objective {
    pub alpha: f64,
    pub beta: f64,
}

impl LabelledCrop {
    fn costs(&self, cell: usize, k: Objective) -> [f64; LEVEL_COUNT] {
        let mut out = [0.0; LEVEL_COUNT];
        for (level, (f, r)) in self.terms[cell].iter().enumerate() {
            let w = RealismMap::weight(level as u8) as f64;
            out[level] = *f as f64 + k.alpha * *r as f64 + k.beta * self.coherence[cell] as f64 * w;
        }
        out
    }
    fn best_level(&self, cell: usize, k: Objective) -> usize {
        argmin(&self.costs(cell, k))
    }
    /// One level for the whole crop: the least total cost (ConHa's per-image label).
    fn best_crop_level(&self, k: Objective) -> usize {
        let mut total = [0.0; LEVEL_COUNT];
        for cell in 0..self.terms.len() {
            for (t, c) in total.iter_mut().zip(self.costs(cell, k)) {
                *t += c;
            }
        }
        argmin(&total)
    }
}

fn argmin(v: &[f64]) -> usize {
    (0..v.len())
        .min_by(|&a, &b| v[a].total_cmp(&v[b]))
        .unwrap_or(0)
}

/// Held out from training, for the error report: every fifth training photo.
fn held_out(image: usize) -> bool {
    image.is_multiple_of(5)
}

/// Luma `[B, 1, H, W]` of RGB in [0, 1].
fn luma(x: &Tensor) -> Tensor {
    let k = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
    (x * k).sum_dim_intlist(&[1i64][..], true, Kind::Float)
}

fn cell_mean(x: &Tensor) -> Tensor {
    let c = CELL as i64;
    x.avg_pool2d([c, c], [c, c], [0, 0], false, true, None)
}

/// Per-cell line structure of the original, in [0, 1]: the coherence of the
/// structure tensor, `(λ₁ − λ₂) / (λ₁ + λ₂)`, over 11×11 windows, averaged over the
/// cell weighted by gradient energy, with an energy floor so flat cells count as 0.
/// High on straight edges, lines and strokes (one dominant orientation), low on
/// grass, gravel or foliage (every orientation) and on smooth areas.
pub fn coherence(x: &Tensor) -> Tensor {
    let y = luma(x);
    let kx = Tensor::from_slice(&[-0.5f32, 0.0, 0.5]).view([1, 1, 1, 3]);
    let ky = Tensor::from_slice(&[-0.5f32, 0.0, 0.5]).view([1, 1, 3, 1]);
    let gx = y.conv2d(&kx, None::<Tensor>, [1, 1], [0, 1], [1, 1], 1);
    let gy = y.conv2d(&ky, None::<Tensor>, [1, 1], [1, 0], [1, 1], 1);
    let window = |t: &Tensor| t.avg_pool2d([11, 11], [1, 1], [5, 5], false, false, None);
    let (jxx, jyy, jxy) = (
        window(&(&gx * &gx)),
        window(&(&gy * &gy)),
        window(&(&gx * &gy)),
    );
    let energy = &jxx + &jyy;
    let spread = ((&jxx - &jyy).square() + jxy.square() * 4.0).sqrt();
    let coherent = &spread / (&energy + 1e-12);
    cell_mean(&(coherent * &energy)) / (cell_mean(&energy) + COHERENCE_ENERGY_FLOOR)
}

/// Per-cell `(1 − SSIM, |ln detail ratio|)`, each `[B, 1, H/64, W/64]`.
pub fn cell_terms(x: &Tensor, x_hat: &Tensor) -> (Tensor, Tensor) {
    let (a, b) = (luma(x), luma(x_hat));
    let mean = |t: &Tensor| t.avg_pool2d([7, 7], [1, 1], [3, 3], false, false, None);
    let (ma, mb) = (mean(&a), mean(&b));
    let va = mean(&(&a * &a)) - &ma * &ma;
    let vb = mean(&(&b * &b)) - &mb * &mb;
    let cov = mean(&(&a * &b)) - &ma * &mb;
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let ssim = ((&ma * &mb * 2.0 + c1) * (cov * 2.0 + c2))
        / ((&ma * &ma + &mb * &mb + c1) * (va + vb + c2));
    let fidelity = -cell_mean(&ssim) + 1.0;

    let k = Tensor::from_slice(&[0f32, 1., 0., 1., -4., 1., 0., 1., 0.]).view([1, 1, 3, 3]);
    let detail = |t: &Tensor| {
        cell_mean(
            &t.conv2d(&k, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
                .abs(),
        )
    };
    let realism = ((detail(&b) + DETAIL_FLOOR) / (detail(&a) + DETAIL_FLOOR))
        .log()
        .abs();
    (fidelity, realism)
}

/// Codes and decodes a batch at every level and measures the terms.
fn label_batch(
    hyperprior: &crate::model::Hyperprior,
    generator: &RealismGenerator,
    x: &Tensor,
    rates: &[f32],
) -> Vec<Vec<[(f32, f32); LEVEL_COUNT]>> {
    tch::no_grad(|| {
        let y_hat = hyperprior.decoded_latent(x, &Tensor::from_slice(rates));
        let (x_mse, features) = hyperprior.synthesis.forward_with_features(&y_hat);
        let b = rates.len();
        let noise = generator_noise(&x_mse);
        let mut out = vec![vec![[(0f32, 0f32); LEVEL_COUNT]; 0]; b];
        let per_level: Vec<(Vec<f32>, Vec<f32>)> = (0..MAP_LEVELS)
            .map(|level| {
                let w = Tensor::full(
                    [b as i64],
                    RealismMap::weight(level) as f64,
                    (Kind::Float, Device::Cpu),
                );
                let x_hat = generator
                    .forward(&x_mse, &features, &w, &noise)
                    .clamp(0.0, 1.0);
                let (f, r) = cell_terms(x, &x_hat);
                (
                    Vec::<f32>::try_from(f.flatten(0, -1)).unwrap_or_default(),
                    Vec::<f32>::try_from(r.flatten(0, -1)).unwrap_or_default(),
                )
            })
            .collect();
        let cells = per_level[0].0.len() / b;
        for (i, crop) in out.iter_mut().enumerate() {
            for cell in 0..cells {
                let mut t = [(0f32, 0f32); LEVEL_COUNT];
                for (level, (f, r)) in per_level.iter().enumerate() {
                    t[level] = (f[i * cells + cell], r[i * cells + cell]);
                }
                crop.push(t);
            }
        }
        out
    })
}

fn crop_tensor(img: &image::RgbImage, x0: u32, y0: u32, size: u32) -> Tensor {
    let view = image::imageops::crop_imm(img, x0, y0, size, size).to_image();
    crate::image_io::to_tensor(&view)
}

/// Computes the labels, or reads them back from `labels.csv` if they were made with the
/// same generator and crop size.
fn labels(
    o: &PredictorTrainOptions,
    data: &Dataset,
    generator_id: &str,
) -> Result<Vec<LabelledCrop>> {
    let path = o.run_dir.join("labels.csv");
    let stamp = format!("# generator {generator_id} crop {}", o.crop);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if text.lines().next() == Some(stamp.as_str()) {
            return parse_labels(&text);
        }
        eprintln!("labels.csv was made with another generator or crop; recomputing");
    }
    let (_base_vs, hyperprior, _) = super::frozen_hyperprior(&o.base_model)?;
    let file = crate::model_file::DecoderFile::load(
        &o.realism_model,
        crate::model_file::REALISM_FORMAT_NAME,
    )?;
    let g_vs = VarStore::new(Device::Cpu);
    let generator = RealismGenerator::new(&g_vs.root(), file.realism_config()?, ConvPrecision::F32);
    file.fill(&g_vs)?;

    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut plan = vec![];
    for (image, img) in data.train.iter().enumerate() {
        for _ in 0..o.crops_per_image {
            let x0 = rng.gen_range(0..=img.width() - o.crop);
            let y0 = rng.gen_range(0..=img.height() - o.crop);
            plan.push((image, x0, y0, sample_rate(&mut rng)));
        }
    }
    let bar = progress::bar(plan.len() as u64, "labelling crops");
    let mut out = vec![];
    for chunk in plan.chunks(8) {
        let x = Tensor::cat(
            &chunk
                .iter()
                .map(|&(i, x0, y0, _)| crop_tensor(&data.train[i], x0, y0, o.crop))
                .collect::<Vec<_>>(),
            0,
        );
        let rates: Vec<f32> = chunk.iter().map(|c| c.3).collect();
        for (&(image, x0, y0, rate), terms) in
            chunk
                .iter()
                .zip(label_batch(&hyperprior, &generator, &x, &rates))
        {
            out.push(LabelledCrop {
                image,
                x0,
                y0,
                rate,
                terms,
                coherence: vec![],
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let mut text =
        stamp + "\nimage,x0,y0,rate,terms (cell-major: fidelity and realism per level)\n";
    for c in &out {
        let _ = write!(text, "{},{},{},{}", c.image, c.x0, c.y0, c.rate);
        for t in &c.terms {
            for (f, r) in t {
                let _ = write!(text, ",{f},{r}");
            }
        }
        text.push('\n');
    }
    crate::image_io::write_atomically(&path, text.as_bytes(), true)?;
    Ok(out)
}

fn parse_labels(text: &str) -> Result<Vec<LabelledCrop>> {
    text.lines()
        .skip(2)
        .map(|line| {
            let v: Vec<&str> = line.split(',').collect();
            let n = |i: usize| -> Result<f32> { Ok(v.get(i).context("short line")?.parse()?) };
            let terms = v[4..]
                .chunks(2 * LEVEL_COUNT)
                .map(|c| {
                    let mut t = [(0f32, 0f32); LEVEL_COUNT];
                    for (level, pair) in c.chunks(2).enumerate() {
                        t[level] = (pair[0].parse()?, pair[1].parse()?);
                    }
                    Ok(t)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(LabelledCrop {
                image: v[0].parse()?,
                x0: v[1].parse()?,
                y0: v[2].parse()?,
                rate: n(3)?,
                terms,
                coherence: vec![],
            })
        })
        .collect()
}

/// Inputs and per-cell targets (the label's weight) of some crops.
fn batch(
    data: &Dataset,
    crops: &[&LabelledCrop],
    o: &PredictorTrainOptions,
) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::cat(
        &crops
            .iter()
            .map(|c| crop_tensor(&data.train[c.image], c.x0, c.y0, o.crop))
            .collect::<Vec<_>>(),
        0,
    );
    let rate: Vec<f32> = crops.iter().map(|c| c.rate / (LEVELS - 1) as f32).collect();
    let side = (o.crop / CELL) as i64;
    let target: Vec<f32> = crops
        .iter()
        .flat_map(|c| {
            (0..c.terms.len())
                .map(|cell| RealismMap::weight(c.best_level(cell, o.objective()) as u8))
        })
        .collect();
    (
        x,
        Tensor::from_slice(&rate),
        Tensor::from_slice(&target).view([crops.len() as i64, 1, side, side]),
    )
}

impl PredictorTrainOptions {
    fn objective(&self) -> Objective {
        Objective {
            alpha: self.alpha,
            beta: self.beta,
        }
    }
}

pub fn train(o: &PredictorTrainOptions) -> Result<String> {
    std::fs::create_dir_all(&o.run_dir)?;
    tch::manual_seed(o.seed as i64);
    let votes = match &o.votes {
        Some((votes, pool)) => Some(VoteData::load(votes, pool)?),
        None => None,
    };
    if (votes.is_none() || o.vote_weight <= 0.0) && o.proxy_weight <= 0.0 {
        anyhow::bail!("with --proxy-weight 0 the predictor needs --votes to learn from");
    }
    let proxy = if o.proxy_weight > 0.0 {
        Some(proxy_labels(o)?)
    } else {
        None
    };

    let vs = VarStore::new(Device::Cpu);
    let predictor = RealismPredictor::new(&vs.root());
    let mut adam = Adam::new(&vs);
    let mut rng = StdRng::seed_from_u64(o.seed);
    let bar = progress::bar(o.steps as u64, "training predictor");
    let mut log = super::open_log(&o.run_dir.join("log.csv"), "step,loss")?;
    let mut acc = 0.0;
    while adam.step < o.steps {
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        if let Some((data, crops, _)) = &proxy {
            let train: Vec<&LabelledCrop> = crops.iter().filter(|c| !held_out(c.image)).collect();
            let picked: Vec<&LabelledCrop> = (0..o.batch)
                .map(|_| train[rng.gen_range(0..train.len())])
                .collect();
            let (x, rate, target) = batch(data, &picked, o);
            loss += (predictor.forward(&x, &rate) - target)
                .square()
                .mean(Kind::Float)
                * o.proxy_weight;
        }
        if let (Some(v), true) = (&votes, o.vote_weight > 0.0) {
            let picked: Vec<&Vote> = (0..o.batch)
                .map(|_| &v.train[rng.gen_range(0..v.train.len())])
                .collect();
            let weight = |f: fn(&Vote) -> f32| {
                Tensor::from_slice(&picked.iter().map(|v| f(v)).collect::<Vec<f32>>())
            };
            loss += super::votes::bradley_terry_loss(
                &v.predicted(&predictor, &picked),
                &weight(|v| v.winner_w),
                &weight(|v| v.loser_w),
            ) * o.vote_weight;
        }
        adam.zero_grad();
        loss.backward();
        // Cosine decay: a small network on a fixed label set, trained to convergence.
        let progress = adam.step as f64 / o.steps as f64;
        adam.update(o.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        acc += loss.double_value(&[]);
        bar.inc(1);
        if adam.step % 100 == 0 {
            writeln!(log, "{},{:.5}", adam.step, acc / 100.0)?;
            bar.set_message(format!("loss {:.4}", acc / 100.0));
            acc = 0.0;
        }
    }
    bar.finish();
    super::save_atomically(&vs, &o.run_dir.join("predictor.safetensors"))?;
    let mut report = String::new();
    if let Some((data, crops, _)) = &proxy {
        let (train, test): (Vec<&LabelledCrop>, Vec<&LabelledCrop>) =
            crops.iter().partition(|c| !held_out(c.image));
        report += &evaluate(&predictor, data, &train, &test, o);
        std::fs::write(
            o.run_dir.join("fixed_level"),
            format!("{}\n", best_constant_level(&train, o.objective())),
        )?;
    }
    if let Some(v) = &votes {
        if !report.is_empty() {
            report.push('\n');
        }
        report += &v.report(&predictor);
        {
            // ConHa-fixed from the votes when there are any (preferences outrank the
            // proxy): the level nearest the best constant.
            let w = super::votes::best_constant(&v.train.iter().collect::<Vec<_>>());
            std::fs::write(
                o.run_dir.join("fixed_level"),
                format!("{}\n", RealismMap::level(w)),
            )?;
        }
    }
    std::fs::write(o.run_dir.join("evaluation.md"), &report)?;
    Ok(report)
}

/// The training photos and their proxy-labelled crops (computed, or read from the cache).
fn proxy_labels(o: &PredictorTrainOptions) -> Result<(Dataset, Vec<LabelledCrop>, String)> {
    eprintln!("loading training images from {}", o.data.display());
    let data = Dataset::load(&o.data, o.crop)?;
    let generator_id = crate::model_file::id_hex(&crate::model_file::model_id(
        &std::fs::read(&o.realism_model)
            .with_context(|| format!("reading {}", o.realism_model.display()))?,
    ));
    let mut crops = labels(o, &data, &generator_id)?;
    // The structure term needs only the originals, so it is measured here, not cached.
    for chunk in crops.chunks_mut(16) {
        let x = Tensor::cat(
            &chunk
                .iter()
                .map(|c| crop_tensor(&data.train[c.image], c.x0, c.y0, o.crop))
                .collect::<Vec<_>>(),
            0,
        );
        let c = Vec::<f32>::try_from(tch::no_grad(|| coherence(&x)).flatten(0, -1))?;
        let cells = c.len() / chunk.len();
        for (i, crop) in chunk.iter_mut().enumerate() {
            crop.coherence = c[i * cells..(i + 1) * cells].to_vec();
        }
    }
    Ok((data, crops, generator_id))
}

/// The single level with the least mean cost over the training cells: "ConHa-fixed".
fn best_constant_level(crops: &[&LabelledCrop], k: Objective) -> usize {
    let mut total = [0.0; LEVEL_COUNT];
    for c in crops {
        for cell in 0..c.terms.len() {
            for (t, v) in total.iter_mut().zip(c.costs(cell, k)) {
                *t += v;
            }
        }
    }
    argmin(&total)
}

/// Held-out error of the predictor against constant baselines, per cell and per crop.
fn evaluate(
    predictor: &RealismPredictor,
    data: &Dataset,
    train: &[&LabelledCrop],
    test: &[&LabelledCrop],
    o: &PredictorTrainOptions,
) -> String {
    let k = o.objective();
    let fixed = best_constant_level(train, k);
    // The constant that minimises the absolute error on the training labels: their median.
    let mut train_labels: Vec<f32> = train
        .iter()
        .flat_map(|c| {
            (0..c.terms.len()).map(|cell| RealismMap::weight(c.best_level(cell, k) as u8))
        })
        .collect();
    train_labels.sort_by(f32::total_cmp);
    let median = train_labels[train_labels.len() / 2];

    #[derive(Default)]
    struct Errors {
        abs: f64,
        regret: f64,
        exact: f64,
        n: f64,
    }
    let (mut cell_pred, mut cell_fixed, mut cell_median) =
        (Errors::default(), Errors::default(), Errors::default());
    let (mut crop_pred, mut crop_fixed) = (Errors::default(), Errors::default());
    let mut histogram = [0usize; LEVEL_COUNT];
    let add = |e: &mut Errors, w: f32, label: usize, costs: &[f64; LEVEL_COUNT]| {
        let level = RealismMap::level(w) as usize;
        e.abs += (w - RealismMap::weight(label as u8)).abs() as f64;
        e.regret += costs[level] - costs[label];
        e.exact += (level == label) as u8 as f64;
        e.n += 1.0;
    };
    for chunk in test.chunks(16) {
        let (x, rate, _) = batch(data, chunk, o);
        let pred = tch::no_grad(|| predictor.forward(&x, &rate));
        let pred = Vec::<f32>::try_from(pred.flatten(0, -1)).unwrap_or_default();
        let cells = chunk[0].terms.len();
        for (i, c) in chunk.iter().enumerate() {
            let mut crop_costs = [0.0; LEVEL_COUNT];
            for cell in 0..cells {
                let costs = c.costs(cell, k);
                let label = c.best_level(cell, k);
                histogram[label] += 1;
                add(&mut cell_pred, pred[i * cells + cell], label, &costs);
                add(
                    &mut cell_fixed,
                    RealismMap::weight(fixed as u8),
                    label,
                    &costs,
                );
                add(&mut cell_median, median, label, &costs);
                for (t, v) in crop_costs.iter_mut().zip(costs) {
                    *t += v / cells as f64;
                }
            }
            let label = c.best_crop_level(k);
            let mean_w = pred[i * cells..(i + 1) * cells].iter().sum::<f32>() / cells as f32;
            add(&mut crop_pred, mean_w, label, &crop_costs);
            add(
                &mut crop_fixed,
                RealismMap::weight(fixed as u8),
                label,
                &crop_costs,
            );
        }
    }
    let mut r = String::new();
    let _ = writeln!(r, "Held-out proxy labels: {} crops of {}×{} from {} held-out training photos (every fifth; never Kodak), {} cells of 64×64; α = {}, β = {}.\n", test.len(), o.crop, o.crop, test.iter().map(|c| c.image).collect::<std::collections::BTreeSet<_>>().len(), test.len() * test.first().map_or(0, |c| c.terms.len()), o.alpha, o.beta);
    let coherences: Vec<f32> = test
        .iter()
        .flat_map(|c| c.coherence.iter().copied())
        .collect();
    let _ = writeln!(
        r,
        "Label histogram (w = 0, 1/3, 2/3, 1): {histogram:?}. Line structure (coherence) of the cells: mean {:.3}, {:.1} % above 0.5.\n",
        coherences.iter().sum::<f32>() / coherences.len().max(1) as f32,
        100.0 * coherences.iter().filter(|&&c| c > 0.5).count() as f32 / coherences.len().max(1) as f32
    );
    let _ = writeln!(r, "| unit | predictor | w | mean abs error | level exact | regret (proxy cost above the best level) |");
    let _ = writeln!(r, "|---|---|---|---|---|---|");
    let mut row = |unit: &str, name: &str, w: String, e: &Errors| {
        let _ = writeln!(
            r,
            "| {unit} | {name} | {w} | {:.3} | {:.1} % | {:.4} |",
            e.abs / e.n,
            100.0 * e.exact / e.n,
            e.regret / e.n
        );
    };
    row(
        "cell",
        "ConHa predictor (map)",
        "per cell".into(),
        &cell_pred,
    );
    row(
        "cell",
        "best constant on train (ConHa-fixed)",
        format!("{:.3}", RealismMap::weight(fixed as u8)),
        &cell_fixed,
    );
    row(
        "cell",
        "median of train labels",
        format!("{median:.3}"),
        &cell_median,
    );
    row(
        "crop",
        "ConHa predictor (mean of map)",
        "per crop".into(),
        &crop_pred,
    );
    row(
        "crop",
        "best constant on train (ConHa-fixed)",
        format!("{:.3}", RealismMap::weight(fixed as u8)),
        &crop_fixed,
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};
    use rand::Rng;

    /// Synthetic votes whose answer is known: on smooth images the lower weight of a
    /// pair always wins, on busy texture the higher one. A predictor trained on the votes
    /// alone must learn to tell the two apart, on images it never saw.
    #[test]
    fn the_predictor_learns_from_synthetic_votes_whose_answer_is_known() {
        let dir =
            std::env::temp_dir().join(format!("mirage-synthetic-votes-{}", std::process::id()));
        let pool = dir.join("pool");
        let mut rng = StdRng::seed_from_u64(7);
        let smooth = |rng: &mut StdRng| {
            let (a, b) = (rng.gen_range(40.0..200.0), rng.gen_range(-0.3..0.3));
            RgbImage::from_fn(192, 192, move |x, y| {
                let v = (a + b * x as f64 + 0.1 * y as f64) as u8;
                Rgb([v, v, v / 2])
            })
        };
        let busy = |rng: &mut StdRng| {
            let mut img = RgbImage::new(192, 192);
            for p in img.pixels_mut() {
                let v: u8 = rng.gen();
                *p = Rgb([v, v / 2 + 60, 255 - v]);
            }
            img
        };
        let weights = [0.0f32, 1.0 / 3.0, 2.0 / 3.0, 1.0];
        let mut csv = String::from("image,crop_x,crop_y,crop_w,crop_h,winner,loser\n");
        let mut toml = String::from("[rate]\n");
        for i in 0..20 {
            let textured = i % 2 == 1;
            let name = format!("img{i:02}");
            std::fs::create_dir_all(pool.join(&name)).unwrap();
            let img = if textured {
                busy(&mut rng)
            } else {
                smooth(&mut rng)
            };
            img.save(pool.join(&name).join("original.png")).unwrap();
            toml += &format!("\"{name}\" = {}\n", rng.gen_range(0..=1000));
            for _ in 0..12 {
                let (x0, y0) = (rng.gen_range(0..=64), rng.gen_range(0..=64));
                let a = weights[rng.gen_range(0..4)];
                let b = weights[rng.gen_range(0..4)];
                if a == b {
                    continue;
                }
                let (winner, loser) = if (a > b) == textured { (a, b) } else { (b, a) };
                csv += &format!("{name},{x0},{y0},128,128,mirage-w{winner},mirage-w{loser}\n");
            }
        }
        std::fs::write(pool.join("pool.toml"), toml).unwrap();
        let votes = dir.join("votes.csv");
        std::fs::write(&votes, csv).unwrap();
        let o = PredictorTrainOptions {
            data: dir.join("unused"),
            base_model: dir.join("unused"),
            realism_model: dir.join("unused"),
            run_dir: dir.join("run"),
            crops_per_image: 0,
            crop: 128,
            steps: 300,
            batch: 8,
            lr: 3e-4,
            alpha: DEFAULT_ALPHA,
            beta: DEFAULT_BETA,
            votes: Some((votes.clone(), pool.clone())),
            proxy_weight: 0.0,
            vote_weight: 1.0,
            seed: 1,
        };
        let report = train(&o).unwrap();
        eprintln!("{report}");
        // Held-out agreement: the map must beat the best constant by a wide margin (a
        // constant can only be right on one kind of image).
        let percent = |row: &str| -> f64 {
            let line = report.lines().find(|l| l.contains(row)).unwrap();
            line.rsplit('|')
                .nth(1)
                .unwrap()
                .trim()
                .trim_end_matches(" %")
                .parse()
                .unwrap()
        };
        let (map, constant) = (percent("ConHa predictor"), percent("best constant"));
        assert!(map > 90.0 && map > constant + 25.0, "{report}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
