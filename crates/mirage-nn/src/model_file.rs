//! The shipped model file: one safetensors file holding the networks' weights and the
//! gain tables (f16) and the hyper-latent's integer CDF tables, with the
//! architecture in its metadata.
//!
//! The file's SHA-256 (first 8 bytes) is the model identifier written into every
//! bitstream, so a file is never decoded with weights other than those that made it.
//! An earlier release is kept *decode-only* ([`decode_only`]): without the encoder's
//! networks, it carries the id of the full file it was cut from.

use crate::error::{MirageError, Result};
use crate::model::flow::{FlowConfig, FlowRefiner};
use crate::model::realism::{RealismConfig, RealismGenerator};
use crate::model::widen::LatentGrowth;
use crate::model::{layers::ConvPrecision, Hyperprior, ModelConfig, LEVELS};
use half::f16;
use mirage_entropy::CdfTable;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

pub const FORMAT_NAME: &str = "mirage-hyperprior-v1";

/// Metadata of a core: the earlier cores (hex ids, comma-separated) whose add-ons it
/// takes. A release that continues training a shipped core changes its transforms only
/// a little; its add-ons are measured on it and carried over, rather than retrained
/// for every release. Files are still tied to the exact core that made them.
pub const TAKES_ADD_ONS_OF: &str = "takes_add_ons_of";

/// Metadata of a decode-only core: the id (hex) of the full core it was cut from, which
/// is the id that core's files carry.
pub const DECODE_ONLY_OF: &str = "decode_only_of";
/// Metadata of a decode-only core: the SHA-256 (hex) of the whole file, taken with this
/// value set to 64 `'0'`s. It stands in for the file hash that is a full core's id, so a
/// damaged header or damaged weights are still refused.
pub const DATA_DIGEST: &str = "data_digest";

/// The tensors only the encoder uses: the analysis transforms and the gains applied
/// before quantization. A decoder needs the rest.
fn encoder_only(name: &str) -> bool {
    name.starts_with("analysis.")
        || name.starts_with("hyper_analysis.")
        || name == "gain"
        || name == "hyper_gain"
}

/// The hyper-latent's per-channel pmf is evaluated on `-RADIUS..=RADIUS` and then
/// trimmed to the range holding all but `TAIL_MASS` of it; values beyond are escaped.
pub const RADIUS: i64 = 256;
const TAIL_MASS: f64 = 1e-7;

/// Everything in a model file, decoded into plain vectors.
pub struct ModelFile {
    pub id: [u8; 8],
    pub config: ModelConfig,
    /// f32 copies of all network weights, by checkpoint key, with their shapes.
    pub tensors: HashMap<String, (Vec<i64>, Vec<f32>)>,
    pub hyper_tables: Vec<CdfTable>,
    /// The earlier cores whose add-ons this one takes ([`TAKES_ADD_ONS_OF`]).
    pub takes_add_ons_of: Vec<[u8; 8]>,
    /// A kept earlier release without the encoder's networks ([`decode_only`]).
    pub decode_only: bool,
}

pub fn id_hex(id: &[u8; 8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`id_hex`]: 16 hex digits.
pub fn parse_id(hex: &str) -> Option<[u8; 8]> {
    if hex.len() != 16 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 8];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// Writes the shipped model file from a training checkpoint (`model.safetensors` of a
/// run directory): weights to f16, the factorized prior to integer CDF tables.
///
/// `takes_add_ons_of`: the shipped core this checkpoint continues, when the add-ons made
/// for that core (realism generator, flow refiner, ConHa predictor, ultra-low model) were
/// measured on this one and carried over (see [`TAKES_ADD_ONS_OF`]).
///
/// The widths and the residual blocks are taken from the checkpoint, whose tensors say
/// them: exported with fewer, a deepened core would silently lose its blocks, and a
/// widened one would not load.
pub fn export(
    checkpoint: &Path,
    context: bool,
    takes_add_ons_of: Option<&ModelFile>,
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    let (n, m) = widths_in(checkpoint)?;
    // `VarStore::load` would silently drop the predictor's weights, and the exported
    // core would decode differently from the one that was trained.
    if latent_residual_in(checkpoint)? {
        anyhow::bail!(
            "{} has latent residual prediction, which model files cannot carry yet (an experiment of the trainer)",
            checkpoint.display()
        );
    }
    let config = ModelConfig {
        n,
        m,
        context,
        residual_blocks: residual_blocks_in(checkpoint)?,
        latent_residual: false,
    };
    let mut vs = VarStore::new(Device::Cpu);
    let model = Hyperprior::new(&vs.root(), config, ConvPrecision::F32);
    vs.load(checkpoint)?;

    // The density network is replaced by its integer tables below.
    let mut owned = f16_variables(&vs, Some("prior."))?;

    // Per-channel integer CDF tables of the hyper-latent.
    let pmf = Vec::<f64>::try_from(model.prior.integer_pmf(RADIUS).flatten(0, -1))?;
    let width = (2 * RADIUS + 1) as usize;
    let tables: Vec<CdfTable> = pmf
        .chunks(width)
        .map(|p| {
            let (lo, hi) = trimmed_range(p);
            CdfTable::from_pmf(&p[lo..=hi], lo as i32 - RADIUS as i32)
        })
        .collect();
    let longest = tables.iter().map(|t| t.cdf().len()).max().unwrap_or(0);
    let mut cdf = vec![0i32; tables.len() * longest];
    for (c, t) in tables.iter().enumerate() {
        for (i, &v) in t.cdf().iter().enumerate() {
            cdf[c * longest + i] = v as i32;
        }
    }
    let lengths: Vec<i32> = tables.iter().map(|t| t.cdf().len() as i32).collect();
    let offsets: Vec<i32> = tables.iter().map(|t| t.offset()).collect();
    let i32_bytes = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    owned.push((
        "hyper_cdf".into(),
        Dtype::I32,
        vec![tables.len(), longest],
        i32_bytes(&cdf),
    ));
    owned.push((
        "hyper_cdf_length".into(),
        Dtype::I32,
        vec![tables.len()],
        i32_bytes(&lengths),
    ));
    owned.push((
        "hyper_cdf_offset".into(),
        Dtype::I32,
        vec![tables.len()],
        i32_bytes(&offsets),
    ));

    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("n".to_string(), config.n.to_string()),
        ("m".to_string(), config.m.to_string()),
        ("levels".to_string(), LEVELS.to_string()),
        ("context".to_string(), u8::from(config.context).to_string()),
    ]);
    // Written only for a deepened core, so that a plain one exports to the same bytes
    // (and the same model id) as before the blocks existed.
    if config.residual_blocks > 0 {
        metadata.insert(
            RESIDUAL_BLOCKS.to_string(),
            config.residual_blocks.to_string(),
        );
    }
    if let Some(earlier) = takes_add_ons_of {
        let ids: Vec<String> = std::iter::once(earlier.id)
            .chain(earlier.takes_add_ons_of.iter().copied())
            .map(|id| id_hex(&id))
            .collect();
        metadata.insert(TAKES_ADD_ONS_OF.to_string(), ids.join(","));
    }
    write_safetensors(&owned, metadata, out)
}

type OwnedTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// The metadata key of [`ModelConfig::residual_blocks`]; absent means 0.
const RESIDUAL_BLOCKS: &str = "residual_blocks";

/// The most residual blocks per stage a core may have. Each block widens the transforms'
/// reach (by 0.75 latent positions in the synthesis, 12 pixels on each side in the analysis), and the
/// codec's tile margins (`codec/tiles.rs`, `effort.rs`) grow with the count; the bound
/// keeps a corrupt or hostile header from asking for a network of absurd depth.
pub const MAX_RESIDUAL_BLOCKS: i64 = 4;

/// A training checkpoint's tensor shapes, by name. A checkpoint carries no metadata:
/// its tensors say what network it holds.
fn checkpoint_shapes(checkpoint: &Path) -> anyhow::Result<HashMap<String, Vec<usize>>> {
    let bytes = std::fs::read(checkpoint)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", checkpoint.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)?;
    Ok(header
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.shape.clone()))
        .collect())
}

/// How many residual blocks per stage a training checkpoint has.
pub fn residual_blocks_in(checkpoint: &Path) -> anyhow::Result<i64> {
    let shapes = checkpoint_shapes(checkpoint)?;
    // The synthesis's first block stage, block by block, as `stage_blocks` names them.
    let blocks = (0..)
        .take_while(|k| shapes.contains_key(&format!("synthesis.block0_{k}.expand.weight")))
        .count();
    Ok(blocks as i64)
}

/// Whether a training checkpoint has latent residual prediction.
pub fn latent_residual_in(checkpoint: &Path) -> anyhow::Result<bool> {
    Ok(checkpoint_shapes(checkpoint)?.contains_key("latent_residual.conv2.weight"))
}

/// The widths `(n, m)` of a training checkpoint's transforms and latent, read off the
/// shape of the analysis's last layer (`[m, n, 5, 5]`).
pub fn widths_in(checkpoint: &Path) -> anyhow::Result<(i64, i64)> {
    let shape = checkpoint_shapes(checkpoint)?
        .remove("analysis.conv3.weight")
        .ok_or_else(|| anyhow::anyhow!("{} has no analysis.conv3.weight", checkpoint.display()))?;
    match shape[..] {
        [m, n, _, _] => Ok((n as i64, m as i64)),
        _ => anyhow::bail!(
            "{}: analysis.conv3.weight is {shape:?}",
            checkpoint.display()
        ),
    }
}

/// Every variable of a store (except those under `skip_prefix`) as f16, sorted by name.
fn f16_variables(vs: &VarStore, skip_prefix: Option<&str>) -> anyhow::Result<Vec<OwnedTensor>> {
    let mut owned = vec![];
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        if skip_prefix.is_some_and(|p| name.starts_with(p)) {
            continue;
        }
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let values = Vec::<f32>::try_from(t.flatten(0, -1))?;
        let bytes = values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        owned.push((name, Dtype::F16, shape, bytes));
    }
    Ok(owned)
}

