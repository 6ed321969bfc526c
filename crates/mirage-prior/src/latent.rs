//! How the latent is coded: which Gaussian table codes each element, and the rANS
//! stream that holds them. The tables follow from the hyper-synthesis alone (the plain
//! mean-scale hyperprior) or from the hyper-synthesis corrected by the spatial–channel
//! context model, pass by pass. Encoding and decoding sit side by side and walk the
//! same deterministic path; only integers and table indexes reach the rANS coder.
//!
//! This is the whole of a file's symbol decoding that is not the container: it needs
//! no libtorch, so it can be fuzzed and runs the same on every machine.

use crate::context::{ContextModel, Pass};
use crate::{EntropyParameters, HyperSynthesis, ShapeError};
use mirage_entropy::{gaussian, EntropyError, StreamDecoder};

/// Why a latent could not be coded or decoded.
#[derive(Debug)]
pub enum LatentError {
    /// The sizes of the model, the hyper-latent and the latent disagree.
    Shape(ShapeError),
    /// The rANS stream is invalid (truncated, corrupted, or longer than its symbols).
    Entropy(EntropyError),
}

impl std::fmt::Display for LatentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LatentError::Shape(e) => e.fmt(f),
            LatentError::Entropy(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LatentError {}

impl From<ShapeError> for LatentError {
    fn from(e: ShapeError) -> Self {
        LatentError::Shape(e)
    }
}

impl From<EntropyError> for LatentError {
    fn from(e: EntropyError) -> Self {
        LatentError::Entropy(e)
    }
}

/// The deterministic networks that choose the latent's tables.
pub struct EntropyModel {
    pub hyper_synthesis: HyperSynthesis,
    pub context: Option<ContextModel>,
}

/// The coded latent: symbols and the parameters that coded them, channel-first.
pub struct CodedLatent {
    pub symbols: Vec<i32>,
    pub params: EntropyParameters,
    /// The table of every element, channel-first (for checks and bit estimates).
    pub indexes: Vec<usize>,
}

impl EntropyModel {
    pub fn latent_channels(&self) -> usize {
        self.hyper_synthesis.latent_channels
    }

    /// Quantizes the gain-scaled latent `y` (channel-first) and codes it; returns the
    /// latent section and what was coded.
    pub fn encode(
        &self,
        z: &[i32],
        inverse_hyper_gain: &[f32],
        (zh, zw): (usize, usize),
        y: &[f32],
    ) -> Result<(Vec<u8>, CodedLatent), LatentError> {
        let (coded, order) = match &self.context {
            None => {
                let params = self.hyper_synthesis.run(z, inverse_hyper_gain, zh, zw)?;
                let symbols: Vec<i32> = y
                    .iter()
                    .zip(&params.means)
                    .map(|(&y, &mu)| (y - mu).round() as i32)
                    .collect();
                (with_indexes(symbols, params), None)
            }
            Some(context) => {
                let hyper = self
                    .hyper_synthesis
                    .features(z, inverse_hyper_gain, zh, zw)?;
                let (h, w) = (hyper.height, hyper.width);
                let hw = h * w;
                if y.len() != context.latent_channels() * hw {
                    return Err(ShapeError("latent size mismatch".into()).into());
                }
                // The stream holds the passes in order; within a pass, position-major.
                let (mut symbols, mut indexes) = (vec![], vec![]);
                let out = context.run::<LatentError>(&hyper, |pass: &Pass| {
                    let n = pass.channels.len();
                    let mut s = Vec::with_capacity(pass.scales.len());
                    for (i, &p) in pass.positions.iter().enumerate() {
                        for (c, ch) in pass.channels.clone().enumerate() {
                            let e = i * n + c;
                            s.push((y[ch * hw + p] - pass.means[e]).round() as i32);
                            indexes.push(gaussian::scale_index(pass.scales[e]));
                        }
                    }
                    symbols.extend_from_slice(&s);
                    Ok(s)
                })?;
                let params = EntropyParameters {
                    scales: out.scales,
                    means: out.means,
                    height: h,
                    width: w,
                };
                (with_indexes(out.symbols, params), Some((symbols, indexes)))
            }
        };
        let bytes = match &order {
            None => {
                mirage_entropy::encode(&coded.symbols, &coded.indexes, gaussian::gaussian_tables())?
            }
            Some((symbols, indexes)) => {
                mirage_entropy::encode(symbols, indexes, gaussian::gaussian_tables())?
            }
        };
        Ok((bytes, coded))
    }

    /// Decodes the latent section.
    pub fn decode(
        &self,
        z: &[i32],
        inverse_hyper_gain: &[f32],
        (zh, zw): (usize, usize),
        section: &[u8],
    ) -> Result<CodedLatent, LatentError> {
        match &self.context {
            None => {
                let params = self.hyper_synthesis.run(z, inverse_hyper_gain, zh, zw)?;
                let indexes: Vec<usize> = params
                    .scales
                    .iter()
                    .map(|&s| gaussian::scale_index(s))
                    .collect();
                let symbols =
                    mirage_entropy::decode(section, &indexes, gaussian::gaussian_tables())?;
                Ok(CodedLatent {
                    symbols,
                    params,
                    indexes,
                })
            }
            Some(context) => {
                let hyper = self
                    .hyper_synthesis
                    .features(z, inverse_hyper_gain, zh, zw)?;
                let mut stream = StreamDecoder::new(section)?;
                let out = context.run::<LatentError>(&hyper, |pass: &Pass| {
                    let indexes: Vec<usize> = pass
                        .scales
                        .iter()
                        .map(|&s| gaussian::scale_index(s))
                        .collect();
                    Ok(stream.decode(&indexes, gaussian::gaussian_tables())?)
                })?;
                stream.finish()?;
                let params = EntropyParameters {
                    scales: out.scales,
                    means: out.means,
                    height: hyper.height,
                    width: hyper.width,
                };
                Ok(with_indexes(out.symbols, params))
            }
        }
    }
}

fn with_indexes(symbols: Vec<i32>, params: EntropyParameters) -> CodedLatent {
    let indexes = params
        .scales
        .iter()
        .map(|&s| gaussian::scale_index(s))
        .collect();
    CodedLatent {
        symbols,
        params,
        indexes,
    }
}
