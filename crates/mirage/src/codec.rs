//! The codec: `compress` and `decompress` side by side.
//!
//! The networks (libtorch) only compute the analysis, hyper-analysis and synthesis
//! transforms. Everything that decides *probabilities* — the hyper-latent's integer
//! tables, the hyper-synthesis that selects the latent's mean and scale, and the scale
//! index — runs in `mirage-prior` / `mirage-entropy`, in fixed-order arithmetic, so the
//! decoder rebuilds the encoder's tables bit for bit on any machine and thread count.
//! The encoder also decodes nothing twice: it codes the hyper-latent, then computes the
//! entropy parameters from the *quantized* hyper-latent exactly as the decoder will.

use crate::entropy_model::{CodedLatent, EntropyModel};
use crate::error::{MirageError, Result};
use crate::model::flow::FlowRefiner;
use crate::model::realism::RealismGenerator;
use crate::model::{gaussian_likelihood, layers::ConvPrecision, Hyperprior, LEVELS};
use crate::model_file::{id_hex, DecoderFile, ModelFile, FLOW_FORMAT_NAME, REALISM_FORMAT_NAME};
use image::RgbImage;
use mirage_entropy::{gaussian, CdfTable};
use mirage_format::realism_map::RealismMap;
use mirage_format::{Container, Header, RATE_MAX};
use mirage_prior::{interpolate_gain, EntropyParameters};
use std::path::Path;
use std::time::{Duration, Instant};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Largest image the codec accepts: the networks' activations for a 16-megapixel image
/// take a few GB of RAM (see BENCHMARKS.md for the measured peak).
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;
/// Largest side, the container's own limit.
pub const MAX_SIDE: u32 = mirage_format::MAX_DIMENSION;
/// Total downsampling of the hyper-latent; images are padded to a multiple of it.
const STRIDE: usize = 64;
/// Sections of a file, in order.
const HYPER_SECTION: usize = 0;
const LATENT_SECTION: usize = 1;
/// Optional: the per-region realism map (`mirage_format::realism_map`).
pub(crate) const REALISM_MAP_SECTION: usize = 2;

/// How the caller sets the rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RateTarget {
    /// 0–100, mapped linearly onto the continuous rate setting.
    Quality(f64),
    /// Largest file whose bits per pixel do not exceed this.
    Bpp(f64),
    /// Largest file not exceeding this many bytes.
    Bytes(usize),
}

/// Where the time went, for the benchmark's speed split.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Analysis / hyper-analysis (encode) or synthesis (decode), in libtorch.
    pub networks: Duration,
    /// Deterministic hyper-synthesis and scale indexes.
    pub entropy_parameters: Duration,
    /// rANS coding and the container.
    pub entropy_coding: Duration,
}

/// What the encoder knows about the file it wrote.
#[derive(Clone, Debug)]
pub struct EncodeReport {
    pub rate: u16,
    pub bytes: usize,
    pub header_bytes: usize,
    /// Bits the entropy model expects for the latent and the hyper-latent: the
    /// continuous Gaussian likelihood of the coded latent (the training objective's
    /// estimate) plus the hyper-latent's table probabilities.
    pub estimated_payload_bits: f64,
    /// The ideal code length of the coded symbols under the integer tables the coder
    /// actually uses (what rANS can approach, within its 4-byte final states).
    pub table_payload_bits: f64,
    pub timings: Timings,
    /// The Gaussian table chosen for each latent element, for checking that the
    /// decoder's path ([`Codec::scale_indexes`]) selects the very same ones.
    pub scale_indexes: Vec<usize>,
}

/// The analysis transform's output for one image, reusable across rate settings so a
/// rate search runs the big network once.
pub struct Analysis {
    y: Tensor,
    /// The rounded hyper-latent to code instead of the one `y` gives (set by the
    /// effort refinement, whose latent was optimized for it).
    z: Option<Tensor>,
    width: u32,
    height: u32,
    networks_time: Duration,
}

impl Analysis {
    /// The latent before the rate's gain, `[1, M, H/16, W/16]`.
    pub(crate) fn latent(&self) -> &Tensor {
        &self.y
    }

    /// The same image with another latent and a fixed hyper-latent.
    pub(crate) fn with_latent(&self, y: Tensor, z: Tensor) -> Analysis {
        Analysis {
            y,
            z: Some(z),
            width: self.width,
            height: self.height,
            networks_time: self.networks_time,
        }
    }
}

pub struct Codec {
    id: [u8; 8],
    _vs: VarStore,
    net: Hyperprior,
    entropy_model: EntropyModel,
    gain: Vec<f32>,
    inverse_gain: Vec<f32>,
    hyper_gain: Vec<f32>,
    inverse_hyper_gain: Vec<f32>,
    hyper_tables: Vec<CdfTable>,
    realism: Option<RealismDecoder>,
    flow: Option<FlowDecoder>,
    predictor: Option<crate::conha::Predictor>,
}

/// The flow refiner, attached to the hyperprior whose decodes it refines.
struct FlowDecoder {
    _vs: VarStore,
    flow: FlowRefiner,
}

/// The flow decoder's default source-noise temperature. At 1 (the training
/// distribution) the early bundled flow over-sharpens at 4 steps (Kodak, 0.1 bpp:
/// −2.5 dB, detail ratio 1.46); at 0.6 it costs 1.0 dB and still brings the texture
/// statistics closer to the originals' (BENCHMARKS.md).
pub const DEFAULT_FLOW_TEMPERATURE: f32 = 0.6;