/// Rewrites a serialized file's JSON header with its keys in sorted order, in place.
///
/// `safetensors::serialize` takes the metadata as a `HashMap`, whose iteration order
/// changes from run to run, and a model's id is the digest of its bytes: without this,
/// exporting one checkpoint twice gave two files with different ids. The same keys and
/// values in another order serialize to the same length, so no offset moves.
pub fn sort_header(bytes: &mut [u8]) -> anyhow::Result<()> {
    let (header_len, _) = SafeTensors::read_metadata(bytes)?;
    let header = &bytes[8..8 + header_len];
    let text = std::str::from_utf8(header)?.trim_end_matches(' ');
    let mut parsed: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)?;
    if let Some(metadata) = parsed.remove("__metadata__") {
        // Sorted whatever map type serde_json was built with.
        let metadata: BTreeMap<String, String> = serde_json::from_value(metadata)?;
        parsed.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let sorted = serde_json::to_string(&parsed)?;
    anyhow::ensure!(
        sorted.len() == text.len(),
        "a sorted header is {} bytes, the original {}",
        sorted.len(),
        text.len()
    );
    bytes[8..8 + sorted.len()].copy_from_slice(sorted.as_bytes());
    Ok(())
}

/// Serializes, writes atomically, and returns the file's model identifier.
fn write_safetensors(
    owned: &[OwnedTensor],
    metadata: HashMap<String, String>,
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut bytes = safetensors::serialize(views, &Some(metadata))?;
    sort_header(&mut bytes)?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, out)?;
    Ok(model_id(&bytes))
}

pub const REALISM_FORMAT_NAME: &str = "mirage-realism-v1";
pub const FLOW_FORMAT_NAME: &str = "mirage-flow-v1";
pub const PREDICTOR_FORMAT_NAME: &str = "mirage-realism-predictor-v1";
pub const ULTRALOW_FORMAT_NAME: &str = "mirage-ultralow-v1";
/// Metadata of an ultra-low model: the earlier models (hex ids, comma-separated) whose
/// files it decodes too (see [`export_ultralow`]).
pub const READS_FILES_OF: &str = "reads_files_of";

/// Writes a shipped decoder add-on (the realism generator or the flow refiner) from a
/// training checkpoint, tied to the hyperprior it was trained on: it only decodes
/// bitstreams of that model. `config` is its architecture, as metadata numbers.
pub fn export_decoder(
    vs: &mut VarStore,
    checkpoint: &Path,
    format: &str,
    config: &[(&str, i64)],
    base: &[u8; 8],
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    vs.load(checkpoint)?;
    let owned = f16_variables(vs, None)?;
    let mut metadata = HashMap::from([
        ("format".to_string(), format.to_string()),
        ("base_model".to_string(), id_hex(base)),
    ]);
    for (key, value) in config {
        metadata.insert(key.to_string(), value.to_string());
    }
    write_safetensors(&owned, metadata, out)
}

/// The realism generator of a `generator.safetensors` checkpoint, as a shipped file.
pub fn export_realism(
    checkpoint: &Path,
    config: RealismConfig,
    base: &[u8; 8],
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    let mut vs = VarStore::new(Device::Cpu);
    RealismGenerator::new(&vs.root(), config, ConvPrecision::F32);
    let mut numbers = vec![
        ("channels", config.channels),
        ("blocks", config.blocks),
        ("feature_channels", config.feature_channels),
    ];
    if config.noise {
        numbers.push(("noise", 1));
    }
    export_decoder(
        &mut vs,
        checkpoint,
        REALISM_FORMAT_NAME,
        &numbers,
        base,
        out,
    )
}

/// The flow refiner of a `flow.safetensors` checkpoint, as a shipped file.
pub fn export_flow(
    checkpoint: &Path,
    config: FlowConfig,
    base: &[u8; 8],
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    let mut vs = VarStore::new(Device::Cpu);
    FlowRefiner::new(&vs.root(), config, ConvPrecision::F32);
    let numbers = [("channels", config.channels)];
    export_decoder(&mut vs, checkpoint, FLOW_FORMAT_NAME, &numbers, base, out)
}

/// The realism predictor of a `predictor.safetensors` checkpoint, as a shipped file,
/// with the one level it stands for when a single weight is asked for ("ConHa-fixed"; the
/// run's `fixed_level` file: the best constant on its votes, else on its proxy labels, or
/// a level written from later votes).
pub fn export_predictor(
    checkpoint: &Path,
    fixed_level: u8,
    base: &[u8; 8],
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    let mut vs = VarStore::new(Device::Cpu);
    crate::model::predictor::RealismPredictor::new(&vs.root());
    let numbers = [("fixed_level", fixed_level as i64)];
    export_decoder(
        &mut vs,
        checkpoint,
        PREDICTOR_FORMAT_NAME,
        &numbers,
        base,
        out,
    )
}

