//! `mirage train flow`: trains the rectified-flow refiner (see `model::flow`) on the
//! residuals of the frozen shipped hyperprior's MSE decodes. Like the realism decoder,
//! it changes no bitstream. A run directory holds `flow.safetensors`, its Adam state,
//! `log.csv` and `validation.csv`; re-running resumes.

use super::adam::Adam;
use super::data::{mse_per_image, Dataset};
use super::realism::{detail, sample_rate};
use crate::model::flow::{FlowConfig, FlowRefiner, SOURCE_SCALE, TIME_SHIFT};
use crate::model::layers::ConvPrecision;
use crate::model::Hyperprior;
use crate::progress;
use anyhow::{Context, Result};
use rand::{rngs::StdRng, SeedableRng};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub struct FlowTrainOptions {
    pub data: PathBuf,
    pub base_model: PathBuf,
    pub run_dir: PathBuf,
    pub steps: i64,
    pub batch: usize,
    pub crop: u32,
    pub lr: f64,
    pub config: FlowConfig,
    /// Start a new run from this shipped refiner (for example one made for an earlier
    /// core: the residuals of two cores differ little, so it starts far ahead of noise).
    pub init_from: Option<PathBuf>,
    pub checkpoint_every: i64,
    pub validate_every: i64,
    pub seed: u64,
}

pub fn train(o: &FlowTrainOptions) -> Result<()> {
    std::fs::create_dir_all(&o.run_dir)?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    tch::manual_seed(o.seed as i64);
    let (_base_vs, hyperprior, base) = super::frozen_hyperprior(&o.base_model)?;
    eprintln!("loading training images from {}", o.data.display());
    let data = Dataset::load(&o.data, o.crop.max(256))?;
    let validation = data.validation_crops(256);

    let mut vs = VarStore::new(Device::Cpu);
    let flow = FlowRefiner::new(&vs.root(), o.config, ConvPrecision::fastest_for_training());
    let mut adam = Adam::new(&vs);
    let model_path = o.run_dir.join("flow.safetensors");
    let adam_path = o.run_dir.join("flow-adam.safetensors");
    if model_path.exists() {
        vs.load(&model_path).context("resuming the flow")?;
        adam.load(&adam_path)?;
        eprintln!("resumed at step {}", adam.step);
        rng = StdRng::seed_from_u64(o.seed ^ adam.step as u64);
        tch::manual_seed(o.seed as i64 ^ adam.step);
    } else if let Some(init) = &o.init_from {
        let file = crate::model_file::DecoderFile::load(init, crate::model_file::FLOW_FORMAT_NAME)
            .with_context(|| format!("loading {} to start from", init.display()))?;
        if file.flow_config()?.channels != o.config.channels {
            anyhow::bail!("{} has other widths than this run", init.display());
        }
        file.fill_warm_start(&vs, &|_| false)?;
        eprintln!("new run from {}", init.display());
    }
    std::fs::write(
        o.run_dir.join("base_model"),
        crate::model_file::id_hex(&base.id) + "\n",
    )?;
    let elapsed_path = o.run_dir.join("elapsed_seconds");
    let elapsed_before = super::elapsed_seconds(&elapsed_path);
    let mut log = super::open_log(&o.run_dir.join("log.csv"), "step,wall_seconds,loss")?;
    let mut val_log = super::open_log(
        &o.run_dir.join("validation.csv"),
        "step,wall_seconds,rate,steps,psnr,detail_ratio",
    )?;

    let bar = progress::bar((o.steps - adam.step).max(0) as u64, "training flow");
    let start = Instant::now();
    let (mut acc, mut acc_n) = (0.0, 0);
    while adam.step < o.steps {
        let x = data.batch(&mut rng, o.batch, o.crop);
        let rates: Vec<f32> = (0..o.batch).map(|_| sample_rate(&mut rng)).collect();
        let x_mse = tch::no_grad(|| {
            let y_hat = hyperprior.decoded_latent(&x, &Tensor::from_slice(&rates));
            hyperprior.synthesis(&y_hat)
        });
        let r1 = &x - &x_mse;
        let r0 = r1.randn_like() * SOURCE_SCALE;
        // Logit-normal times, shifted toward the data end (t = 1).
        let t =
            (Tensor::randn([o.batch as i64], (Kind::Float, Device::Cpu)) + TIME_SHIFT).sigmoid();
        let tt = t.view([-1, 1, 1, 1]);
        let r_t = &r0 * (-&tt + 1.0) + &r1 * &tt;
        let predicted = flow.predict_residual(&r_t, &t, &x_mse);
        // Scaled by 1/σ² so the loss is O(1) whatever the residual scale.
        let loss = (predicted - &r1).square().mean(Kind::Float) / (SOURCE_SCALE * SOURCE_SCALE);
        adam.zero_grad();
        loss.backward();
        adam.clip_grad_norm(1.0);
        adam.update(o.lr);
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            anyhow::bail!(
                "the loss became {l} at step {}; resume with a lower --lr",
                adam.step
            );
        }
        acc += l;
        acc_n += 1;
        bar.inc(1);
        let done = adam.step;
        let wall = elapsed_before + start.elapsed().as_secs_f64();
        if done % 50 == 0 {
            writeln!(log, "{done},{wall:.1},{:.5}", acc / acc_n as f64)?;
            bar.set_message(format!("loss {:.4}", acc / acc_n as f64));
            (acc, acc_n) = (0.0, 0);
        }
        if done % o.validate_every == 0 || done == o.steps {
            for steps in [0usize, 1, 4] {
                let (psnr, ratio) = validate(&hyperprior, &flow, &validation, 1.0, steps);
                writeln!(val_log, "{done},{wall:.1},1,{steps},{psnr:.3},{ratio:.4}")?;
            }
            val_log.flush()?;
            super::save_snapshot(&vs, &o.run_dir, "flow", done)?;
        }
        if done % o.checkpoint_every == 0 || done == o.steps {
            super::save_atomically(&vs, &model_path)?;
            adam.save(&adam_path)?;
            std::fs::write(&elapsed_path, format!("{wall:.1}\n"))?;
            log.flush()?;
        }
    }
    bar.finish();
    Ok(())
}

/// PSNR and detail ratio on the held-out crops; `steps = 0` is the MSE decode.
fn validate(
    hyperprior: &Hyperprior,
    flow: &FlowRefiner,
    crops: &[Tensor],
    rate: f32,
    steps: usize,
) -> (f64, f64) {
    tch::no_grad(|| {
        tch::manual_seed(7);
        let (mut psnr, mut ratio) = (0.0, 0.0);
        for x in crops {
            let y_hat = hyperprior.decoded_latent(x, &Tensor::from_slice(&[rate]));
            let x_mse = hyperprior.synthesis(&y_hat);
            let out = if steps == 0 {
                x_mse
            } else {
                flow.sample(&x_mse, &(x_mse.randn_like() * SOURCE_SCALE), steps)
            }
            .clamp(0.0, 1.0);
            psnr += -10.0 * mse_per_image(&out, x).double_value(&[0]).log10();
            ratio += detail(&out) / detail(x).max(1e-9);
        }
        let n = crops.len().max(1) as f64;
        (psnr / n, ratio / n)
    })
}
