//! Conditional hallucination (ConHa) at the encoder: the realism predictor looks at
//! the image and writes a per-region realism map into the file, which `decode`
//! follows unless told otherwise (`--realism W`).
//!
//! The encoder side is [`Predictor::compress`]. The predictor
//! (`model::predictor`) is trained by `mirage train predictor`; what it
//! learned from is in docs/conha.md and its model card.

use crate::codec::{attach_realism_map, realism_map_budget, Codec, EncodeReport, RateTarget};
use crate::error::{MirageError, Result};
use crate::layout::padded_tensor;
use crate::model::predictor::RealismPredictor;
use crate::model_file::{DecoderFile, PREDICTOR_FORMAT_NAME};
use image::RgbImage;
use mirage_format::realism_map::{RealismMap, CELL, LEVELS};
use mirage_format::RATE_MAX;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Tensor};

/// The predictor bundled with the repository (or `$MIRAGE_PREDICTOR_MODEL`).
pub fn default_predictor_path() -> PathBuf {
    std::env::var_os("MIRAGE_PREDICTOR_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/v1/realism-predictor.safetensors")
        })
}

pub struct Predictor {
    _vs: VarStore,
    net: RealismPredictor,
    /// The best single level on the training labels ("ConHa-fixed").
    fixed_level: u8,
    pub id: [u8; 8],
}

impl Predictor {
    /// Loads a predictor; it must have been trained on `codec`'s core.
    pub fn load(path: &Path, codec: &Codec) -> Result<Predictor> {
        let file = DecoderFile::load(path, PREDICTOR_FORMAT_NAME)?;
        codec.check_add_on(&file, path)?;
        let fixed_level = file
            .text("fixed_level")
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|&l| l < LEVELS)
            .ok_or_else(|| MirageError::InvalidModel {
                path: path.to_owned(),
                reason: "metadata lacks a valid fixed_level".into(),
            })?;
        let vs = VarStore::new(Device::Cpu);
        let net = RealismPredictor::new(&vs.root());
        file.fill(&vs)?;
        Ok(Predictor {
            _vs: vs,
            net,
            fixed_level,
            id: file.id,
        })
    }

    /// Compresses at `target` and adds the realism map this predictor predicts. A size
    /// target keeps room for the map, so the file still fits.
    pub fn compress(
        &self,
        codec: &Codec,
        img: &RgbImage,
        target: RateTarget,
    ) -> Result<(Vec<u8>, EncodeReport, RealismMap)> {
        let reserve = realism_map_budget(img.width(), img.height());
        let pixels = img.width() as f64 * img.height() as f64;
        let target = match target {
            RateTarget::Quality(q) => RateTarget::Quality(q),
            RateTarget::Bpp(b) => {
                RateTarget::Bytes(((b * pixels / 8.0).floor() as usize).saturating_sub(reserve))
            }
            RateTarget::Bytes(n) => RateTarget::Bytes(n.saturating_sub(reserve)),
        };
        let (bytes, mut report) = codec.compress(img, target)?;
        let map = self.predict(img, report.rate)?;
        let bytes = attach_realism_map(&bytes, &map)?;
        report.bytes = bytes.len();
        Ok((bytes, report, map))
    }

    /// The best single weight on the training labels (the "ConHa-fixed" baseline).
    pub fn fixed_weight(&self) -> f32 {
        RealismMap::weight(self.fixed_level)
    }

    /// The realism map of an image coded at `rate` (0..=RATE_MAX).
    pub fn predict(&self, img: &RgbImage, rate: u16) -> Result<RealismMap> {
        let (cols, rows) = RealismMap::grid(img.width(), img.height());
        // The codec pads to its stride, 64, which is the map's cell: one cell per
        // 64×64 block of the padded image.
        let x = padded_tensor(img);
        debug_assert_eq!(x.size()[3], (cols * CELL) as i64);
        let r = Tensor::from_slice(&[rate as f32 / RATE_MAX as f32]);
        let w = tch::no_grad(|| self.net.forward(&x, &r));
        let levels = Vec::<f32>::try_from(w.flatten(0, -1))?
            .into_iter()
            .map(RealismMap::level)
            .collect();
        Ok(RealismMap { cols, rows, levels })
    }
}

/// The mean weight of the cells a square region touches.
pub fn region_weight(map: &RealismMap, x: u32, y: u32, size: u32) -> f32 {
    let (c0, c1) = (x / CELL, ((x + size).div_ceil(CELL)).min(map.cols));
    let (r0, r1) = (y / CELL, ((y + size).div_ceil(CELL)).min(map.rows));
    let mut sum = 0.0;
    for r in r0..r1 {
        for c in c0..c1 {
            sum += RealismMap::weight(map.levels[(r * map.cols + c) as usize]);
        }
    }
    sum / ((r1 - r0) * (c1 - c0)).max(1) as f32
}