/// The ultra-low mode's grid networks of an `ultralow.safetensors` checkpoint, as a
/// shipped file, tied to the core whose latents it predicts and to the realism
/// generator that decodes them (`generator`), so that a file decodes to the pixels it
/// was evaluated with.
///
/// `supersedes`: an earlier shipped model whose files this one also decodes. That
/// holds only if the grid encoders and codebooks are exactly the earlier model's
/// (trained with `--freeze-codes`): then an old file's indices name the same codes,
/// and only the grid decoder that turns them into a latent is new. The export checks
/// it, and names the earlier model (and those it superseded) in `reads_files_of`.
pub fn export_ultralow(
    checkpoint: &Path,
    config: crate::model::ultralow::UltralowConfig,
    base: &[u8; 8],
    generator: &[u8; 8],
    supersedes: Option<&DecoderFile>,
    out: &Path,
) -> anyhow::Result<[u8; 8]> {
    let mut vs = VarStore::new(Device::Cpu);
    crate::model::ultralow::UltralowModel::new(&vs.root(), config, ConvPrecision::F32);
    vs.load(checkpoint)?;
    let owned = f16_variables(&vs, None)?;
    // FiLM layers start at zero and move only in caption training: a model whose
    // FiLM weights are all zero ignores captions, and the decoder needs no text encoder.
    let reads_captions = vs
        .variables()
        .iter()
        .any(|(name, t)| name.contains(".film.") && t.abs().max().double_value(&[]) > 0.0);
    let mut metadata = HashMap::from([
        ("format".to_string(), ULTRALOW_FORMAT_NAME.to_string()),
        ("base_model".to_string(), id_hex(base)),
        ("generator".to_string(), id_hex(generator)),
        ("channels".to_string(), config.channels.to_string()),
        ("code_dim".to_string(), config.code_dim.to_string()),
        (
            "latent_channels".to_string(),
            config.latent_channels.to_string(),
        ),
    ]);
    if reads_captions {
        metadata.insert(
            "caption_encoder".to_string(),
            crate::model::ultralow::CAPTION_ENCODER.to_string(),
        );
    }
    if let Some(old) = supersedes {
        for (name, t) in vs.variables() {
            if name.contains(".dec_") {
                continue;
            }
            let Some((_, values)) = old.tensors.get(&name) else {
                anyhow::bail!("the superseded model has no {name}");
            };
            // As stored: f16.
            let new =
                Vec::<f32>::try_from(t.to_kind(Kind::Half).to_kind(Kind::Float).flatten(0, -1))?;
            if new != *values {
                anyhow::bail!(
                    "{name} differs from the superseded model's, so its files' indices would \
                     mean other codes (train with --freeze-codes from it)"
                );
            }
        }
        let mut ids = vec![id_hex(&old.id)];
        ids.extend(
            old.text(READS_FILES_OF)
                .into_iter()
                .flat_map(|s| s.split(','))
                .map(str::to_string),
        );
        metadata.insert(READS_FILES_OF.to_string(), ids.join(","));
    }
    write_safetensors(&owned, metadata, out)
}

/// A loaded add-on file (realism generator, flow refiner or realism predictor).
pub struct DecoderFile {
    pub id: [u8; 8],
    /// The hyperprior whose bitstreams (and decodes) it was trained on.
    pub base_model: String,
    metadata: HashMap<String, String>,
    pub tensors: HashMap<String, (Vec<i64>, Vec<f32>)>,
}

impl DecoderFile {
    /// Refuses a file made for another base model than `base` or one of the earlier
    /// cores whose add-ons `base` takes (the one place where add-ons — generator, flow,
    /// predictor, ultra-low model — are checked against the codec's model).
    pub fn check_base(
        &self,
        base: &[u8; 8],
        takes_add_ons_of: &[[u8; 8]],
        path: &Path,
    ) -> Result<()> {
        let fits = std::iter::once(base)
            .chain(takes_add_ons_of)
            .any(|id| self.base_model == id_hex(id));
        if !fits {
            return Err(MirageError::InvalidModel {
                path: path.to_owned(),
                reason: format!(
                    "it was trained for model {}, but the loaded model is {}",
                    self.base_model,
                    id_hex(base)
                ),
            });
        }
        Ok(())
    }

    /// Reads a file and checks that it is of the expected `format`.
    pub fn load(path: &Path, format: &str) -> Result<DecoderFile> {
        let bytes = std::fs::read(path).map_err(|source| MirageError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| MirageError::InvalidModel {
            path: path.to_owned(),
            reason,
        };
        let (metadata, tensors, _) = read_tensors(&bytes).map_err(invalid)?;
        if metadata.get("format").map(String::as_str) != Some(format) {
            return Err(invalid(format!("not a {format} model")));
        }
        Ok(DecoderFile {
            id: model_id(&bytes),
            base_model: metadata.get("base_model").cloned().unwrap_or_default(),
            metadata,
            tensors,
        })
    }

    /// An architecture number from the metadata, within a sane range.
    pub fn number(&self, key: &str) -> Result<i64> {
        self.metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .filter(|v: &i64| (1..=4096).contains(v))
            .ok_or_else(|| MirageError::InvalidModel {
                path: "(loaded)".into(),
                reason: format!("metadata lacks a sane {key}"),
            })
    }

    /// A metadata value as written.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    pub fn realism_config(&self) -> Result<RealismConfig> {
        Ok(RealismConfig {
            channels: self.number("channels")?,
            blocks: self.number("blocks")?,
            feature_channels: self.number("feature_channels")?,
            // Absent in v1 files, whose generator has no noise inputs.
            noise: self.text("noise") == Some("1"),
        })
    }

