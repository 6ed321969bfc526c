//! The codec: `compress` and `decompress` side by side.
//!
//! The networks (libtorch) only compute the analysis, hyper-analysis and synthesis
//! transforms. Everything that decides *probabilities* — the hyper-latent's integer
//! tables, the hyper-synthesis that selects the latent's mean and scale, and the scale
//! index — runs in `mirage-prior` / `mirage-entropy`, in fixed-order arithmetic, so the
//! decoder rebuilds the encoder's tables bit for bit on any machine and thread count.
//! The encoder also decodes nothing twice: it codes the hyper-latent, then computes the
//! entropy parameters from the *quantized* hyper-latent exactly as the decoder will.

use crate::entropy_model::{self, CodedLatent, EntropyModel};
use crate::error::{MirageError, Result};
pub use crate::layout::{attach_realism_map, realism_map_budget, MAX_PIXELS, MAX_SIDE};
use crate::layout::{check_size, padded, realism_map, HYPER_SECTION, LATENT_SECTION, STRIDE};
use crate::model::realism::RealismGenerator;
use crate::model::{gaussian_likelihood, layers::ConvPrecision, Hyperprior, LEVELS};
use crate::model_file::{id_hex, DecoderFile, ModelFile};
use image::RgbImage;
use mirage_entropy::{gaussian, CdfTable};
use mirage_format::{Container, Header, RATE_MAX};
use mirage_prior::{interpolate_gain, EntropyParameters};
use std::path::Path;
use std::time::{Duration, Instant};
use tch::{nn::VarStore, Device, Kind, Tensor};
pub(crate) use tiles::Weights;
#[cfg(test)]
use tiles::{tiles, TILE_MARGIN};

mod paths;
mod tiles;
pub use paths::{
    bundled_core_path, bundled_realism_paths, default_flow_path, default_model_path,
    default_realism_path, earlier_model_paths, flow_paths, predictor_paths, realism_paths,
    v1_add_on_path, v1_model_path,
};
#[cfg(test)]
mod tests;

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
    takes_add_ons_of: Vec<[u8; 8]>,
    /// An earlier release kept without its encoder: it decodes, and refuses to encode.
    decode_only: bool,
}

fn channel_tensor(v: &[f32]) -> Tensor {
    Tensor::from_slice(v).view([1, v.len() as i64, 1, 1])
}

impl Codec {
    pub fn load(path: &Path) -> Result<Codec> {
        let file = ModelFile::load(path)?;
        let mut vs = VarStore::new(Device::Cpu);
        let net = Hyperprior::new(&vs.root(), file.config, ConvPrecision::F32);
        file.fill_for_decoding(&vs)?;
        // Inference only (the effort refinement differentiates the latent, not these).
        vs.freeze();
        let entropy_model = entropy_model::load(&file, path)?;
        let table = |name: &str| -> Result<Vec<f32>> { Ok(file.tensor(name)?.1.clone()) };
        let encoder_table = |name: &str| match file.decode_only {
            true => Ok(vec![]),
            false => table(name),
        };
        Ok(Codec {
            id: file.id,
            decode_only: file.decode_only,
            gain: encoder_table("gain")?,
            inverse_gain: table("inverse_gain")?,
            hyper_gain: encoder_table("hyper_gain")?,
            inverse_hyper_gain: table("inverse_hyper_gain")?,
            hyper_tables: file.hyper_tables,
            takes_add_ons_of: file.takes_add_ons_of,
            _vs: vs,
            net,
            entropy_model,
        })
    }

    /// The bundled core (or `$MIRAGE_MODEL`). Its decoder add-ons are loaded apart,
    /// by [`crate::decoders::AddOns::bundled`].
    pub fn load_default() -> Result<Codec> {
        Codec::load(&default_model_path())
    }

    /// Refuses an add-on file (realism generator, flow refiner, ConHa predictor) made
    /// for another core: the one place that ties add-ons to their core.
    pub(crate) fn check_add_on(&self, file: &DecoderFile, path: &Path) -> Result<()> {
        file.check_base(&self.id, &self.takes_add_ons_of, path)
    }

