//! "Which network turns a file's latent into pixels?" One bitstream, several decoders,
//! chosen by the caller for each decode as a [`Decoder`] value:
//! - [`Decoder::Mse`]: the core's own synthesis, the fidelity end;
//! - [`Decoder::Realism`]: the realism generator at a hallucination weight, or at the
//!   file's suggestion or per-region map (ConHa);
//! - [`Decoder::Flow`]: the MSE decode refined by the rectified flow.
//!
//! The generator and the flow refiner are model files of their own, each tied to the
//! core it was trained on; [`Codec::check_add_on`] refuses any other. The codec itself
//! holds no add-on: it decodes with what it is handed. [`AddOns`] is the convenience
//! that finds the bundled files that fit a core.

use crate::codec::{Codec, Timings, Weights};
use crate::conha::Predictor;
use crate::error::{MirageError, Result};
use crate::model::flow::FlowRefiner;
use crate::model::layers::ConvPrecision;
use crate::model::realism::RealismGenerator;
use crate::model_file::{
    id_hex, DecoderFile, FLOW_FORMAT_NAME, REALISM_FORMAT_NAME, ULTRALOW_FORMAT_NAME,
};
use std::path::Path;
use std::sync::OnceLock;
use tch::{nn::VarStore, Device};

use crate::codec::{bundled_realism_paths, flow_paths, predictor_paths, realism_paths};
use crate::layout::realism_map;
use crate::ultralow::{default_ultralow_path, is_ultralow, CaptionUse, UltralowCodec};
use image::RgbImage;
use std::time::Instant;

/// How much the realism decoder may hallucinate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Realism {
    /// The file's realism map if it has one, else its suggested weight, else
    /// [`DEFAULT_REALISM`].
    Auto,
    /// A hallucination weight in [0, 1]: 0 is the MSE (fidelity) decode, 1 full realism.
    Weight(f32),
}

/// The weight `Realism::Auto` uses for files without a suggestion: the fidelity
/// decode, so that nothing is invented unless the encoder or the user asked for it.
pub const DEFAULT_REALISM: f32 = 0.0;

/// The flow decoder's default source-noise temperature. At 1 (the training
/// distribution) the early bundled flow over-sharpens at 4 steps (Kodak, 0.1 bpp:
/// −2.5 dB, detail ratio 1.46); at 0.6 it costs 1.0 dB and still brings the texture
/// statistics closer to the originals' (BENCHMARKS.md).
pub const DEFAULT_FLOW_TEMPERATURE: f32 = 0.6;

/// Step counts the flow decoder accepts.
pub const FLOW_STEPS: std::ops::RangeInclusive<usize> = 1..=16;

/// One decode's choice of decoder.
#[derive(Clone, Copy)]
pub enum Decoder<'a> {
    /// The core's synthesis: the fidelity (MSE) decode.
    Mse,
    /// The realism generator; `Realism::Weight(0.0)` (or `Auto` on a file that asks for
    /// nothing) gives the MSE decode.
    Realism(&'a RealismDecoder, Realism),
    /// The MSE decode refined by the rectified flow.
    Flow(&'a FlowDecoder, FlowSettings),
}

/// The flow decoder's sampling: Euler steps, noise seed and temperature. Same file and
/// settings, same pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowSettings {
    /// Euler steps, in [`FLOW_STEPS`].
    pub steps: usize,
    pub seed: u64,
    /// Scale of the source noise in [0, 1] (1 = the trained source distribution; lower
    /// trades invented detail for fidelity).
    pub temperature: f32,
}

impl Default for FlowSettings {
    fn default() -> Self {
        FlowSettings {
            steps: 4,
            seed: 0,
            temperature: DEFAULT_FLOW_TEMPERATURE,
        }
    }
}

