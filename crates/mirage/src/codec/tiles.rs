//! The decoder's synthesis on fixed tiles of the latent.

use super::Codec;
use crate::error::Result;
use crate::layout::{padded, padded_tensor, padded_tensor_region, tiles_of, Tile, LATENT_STRIDE};
use crate::model::realism::{RealismGenerator, NOISE_STRIDE};
use image::RgbImage;
use mirage_format::realism_map::RealismMap;
use tch::{Device, Kind, Tensor};

/// The synthesis runs on fixed tiles of the latent, each with single-threaded libtorch,
/// so that every output pixel is computed by the same kernels in the same order
/// whatever the thread count (libtorch's own multi-threading splits convolution sums
/// differently for 1 and 2 threads, which changes the decoded pixels). Tiles also bound
/// the decoder's memory. Core tiles are `TILE_ROWS × TILE_COLS` latent positions
/// (512 × 384 pixels) with a margin of context on each side that holds the synthesis'
/// receptive field, so the tiles are seamless (`tests::tiles_are_seamless` compares
/// with an untiled decode); see [`synthesis_margin`].
pub(super) const TILE_ROWS: usize = 32;
pub(super) const TILE_COLS: usize = 24;
/// The margin of a plain core, and the least any core gets.
pub(super) const TILE_MARGIN: usize = 4;
/// The margin with the realism generator, and the least it gets.
pub(super) const REALISM_TILE_MARGIN: usize = 6;

/// Latent positions of context a synthesis tile needs. The plain synthesis reaches about
/// 2 latent positions; a deepened core's residual blocks add 0.75 per block on each stage
/// (a 3×3 convolution at 1/8 and one at 1/4 resolution); the realism generator adds ten
/// 3×3 convolutions at 1/4 resolution (2.5 positions). Cores of up to two blocks keep
/// the margins they always had (4 and 6), so their files decode to the same pixels;
/// deeper ones get the margin their reach needs. The margins hold the whole receptive
/// field, which the test finds exactly from gradients (with four blocks per stage it
/// needs 5 positions, 8 with the generator). Its outer reach contributes little: with
/// blocks drawn at random, a margin of 3 already matched the whole decode to about
/// 4·10⁻⁶ (`tests::deepened_core_tiles_are_seamless`). The generator's reach assumes the
/// bundled generators' four blocks.
pub(super) fn synthesis_margin(residual_blocks: i64, realism: bool) -> usize {
    let generator = if realism { 2.5 } else { 0.0 };
    let reach = 2.0 + 0.75 * residual_blocks as f64 + generator;
    let least = if realism {
        REALISM_TILE_MARGIN
    } else {
        TILE_MARGIN
    };
    least.max(reach.ceil() as usize)
}

/// The encoder's analysis transform runs on tiles too, so that its memory stays bounded
/// on large photos (untiled, an 11.8-megapixel encode peaked at 4.9 GB). Tiles are
/// 64 × 64 positions (1024² pixels): images up to that size are analysed in one piece,
/// exactly as before. Their margin is [`analysis_margin`].
pub(super) const ANALYSIS_TILE: usize = 64;
/// The analysis margin of a plain core, and the least any core gets.
pub(super) const ANALYSIS_MARGIN: usize = 4;

/// Latent positions of context an analysis tile needs, so that a tiled analysis equals
/// the whole one up to float rounding (`tests::tiled_analysis_matches_the_whole`). The
/// plain analysis' receptive field is 61 pixels (four 5×5 convolutions at strides 2, 4,
/// 8, 16); each residual block per stage adds 24 (a 3×3 convolution at 1/4 and one at
/// 1/8 resolution). The margin holds half the field on each side: 4 positions (64
/// pixels) up to two blocks, more beyond.
pub(super) fn analysis_margin(residual_blocks: i64) -> usize {
    let half_field = (61 + 24 * residual_blocks as usize).div_ceil(2);
    ANALYSIS_MARGIN.max(half_field.div_ceil(LATENT_STRIDE))
}

/// The synthesis tiles of a `yh × yw` latent.
pub(super) fn tiles(yh: usize, yw: usize, margin: usize) -> Vec<Tile> {
    tiles_of(yh, yw, (TILE_ROWS, TILE_COLS), margin)
}

impl Codec {
    /// The analysis transform of an image (padded to the stride), tile by tile: the
    /// latent `[1, M, H'/16, W'/16]`.
    pub(super) fn analysis_tiled(&self, img: &RgbImage, tile: usize, margin: usize) -> Tensor {
        let (ph, pw) = (padded(img.height()), padded(img.width()));
        let (yh, yw) = (ph / LATENT_STRIDE, pw / LATENT_STRIDE);
        let tiles = tiles_of(yh, yw, (tile, tile), margin);
        tch::no_grad(|| {
            if let [only] = tiles.as_slice() {
                debug_assert_eq!(only.padded, [0, yh, 0, yw]);
                return self.net.analysis(&padded_tensor(img));
            }
            let m = self.config().m;
            let y = Tensor::zeros([1, m, yh as i64, yw as i64], (Kind::Float, Device::Cpu));
            for tile in &tiles {
                let [py0, py1, px0, px1] = tile.padded;
                let s = LATENT_STRIDE;
                let x = padded_tensor_region(img, [py0 * s, py1 * s, px0 * s, px1 * s]);
                tile.paste_core(&self.net.analysis(&x), &y);
            }
            y
        })
    }