    /// The earlier cores whose add-ons this one takes (a release that continued their
    /// training, its add-ons measured on it and carried over).
    pub fn takes_add_ons_of(&self) -> &[[u8; 8]] {
        &self.takes_add_ons_of
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

    /// Whether this is an earlier release kept without its encoder
    /// ([`mirage_nn::model_file::decode_only`]).
    pub fn is_decode_only(&self) -> bool {
        self.decode_only
    }

    /// A clear error for encoding with a decode-only core.
    fn check_encoder(&self) -> Result<()> {
        if self.decode_only {
            return Err(MirageError::BadParameter(format!(
                "model {} is an earlier release kept decode-only, so that its files still decode; encode with the bundled core",
                id_hex(&self.id)
            )));
        }
        Ok(())
    }

    /// Runs the analysis transform once; see [`Codec::encode_analysis`].
    pub fn analyse(&self, img: &RgbImage) -> Result<Analysis> {
        self.check_encoder()?;
        check_size(img.width(), img.height())?;
        let start = Instant::now();
        let margin = tiles::analysis_margin(self.config().residual_blocks);
        let y = self.analysis_tiled(img, tiles::ANALYSIS_TILE, margin);
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
        Ok(self.entropy_model.decode(
            z,
            &self.gains(&self.inverse_hyper_gain, c.header.rate),
            (zh, zw),
            &c.sections[LATENT_SECTION],
        )?)
    }

    fn hyper_indexes(&self, zh: usize, zw: usize) -> Vec<usize> {
        (0..self.hyper_tables.len())
            .flat_map(|c| std::iter::repeat_n(c, zh * zw))
            .collect()
    }

    /// Codes an analysed image at one rate setting (0..=RATE_MAX).
    pub fn encode_analysis(&self, a: &Analysis, rate: u16) -> Result<(Vec<u8>, EncodeReport)> {
        self.check_encoder()?;
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
        self.compress_analysis(&self.analyse(img)?, target)
    }

    /// [`Codec::compress`] of an image already analysed (the effort encoder refines the
    /// same analysis afterwards).
    pub(crate) fn compress_analysis(
        &self,
        a: &Analysis,
        target: RateTarget,
    ) -> Result<(Vec<u8>, EncodeReport)> {
        let pixels = a.width as f64 * a.height as f64;
        let max_bytes = match target {
            RateTarget::Quality(q) => {
                if !(0.0..=100.0).contains(&q) {
                    return Err(MirageError::BadParameter(format!(
                        "quality {q} is outside 0..100"
                    )));
                }
                let rate = (q / 100.0 * RATE_MAX as f64).round() as u16;
                return self.encode_analysis(a, rate);
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
        let (mut best, report) = self.encode_analysis(a, 0)?;
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
            let (bytes, report) = self.encode_analysis(a, mid)?;
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
                hint: paths::bundled_model_hint(&h.model_id),
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

    /// Decompresses a `.mrg` file with the core's own synthesis: the fidelity (MSE)
    /// decode. The realism generator and the flow refiner decode the same files
    /// (`crate::decoders::Decoder`).
    pub fn decompress(&self, bytes: &[u8]) -> Result<(RgbImage, Timings)> {
        let latent = self.decode_latent_values(bytes)?;
        self.synthesize_latent(&latent, None)
    }

    /// Entropy-decodes a file into the latent's values: what every decoder starts from.
    pub(crate) fn decode_latent_values(&self, bytes: &[u8]) -> Result<DecodedLatent> {
        let mut timings = Timings::default();
        let start = Instant::now();
        let container = self.open(bytes)?;
        let (z, zh, zw) = self.decode_hyper_latent(&container)?;
        timings.entropy_coding = start.elapsed();

        // Parameters and rANS decoding interleave (see `encode_analysis`).
        let start = Instant::now();
        let CodedLatent {
            symbols, params, ..
        } = self.decode_latent(&container, &z, zh, zw)?;
        timings.entropy_parameters = start.elapsed();
        let (yh, yw) = (params.height, params.width);
        let inverse_gain = self.gains(&self.inverse_gain, container.header.rate);
        let y_hat: Vec<f32> = symbols
            .iter()
            .zip(&params.means)
            .enumerate()
            .map(|(i, (&s, &mu))| (s as f32 + mu) * inverse_gain[i / (yh * yw)])
            .collect();
        Ok(DecodedLatent {
            container,
            y_hat,
            height: yh,
            width: yw,
            timings,
        })
    }

    /// Turns a decoded latent into pixels: the core's synthesis, or with `realism`
    /// the realism generator at those weights.
    pub(crate) fn synthesize_latent(
        &self,
        latent: &DecodedLatent,
        realism: Option<(&RealismGenerator, &Weights)>,
    ) -> Result<(RgbImage, Timings)> {
        let mut t = latent.timings;
        let start = Instant::now();
        let h = &latent.container.header;
        let img = self.synthesize(
            &latent.y_hat,
            latent.height,
            latent.width,
            h.width,
            h.height,
            realism,
        )?;
        t.networks = start.elapsed();
        Ok((img, t))
    }
}

/// A file entropy-decoded into its latent's values (`Codec::decode_latent_values`).
pub(crate) struct DecodedLatent {
    /// The file's header and sections (its realism map, if any, is section 2).
    pub(crate) container: Container,
    pub(crate) y_hat: Vec<f32>,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) timings: Timings,
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