impl FlowSettings {
    /// Refuses steps outside [`FLOW_STEPS`] and a temperature outside [0, 1].
    pub fn check(&self) -> Result<()> {
        if !FLOW_STEPS.contains(&self.steps) {
            return Err(MirageError::BadParameter(format!(
                "flow steps must be from {} to {}, not {}",
                FLOW_STEPS.start(),
                FLOW_STEPS.end(),
                self.steps
            )));
        }
        if !(0.0..=1.0).contains(&self.temperature) {
            return Err(MirageError::BadParameter(format!(
                "flow temperature must be from 0 to 1, not {}",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// The realism generator (HiFiC-style, conditioned on the weight), for one core.
pub struct RealismDecoder {
    _vs: VarStore,
    pub(crate) generator: RealismGenerator,
    /// The generator file's identifier.
    pub id: [u8; 8],
}

impl RealismDecoder {
    /// Loads a realism generator; it must have been trained on `codec`'s core.
    pub fn load(path: &Path, codec: &Codec) -> Result<RealismDecoder> {
        let file = DecoderFile::load(path, REALISM_FORMAT_NAME)?;
        let config = file.realism_config()?;
        codec.check_add_on(&file, path)?;
        if config.feature_channels != codec.config().n {
            return Err(MirageError::InvalidModel {
                path: path.to_owned(),
                reason: "its feature width does not match the loaded model".into(),
            });
        }
        let vs = VarStore::new(Device::Cpu);
        let generator = RealismGenerator::new(&vs.root(), config, ConvPrecision::F32);
        file.fill(&vs)?;
        Ok(RealismDecoder {
            _vs: vs,
            generator,
            id: file.id,
        })
    }
}

/// The rectified-flow refiner (HFD-style), for one core's MSE decodes.
pub struct FlowDecoder {
    _vs: VarStore,
    pub(crate) flow: FlowRefiner,
}

impl FlowDecoder {
    /// Loads a flow refiner; it must have been trained on `codec`'s core.
    pub fn load(path: &Path, codec: &Codec) -> Result<FlowDecoder> {
        let file = DecoderFile::load(path, FLOW_FORMAT_NAME)?;
        codec.check_add_on(&file, path)?;
        let vs = VarStore::new(Device::Cpu);
        let flow = FlowRefiner::new(&vs.root(), file.flow_config()?, ConvPrecision::F32);
        file.fill(&vs)?;
        Ok(FlowDecoder { _vs: vs, flow })
    }
}

/// The bundled add-ons (realism generator, flow refiner, ConHa predictor, ultra-low
/// mode) that were trained for one core. Those made for another core are left out, and
/// asking for them is a clear error naming the core they need.
#[derive(Default)]
pub struct AddOns {
    pub realism: Option<RealismDecoder>,
    pub flow: Option<FlowDecoder>,
    pub predictor: Option<Predictor>,
    /// The ultra-low mode, loaded on first use: its model is large (and on a later core
    /// it brings its own core), while most files and commands never need it. Kept with
    /// the id of the core it was loaded for.
    ultralow: OnceLock<([u8; 8], Option<UltralowMode>)>,
}

/// The ultra-low mode with the realism generator it was trained with. It owns that
/// generator, so swapping [`AddOns::realism`] (`--realism-model`) leaves ultra-low
/// pixels alone.
struct UltralowMode {
    codec: UltralowCodec,
    generator: RealismDecoder,
}

/// The add-on at `path` if it fits the core (a missing file, or one made for another
/// core, is `None`; a damaged one is an error).
fn fitting<T>(path: &Path, load: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    match load(path) {
        Ok(v) => Ok(Some(v)),
        Err(MirageError::InvalidModel { ref reason, .. })
            if reason.contains("trained for model")
                || reason.contains("decodes with realism generator") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The first of `paths` made for this core.
fn first_fitting<T>(
    paths: Vec<std::path::PathBuf>,
    load: impl Fn(&Path) -> Result<T>,
) -> Result<Option<T>> {
    for path in paths {
        if let Some(found) = fitting(&path, &load)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Where to point a user whose core has no add-on of some kind.
const ADD_ONS_HINT: &str =
    "add-ons are bundled for Mirage's own cores: the current one, its kept releases and v1; another core needs its own (--realism-model, $MIRAGE_FLOW_MODEL, $MIRAGE_PREDICTOR_MODEL)";

impl AddOns {
    /// The bundled add-ons that fit `codec` (a missing file, or one made for another
    /// core, is left out; a damaged one is an error). The ultra-low mode is found,
    /// loaded and checked on the first [`AddOns::ultralow`] call instead; so it is for
    /// [`AddOns::default`], whose other add-ons are absent.
    pub fn bundled(codec: &Codec) -> Result<AddOns> {
        Ok(AddOns {
            realism: first_fitting(realism_paths(), |p| RealismDecoder::load(p, codec))?,
            flow: first_fitting(flow_paths(), |p| FlowDecoder::load(p, codec))?,
            predictor: first_fitting(predictor_paths(), |p| Predictor::load(p, codec))?,
            ultralow: OnceLock::new(),
        })
    }

    /// The ultra-low mode made for `codec` (the core these add-ons were found for),
    /// loaded on first use, or a clear error.
    pub fn ultralow(&self, codec: &Codec) -> Result<&UltralowCodec> {
        Ok(&self.ultralow_mode(codec)?.codec)
    }

    /// The realism generator the ultra-low mode decodes with, or a clear error.
    pub fn ultralow_realism(&self, codec: &Codec) -> Result<&RealismDecoder> {
        Ok(&self.ultralow_mode(codec)?.generator)
    }

    fn ultralow_mode(&self, codec: &Codec) -> Result<&UltralowMode> {
        if self.ultralow.get().is_none() {
            // A damaged file is an error each time it is asked for, not a cached absence.
            // (Two threads asking first would both load it; one copy is kept.)
            let _ = self
                .ultralow
                .set((codec.id(), UltralowMode::bundled(codec)?));
        }
        let (core, mode) = self.ultralow.get().expect("set above");
        if *core != codec.id() {
            return Err(MirageError::BadParameter(format!(
                "these add-ons were loaded for core {}, not {}",
                id_hex(core),
                id_hex(&codec.id())
            )));
        }
        mode.as_ref().ok_or_else(|| {
            MirageError::BadParameter(
                "the ultra-low mode needs models/ultralow.safetensors made for this core (or one whose add-ons it takes) and the bundled realism generator that file names".into(),
            )
        })
    }

    /// Decompresses a file of either mode with the decoder `realism` asks for (the
    /// core's synthesis or the realism generator); returns the caption of an
    /// ultra-low file that has one (which conditions the decode unless `caption` is
    /// `CaptionUse::Ignore`).
    pub fn decompress_any(
        &self,
        codec: &Codec,
        bytes: &[u8],
        realism: Realism,
        caption: CaptionUse,
    ) -> Result<(RgbImage, Timings, Option<String>)> {
        if is_ultralow(bytes)? {
            let mode = self.ultralow_mode(codec)?;
            let d = mode
                .codec
                .decompress(codec, &mode.generator, bytes, realism, caption)?;
            return Ok((d.image, d.timings, d.caption));
        }
        let (img, t) = self.decoder_for(bytes, realism)?.decompress(codec, bytes)?;
        Ok((img, t, None))
    }

    /// The realism generator, or a clear error.
    pub fn realism(&self) -> Result<&RealismDecoder> {
        self.realism.as_ref().ok_or_else(|| {
            MirageError::BadParameter(format!(
                "this realism needs a realism generator trained for this core ({ADD_ONS_HINT})"
            ))
        })
    }

    /// The flow refiner, or a clear error.
    pub fn flow(&self) -> Result<&FlowDecoder> {
        self.flow.as_ref().ok_or_else(|| {
            MirageError::BadParameter(format!(
                "the flow decoder needs a flow refiner trained for this core ({ADD_ONS_HINT})"
            ))
        })
    }

    /// The ConHa predictor, or a clear error.
    pub fn predictor(&self) -> Result<&Predictor> {
        self.predictor.as_ref().ok_or_else(|| {
            MirageError::BadParameter(format!(
                "realism `auto` or `fixed` needs a realism predictor trained for this core ({ADD_ONS_HINT})"
            ))
        })
    }

    /// The decoder for `realism` on this file: the MSE decode when the realism comes
    /// to nothing (weight 0, or `Auto` on a file that asks for nothing), else the
    /// realism generator, which must then be there.
    pub fn decoder_for(&self, bytes: &[u8], realism: Realism) -> Result<Decoder<'_>> {
        if !realism_weights(bytes, realism)?.any() {
            return Ok(Decoder::Mse);
        }
        Ok(Decoder::Realism(self.realism()?, realism))
    }
}

impl UltralowMode {
    /// The bundled ultra-low model made for `codec`, with the generator it names: found
    /// among `$MIRAGE_REALISM_MODEL` and the bundled generators (the current one, or the
    /// one kept beside its core since the main generator moved on).
    fn bundled(codec: &Codec) -> Result<Option<UltralowMode>> {
        let path = default_ultralow_path();
        if !path.exists() {
            return Ok(None);
        }
        let file = DecoderFile::load(&path, ULTRALOW_FORMAT_NAME)?;
        let wanted = file.text("generator").unwrap_or_default().to_owned();
        let mut candidates = realism_paths();
        for path in bundled_realism_paths() {
            if !candidates.contains(&path) {
                candidates.push(path);
            }
        }
        for generator_path in candidates {
            let Some(generator) = fitting(&generator_path, |p| RealismDecoder::load(p, codec))?
            else {
                continue;
            };
            if id_hex(&generator.id) == wanted {
                return Ok(fitting(&path, |p| {
                    UltralowCodec::from_file(file, p, codec, &generator)
                })?
                .map(|mode| UltralowMode {
                    codec: mode,
                    generator,
                }));
            }
        }
        Ok(None)
    }
}

impl Decoder<'_> {
    /// Decompresses a `.mrg` file with this decoder. The entropy decoding is the
    /// codec's, and the same for every decoder: only the synthesis differs.
    pub fn decompress(&self, codec: &Codec, bytes: &[u8]) -> Result<(RgbImage, Timings)> {
        match *self {
            Decoder::Mse => codec.decompress(bytes),
            Decoder::Realism(decoder, realism) => {
                let weights = realism_weights(bytes, realism)?;
                let latent = codec.decode_latent_values(bytes)?;
                let generator = weights.any().then_some((&decoder.generator, &weights));
                codec.synthesize_latent(&latent, generator)
            }
            Decoder::Flow(decoder, settings) => {
                settings.check()?;
                let (decoded, mut t) = codec.decompress(bytes)?;
                let start = Instant::now();
                let refined = crate::refinement::refine(
                    &decoder.flow,
                    &decoded,
                    settings.steps,
                    settings.seed,
                    settings.temperature,
                )?;
                t.networks += start.elapsed();
                Ok((refined, t))
            }
        }
    }
}

/// The weights a realism decode uses: the one asked for; with `Auto`, the file's map
/// if it has one, else its suggestion, else [`DEFAULT_REALISM`].
fn realism_weights(bytes: &[u8], realism: Realism) -> Result<Weights> {
    let c = mirage_format::read(bytes)?;
    Ok(match (realism, realism_map(&c)?) {
        (Realism::Auto, Some(map)) => Weights::Map(map),
        (Realism::Auto, None) => Weights::Uniform(
            c.header
                .realism
                .map_or(DEFAULT_REALISM, |v| v as f32 / 255.0),
        ),
        (Realism::Weight(w), _) => Weights::Uniform(check_weight(w)?),
    })
}

/// The single hallucination weight a decode uses (a map's cells may differ from it:
/// this is the map's mean, which the header stores as the file's suggestion).
pub fn resolve_realism(bytes: &[u8], realism: Realism) -> Result<f32> {
    match realism {
        Realism::Weight(w) => check_weight(w),
        Realism::Auto => Ok(mirage_format::read(bytes)?
            .header
            .realism
            .map_or(DEFAULT_REALISM, |v| v as f32 / 255.0)),
    }
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