    /// Latent (channel-first, inverse gain applied) → cropped 8-bit image.
    pub(crate) fn synthesize(
        &self,
        y_hat: &[f32],
        yh: usize,
        yw: usize,
        width: u32,
        height: u32,
        realism: Option<(&RealismGenerator, &Weights)>,
    ) -> Result<RgbImage> {
        let m = self.entropy_model.latent_channels();
        let margin = synthesis_margin(self.config().residual_blocks, realism.is_some());
        let tiles = tiles(yh, yw, margin);
        // The generator's noise, drawn once for the whole latent grid (see NOISE_STRIDE).
        let noise = realism
            .filter(|(g, _)| g.config.noise)
            .map(|_| NoiseGrid::new(yh, yw));
        let noise = noise.as_ref();
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
                        let realism = realism.as_ref().map(|(g, weights)| (g, *weights, noise));
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

/// One tile's core, `[3][th][tw]` floats, synthesized from the tile plus its margin
/// (with `realism`: the generator, its weights, and its noise if it has noise inputs).
pub(super) fn synthesize_tile(
    net: &crate::model::Synthesis,
    realism: Option<(&RealismGenerator, &Weights, Option<&NoiseGrid>)>,
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
        let noise = match realism.and_then(|(_, _, noise)| noise) {
            Some(grid) => grid.window(tile),
            None => Tensor::zeros([1, 1, 1, 1], (tch::Kind::Float, tch::Device::Cpu)),
        };
        let x = match realism {
            None => net.forward(&y),
            Some((generator, Weights::Uniform(w), _)) => {
                let (x_mse, features) = net.forward_with_features(&y);
                generator.forward(&x_mse, &features, &Tensor::from_slice(&[*w]), &noise)
            }
            Some((generator, Weights::Map(map), _)) => {
                let (x_mse, features) = net.forward_with_features(&y);
                // The map's weights for exactly this tile's pixels (margin included),
                // computed from the global grid, so tiles agree where they overlap.
                let (x0, y0) = ((px0 * LATENT_STRIDE) as u32, (py0 * LATENT_STRIDE) as u32);
                let (tw, th) = ((w * LATENT_STRIDE) as i64, (h * LATENT_STRIDE) as i64);
                let weights = map.weights(x0, y0, tw as u32, th as u32);
                let weights = Tensor::from_slice(&weights).view([1, 1, th, tw]);
                generator.forward_map(&x_mse, &features, &weights, &noise)
            }
        };
        x.narrow(2, (y0 - py0) as i64 * s, (y1 - y0) as i64 * s)
            .narrow(3, (x0 - px0) as i64 * s, (x1 - x0) as i64 * s)
            .contiguous()
    });
    Ok(Vec::<f32>::try_from(out.flatten(0, -1))?)
}

/// The realism generator's noise inputs for a whole image: one standard normal value
/// per cell of the generator's grid (`NOISE_STRIDE` pixels), from a fixed seed, so a
/// file decodes to the same pixels on every run and with any tiling.
pub(super) struct NoiseGrid {
    values: Vec<f32>,
    width: usize,
}

/// The seed of the realism generator's noise. Fixed: the decode is a function of the
/// file (and `w`), like every other decode.
const REALISM_NOISE_SEED: u64 = 0x6d69_7261_6765;

impl NoiseGrid {
    pub(super) fn new(yh: usize, yw: usize) -> NoiseGrid {
        let per_latent = LATENT_STRIDE / NOISE_STRIDE;
        let (height, width) = (yh * per_latent, yw * per_latent);
        NoiseGrid {
            values: crate::noise::seeded_normal(height * width, REALISM_NOISE_SEED),
            width,
        }
    }

    /// The noise under a tile's padded window, `[1, 1, h, w]`.
    pub(super) fn window(&self, tile: &Tile) -> Tensor {
        let per_latent = LATENT_STRIDE / NOISE_STRIDE;
        let [py0, py1, px0, px1] = tile.padded.map(|v| v * per_latent);
        let mut part = Vec::with_capacity((py1 - py0) * (px1 - px0));
        for y in py0..py1 {
            part.extend_from_slice(&self.values[y * self.width + px0..y * self.width + px1]);
        }
        Tensor::from_slice(&part).view([1, 1, (py1 - py0) as i64, (px1 - px0) as i64])
    }
}

/// The hallucination weights of a decode.
#[derive(Debug)]
pub(crate) enum Weights {
    Uniform(f32),
    Map(RealismMap),
}

impl Weights {
    /// Whether anything is hallucinated at all (else the plain synthesis runs).
    pub(crate) fn any(&self) -> bool {
        match self {
            Weights::Uniform(w) => *w > 0.0,
            Weights::Map(map) => map.levels.iter().any(|&l| l > 0),
        }
    }
}
