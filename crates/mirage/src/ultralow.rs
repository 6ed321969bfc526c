//! The ultra-low-bitrate mode (PerCo): "how does an image become ~150 bytes and back?"
//!
//! `compress` runs the core's analysis, the grid encoder of one operating point and a
//! nearest-code search, and writes the indices with fixed-width codes (plus an optional
//! caption) into a `.mrg` container whose header says `decoder = 1`. `decompress`
//! reads the indices with nothing but their width, looks up the codes, predicts the
//! core's latent with the grid decoder (seeded noise) and draws the image with the
//! core's synthesis and the realism generator the model names (a bundled one) at the
//! file's weight (1 unless told otherwise). The network layers live in `mirage_nn::model::ultralow`.
//!
//! A caption, when the file has one and the model was trained with captions, is
//! embedded by the sentence encoder all-MiniLM-L6-v2 (`mirage_text`, loaded at the
//! first captioned decode) and conditions the grid decoder.

use crate::codec::{bundled_core_path, Codec, RateTarget, Timings, Weights};
use crate::decoders::{Realism, RealismDecoder};
use crate::error::{MirageError, Result};
use crate::layout::{check_size, padded, LATENT_STRIDE};
use crate::model::layers::ConvPrecision;
use crate::model::ultralow::{UltralowModel, CAPTION_ENCODER, NOISE_CHANNELS, POINTS};
use crate::model_file::{id_hex, parse_id, DecoderFile, READS_FILES_OF, ULTRALOW_FORMAT_NAME};
use image::RgbImage;
use mirage_format::ultralow::{
    compress_caption, decompress_caption, pack_indices, unpack_indices, CAPTION_SECTION,
    INDEX_SECTION, ULTRALOW_DECODER,
};
use mirage_format::{Container, Header};
use mirage_text::SentenceEncoder;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// The seed of the grid decoder's noise. Fixed, like the realism generator's: the
/// decode is a function of the file alone.
const NOISE_SEED: u64 = 0x5045_5243_4f00; // "PERCO"

/// The bundled ultra-low model (or `$MIRAGE_ULTRALOW_MODEL`).
pub fn default_ultralow_path() -> PathBuf {
    std::env::var_os("MIRAGE_ULTRALOW_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ultralow.safetensors")
        })
}

/// The number of operating points (`encode --mode ultralow --point N`).
pub const POINT_COUNT: usize = POINTS.len();

/// The ultra-low mode's networks, for one core and one realism generator.
pub struct UltralowCodec {
    _vs: VarStore,
    /// The core the model was trained with, when the loaded core is a later release
    /// that takes its add-ons (`None`: the loaded core is that core).
    own_core: Option<Codec>,
    model: UltralowModel,
    /// The model file's identifier: every file this mode writes carries it.
    pub id: [u8; 8],
    /// The realism generator it decodes with.
    generator: [u8; 8],
    /// Whether the grid decoder was trained with captions (else it ignores them and
    /// the sentence encoder is never loaded).
    pub reads_captions: bool,
    /// Earlier models (hex ids) whose files this one decodes: same grid encoders and
    /// codebooks, a newer grid decoder.
    reads_files_of: Vec<String>,
    text_encoder: OnceLock<SentenceEncoder>,
}

/// Whether a decode uses the file's caption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptionUse {
    /// As the file says: with its caption if it has one.
    FromFile,
    /// As if the file had none (the caption ablation; the caption is still returned).
    Ignore,
}

/// What the encoder knows about the file it wrote.
#[derive(Clone, Debug)]
pub struct UltralowReport {
    pub point: usize,
    pub bytes: usize,
    pub index_bytes: usize,
    pub caption_bytes: usize,
    pub cells: usize,
}

/// What a decode gives besides the pixels.
pub struct UltralowDecode {
    pub image: RgbImage,
    pub caption: Option<String>,
    pub timings: Timings,
}

/// Whether a file is an ultra-low-mode file (header `decoder` = 1).
pub fn is_ultralow(bytes: &[u8]) -> Result<bool> {
    Ok(mirage_format::read(bytes)?.header.decoder == ULTRALOW_DECODER)
}

impl UltralowCodec {
    /// The realism generator this model decodes with.
    pub fn generator_id(&self) -> [u8; 8] {
        self.generator
    }