/// Step counts the flow decoder accepts.
pub const FLOW_STEPS: std::ops::RangeInclusive<usize> = 1..=16;

/// The realism generator, attached to the hyperprior whose bitstreams it decodes.
struct RealismDecoder {
    _vs: VarStore,
    generator: RealismGenerator,
    /// The generator file's identifier.
    id: [u8; 8],
}

/// How much the decoder may hallucinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Realism {
    /// The file's suggestion if it has one, else [`DEFAULT_REALISM`].
    Auto,
    /// A hallucination weight in [0, 1]: 0 is the MSE (fidelity) decode, 1 full realism.
    Weight(f32),
}

/// The weight `Realism::Auto` uses for files without a suggestion: the fidelity
/// decode, so that nothing is invented unless the encoder or the user asked for it.
pub const DEFAULT_REALISM: f32 = 0.0;

/// The first core (format v1's mean-scale hyperprior, no context model), kept because
/// the realism generator, the flow refiner and the ConHa predictor were trained on it
/// and live beside it in `models/v1/` until they are retrained on the current core.
pub fn v1_model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/hyperprior.safetensors")
}

/// ", which is --model PATH" when `id` is one of the bundled cores (checked only on the
/// error path: it hashes the model files).
fn bundled_model_hint(id: &[u8; 8]) -> String {
    [v1_model_path(), default_model_path()]
        .into_iter()
        .find(|p| std::fs::read(p).is_ok_and(|b| crate::model_file::model_id(&b) == *id))
        .map(|p| {
            let shown = p
                .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
                .map(Path::to_path_buf)
                .unwrap_or(p);
            format!(", which is --model {}", shown.display())
        })
        .unwrap_or_default()
}

/// The model bundled with the repository.
pub fn default_model_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/hyperprior.safetensors")
        })
}

/// The realism generator bundled with the repository (or `$MIRAGE_REALISM_MODEL`).
pub fn default_realism_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_REALISM_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/realism.safetensors")
        })
}

/// The flow refiner bundled with the repository (or `$MIRAGE_FLOW_MODEL`).
pub fn default_flow_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_FLOW_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/flow.safetensors")
        })
}

/// Sets the suggested hallucination weight stored in a file's header (quantized to
/// 1/255), which `Realism::Auto` decodes with.
pub fn suggest_realism(bytes: &[u8], w: f32) -> Result<Vec<u8>> {
    let w = check_weight(w)?;
    let mut c = mirage_format::read(bytes)?;
    c.header.realism = Some((w * 255.0).round() as u8);
    Ok(mirage_format::write(&c)?)
}

fn check_weight(w: f32) -> Result<f32> {
    if (0.0..=1.0).contains(&w) {
        Ok(w)
    } else {
        Err(MirageError::BadParameter(format!(
            "realism must be between 0 and 1, not {w}"
        )))
    }
}

fn padded(size: u32) -> usize {
    (size as usize).div_ceil(STRIDE) * STRIDE
}

fn check_size(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(MirageError::EmptyImage);
    }
    if width > MAX_SIDE || height > MAX_SIDE || width as u64 * height as u64 > MAX_PIXELS {
        return Err(MirageError::ImageTooLarge {
            width,
            height,
            max_pixels: MAX_PIXELS,
            max_side: MAX_SIDE,
        });
    }
    Ok(())
}

/// The image as a `[1, 3, H', W']` tensor in [0, 1], padded to a multiple of 64 by
/// repeating the edge pixels (cheaper to code than a black border).
pub(crate) fn padded_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (pw, ph) = (padded(img.width()), padded(img.height()));
    let mut data = vec![0f32; 3 * pw * ph];
    for y in 0..ph {
        for x in 0..pw {
            let px = img.get_pixel(x.min(w - 1) as u32, y.min(h - 1) as u32);
            for c in 0..3 {
                data[(c * ph + y) * pw + x] = px[c] as f32 / 255.0;
            }
        }
    }
    Tensor::from_slice(&data).view([1, 3, ph as i64, pw as i64])
}

fn channel_tensor(v: &[f32]) -> Tensor {
    Tensor::from_slice(v).view([1, v.len() as i64, 1, 1])
}

impl Codec {
    pub fn load(path: &Path) -> Result<Codec> {
        let file = ModelFile::load(path)?;
        let mut vs = VarStore::new(Device::Cpu);
        let net = Hyperprior::new(&vs.root(), file.config, ConvPrecision::F32);
        file.fill(&vs)?;
        // Inference only (the effort refinement differentiates the latent, not these).
        vs.freeze();
        let entropy_model = EntropyModel::load(&file, path)?;
        let table = |name: &str| -> Result<Vec<f32>> { Ok(file.tensor(name)?.1.clone()) };
        Ok(Codec {
            id: file.id,
            gain: table("gain")?,
            inverse_gain: table("inverse_gain")?,
            hyper_gain: table("hyper_gain")?,
            inverse_hyper_gain: table("inverse_hyper_gain")?,
            hyper_tables: file.hyper_tables,
            _vs: vs,
            net,
            entropy_model,
            realism: None,
            flow: None,
            predictor: None,
        })
    }

    /// The bundled core, with each bundled decoder add-on (realism generator, flow
    /// refiner, ConHa predictor) that was trained for it.
    pub fn load_default() -> Result<Codec> {
        Codec::load_with_addons(&default_model_path())
    }