    pub fn ultralow_config(&self) -> Result<crate::model::ultralow::UltralowConfig> {
        Ok(crate::model::ultralow::UltralowConfig {
            channels: self.number("channels")?,
            code_dim: self.number("code_dim")?,
            latent_channels: self.number("latent_channels")?,
        })
    }

    pub fn flow_config(&self) -> Result<FlowConfig> {
        Ok(FlowConfig {
            channels: self.number("channels")?,
        })
    }

    /// Copies the weights into a freshly built network.
    pub fn fill(&self, vs: &VarStore) -> Result<()> {
        fill_variables(&self.tensors, vs, &|_| false)
    }

    /// Copies the weights into a network that may have more of them: a warm start.
    /// Variables for which `is_new` holds keep their initial values.
    pub fn fill_warm_start(&self, vs: &VarStore, is_new: &dyn Fn(&str) -> bool) -> Result<()> {
        fill_variables(&self.tensors, vs, is_new)
    }

    /// Whether the file holds a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

type Tensors = HashMap<String, (Vec<i64>, Vec<f32>)>;

/// A safetensors file's metadata, its f16 tensors (as f32) and its i32 tensors.
type RawFile = (HashMap<String, String>, Tensors, HashMap<String, Vec<i32>>);

fn read_tensors(bytes: &[u8]) -> std::result::Result<RawFile, String> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut tensors = HashMap::new();
    let mut ints = HashMap::new();
    for (name, view) in st.tensors() {
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        match view.dtype() {
            Dtype::F16 => {
                let v = view
                    .data()
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect();
                tensors.insert(name, (shape, v));
            }
            Dtype::I32 => {
                let v = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                ints.insert(name, v);
            }
            other => return Err(format!("unexpected dtype {other:?} for {name}")),
        }
    }
    Ok((meta, tensors, ints))
}

/// Copies named weights into a network's variables, checking every shape; variables
/// under `skip_prefix` are left alone.
fn fill_variables(tensors: &Tensors, vs: &VarStore, skip: &dyn Fn(&str) -> bool) -> Result<()> {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if skip(&name) {
                continue;
            }
            let (shape, values) = tensors
                .get(&name)
                .ok_or_else(|| MirageError::InvalidModel {
                    path: "(loaded)".into(),
                    reason: format!("missing tensor {name}"),
                })?;
            if *shape != var.size() {
                return Err(MirageError::InvalidModel {
                    path: "(loaded)".into(),
                    reason: format!("{name} has shape {shape:?}, expected {:?}", var.size()),
                });
            }
            var.copy_(
                &Tensor::from_slice(values)
                    .view(shape.as_slice())
                    .to_kind(Kind::Float),
            );
        }
        Ok(())
    })
}

/// The smallest index range holding all but `TAIL_MASS` of a pmf, always including 0
/// (the centre, index `RADIUS`).
fn trimmed_range(p: &[f64]) -> (usize, usize) {
    let centre = RADIUS as usize;
    let (mut lo, mut hi) = (0, p.len() - 1);
    let mut tail = 0.0;
    while lo < centre && tail + p[lo] < TAIL_MASS / 2.0 {
        tail += p[lo];
        lo += 1;
    }
    tail = 0.0;
    while hi > centre && tail + p[hi] < TAIL_MASS / 2.0 {
        tail += p[hi];
        hi -= 1;
    }
    (lo, hi)
}