    /// Loads the mode's model; it must have been made for `codec`'s core, or for an
    /// earlier core whose add-ons `codec` takes, and for `realism`'s generator.
    pub fn load(path: &Path, codec: &Codec, realism: &RealismDecoder) -> Result<UltralowCodec> {
        Self::from_file(
            DecoderFile::load(path, ULTRALOW_FORMAT_NAME)?,
            path,
            codec,
            realism,
        )
    }

    /// [`UltralowCodec::load`] of a file already read from `path`.
    pub fn from_file(
        file: DecoderFile,
        path: &Path,
        codec: &Codec,
        realism: &RealismDecoder,
    ) -> Result<UltralowCodec> {
        codec.check_add_on(&file, path)?;
        // Checked before the core below, which may mean hashing the bundled models.
        if file.text("generator") != Some(id_hex(&realism.id).as_str()) {
            return Err(MirageError::InvalidModel {
                path: path.to_owned(),
                reason: format!(
                    "it decodes with realism generator {}, but the loaded one is {}",
                    file.text("generator").unwrap_or("(none)"),
                    id_hex(&realism.id)
                ),
            });
        }
        // On a later core the mode keeps the core it was trained with: its grid
        // decoder predicts that core's latent, and its files must decode to the same
        // pixels whatever core the main mode ships.
        let own_core = if file.base_model == id_hex(&codec.id()) {
            None
        } else {
            let id = parse_id(&file.base_model).unwrap_or_default();
            let core = bundled_core_path(&id).ok_or_else(|| MirageError::InvalidModel {
                path: path.to_owned(),
                reason: format!(
                    "its core {} is not among the bundled models",
                    file.base_model
                ),
            })?;
            Some(Codec::load(&core)?)
        };
        let core = own_core.as_ref().unwrap_or(codec);
        let config = file.ultralow_config()?;
        if config.latent_channels != core.config().m {
            return Err(MirageError::InvalidModel {
                path: path.to_owned(),
                reason: "its latent width does not match the loaded core".into(),
            });
        }
        let vs = VarStore::new(Device::Cpu);
        let model = UltralowModel::new(&vs.root(), config, ConvPrecision::F32);
        file.fill(&vs)?;
        let mut generator = [0u8; 8];
        generator.copy_from_slice(&realism.id);
        let reads_captions = match file.text("caption_encoder") {
            None => false,
            Some(CAPTION_ENCODER) => true,
            Some(other) => {
                return Err(MirageError::InvalidModel {
                    path: path.to_owned(),
                    reason: format!(
                        "it reads captions with {other}; this Mirage has {CAPTION_ENCODER}"
                    ),
                })
            }
        };
        Ok(UltralowCodec {
            _vs: vs,
            own_core,
            model,
            id: file.id,
            generator,
            reads_captions,
            reads_files_of: file
                .text(READS_FILES_OF)
                .map(|ids| ids.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            text_encoder: OnceLock::new(),
        })
    }

    /// The earlier ultra-low models (hex ids) whose files this one decodes too.
    pub fn reads_files_of(&self) -> &[String] {
        &self.reads_files_of
    }

    /// The sentence vector of a caption, loading the encoder the first time.
    fn embed_caption(&self, text: &str) -> Result<Vec<f32>> {
        let encoder = match self.text_encoder.get() {
            Some(e) => e,
            None => {
                let dir = SentenceEncoder::default_dir();
                let e = SentenceEncoder::load(&dir).map_err(|e| MirageError::InvalidModel {
                    path: dir.clone(),
                    reason: format!("this file's caption needs the sentence encoder: {e}"),
                })?;
                let _ = self.text_encoder.set(e);
                self.text_encoder.get().expect("just set")
            }
        };
        Ok(encoder
            .embed(text)
            .map_err(|e| MirageError::BadParameter(format!("embedding the caption: {e}")))?
            .to_vec())
    }

    /// The grid of an operating point for an image: rows and columns of cells.
    fn grid(point: usize, width: u32, height: u32) -> (usize, usize) {
        let s = POINTS[point].stride;
        (padded(height) / s, padded(width) / s)
    }

    /// Compresses at one operating point (0 = lowest rate), with an optional caption.
    pub fn compress(
        &self,
        codec: &Codec,
        img: &RgbImage,
        point: usize,
        caption: Option<&str>,
    ) -> Result<(Vec<u8>, UltralowReport)> {
        self.compress_analysis(&self.core(codec).analyse(img)?, img, point, caption)
    }

    /// The core this model works through: its own when the loaded core is a later one.
    fn core<'a>(&'a self, loaded: &'a Codec) -> &'a Codec {
        self.own_core.as_ref().unwrap_or(loaded)
    }

    fn compress_analysis(
        &self,
        analysis: &crate::codec::Analysis,
        img: &RgbImage,
        point: usize,
        caption: Option<&str>,
    ) -> Result<(Vec<u8>, UltralowReport)> {
        let net = self.model.points.get(point).ok_or_else(|| {
            MirageError::BadParameter(format!(
                "ultra-low operating point {point} does not exist (0 to {})",
                POINT_COUNT - 1
            ))
        })?;
        let indices = tch::no_grad(|| {
            net.nearest(&net.encode(analysis.latent(), ConvPrecision::F32))
                .to_kind(Kind::Int64)
        });
        let indices: Vec<u32> = Vec::<i64>::try_from(indices.flatten(0, -1))?
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let (rows, cols) = Self::grid(point, img.width(), img.height());
        debug_assert_eq!(indices.len(), rows * cols);
        let index_section = pack_indices(&indices, net.point.index_bits());
        let mut sections = vec![index_section];
        if let Some(text) = caption {
            sections.push(compress_caption(text)?);
        }
        let (index_bytes, caption_bytes) = (
            sections[INDEX_SECTION].len(),
            sections.get(CAPTION_SECTION).map_or(0, Vec::len),
        );
        let container = Container {
            header: Header {
                model_id: self.id,
                width: img.width(),
                height: img.height(),
                rate: point as u16,
                // The mode's point is generated detail: decode at w = 1 unless told.
                realism: Some(255),
                decoder: ULTRALOW_DECODER,
            },
            sections,
        };
        let bytes = mirage_format::write(&container)?;
        let report = UltralowReport {
            point,
            bytes: bytes.len(),
            index_bytes,
            caption_bytes,
            cells: indices.len(),
        };
        Ok((bytes, report))
    }

    /// Compresses at the highest operating point whose file meets the target
    /// (quality 0–100 picks a point by thirds).
    pub fn compress_target(
        &self,
        codec: &Codec,
        img: &RgbImage,
        target: RateTarget,
        caption: Option<&str>,
    ) -> Result<(Vec<u8>, UltralowReport)> {
        let analysis = self.core(codec).analyse(img)?;
        let pixels = img.width() as f64 * img.height() as f64;
        let max_bytes = match target {
            RateTarget::Quality(q) if (0.0..=100.0).contains(&q) => {
                let point = ((q / 100.0 * POINT_COUNT as f64) as usize).min(POINT_COUNT - 1);
                return self.compress_analysis(&analysis, img, point, caption);
            }
            RateTarget::Bpp(b) if b.is_finite() && b > 0.0 => (b * pixels / 8.0).floor() as usize,
            RateTarget::Bytes(n) if n > 0 => n,
            _ => {
                return Err(MirageError::BadParameter(format!(
                    "{target:?} is not a valid rate target"
                )))
            }
        };
        let mut best = None;
        for point in 0..POINT_COUNT {
            let (bytes, report) = self.compress_analysis(&analysis, img, point, caption)?;
            if bytes.len() > max_bytes {
                if best.is_none() {
                    return Err(MirageError::TargetUnreachable {
                        target: match target {
                            RateTarget::Bpp(b) => format!("{b} bpp in the ultra-low mode"),
                            _ => format!("{max_bytes} bytes in the ultra-low mode"),
                        },
                        smallest: bytes.len(),
                        smallest_bpp: bytes.len() as f64 * 8.0 / pixels,
                    });
                }
                break;
            }
            best = Some((bytes, report));
        }
        Ok(best.expect("the first point fits or returned"))
    }

    /// Reads and checks an ultra-low file: this model, a known point, sane sections.
    fn open(&self, bytes: &[u8]) -> Result<(Container, Vec<u32>, Option<String>)> {
        let c = mirage_format::read(bytes)?;
        let h = &c.header;
        if h.decoder != ULTRALOW_DECODER {
            return Err(MirageError::BadParameter(
                "not an ultra-low-mode file (decode it with the core's decoders)".into(),
            ));
        }
        if h.model_id != self.id && !self.reads_files_of.contains(&id_hex(&h.model_id)) {
            return Err(MirageError::WrongModel {
                file: id_hex(&h.model_id),
                loaded: id_hex(&self.id),
                hint: " (the ultra-low model, models/ultralow.safetensors)".into(),
            });
        }
        check_size(h.width, h.height)?;
        let point = h.rate as usize;
        if point >= POINT_COUNT {
            return Err(MirageError::BadParameter(format!(
                "the file's operating point {point} does not exist in this model"
            )));
        }
        if !(1..=2).contains(&c.sections.len()) {
            return Err(MirageError::BadSections(c.sections.len()));
        }
        let (rows, cols) = Self::grid(point, h.width, h.height);
        let indices = unpack_indices(
            &c.sections[INDEX_SECTION],
            rows * cols,
            POINTS[point].index_bits(),
        )?;
        let caption = c
            .sections
            .get(CAPTION_SECTION)
            .map(|s| decompress_caption(s))
            .transpose()?;
        Ok((c, indices, caption))
    }

    /// Decompresses an ultra-low file: `Realism::Auto` decodes at the file's weight
    /// (1 as written by [`UltralowCodec::compress`]), `Weight(0)` is the core's
    /// synthesis of the predicted latent (blurry, the mode's fidelity end).
    pub fn decompress(
        &self,
        codec: &Codec,
        realism: &RealismDecoder,
        bytes: &[u8],
        weight: Realism,
        caption_use: CaptionUse,
    ) -> Result<UltralowDecode> {
        if realism.id != self.generator {
            return Err(MirageError::BadParameter(format!(
                "this ultra-low model decodes with realism generator {}, not {}",
                id_hex(&self.generator),
                id_hex(&realism.id)
            )));
        }
        let mut timings = Timings::default();
        let start = Instant::now();
        let (c, indices, caption) = self.open(bytes)?;
        timings.entropy_coding = start.elapsed();
        let w = crate::decoders::resolve_realism(bytes, weight)?;
        let h = &c.header;
        let point = h.rate as usize;
        let (rows, cols) = Self::grid(point, h.width, h.height);
        let f = POINTS[point].stride / LATENT_STRIDE;
        let (yh, yw) = (rows * f, cols * f);

        let start = Instant::now();
        let net = &self.model.points[point];
        let noise = crate::noise::seeded_normal(NOISE_CHANNELS as usize * yh * yw, NOISE_SEED);
        let embedding = match (&caption, caption_use) {
            (Some(text), CaptionUse::FromFile) if self.reads_captions => {
                Some(self.embed_caption(text)?)
            }
            _ => None,
        };
        // One thread, whatever the caller's count, so that the predicted latent (and
        // with it every pixel) is the same on every run and thread count. The grid is
        // small: a 12-megapixel image's takes well under a second.
        let threads = tch::get_num_threads();
        tch::set_num_threads(1);
        let y_hat = tch::no_grad(|| {
            let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
            let idx = Tensor::from_slice(&idx).view([1, rows as i64, cols as i64]);
            let noise = Tensor::from_slice(&noise).view([1, NOISE_CHANNELS, yh as i64, yw as i64]);
            let embedding = embedding
                .as_ref()
                .map(|e| Tensor::from_slice(e).view([1, -1]));
            let y = net.decode(
                &net.lookup(&idx),
                &noise,
                embedding.as_ref(),
                ConvPrecision::F32,
            );
            Vec::<f32>::try_from(y.flatten(0, -1))
        });
        tch::set_num_threads(threads);
        let y_hat = y_hat?;
        let generator = (w > 0.0).then_some((&realism.generator, Weights::Uniform(w)));
        let image = self.core(codec).synthesize(
            &y_hat,
            yh,
            yw,
            h.width,
            h.height,
            generator.as_ref().map(|(g, w)| (*g, w)),
        )?;
        timings.networks = start.elapsed();
        Ok(UltralowDecode {
            image,
            caption,
            timings,
        })
    }
}