    /// A core and the bundled add-ons made for it; add-ons trained for another core are
    /// left out (asking for them later is then a clear error).
    pub fn load_with_addons(path: &Path) -> Result<Codec> {
        let mut codec = Codec::load(path)?;
        let fits = |r: Result<()>| match r {
            Err(MirageError::InvalidModel { ref reason, .. })
                if reason.contains("trained for model") =>
            {
                Ok(())
            }
            other => other,
        };
        let realism = default_realism_path();
        if realism.exists() {
            fits(codec.attach_realism(&realism))?;
        }
        let flow = default_flow_path();
        if flow.exists() {
            fits(codec.attach_flow(&flow))?;
        }
        let predictor = crate::conha::default_predictor_path();
        if predictor.exists() {
            fits(codec.attach_predictor(&predictor))?;
        }
        Ok(codec)
    }

    /// Refuses an add-on file (generator, flow, predictor) made for another model.
    pub(crate) fn check_base(&self, file: &DecoderFile, path: &Path) -> Result<()> {
        if file.base_model != id_hex(&self.id) {
            return Err(MirageError::InvalidModel {
                path: path.to_owned(),
                reason: format!(
                    "it was trained for model {}, but the loaded model is {}",
                    file.base_model,
                    id_hex(&self.id)
                ),
            });
        }
        Ok(())
    }

    /// Loads a flow refiner; it must have been trained on this codec's model.
    pub fn attach_flow(&mut self, path: &Path) -> Result<()> {
        let file = DecoderFile::load(path, FLOW_FORMAT_NAME)?;
        self.check_base(&file, path)?;
        let vs = VarStore::new(Device::Cpu);
        let flow = FlowRefiner::new(&vs.root(), file.flow_config()?, ConvPrecision::F32);
        file.fill(&vs)?;
        self.flow = Some(FlowDecoder { _vs: vs, flow });
        Ok(())
    }

    /// Loads a realism predictor (ConHa); it must have been trained on this codec's
    /// model.
    pub fn attach_predictor(&mut self, path: &Path) -> Result<()> {
        self.predictor = Some(crate::conha::Predictor::load(path, self)?);
        Ok(())
    }

    /// The realism predictor, if one is loaded.
    pub fn predictor(&self) -> Result<&crate::conha::Predictor> {
        self.predictor.as_ref().ok_or_else(|| {
            MirageError::BadParameter(
                "realism `auto` at the encoder needs a realism predictor trained for this core (the bundled one, models/v1/realism-predictor.safetensors, belongs to the v1 core: use --model models/v1/hyperprior.safetensors)".into(),
            )
        })
    }

    /// Whether a flow refiner is loaded.
    pub fn has_flow(&self) -> bool {
        self.flow.is_some()
    }

    /// Decompresses with the flow refiner: the MSE decode plus `steps` Euler steps of
    /// the rectified flow from the noise of `seed`, scaled by `temperature` in [0, 1]
    /// (1 = the trained source distribution; lower trades invented detail for
    /// fidelity). Same file, steps, seed and temperature: same pixels.
    pub fn decompress_flow(
        &self,
        bytes: &[u8],
        steps: usize,
        seed: u64,
        temperature: f32,
    ) -> Result<(RgbImage, Timings)> {
        let Some(flow) = &self.flow else {
            return Err(MirageError::BadParameter(
                "the flow decoder needs a flow refiner trained for this core (the bundled one, models/v1/flow.safetensors, belongs to the v1 core: use --model models/v1/hyperprior.safetensors)".into(),
            ));
        };
        if !FLOW_STEPS.contains(&steps) {
            return Err(MirageError::BadParameter(format!(
                "flow steps must be from {} to {}, not {steps}",
                FLOW_STEPS.start(),
                FLOW_STEPS.end()
            )));
        }
        if !(0.0..=1.0).contains(&temperature) {
            return Err(MirageError::BadParameter(format!(
                "flow temperature must be from 0 to 1, not {temperature}"
            )));
        }
        let (decoded, mut t) = self.decompress_with(bytes, Realism::Weight(0.0))?;
        let start = Instant::now();
        let refined = crate::refinement::refine(&flow.flow, &decoded, steps, seed, temperature)?;
        t.networks += start.elapsed();
        Ok((refined, t))
    }

    /// Loads a realism generator; it must have been trained on this codec's model.
    pub fn attach_realism(&mut self, path: &Path) -> Result<()> {
        let file = DecoderFile::load(path, REALISM_FORMAT_NAME)?;
        let config = file.realism_config()?;
        self.check_base(&file, path)?;
        if config.feature_channels != self.net.config.n {
            return Err(MirageError::InvalidModel {
                path: path.to_owned(),
                reason: "its feature width does not match the loaded model".into(),
            });
        }
        let vs = VarStore::new(Device::Cpu);
        let generator = RealismGenerator::new(&vs.root(), config, ConvPrecision::F32);
        file.fill(&vs)?;
        self.realism = Some(RealismDecoder {
            _vs: vs,
            generator,
            id: file.id,
        });
        Ok(())
    }

    /// Whether a realism generator is loaded (else only `w = 0` decodes).
    pub fn has_realism(&self) -> bool {
        self.realism.is_some()
    }

    /// The identifier of the loaded realism generator, if any.
    pub fn realism_id(&self) -> Option<[u8; 8]> {
        self.realism.as_ref().map(|r| r.id)
    }

    /// The hyperprior's widths.
    /// The transforms (libtorch), for the encoder's effort refinement.
    pub(crate) fn network(&self) -> &Hyperprior {
        &self.net
    }

    pub fn config(&self) -> crate::model::ModelConfig {
        self.net.config
    }

    /// The model identifier written into every file this codec makes.
    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    fn gains(&self, table: &[f32], rate: u16) -> Vec<f32> {
        interpolate_gain(table, LEVELS, rate, RATE_MAX)
    }