pub fn model_id(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(bytes);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// The id written into the files a core makes: its file's [`model_id`], or for a
/// decode-only core the id of the full core it was cut from, once its digest checks out.
pub fn core_id(bytes: &[u8]) -> std::result::Result<[u8; 8], String> {
    let (header_len, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| format!("not a safetensors file ({e})"))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let Some(full) = meta.get(DECODE_ONLY_OF) else {
        return Ok(model_id(bytes));
    };
    let id = parse_id(full).ok_or_else(|| format!("bad {DECODE_ONLY_OF} {full:?}"))?;
    let recorded = meta
        .get(DATA_DIGEST)
        .map(String::as_str)
        .unwrap_or_default();
    if digest_with_placeholder(bytes, header_len, recorded).as_deref() != Some(recorded) {
        return Err("its contents do not match its digest (the file is damaged)".into());
    }
    Ok(id)
}

/// What [`DATA_DIGEST`] holds while the digest is taken.
const DIGEST_PLACEHOLDER: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SHA-256 (hex) of a decode-only core's whole file (header, metadata and tensors)
/// with its [`DATA_DIGEST`] value, `recorded`, replaced by the placeholder; `None` if
/// the header does not hold that value.
fn digest_with_placeholder(bytes: &[u8], header_len: usize, recorded: &str) -> Option<String> {
    if recorded.len() != DIGEST_PLACEHOLDER.len() {
        return None;
    }
    let value = digest_value_offset(bytes, header_len, recorded)?;
    let mut copy = bytes.to_vec();
    copy[value..value + recorded.len()].copy_from_slice(DIGEST_PLACEHOLDER.as_bytes());
    Some(hex_digest(&copy))
}

/// Where the [`DATA_DIGEST`] entry's value `value` starts in a file's header, if the
/// header holds `"data_digest":"<value>"`.
fn digest_value_offset(bytes: &[u8], header_len: usize, value: &str) -> Option<usize> {
    let entry = format!("\"{DATA_DIGEST}\":\"{value}\"");
    let at = bytes
        .get(8..8 + header_len)?
        .windows(entry.len())
        .position(|w| w == entry.as_bytes())?;
    // After `"data_digest":"`, before the closing quote.
    Some(8 + at + entry.len() - 1 - value.len())
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Cuts a core file down to what decoding needs: an earlier release is kept only so
/// that its files decode, and the encoder's networks are about a third of it. The cut
/// file answers to the full file's id ([`core_id`]) and refuses to encode.
///
/// Its digest covers the whole file, so a damaged header (another `context` flag,
/// swapped tensor names) is refused as surely as damaged weights. Like the id of a full
/// core, it guards against accidents, not against a forged file.
pub fn decode_only(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, meta) = SafeTensors::read_metadata(bytes)?;
    let mut metadata = meta.metadata().clone().unwrap_or_default();
    anyhow::ensure!(
        metadata.get("format").map(String::as_str) == Some(FORMAT_NAME),
        "not a {FORMAT_NAME} model"
    );
    anyhow::ensure!(
        !metadata.contains_key(DECODE_ONLY_OF),
        "the model is decode-only already"
    );
    let file = SafeTensors::deserialize(bytes)?;
    let kept = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !encoder_only(name));
    metadata.insert(DECODE_ONLY_OF.into(), id_hex(&model_id(bytes)));
    // Serialized with the placeholder, digested, and the digest written over the
    // placeholder (the same length, so nothing else moves).
    metadata.insert(DATA_DIGEST.into(), DIGEST_PLACEHOLDER.into());
    let mut cut = safetensors::serialize(kept, &Some(metadata))?;
    sort_header(&mut cut)?;
    let (header_len, _) = SafeTensors::read_metadata(&cut)?;
    let digest = hex_digest(&cut);
    let value = digest_value_offset(&cut, header_len, DIGEST_PLACEHOLDER)
        .ok_or_else(|| anyhow::anyhow!("the digest placeholder is not in the header"))?;
    cut[value..value + digest.len()].copy_from_slice(digest.as_bytes());
    Ok(cut)
}

impl ModelFile {
    pub fn load(path: &Path) -> Result<ModelFile> {
        let bytes = std::fs::read(path).map_err(|source| MirageError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes).map_err(|reason| MirageError::InvalidModel {
            path: path.to_owned(),
            reason,
        })
    }

