//! The shipped extractor file, `models/realism-extractor.safetensors`: the four stages'
//! weights in f16 plus `feature_mean` and `feature_scale` (f32, one per feature), with the name, version
//! and feature dimension in the metadata. Its SHA-256 (first 8 bytes, hex) is printed
//! beside every MFD/MKD, so two numbers are only compared when they share an extractor.

use super::extractor::FEATURE_DIM;
use crate::error::{MirageError, Result};
use crate::image_io::write_atomically;
use crate::model_file::{id_hex, model_id};
use half::f16;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

pub const FORMAT_NAME: &str = "mirage-realism-extractor";
/// Bumped whenever the architecture, the pooling or the training recipe changes, so
/// that distances from different extractors are never mixed up.
pub const VERSION: u32 = 1;

pub struct ExtractorFile {
    /// First 8 bytes of the file's SHA-256, in hex.
    pub id: String,
    pub version: u32,
    pub metadata: HashMap<String, String>,
    tensors: HashMap<String, (Vec<i64>, Vec<f32>)>,
    /// Each feature has this subtracted (its mean over training patches) and is then
    /// multiplied by `feature_scale` (1 / its spread there), so that no layer dominates
    /// the distances by the mere size of its activations, and the kernel of MKD sees
    /// values near unit size (MFD does not depend on the shift).
    pub feature_mean: Vec<f32>,
    pub feature_scale: Vec<f32>,
}

fn invalid(path: &Path, reason: impl ToString) -> MirageError {
    MirageError::InvalidModel {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Writes the extractor's variables (those not under `pretext.`) as f16, plus the
/// feature mean and scale, with `extra` metadata (training steps, ...). Returns the file id.
pub fn write(
    vs: &VarStore,
    feature_mean: &[f32],
    feature_scale: &[f32],
    extra: &[(&str, String)],
    out: &Path,
    overwrite: bool,
) -> Result<String> {
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        if name.starts_with("pretext.") {
            continue;
        }
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float))?;
        let bytes = values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        owned.push((name, Dtype::F16, shape, bytes));
    }
    for (name, values) in [
        ("feature_mean", feature_mean),
        ("feature_scale", feature_scale),
    ] {
        owned.push((
            name.into(),
            Dtype::F32,
            vec![values.len()],
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| invalid(out, e))
        })
        .collect::<Result<_>>()?;
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("name".to_string(), "Mirage realism extractor".to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("feature_dim".to_string(), FEATURE_DIM.to_string()),
    ]);
    for (k, v) in extra {
        metadata.insert(k.to_string(), v.clone());
    }
    let mut bytes = safetensors::serialize(views, &Some(metadata)).map_err(|e| invalid(out, e))?;
    // Sorted, so that one checkpoint always makes the same file and id.
    mirage_nn::model_file::sort_header(&mut bytes).map_err(|e| invalid(out, e))?;
    write_atomically(out, &bytes, overwrite)?;
    Ok(id_hex(&model_id(&bytes)))
}

impl ExtractorFile {
    pub fn load(path: &Path) -> Result<ExtractorFile> {
        let bytes = std::fs::read(path).map_err(|source| MirageError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes).map_err(|reason| invalid(path, reason))
    }

    fn parse(bytes: &[u8]) -> std::result::Result<ExtractorFile, String> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a safetensors file ({e})"))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT_NAME) {
            return Err(format!("not a {FORMAT_NAME} file"));
        }
        let version: u32 = metadata
            .get("version")
            .and_then(|v| v.parse().ok())
            .ok_or("metadata lacks version")?;
        if version != VERSION {
            return Err(format!(
                "extractor version {version}; this Mirage reads version {VERSION}"
            ));
        }
        if metadata.get("feature_dim") != Some(&FEATURE_DIM.to_string()) {
            return Err(format!("feature dimension is not {FEATURE_DIM}"));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let mut tensors = HashMap::new();
        let mut f32s: HashMap<String, Vec<f32>> = HashMap::new();
        for (name, view) in st.tensors() {
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            match (name.as_str(), view.dtype()) {
                (_, Dtype::F32) => {
                    let v = view
                        .data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    f32s.insert(name, v);
                }
                (_, Dtype::F16) => {
                    let v = view
                        .data()
                        .chunks_exact(2)
                        .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect();
                    tensors.insert(name, (shape, v));
                }
                (_, other) => return Err(format!("unexpected dtype {other:?} for {name}")),
            }
        }
        let mut per_feature = |name: &str| -> std::result::Result<Vec<f32>, String> {
            let v = f32s.remove(name).ok_or(format!("missing {name}"))?;
            if v.len() != FEATURE_DIM as usize {
                return Err(format!("{name} has the wrong length"));
            }
            Ok(v)
        };
        let feature_mean = per_feature("feature_mean")?;
        let feature_scale = per_feature("feature_scale")?;
        Ok(ExtractorFile {
            id: id_hex(&model_id(bytes)),
            version,
            metadata,
            tensors,
            feature_mean,
            feature_scale,
        })
    }

    /// Copies the weights into a freshly built extractor.
    pub fn fill(&self, vs: &VarStore) -> Result<()> {
        let bad = |reason: String| MirageError::InvalidModel {
            path: "(realism extractor)".into(),
            reason,
        };
        tch::no_grad(|| {
            for (name, mut var) in vs.variables() {
                let (shape, values) = self
                    .tensors
                    .get(&name)
                    .ok_or_else(|| bad(format!("missing tensor {name}")))?;
                if *shape != var.size() {
                    return Err(bad(format!(
                        "{name} has shape {shape:?}, expected {:?}",
                        var.size()
                    )));
                }
                var.copy_(&Tensor::from_slice(values).view(shape.as_slice()));
            }
            Ok(())
        })
    }
}