    /// Runs the analysis transform once; see [`Codec::encode_analysis`].
    pub fn analyse(&self, img: &RgbImage) -> Result<Analysis> {
        check_size(img.width(), img.height())?;
        let start = Instant::now();
        let y = tch::no_grad(|| self.net.analysis(&padded_tensor(img)));
        Ok(Analysis {
            y,
            z: None,
            width: img.width(),
            height: img.height(),
            networks_time: start.elapsed(),
        })
    }

    /// Decodes the latent section from a decoded hyper-latent, through the
    /// deterministic entropy model.
    fn decode_latent(&self, c: &Container, z: &[i32], zh: usize, zw: usize) -> Result<CodedLatent> {
        self.entropy_model.decode(
            z,
            &self.gains(&self.inverse_hyper_gain, c.header.rate),
            (zh, zw),
            &c.sections[LATENT_SECTION],
        )
    }

    fn hyper_indexes(&self, zh: usize, zw: usize) -> Vec<usize> {
        (0..self.hyper_tables.len())
            .flat_map(|c| std::iter::repeat_n(c, zh * zw))
            .collect()
    }

    /// Codes an analysed image at one rate setting (0..=RATE_MAX).
    pub fn encode_analysis(&self, a: &Analysis, rate: u16) -> Result<(Vec<u8>, EncodeReport)> {
        if rate > RATE_MAX {
            return Err(MirageError::BadParameter(format!(
                "rate {rate} is above {RATE_MAX}"
            )));
        }
        let mut t = Timings {
            networks: a.networks_time,
            ..Timings::default()
        };
        let start = Instant::now();
        let (y_gained, z) = tch::no_grad(|| {
            let y = &a.y * channel_tensor(&self.gains(&self.gain, rate));
            let z = match &a.z {
                Some(z) => z.shallow_clone(),
                None => (self.net.hyper_analysis(&y)
                    * channel_tensor(&self.gains(&self.hyper_gain, rate)))
                .round(),
            };
            (y, z)
        });
        let (zh, zw) = (z.size()[2] as usize, z.size()[3] as usize);
        let z: Vec<i32> = Vec::<f32>::try_from(z.flatten(0, -1))?
            .iter()
            .map(|&v| v as i32)
            .collect();
        let y_gained = Vec::<f32>::try_from(y_gained.flatten(0, -1))?;
        t.networks += start.elapsed();

        // The latent's parameters and its coding are interleaved when the context model
        // is on (each pass's tables depend on the symbols before it): both count as
        // entropy parameters here.
        let start = Instant::now();
        let (latent_bytes, coded) = self.entropy_model.encode(
            &z,
            &self.gains(&self.inverse_hyper_gain, rate),
            (zh, zw),
            &y_gained,
        )?;
        let CodedLatent {
            symbols,
            params,
            indexes,
        } = coded;
        t.entropy_parameters = start.elapsed();

        let start = Instant::now();
        let hyper_indexes = self.hyper_indexes(zh, zw);
        let hyper_bytes = mirage_entropy::encode(&z, &hyper_indexes, &self.hyper_tables)?;
        let container = Container {
            header: Header {
                model_id: self.id,
                width: a.width,
                height: a.height,
                rate,
                realism: None,
                decoder: 0,
            },
            sections: vec![hyper_bytes, latent_bytes],
        };
        let bytes = mirage_format::write(&container)?;
        t.entropy_coding = start.elapsed();

        let hyper_bits = estimate_table_bits(&z, &hyper_indexes, &self.hyper_tables);
        let estimated_payload_bits = self.estimate_latent_bits(&symbols, &params) + hyper_bits;
        let table_payload_bits =
            hyper_bits + estimate_table_bits(&symbols, &indexes, gaussian::gaussian_tables());
        let report = EncodeReport {
            rate,
            bytes: bytes.len(),
            header_bytes: mirage_format::header_size(2),
            estimated_payload_bits,
            table_payload_bits,
            timings: t,
            scale_indexes: indexes,
        };
        Ok((bytes, report))
    }

    fn estimate_latent_bits(&self, symbols: &[i32], p: &EntropyParameters) -> f64 {
        tch::no_grad(|| {
            let mean = Tensor::from_slice(&p.means);
            let y_hat = Tensor::from_slice(symbols).to_kind(Kind::Float) + &mean;
            let lik = gaussian_likelihood(&y_hat, &Tensor::from_slice(&p.scales), &mean);
            -lik.log2().sum(Kind::Double).double_value(&[])
        })
    }