    fn parse(bytes: &[u8]) -> std::result::Result<ModelFile, String> {
        let (meta, tensors, ints) = read_tensors(bytes)?;
        if meta.get("format").map(String::as_str) != Some(FORMAT_NAME) {
            return Err(format!("not a {FORMAT_NAME} model"));
        }
        let number = |key: &str| -> std::result::Result<i64, String> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("metadata lacks {key}"))
        };
        let residual_blocks = match meta.get(RESIDUAL_BLOCKS) {
            // Every core before the blocks existed.
            None => 0,
            Some(_) => number(RESIDUAL_BLOCKS)?,
        };
        if !(0..=MAX_RESIDUAL_BLOCKS).contains(&residual_blocks) {
            return Err(format!(
                "{RESIDUAL_BLOCKS} is {residual_blocks}, beyond 0..={MAX_RESIDUAL_BLOCKS}"
            ));
        }
        // The tensors must agree, or the decoder would build a network without blocks
        // the encoder had (or with blocks that stay the identity).
        let blocks_in_tensors = (0..)
            .take_while(|k| tensors.contains_key(&format!("synthesis.block0_{k}.expand.weight")))
            .count() as i64;
        if blocks_in_tensors != residual_blocks {
            return Err(format!(
                "the header declares {residual_blocks} residual blocks per stage, the weights hold {blocks_in_tensors}"
            ));
        }
        let config = ModelConfig {
            n: number("n")?,
            m: number("m")?,
            // Files from before the context model have no "context" entry.
            context: meta.get("context").is_some_and(|v| v == "1"),
            residual_blocks,
            // No model file carries latent residual prediction yet (experimental).
            latent_residual: false,
        };
        if number("levels")? != LEVELS as i64 {
            return Err("model has a different number of rate levels".into());
        }
        let get = |k: &str| ints.get(k).ok_or_else(|| format!("missing {k}"));
        let (cdf, lengths, offsets) = (
            get("hyper_cdf")?,
            get("hyper_cdf_length")?,
            get("hyper_cdf_offset")?,
        );
        if lengths.len() != config.n as usize || offsets.len() != lengths.len() {
            return Err("hyper-latent tables do not match the channel count".into());
        }
        let longest = cdf.len() / lengths.len().max(1);
        let mut hyper_tables = vec![];
        for (c, (&len, &offset)) in lengths.iter().zip(offsets).enumerate() {
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l <= longest)
                .ok_or("bad table length")?;
            let row: Vec<u32> = cdf[c * longest..c * longest + len]
                .iter()
                .map(|&v| v as u32)
                .collect();
            hyper_tables.push(CdfTable::from_cdf(row, offset).map_err(|e| e.to_string())?);
        }
        let takes_add_ons_of = match meta.get(TAKES_ADD_ONS_OF) {
            None => vec![],
            Some(list) => list
                .split(',')
                .map(|hex| parse_id(hex).ok_or_else(|| format!("bad {TAKES_ADD_ONS_OF} {hex:?}")))
                .collect::<std::result::Result<_, _>>()?,
        };
        Ok(ModelFile {
            id: core_id(bytes)?,
            config,
            tensors,
            hyper_tables,
            takes_add_ons_of,
            decode_only: meta.contains_key(DECODE_ONLY_OF),
        })
    }

    pub fn tensor(&self, name: &str) -> Result<&(Vec<i64>, Vec<f32>)> {
        self.tensors
            .get(name)
            .ok_or_else(|| MirageError::InvalidModel {
                path: "(loaded)".into(),
                reason: format!("missing tensor {name}"),
            })
    }

    /// Copies the weights into a freshly built network (all but the density network,
    /// whose job the integer tables do). A decode-only core has no encoder to copy: an
    /// error, so that no trainer runs on random transforms.
    pub fn fill(&self, vs: &VarStore) -> Result<()> {
        if self.decode_only {
            return Err(MirageError::InvalidModel {
                path: "(loaded)".into(),
                reason: "it is a decode-only core (an earlier release kept so that its files decode): it has no encoder to train or encode with".into(),
            });
        }
        fill_variables(&self.tensors, vs, &|name| name.starts_with("prior."))
    }

    /// [`ModelFile::fill`] for a decoder: from a decode-only core, everything but the
    /// encoder's networks, which stay as built (the codec refuses to encode with them).
    pub fn fill_for_decoding(&self, vs: &VarStore) -> Result<()> {
        fill_variables(&self.tensors, vs, &|name| {
            name.starts_with("prior.") || (self.decode_only && encoder_only(name))
        })
    }

    /// The hyper-latent's tables as probabilities over `-RADIUS..=RADIUS`, `[C, n]`
    /// (the escape mass dropped), for fitting a fresh density network to them.
    pub fn hyper_pmf(&self) -> Tensor {
        let n = (2 * RADIUS + 1) as usize;
        let mut pmf = vec![0f32; self.hyper_tables.len() * n];
        for (c, table) in self.hyper_tables.iter().enumerate() {
            let cdf = table.cdf();
            for slot in 0..cdf.len().saturating_sub(2) {
                let value = table.offset() + slot as i32;
                let index = value + RADIUS as i32;
                if (0..n as i32).contains(&index) {
                    pmf[c * n + index as usize] = (cdf[slot + 1] - cdf[slot]) as f32
                        / (1u32 << mirage_entropy::PRECISION) as f32;
                }
            }
        }
        Tensor::from_slice(&pmf).view([self.hyper_tables.len() as i64, n as i64])
    }

    /// Warm start for training: copies every weight the file has into `vs`, leaving
    /// the density network and layers the file lacks (a context model new to this
    /// run) at their initial values. Returns the names left as they were.
    ///
    /// A run with more latent channels (`config.m`) than the file grows them
    /// ([`LatentGrowth`]): the weights that differ in shape are moved into the wider
    /// layout, and their names are returned in `grown`.
    pub fn fill_available(&self, vs: &VarStore, config: ModelConfig) -> Result<WarmStart> {
        if self.decode_only {
            return Err(MirageError::InvalidModel {
                path: "(loaded)".into(),
                reason: "a decode-only core has no encoder to train from".into(),
            });
        }
        let invalid = |reason: String| MirageError::InvalidModel {
            path: "(loaded)".into(),
            reason,
        };
        let growth = if config.m != self.config.m {
            Some(LatentGrowth::new(self.config, config).map_err(invalid)?)
        } else {
            None
        };
        let mut start = WarmStart::default();
        tch::no_grad(|| {
            for (name, mut var) in vs.variables() {
                match self.tensors.get(&name) {
                    Some((shape, values)) if !name.starts_with("prior.") => {
                        let old = Tensor::from_slice(values).view(shape.as_slice());
                        if *shape == var.size() {
                            var.copy_(&old);
                            continue;
                        }
                        let Some(growth) = &growth else {
                            return Err(invalid(format!(
                                "{name} has shape {shape:?}, expected {:?}",
                                var.size()
                            )));
                        };
                        var.copy_(&growth.grow(&name, &old, &var).map_err(invalid)?);
                        start.grown.push(name);
                    }
                    _ => start.fresh.push(name),
                }
            }
            Ok(())
        })?;
        start.fresh.sort();
        start.grown.sort();
        Ok(start)
    }
}

/// What [`ModelFile::fill_available`] did not simply copy.
#[derive(Debug, Default)]
pub struct WarmStart {
    /// Left at their initial values: the file has no such tensor.
    pub fresh: Vec<String>,
    /// Moved into a wider latent's layout.
    pub grown: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freshly initialised core with `config`, saved as a training checkpoint in `dir`.
    fn fresh_checkpoint(dir: &Path, config: ModelConfig) -> std::path::PathBuf {
        let vs = VarStore::new(Device::Cpu);
        let _model = Hyperprior::new(&vs.root(), config, ConvPrecision::F32);
        let checkpoint = dir.join("checkpoint.safetensors");
        vs.save(&checkpoint).unwrap();
        checkpoint
    }

