//! Adam with its moments kept in plain tensors, so that they can be checkpointed and a
//! run resumed exactly (tch's built-in optimizer does not expose its state).

use anyhow::Result;
use std::path::Path;
use tch::{nn::VarStore, Tensor};

pub struct Adam {
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: i64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    pub fn new(vs: &VarStore) -> Adam {
        Self::with_betas(vs, 0.9, 0.999)
    }

    /// GANs are customarily trained with a shorter first-moment memory (β1 = 0.5), so
    /// that the generator and discriminator react to each other faster.
    pub fn with_betas(vs: &VarStore, beta1: f64, beta2: f64) -> Adam {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let (names, params) = vars.into_iter().unzip();
        Adam {
            names,
            params,
            m,
            v,
            step: 0,
            beta1,
            beta2,
            eps: 1e-8,
        }
    }

    /// Scales all gradients so that their global L2 norm is at most `max_norm`, which
    /// keeps the rare huge gradient of an early rate-distortion loss from derailing a run.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let total: f64 = self
                .params
                .iter()
                .map(|p| p.grad())
                .filter(|g| g.defined())
                .map(|g| g.square().sum(tch::Kind::Double).double_value(&[]))
                .sum::<f64>()
                .sqrt();
            if total > max_norm {
                let factor = max_norm / (total + 1e-6);
                for p in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_(&Tensor::from(factor));
                    }
                }
            }
            total
        })
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    pub fn update(&mut self, lr: f64) {
        self.update_scaled(lr, |_| 1.0)
    }

    /// An update whose learning rate is `lr · scale(name)` per variable.
    pub fn update_scaled(&mut self, lr: f64, scale: impl Fn(&str) -> f64) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            let vars = self.params.iter_mut().zip(&mut self.m).zip(&mut self.v);
            for (((p, m), v), name) in vars.zip(&self.names) {
                let lr = lr * scale(name);
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                *m = &*m * self.beta1 + &g * (1.0 - self.beta1);
                *v = &*v * self.beta2 + g.square() * (1.0 - self.beta2);
                let denom = (&*v / bc2).sqrt() + self.eps;
                let delta = (&*m / bc1) / denom * lr;
                let _ = p.f_sub_(&delta).unwrap();
            }
        });
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = vec![];
        for (i, name) in self.names.iter().enumerate() {
            named.push((format!("m.{name}"), self.m[i].shallow_clone()));
            named.push((format!("v.{name}"), self.v[i].shallow_clone()));
        }
        named.push(("step".into(), Tensor::from(self.step)));
        let tmp = path.with_extension("tmp");
        Tensor::write_safetensors(&named, &tmp)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(path)?.into_iter().collect();
        for (i, name) in self.names.iter().enumerate() {
            if let (Some(m), Some(v)) = (
                tensors.get(&format!("m.{name}")),
                tensors.get(&format!("v.{name}")),
            ) {
                self.m[i] = m.shallow_clone();
                self.v[i] = v.shallow_clone();
            }
        }
        if let Some(s) = tensors.get("step") {
            self.step = s.int64_value(&[]);
        }
        Ok(())
    }
}