    /// Compresses at a rate target; returns the file and its report.
    pub fn compress(&self, img: &RgbImage, target: RateTarget) -> Result<(Vec<u8>, EncodeReport)> {
        let a = self.analyse(img)?;
        let pixels = img.width() as f64 * img.height() as f64;
        let max_bytes = match target {
            RateTarget::Quality(q) => {
                if !(0.0..=100.0).contains(&q) {
                    return Err(MirageError::BadParameter(format!(
                        "quality {q} is outside 0..100"
                    )));
                }
                let rate = (q / 100.0 * RATE_MAX as f64).round() as u16;
                return self.encode_analysis(&a, rate);
            }
            RateTarget::Bpp(b) if b.is_finite() && b > 0.0 => (b * pixels / 8.0).floor() as usize,
            RateTarget::Bytes(n) if n > 0 => n,
            _ => {
                return Err(MirageError::BadParameter(format!(
                    "{target:?} must be positive"
                )))
            }
        };
        let describe = || match target {
            RateTarget::Bpp(b) => format!("{b} bpp"),
            _ => format!("{max_bytes} bytes"),
        };
        // Bisection over the continuous rate setting for the largest file that fits:
        // file size grows with the rate setting.
        let (mut best, report) = self.encode_analysis(&a, 0)?;
        if best.len() > max_bytes {
            return Err(MirageError::TargetUnreachable {
                target: describe(),
                smallest: best.len(),
                smallest_bpp: best.len() as f64 * 8.0 / pixels,
            });
        }
        let mut best_report = report;
        let (mut lo, mut hi) = (0u16, RATE_MAX);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let (bytes, report) = self.encode_analysis(&a, mid)?;
            if bytes.len() <= max_bytes {
                (best, best_report, lo) = (bytes, report, mid);
            } else {
                hi = mid - 1;
            }
        }
        Ok((best, best_report))
    }

    /// Reads and checks a container: right model, decoder and sections, sane size.
    fn open(&self, bytes: &[u8]) -> Result<Container> {
        let c = mirage_format::read(bytes)?;
        let h = &c.header;
        if h.model_id != self.id {
            return Err(MirageError::WrongModel {
                file: id_hex(&h.model_id),
                loaded: id_hex(&self.id),
                hint: bundled_model_hint(&h.model_id),
            });
        }
        if h.decoder != 0 {
            return Err(MirageError::UnsupportedDecoder(h.decoder));
        }
        if !(2..=3).contains(&c.sections.len()) {
            return Err(MirageError::BadSections(c.sections.len()));
        }
        check_size(h.width, h.height)?;
        realism_map(&c)?;
        Ok(c)
    }

    /// Decodes section 0, the hyper-latent, and returns it with its height and width.
    fn decode_hyper_latent(&self, c: &Container) -> Result<(Vec<i32>, usize, usize)> {
        let (zh, zw) = (
            padded(c.header.height) / STRIDE,
            padded(c.header.width) / STRIDE,
        );
        let z = mirage_entropy::decode(
            &c.sections[HYPER_SECTION],
            &self.hyper_indexes(zh, zw),
            &self.hyper_tables,
        )?;
        Ok((z, zh, zw))
    }

    /// The decoder's path to the latent's table indexes (without decoding the latent).
    pub fn scale_indexes(&self, bytes: &[u8]) -> Result<Vec<usize>> {
        let c = self.open(bytes)?;
        let (z, zh, zw) = self.decode_hyper_latent(&c)?;
        Ok(self.decode_latent(&c, &z, zh, zw)?.indexes)
    }

    /// The entropy-decoded integers of both sections (hyper-latent, latent): what the
    /// bitstream means, independent of any floating-point network.
    pub fn decode_symbols(&self, bytes: &[u8]) -> Result<(Vec<i32>, Vec<i32>)> {
        let c = self.open(bytes)?;
        let (z, zh, zw) = self.decode_hyper_latent(&c)?;
        let y = self.decode_latent(&c, &z, zh, zw)?.symbols;
        Ok((z, y))
    }

    /// Decompresses a `.mrg` file with the realism it suggests (see [`Realism::Auto`]).
    pub fn decompress(&self, bytes: &[u8]) -> Result<(RgbImage, Timings)> {
        self.decompress_with(bytes, Realism::Auto)
    }

    /// The hallucination weight a decode will use: the one asked for, else the
    /// file's suggestion (the mean of its map, if it has one), else
    /// [`DEFAULT_REALISM`].
    pub fn resolve_realism(&self, bytes: &[u8], realism: Realism) -> Result<f32> {
        match realism {
            Realism::Weight(w) => check_weight(w),
            Realism::Auto => Ok(mirage_format::read(bytes)?
                .header
                .realism
                .map_or(DEFAULT_REALISM, |v| v as f32 / 255.0)),
        }
    }

    /// Decompresses a `.mrg` file at a chosen hallucination weight: the same bitstream
    /// gives the fidelity decode at `w = 0` and full realism at `w = 1`. With
    /// [`Realism::Auto`], a file that carries a realism map is decoded region by
    /// region with the map's weights.
    pub fn decompress_with(&self, bytes: &[u8], realism: Realism) -> Result<(RgbImage, Timings)> {
        let mut t = Timings::default();
        let start = Instant::now();
        let c = self.open(bytes)?;
        let h = &c.header;
        let weights = match (realism, realism_map(&c)?) {
            (Realism::Auto, Some(map)) => Weights::Map(map),
            _ => Weights::Uniform(self.resolve_realism(bytes, realism)?),
        };
        let generator = match (&self.realism, weights.any()) {
            (_, false) => None,
            (Some(r), true) => Some((&r.generator, &weights)),
            (None, true) => {
                return Err(MirageError::BadParameter(
                    "this realism needs a realism generator trained for this core (the bundled one, models/v1/realism.safetensors, belongs to the v1 core: use --model models/v1/hyperprior.safetensors)".into(),
                ))
            }
        };
        let (z, zh, zw) = self.decode_hyper_latent(&c)?;
        t.entropy_coding = start.elapsed();

        // Parameters and rANS decoding interleave (see `encode_analysis`).
        let start = Instant::now();
        let CodedLatent {
            symbols, params, ..
        } = self.decode_latent(&c, &z, zh, zw)?;
        t.entropy_parameters = start.elapsed();

        let start = Instant::now();
        let (yh, yw) = (params.height, params.width);
        let inverse_gain = self.gains(&self.inverse_gain, h.rate);
        let y_hat: Vec<f32> = symbols
            .iter()
            .zip(&params.means)
            .enumerate()
            .map(|(i, (&s, &mu))| (s as f32 + mu) * inverse_gain[i / (yh * yw)])
            .collect();
        let img = self.synthesize(&y_hat, yh, yw, h.width, h.height, generator)?;
        t.networks = start.elapsed();
        Ok((img, t))
    }
}