    fn add_on_for(base: &[u8; 8]) -> DecoderFile {
        DecoderFile {
            id: [9; 8],
            base_model: id_hex(base),
            metadata: HashMap::new(),
            tensors: HashMap::new(),
        }
    }

    /// A checkpoint with latent residual prediction is refused, not exported without
    /// it (which would make a core that decodes differently from the trained one).
    #[test]
    fn a_checkpoint_with_latent_residual_prediction_is_not_exported() {
        let dir = std::env::temp_dir().join(format!("mirage-export-lrp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = ModelConfig {
            n: 8,
            m: 16,
            latent_residual: true,
            ..ModelConfig::default()
        };
        let checkpoint = fresh_checkpoint(&dir, config);
        assert!(latent_residual_in(&checkpoint).unwrap());
        let out = dir.join("model.safetensors");
        let err = export(&checkpoint, config.context, None, &out).unwrap_err();
        assert!(err.to_string().contains("latent residual"), "{err}");
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The same checkpoint exported twice makes the same bytes, so the same model id
    /// (the metadata's HashMap used to come out in a different order each run).
    #[test]
    fn exporting_a_checkpoint_twice_gives_the_same_file() {
        let dir = std::env::temp_dir().join(format!("mirage-export-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = ModelConfig {
            n: 8,
            m: 16,
            ..ModelConfig::default()
        };
        let checkpoint = fresh_checkpoint(&dir, config);
        let files: Vec<Vec<u8>> = (0..4)
            .map(|k| {
                let out = dir.join(format!("model-{k}.safetensors"));
                export(&checkpoint, config.context, None, &out).unwrap();
                std::fs::read(out).unwrap()
            })
            .collect();
        assert!(files.windows(2).all(|w| w[0] == w[1]));
        // A plain core's header is what it was before the residual blocks existed.
        let (_, header) = SafeTensors::read_metadata(&files[0]).unwrap();
        assert!(!header
            .metadata()
            .as_ref()
            .unwrap()
            .contains_key(RESIDUAL_BLOCKS));
        // And the sorted header is still one a reader takes.
        assert!(SafeTensors::deserialize(&files[0]).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A deepened core exports its blocks whatever config it is given (the checkpoint
    /// says how many it has) and loads back with them; a header that disagrees with
    /// the weights, or declares an absurd count, is refused.
    #[test]
    fn a_deepened_core_keeps_its_blocks_and_a_false_header_is_refused() {
        let dir = std::env::temp_dir().join(format!("mirage-blocks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = ModelConfig {
            n: 8,
            m: 16,
            context: true,
            residual_blocks: 1,
            latent_residual: false,
        };
        let checkpoint = fresh_checkpoint(&dir, config);
        assert_eq!(residual_blocks_in(&checkpoint).unwrap(), 1);
        let out = dir.join("model.safetensors");
        // Widths and blocks come from the checkpoint, whatever the caller believes.
        export(&checkpoint, config.context, None, &out).unwrap();
        assert_eq!(ModelFile::load(&out).unwrap().config, config);

        let bytes = std::fs::read(&out).unwrap();
        let with_header = |value: &str| {
            let from = br#""residual_blocks":"1""#;
            let to = format!(r#""residual_blocks":"{value}""#);
            let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
            let mut b = bytes.clone();
            b[at..at + from.len()].copy_from_slice(to.as_bytes());
            ModelFile::parse(&b).map(|_| ()).unwrap_err()
        };
        assert!(
            with_header("0").contains("declares 0"),
            "{}",
            with_header("0")
        );
        assert!(with_header("9").contains("beyond"), "{}", with_header("9"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_read_back_from_hex() {
        let id = [0x83, 0x0d, 0xbc, 0x79, 0xe6, 0x32, 0x7d, 0x12];
        assert_eq!(parse_id(&id_hex(&id)), Some(id));
        assert_eq!(parse_id("830d0bc79e632d1"), None);
        assert_eq!(parse_id("830d0bc79e632dzz"), None);
        assert_eq!(parse_id("830d0bc79e632d1é"), None);
    }

    /// An add-on fits the core it was made for and the cores that take that core's
    /// add-ons, and no other; the refusal names both models.
    #[test]
    fn add_ons_fit_their_core_and_the_cores_that_take_them() {
        let (old, new, other) = ([1; 8], [2; 8], [3; 8]);
        let path = Path::new("realism.safetensors");
        let add_on = add_on_for(&old);
        assert!(add_on.check_base(&old, &[], path).is_ok());
        assert!(add_on.check_base(&new, &[old], path).is_ok());
        assert!(add_on.check_base(&new, &[other, old], path).is_ok());
        let err = add_on
            .check_base(&new, &[other], path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&id_hex(&old)) && err.contains(&id_hex(&new)),
            "{err}"
        );
        // Taking is one way: the earlier core does not take the newer one's add-ons.
        assert!(add_on_for(&new).check_base(&old, &[], path).is_err());
    }
}
