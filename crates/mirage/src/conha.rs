//! Conditional hallucination (ConHa) at the encoder: the realism predictor looks at
//! the image and writes a per-region realism map into the file, which `decode`
//! follows unless told otherwise (`--realism W`).
//!
//! The encoder side is [`Predictor::compress`]. The predictor
//! (`model::predictor`) is trained by `mirage train predictor`; what it
//! learned from is in docs/conha.md and its model card.

use crate::codec::{attach_realism_map, realism_map_budget, Codec, EncodeReport, RateTarget};
use crate::error::{MirageError, Result};
use crate::layout::{padded_tensor, padded_tensor_region, tiles_of};
use crate::model::predictor::RealismPredictor;
use crate::model_file::{DecoderFile, PREDICTOR_FORMAT_NAME};
use image::RgbImage;
use mirage_format::realism_map::{RealismMap, CELL, LEVELS};
use mirage_format::RATE_MAX;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// The predictor bundled with the repository (or `$MIRAGE_PREDICTOR_MODEL`).
pub fn default_predictor_path() -> PathBuf {
    crate::codec::predictor_paths().remove(0)
}

pub struct Predictor {
    _vs: VarStore,
    net: RealismPredictor,
    /// "ConHa-fixed", the level the file names: `train predictor` writes the best
    /// constant on its votes (else on its proxy labels), and a file can be re-exported
    /// with a level from later votes (the bundled one: models/realism-predictor.md).
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

    /// Compresses at `target` with encoder `effort` (see [`Codec::compress_with_effort`])
    /// and adds the realism map this predictor predicts. A size target keeps room for
    /// the map, so the file still fits.
    pub fn compress(
        &self,
        codec: &Codec,
        img: &RgbImage,
        target: RateTarget,
        effort: u8,
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
        let (bytes, mut report) = codec.compress_with_effort(img, target, effort)?;
        let map = self.predict(img, report.rate)?;
        let bytes = attach_realism_map(&bytes, &map)?;
        report.bytes = bytes.len();
        Ok((bytes, report, map))
    }

    /// The one weight this predictor stands for ("ConHa-fixed"; see `fixed_level`).
    pub fn fixed_weight(&self) -> f32 {
        RealismMap::weight(self.fixed_level)
    }

    /// The realism map of an image coded at `rate` (0..=RATE_MAX).
    pub fn predict(&self, img: &RgbImage, rate: u16) -> Result<RealismMap> {
        let (cols, rows) = RealismMap::grid(img.width(), img.height());
        let w = self.weights_tiled(img, rate, PREDICTOR_TILE, PREDICTOR_MARGIN);
        debug_assert_eq!(w.size(), [1, 1, rows as i64, cols as i64]);
        let levels = Vec::<f32>::try_from(w.flatten(0, -1))?
            .into_iter()
            .map(RealismMap::level)
            .collect();
        Ok(RealismMap { cols, rows, levels })
    }

    /// The predictor's weights `[1, 1, rows, cols]`, one per 64×64 cell of the padded
    /// image (the codec pads to its stride, 64, which is the map's cell), computed on
    /// tiles of `tile × tile` cells with `margin` cells of context.
    fn weights_tiled(&self, img: &RgbImage, rate: u16, tile: usize, margin: usize) -> Tensor {
        let (cols, rows) = RealismMap::grid(img.width(), img.height());
        let (cols, rows) = (cols as usize, rows as usize);
        let r = Tensor::from_slice(&[rate as f32 / RATE_MAX as f32]);
        let tiles = tiles_of(rows, cols, (tile, tile), margin);
        tch::no_grad(|| {
            if let [_only] = tiles.as_slice() {
                return self.net.forward(&padded_tensor(img), &r);
            }
            let out = Tensor::zeros([1, 1, rows as i64, cols as i64], (Kind::Float, Device::Cpu));
            let c = CELL as usize;
            for t in &tiles {
                let [py0, py1, px0, px1] = t.padded;
                let x = padded_tensor_region(img, [py0 * c, py1 * c, px0 * c, px1 * c]);
                t.paste_core(&self.net.forward(&x, &r), &out);
            }
            out
        })
    }
}

/// The predictor runs on tiles of 16 × 16 cells (1024² pixels), so that its memory
/// stays bounded on large photos, like the encoder's analysis transform. Its receptive
/// field reaches about 128 pixels (2 cells) from a cell; a margin of 4 cells holds all
/// of it, and tiles start on cell boundaries, so the strided convolutions sample the
/// same positions as on the whole image and a tiled map equals the whole one up to float
/// rounding (`tests::tiled_prediction_matches_the_whole`). Images up to 1024² are
/// predicted in one piece, exactly as before.
const PREDICTOR_TILE: usize = 16;
const PREDICTOR_MARGIN: usize = 4;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    /// A 1500 × 1100 photo-like image (smooth gradients, an edge and noise) is predicted
    /// on 2 × 2 tiles; the weights must equal the whole image's.
    #[test]
    fn tiled_prediction_matches_the_whole() {
        // The bundled predictor was trained on the v1 core.
        let codec = Codec::load(&crate::codec::v1_model_path()).expect("v1 core");
        let predictor = Predictor::load(
            &crate::codec::v1_add_on_path("realism-predictor.safetensors"),
            &codec,
        )
        .expect("predictor");
        check_tiling(&predictor);
    }

    fn check_tiling(predictor: &Predictor) {
        let mut state = 12345u32;
        let img = RgbImage::from_fn(1500, 1100, |x, y| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let noise = (state >> 24) as i32 % 24;
            let base = if x > 700 { 40 } else { (x / 8) as i32 } + (y / 10) as i32;
            let v = |o: i32| (base + o + noise).clamp(0, 255) as u8;
            image::Rgb([v(0), v(30), v(60)])
        });
        let whole = predictor.weights_tiled(&img, 300, 64, 4);
        let tiled = predictor.weights_tiled(&img, 300, PREDICTOR_TILE, PREDICTOR_MARGIN);
        assert_eq!(whole.size(), [1, 1, 18, 24]);
        let diff = (&whole - &tiled).abs().max().double_value(&[]);
        assert!(
            diff < 1e-4,
            "tiled weights differ from the whole image's by {diff}"
        );
    }
}