/// The synthesis runs on fixed tiles of the latent, each with single-threaded libtorch,
/// so that every output pixel is computed by the same kernels in the same order
/// whatever the thread count (libtorch's own multi-threading splits convolution sums
/// differently for 1 and 2 threads, which changes the decoded pixels). Tiles also bound
/// the decoder's memory. Core tiles are `TILE_ROWS × TILE_COLS` latent positions
/// (512 × 384 pixels) with `TILE_MARGIN` positions of context on each side: the
/// synthesis' receptive field reaches about 2 latent positions, so the margin makes
/// the tiles seamless (`tests::tiles_are_seamless` compares with an untiled decode).
/// The realism generator adds ten 3×3 convolutions at 1/4 resolution (2.5 latent
/// positions) to that reach, so it gets a wider margin.
const TILE_ROWS: usize = 32;
const TILE_COLS: usize = 24;
const TILE_MARGIN: usize = 4;
const REALISM_TILE_MARGIN: usize = 6;
const LATENT_STRIDE: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Tile {
    /// The core region, in latent positions.
    core: [usize; 4],
    /// The core plus context, in latent positions: y0, y1, x0, x1.
    padded: [usize; 4],
}

fn tiles(yh: usize, yw: usize, margin: usize) -> Vec<Tile> {
    let mut out = vec![];
    for y0 in (0..yh).step_by(TILE_ROWS) {
        for x0 in (0..yw).step_by(TILE_COLS) {
            let (y1, x1) = ((y0 + TILE_ROWS).min(yh), (x0 + TILE_COLS).min(yw));
            out.push(Tile {
                core: [y0, y1, x0, x1],
                padded: [
                    y0.saturating_sub(margin),
                    (y1 + margin).min(yh),
                    x0.saturating_sub(margin),
                    (x1 + margin).min(yw),
                ],
            });
        }
    }
    out
}

