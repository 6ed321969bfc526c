//! The latent's entropy model, built from a model file: the deterministic twins
//! (`mirage_prior::latent`) of the file's hyper-synthesis and context layers. How they
//! code the latent is in `mirage-prior`, which needs no libtorch.

use crate::error::{MirageError, Result};
use crate::model_file::ModelFile;
use mirage_prior::context::{ContextModel, GroupLayers};
pub use mirage_prior::latent::{CodedLatent, EntropyModel};
use mirage_prior::{Conv, HyperSynthesis, ShapeError};
use std::path::Path;

/// The deterministic twins of the model file's hyper-synthesis and context layers.
pub fn load(file: &ModelFile, path: &Path) -> Result<EntropyModel> {
    let (n, m) = (file.config.n as usize, file.config.m as usize);
    let invalid = |e: ShapeError| MirageError::InvalidModel {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let layer = |name: &str, c_in, c_out, k, s, t| -> Result<Conv> {
        let w = &file.tensor(&format!("{name}.weight"))?.1;
        let b = &file.tensor(&format!("{name}.bias"))?.1;
        Conv::new(w, b, c_in, c_out, k, s, t).map_err(invalid)
    };
    let hyper_synthesis = HyperSynthesis::new(vec![
        layer("hyper_synthesis.conv0", n, m, 5, 2, true)?,
        layer("hyper_synthesis.conv1", m, m * 3 / 2, 5, 2, true)?,
        layer("hyper_synthesis.conv2", m * 3 / 2, 2 * m, 3, 1, false)?,
    ])
    .map_err(invalid)?;
    let context = if file.config.context {
        use crate::model::context::{group_sizes, CONTEXT_WIDTH, HIDDEN_WIDTH};
        let sizes: Vec<usize> = group_sizes(m as i64).iter().map(|&s| s as usize).collect();
        let (cw, hidden) = (CONTEXT_WIDTH as usize, HIDDEN_WIDTH as usize);
        let mut groups = vec![];
        let mut start = 0;
        for (k, &size) in sizes.iter().enumerate() {
            let g = format!("context.group{k}");
            groups.push(GroupLayers {
                channel: if k > 0 {
                    Some(layer(&format!("{g}.channel"), start, cw, 3, 1, false)?)
                } else {
                    None
                },
                spatial: layer(&format!("{g}.spatial"), size, 2 * size, 5, 1, false)?,
                delta: [
                    layer(
                        &format!("{g}.delta0"),
                        2 * m + 2 * size + cw,
                        hidden,
                        1,
                        1,
                        false,
                    )?,
                    layer(&format!("{g}.delta1"), hidden, hidden, 1, 1, false)?,
                    layer(&format!("{g}.delta2"), hidden, 2 * size, 1, 1, false)?,
                ],
            });
            start += size;
        }
        Some(ContextModel::new(groups, &sizes).map_err(invalid)?)
    } else {
        None
    };
    Ok(EntropyModel {
        hyper_synthesis,
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{layers::ConvPrecision, Hyperprior, ModelConfig};
    use tch::{nn::VarStore, Device, Kind, Tensor};

    /// The deterministic context model computes what the training network computes
    /// (up to float rounding): same layers, same channel order, same passes.
    #[test]
    fn deterministic_context_matches_the_training_network() {
        tch::manual_seed(3);
        let config = ModelConfig {
            n: 16,
            m: 32,
            ..ModelConfig::default()
        };
        let vs = VarStore::new(Device::Cpu);
        let _net = Hyperprior::new(&vs.root(), config, ConvPrecision::F32);
        // The last Δ layers start at zero; give them weights so the test means something.
        tch::no_grad(|| {
            for (name, mut t) in vs.variables() {
                if name.contains("delta2") {
                    t.copy_(&(t.rand_like() * 0.2 - 0.1));
                }
            }
        });
        let dir = std::env::temp_dir().join(format!("mirage-ctx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let checkpoint = dir.join("model.safetensors");
        vs.save(&checkpoint).unwrap();
        let file_path = dir.join("exported.safetensors");
        crate::model_file::export(&checkpoint, config.context, None, &file_path).unwrap();
        let file = ModelFile::load(&file_path).unwrap();
        assert!(file.takes_add_ons_of.is_empty());
        // A release that takes the add-ons of this one, and one after it: the list is
        // carried forward, newest first.
        let (second, third) = (
            dir.join("second.safetensors"),
            dir.join("third.safetensors"),
        );
        crate::model_file::export(&checkpoint, config.context, Some(&file), &second).unwrap();
        let second = ModelFile::load(&second).unwrap();
        crate::model_file::export(&checkpoint, config.context, Some(&second), &third).unwrap();
        let third = ModelFile::load(&third).unwrap();
        assert_eq!(second.takes_add_ons_of, vec![file.id]);
        assert_eq!(third.takes_add_ons_of, vec![second.id, file.id]);
        // The training network with the exported (f16-rounded) weights.
        let vs2 = VarStore::new(Device::Cpu);
        let twin = Hyperprior::new(&vs2.root(), config, ConvPrecision::F32);
        file.fill(&vs2).unwrap();
        let model = load(&file, &file_path).unwrap();
        std::fs::remove_dir_all(&dir).ok();

        let (zh, zw) = (2, 3);
        let z: Vec<i32> = (0..16 * zh * zw).map(|i| (i as i32 * 7) % 5 - 2).collect();
        let gain = vec![1.0; 16];
        let hyper = model.hyper_synthesis.features(&z, &gain, zh, zw).unwrap();
        let (h, w, m) = (hyper.height, hyper.width, 32usize);
        let hyper_chw =
            Tensor::from_slice(&hyper.to_chw()).view([1, 2 * m as i64, h as i64, w as i64]);
        let parts = hyper_chw.chunk(2, 1);
        let y = Tensor::randn(
            [1, m as i64, h as i64, w as i64],
            (Kind::Float, Device::Cpu),
        ) * 3.0;
        let y_values = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap();

        let (_, coded) = model.encode(&z, &gain, (zh, zw), &y_values).unwrap();
        let (scale, mean, _) = tch::no_grad(|| {
            twin.context
                .as_ref()
                .unwrap()
                .forward_train(&y, &parts[0], &parts[1])
        });
        let scale = Vec::<f32>::try_from(scale.flatten(0, -1)).unwrap();
        let mean = Vec::<f32>::try_from(mean.flatten(0, -1)).unwrap();
        let worst = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            worst(&coded.params.means, &mean) < 1e-3,
            "means differ by {}",
            worst(&coded.params.means, &mean)
        );
        assert!(worst(&coded.params.scales, &scale) < 1e-3);
        // And the context moved them away from the hyper-synthesis's own values.
        assert!(
            worst(
                &coded.params.means,
                &Vec::<f32>::try_from(parts[1].flatten(0, -1)).unwrap()
            ) > 1e-2
        );

        // The decoder reads back the encoder's symbols.
        let (bytes, coded) = model.encode(&z, &gain, (zh, zw), &y_values).unwrap();
        let decoded = model.decode(&z, &gain, (zh, zw), &bytes).unwrap();
        assert_eq!(decoded.symbols, coded.symbols);
        assert_eq!(decoded.indexes, coded.indexes);
    }
}
