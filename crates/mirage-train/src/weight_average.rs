//! An exponential moving average of the weights (a cousin of Polyak–Ruppert's and
//! SWA's uniform averages, as most diffusion and GAN training code keeps it).
//!
//! Adam's last iterate jitters around the minimum at the scale of the learning rate;
//! the average over the last ~1 / (1 − decay) steps sits nearer its centre. It costs
//! one multiply-add per weight per step and no gradients, so a run keeps both and the
//! release is judged on held-out photos with each (`ema.safetensors` beside
//! `model.safetensors`, in the same layout, so `export core --checkpoint` takes either).

use anyhow::{Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

pub struct WeightAverage {
    names: Vec<String>,
    params: Vec<Tensor>,
    average: Vec<Tensor>,
    decay: f64,
}

impl WeightAverage {
    /// An average that starts at the current weights rather than at zero, so it needs no
    /// bias correction. From a cold start the first weights linger in it with weight
    /// `decay^steps`: negligible after a few thousand steps at 0.999.
    pub fn new(vs: &VarStore, decay: f64) -> WeightAverage {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let average = vars.iter().map(|(_, t)| t.detach().copy()).collect();
        let (names, params) = vars.into_iter().unzip();
        WeightAverage {
            names,
            params,
            average,
            decay,
        }
    }

    /// Moves the average towards the current weights: `a ← decay · a + (1 − decay) · w`.
    pub fn update(&mut self) {
        tch::no_grad(|| {
            for (a, p) in self.average.iter_mut().zip(&self.params) {
                // lerp_: a + (1 − decay)(w − a), one pass and no temporary.
                let _ = a.lerp_(p, 1.0 - self.decay);
            }
        });
    }

    /// Writes the average under the model's own variable names, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let named: Vec<(&str, &Tensor)> = self
            .names
            .iter()
            .map(String::as_str)
            .zip(&self.average)
            .collect();
        let tmp = path.with_extension("tmp");
        Tensor::write_safetensors(&named, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Takes up an average saved by [`WeightAverage::save`]; a variable missing from
    /// the file keeps its current weights.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .with_context(|| format!("reading {}", path.display()))?
            .into_iter()
            .collect();
        for (name, a) in self.names.iter().zip(&mut self.average) {
            if let Some(t) = tensors.get(name) {
                anyhow::ensure!(
                    t.size() == a.size(),
                    "{}: {name} is {:?}, the model has {:?}",
                    path.display(),
                    t.size(),
                    a.size()
                );
                *a = t.copy();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    fn store(value: f64) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("w", &[2, 3], nn::Init::Const(value));
        let _ = vs
            .root()
            .sub("layer")
            .var("b", &[4], nn::Init::Const(value));
        vs
    }

    fn get(vs: &VarStore, name: &str) -> Tensor {
        vs.variables()[name].shallow_clone()
    }

    #[test]
    fn the_average_follows_the_weights_at_its_decay() {
        let vs = store(1.0);
        let mut ema = WeightAverage::new(&vs, 0.75);
        tch::no_grad(|| {
            let _ = get(&vs, "w").fill_(5.0);
        });
        ema.update();
        // 0.75 · 1 + 0.25 · 5 = 2, and the weights themselves are untouched.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ema.safetensors");
        ema.save(&path).unwrap();
        let mut loaded = store(0.0);
        loaded.load(&path).unwrap();
        let w = get(&loaded, "w");
        assert!(w.allclose(
            &Tensor::full([2, 3], 2.0, (Kind::Float, Device::Cpu)),
            1e-6,
            1e-6,
            false
        ));
        assert_eq!(get(&loaded, "layer.b").double_value(&[0]), 1.0);
        assert_eq!(get(&vs, "w").double_value(&[0, 0]), 5.0);
    }

    #[test]
    fn a_resumed_average_continues_from_its_file() {
        let vs = store(1.0);
        let mut ema = WeightAverage::new(&vs, 0.5);
        tch::no_grad(|| {
            let _ = get(&vs, "w").fill_(3.0);
        });
        ema.update(); // 2
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ema.safetensors");
        ema.save(&path).unwrap();
        // A new process: the average restarts at the weights (3) until the file loads.
        let mut resumed = WeightAverage::new(&vs, 0.5);
        resumed.load(&path).unwrap();
        resumed.update(); // 0.5 · 2 + 0.5 · 3
        resumed.save(&path).unwrap();
        let mut out = store(0.0);
        out.load(&path).unwrap();
        assert!((get(&out, "w").double_value(&[1, 2]) - 2.5).abs() < 1e-6);
    }

    #[test]
    fn a_file_of_another_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ema.safetensors");
        let other = VarStore::new(Device::Cpu);
        let _ = other.root().var("w", &[3, 2], nn::Init::Const(0.0));
        WeightAverage::new(&other, 0.9).save(&path).unwrap();
        let err = WeightAverage::new(&store(1.0), 0.9)
            .load(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("w is [3, 2]"), "{err}");
    }
}