impl Codec {
    /// Latent (channel-first, inverse gain applied) → cropped 8-bit image.
    fn synthesize(
        &self,
        y_hat: &[f32],
        yh: usize,
        yw: usize,
        width: u32,
        height: u32,
        realism: Option<(&RealismGenerator, &Weights)>,
    ) -> Result<RgbImage> {
        let m = self.entropy_model.latent_channels();
        let margin = if realism.is_some() {
            REALISM_TILE_MARGIN
        } else {
            TILE_MARGIN
        };
        let tiles = tiles(yh, yw, margin);
        let workers = (tch::get_num_threads().max(1) as usize).min(tiles.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(vec![]);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let net = self.net.synthesis.replica();
                let realism = realism.map(|(g, weights)| (g.replica(), weights));
                let (tiles, next, done) = (&tiles, &next, &done);
                scope.spawn(move || {
                    // OpenMP's thread count is per OS thread: pin this worker's to one.
                    tch::set_num_threads(1);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(tile) = tiles.get(i) else { break };
                        let realism = realism.as_ref().map(|(g, weights)| (g, *weights));
                        let result = synthesize_tile(&net, realism, y_hat, m, yh, yw, tile);
                        done.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((i, result));
                    }
                });
            }
        });
        let mut img = RgbImage::new(width, height);
        for (i, result) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
            let [y0, y1, x0, x1] = tiles[i].core;
            let (th, tw) = ((y1 - y0) * LATENT_STRIDE, (x1 - x0) * LATENT_STRIDE);
            let pixels = result?;
            for y in 0..th {
                let py = y0 * LATENT_STRIDE + y;
                if py >= height as usize {
                    break;
                }
                for x in 0..tw {
                    let px = x0 * LATENT_STRIDE + x;
                    if px >= width as usize {
                        break;
                    }
                    let p = img.get_pixel_mut(px as u32, py as u32);
                    for c in 0..3 {
                        let v = pixels[(c * th + y) * tw + x];
                        p[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
        Ok(img)
    }
}

/// One tile's core, `[3][th][tw]` floats, synthesized from the tile plus its margin.
fn synthesize_tile(
    net: &crate::model::Synthesis,
    realism: Option<(&RealismGenerator, &Weights)>,
    y_hat: &[f32],
    m: usize,
    yh: usize,
    yw: usize,
    tile: &Tile,
) -> Result<Vec<f32>> {
    let [py0, py1, px0, px1] = tile.padded;
    let [y0, y1, x0, x1] = tile.core;
    let (h, w) = (py1 - py0, px1 - px0);
    let mut part = Vec::with_capacity(m * h * w);
    for c in 0..m {
        for y in py0..py1 {
            part.extend_from_slice(&y_hat[(c * yh + y) * yw + px0..(c * yh + y) * yw + px1]);
        }
    }
    let out = tch::no_grad(|| {
        let y = Tensor::from_slice(&part).view([1, m as i64, h as i64, w as i64]);
        let s = LATENT_STRIDE as i64;
        let x = match realism {
            None => net.forward(&y),
            Some((generator, Weights::Uniform(w))) => {
                let (x_mse, features) = net.forward_with_features(&y);
                generator.forward(&x_mse, &features, &Tensor::from_slice(&[*w]))
            }
            Some((generator, Weights::Map(map))) => {
                let (x_mse, features) = net.forward_with_features(&y);
                // The map's weights for exactly this tile's pixels (margin included),
                // computed from the global grid, so tiles agree where they overlap.
                let (x0, y0) = ((px0 * LATENT_STRIDE) as u32, (py0 * LATENT_STRIDE) as u32);
                let (tw, th) = ((w * LATENT_STRIDE) as i64, (h * LATENT_STRIDE) as i64);
                let weights = map.weights(x0, y0, tw as u32, th as u32);
                let weights = Tensor::from_slice(&weights).view([1, 1, th, tw]);
                generator.forward_map(&x_mse, &features, &weights)
            }
        };
        x.narrow(2, (y0 - py0) as i64 * s, (y1 - y0) as i64 * s)
            .narrow(3, (x0 - px0) as i64 * s, (x1 - x0) as i64 * s)
            .contiguous()
    });
    Ok(Vec::<f32>::try_from(out.flatten(0, -1))?)
}

/// The hallucination weights of a decode.
#[derive(Debug)]
enum Weights {
    Uniform(f32),
    Map(RealismMap),
}

impl Weights {
    /// Whether anything is hallucinated at all (else the plain synthesis runs).
    fn any(&self) -> bool {
        match self {
            Weights::Uniform(w) => *w > 0.0,
            Weights::Map(map) => map.levels.iter().any(|&l| l > 0),
        }
    }
}

/// The realism map of a container, if it has one (checked against the image size).
fn realism_map(c: &Container) -> Result<Option<RealismMap>> {
    c.sections
        .get(REALISM_MAP_SECTION)
        .map(|bytes| RealismMap::from_bytes(bytes, c.header.width, c.header.height))
        .transpose()
        .map_err(Into::into)
}

/// Adds a realism map to a file (replacing any it had), with its mean weight as the
/// header's one-number suggestion. A uniform map is stored as the header weight
/// alone: the same decode, without the section.
pub fn attach_realism_map(bytes: &[u8], map: &RealismMap) -> Result<Vec<u8>> {
    let mut c = mirage_format::read(bytes)?;
    let (cols, rows) = RealismMap::grid(c.header.width, c.header.height);
    if (map.cols, map.rows) != (cols, rows) {
        return Err(MirageError::BadParameter(format!(
            "a realism map of {}x{} cells does not fit a {}x{} image",
            map.cols, map.rows, c.header.width, c.header.height
        )));
    }
    c.sections.truncate(REALISM_MAP_SECTION);
    match map.uniform() {
        Some(level) => {
            c.header.realism = Some((RealismMap::weight(level) * 255.0).round() as u8);
        }
        None => {
            c.header.realism = Some((map.mean_weight() * 255.0).round() as u8);
            c.sections.push(map.to_bytes()?);
        }
    }
    Ok(mirage_format::write(&c)?)
}

/// Bytes a realism map can add to a file of this size (section and its length field):
/// what a rate target must leave free for it.
pub fn realism_map_budget(width: u32, height: u32) -> usize {
    let (cols, rows) = RealismMap::grid(width, height);
    1 + (cols as usize * rows as usize).div_ceil(4) + 4
}

/// Bits of symbols under integer tables (the ideal code length the rANS approaches).
fn estimate_table_bits(symbols: &[i32], indexes: &[usize], tables: &[CdfTable]) -> f64 {
    let total = (1u64 << mirage_entropy::PRECISION) as f64;
    symbols
        .iter()
        .zip(indexes)
        .map(|(&s, &i)| {
            let t = &tables[i];
            let cdf = t.cdf();
            let slot = (s as i64 - t.offset() as i64).clamp(0, cdf.len() as i64 - 2) as usize;
            let freq = (cdf[slot + 1] - cdf[slot]) as f64;
            -(freq / total).log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_latent_once() {
        for (yh, yw) in [(1, 1), (32, 48), (48, 32), (70, 25)] {
            let mut seen = vec![0; yh * yw];
            for t in tiles(yh, yw, TILE_MARGIN) {
                let [y0, y1, x0, x1] = t.core;
                for y in y0..y1 {
                    for x in x0..x1 {
                        seen[y * yw + x] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{yh}x{yw}");
        }
    }

    /// A 640×640 test image's file and its dequantized latent (40×40 positions, so
    /// that the tiles split it both ways).
    fn file_and_latent(codec: &Codec) -> (Vec<u8>, Tensor) {
        let img = RgbImage::from_fn(640, 640, |x, y| {
            image::Rgb([(x / 3) as u8, (y / 3) as u8, ((x ^ y) & 255) as u8])
        });
        let (bytes, _) = codec.compress(&img, RateTarget::Quality(40.0)).unwrap();
        let c = codec.open(&bytes).unwrap();
        let (z, _) = codec.decode_symbols(&bytes).unwrap();
        let CodedLatent {
            symbols: y, params, ..
        } = codec.decode_latent(&c, &z, 10, 10).unwrap();
        let gain = codec.gains(&codec.inverse_gain, c.header.rate);
        let y_hat: Vec<f32> = y
            .iter()
            .zip(&params.means)
            .enumerate()
            .map(|(i, (&s, &mu))| (s as f32 + mu) * gain[i / 1600])
            .collect();
        let m = codec.entropy_model.latent_channels() as i64;
        (bytes, Tensor::from_slice(&y_hat).view([1, m, 40, 40]))
    }

    fn worst_difference(a: &RgbImage, b: &RgbImage) -> i32 {
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap()
    }

    /// The tiled decode agrees with one whole-image synthesis up to float rounding:
    /// the margins hold the whole receptive field, so no seam can appear.
    #[test]
    fn tiles_are_seamless() {
        let codec = Codec::load_default().unwrap();
        let (bytes, y_hat) = file_and_latent(&codec);
        let (tiled, _) = codec.decompress_with(&bytes, Realism::Weight(0.0)).unwrap();
        let whole = tch::no_grad(|| codec.net.synthesis(&y_hat).clamp(0.0, 1.0));
        let whole = crate::image_io::from_tensor(&whole).unwrap();
        // Different convolution blockings round differently: at most one 8-bit level.
        assert!(worst_difference(&tiled, &whole) <= 1);
    }

    /// The same for the realism generator, whose margin is wider.
    #[test]
    fn realism_tiles_are_seamless() {
        let codec = Codec::load_default().unwrap();
        let generator = &codec.realism.as_ref().expect("bundled").generator;
        let (bytes, y_hat) = file_and_latent(&codec);
        let (tiled, _) = codec.decompress_with(&bytes, Realism::Weight(1.0)).unwrap();
        let whole = tch::no_grad(|| {
            let (x, features) = codec.net.synthesis.forward_with_features(&y_hat);
            generator
                .forward(&x, &features, &Tensor::from_slice(&[1f32]))
                .clamp(0.0, 1.0)
        });
        let whole = crate::image_io::from_tensor(&whole).unwrap();
        assert!(worst_difference(&tiled, &whole) <= 1);
    }

    /// A 640×640 map with every level, in a pattern that differs across tile borders.
    fn test_map() -> RealismMap {
        let levels = (0..100).map(|i| ((i / 3 + i / 20) % 4) as u8).collect();
        RealismMap {
            cols: 10,
            rows: 10,
            levels,
        }
    }

    /// Per-region decodes are as seamless as uniform ones: the tiled decode of a file
    /// with a map matches the generator run once on the whole latent with the map's
    /// weights for every pixel.
    #[test]
    fn realism_map_tiles_are_seamless() {
        let codec = Codec::load_default().unwrap();
        let generator = &codec.realism.as_ref().expect("bundled").generator;
        let (bytes, y_hat) = file_and_latent(&codec);
        let map = test_map();
        let with_map = attach_realism_map(&bytes, &map).unwrap();
        let (tiled, _) = codec.decompress_with(&with_map, Realism::Auto).unwrap();
        let whole = tch::no_grad(|| {
            let (x, features) = codec.net.synthesis.forward_with_features(&y_hat);
            let w = Tensor::from_slice(&map.weights(0, 0, 640, 640)).view([1, 1, 640, 640]);
            generator.forward_map(&x, &features, &w).clamp(0.0, 1.0)
        });
        let whole = crate::image_io::from_tensor(&whole).unwrap();
        assert!(worst_difference(&tiled, &whole) <= 1);
        // An explicit weight overrides the map; the map changes the decode.
        let (zero, _) = codec
            .decompress_with(&with_map, Realism::Weight(0.0))
            .unwrap();
        let (plain, _) = codec.decompress_with(&bytes, Realism::Weight(0.0)).unwrap();
        assert_eq!(worst_difference(&zero, &plain), 0);
        assert!(worst_difference(&tiled, &plain) > 8);
    }

    /// A constant map decodes like the same uniform weight (FiLM per position equals
    /// FiLM per image), and is stored as a header weight without a section.
    #[test]
    fn a_uniform_map_is_a_header_weight() {
        let codec = Codec::load_default().unwrap();
        let (bytes, _) = file_and_latent(&codec);
        let map = RealismMap {
            cols: 10,
            rows: 10,
            levels: vec![2; 100],
        };
        let uniform = attach_realism_map(&bytes, &map).unwrap();
        assert_eq!(mirage_format::read(&uniform).unwrap().sections.len(), 2);
        let w = RealismMap::weight(2);
        let (a, _) = codec.decompress_with(&uniform, Realism::Auto).unwrap();
        let (b, _) = codec.decompress_with(&bytes, Realism::Weight(w)).unwrap();
        assert!(worst_difference(&a, &b) <= 1);
        // The same weights through the map path.
        let c = codec.open(&bytes).unwrap();
        assert_eq!(c.sections.len(), 2);
        let mut varied = test_map();
        varied.levels.iter_mut().for_each(|l| *l = 2);
        varied.levels[0] = 1;
        let with_map = attach_realism_map(&bytes, &varied).unwrap();
        assert_eq!(mirage_format::read(&with_map).unwrap().sections.len(), 3);
        let (d, _) = codec.decompress_with(&with_map, Realism::Auto).unwrap();
        // Far from the changed cell the decode is the uniform one.
        let far = |img: &RgbImage| image::imageops::crop_imm(img, 320, 320, 320, 320).to_image();
        assert!(worst_difference(&far(&d), &far(&a)) <= 1);
    }

    #[test]
    fn a_bad_realism_map_is_an_error() {
        let codec = Codec::load_default().unwrap();
        let (bytes, _) = file_and_latent(&codec);
        let wrong_grid = RealismMap {
            cols: 3,
            rows: 3,
            levels: vec![1; 9],
        };
        assert!(attach_realism_map(&bytes, &wrong_grid).is_err());
        // A map section of the wrong length, written past the codec's own checks.
        let mut c = mirage_format::read(&bytes).unwrap();
        c.sections.push(vec![6, 0, 0]);
        let corrupt = mirage_format::write(&c).unwrap();
        let err = codec.decompress(&corrupt).unwrap_err().to_string();
        assert!(err.contains("realism map"), "{err}");
        c.sections.push(vec![0]);
        let four = mirage_format::write(&c).unwrap();
        assert!(codec.decompress(&four).is_err());
    }
}
