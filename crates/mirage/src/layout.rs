//! What the codec and the ConHa encoder share, below both: the size limits, the
//! padding to the networks' stride, and the file's sections (the optional realism map).

use crate::error::{MirageError, Result};
use image::RgbImage;
use mirage_format::realism_map::RealismMap;
use mirage_format::Container;
use tch::Tensor;

/// Largest image the codec accepts: the container's own limit (64 Mi pixels). The
/// networks run on tiles (the encoder's analysis and the decoder's synthesis), so memory
/// stays bounded (BENCHMARKS.md has the measured peaks for a 24-megapixel photo).
pub const MAX_PIXELS: u64 = mirage_format::MAX_PIXELS;
/// Largest side, the container's own limit.
pub const MAX_SIDE: u32 = mirage_format::MAX_DIMENSION;
/// Total downsampling of the hyper-latent; images are padded to a multiple of it.
pub const STRIDE: usize = 64;
/// Downsampling of the latent: one latent position per 16 × 16 pixels.
pub const LATENT_STRIDE: usize = 16;
/// Sections of a file, in order.
pub const HYPER_SECTION: usize = 0;
pub const LATENT_SECTION: usize = 1;
/// Optional: the per-region realism map (`mirage_format::realism_map`).
pub const REALISM_MAP_SECTION: usize = 2;

/// A side padded up to a multiple of `STRIDE`.
pub fn padded(size: u32) -> usize {
    (size as usize).div_ceil(STRIDE) * STRIDE
}

/// Refuses empty images and images over the codec's limits.
pub fn check_size(width: u32, height: u32) -> Result<()> {
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
pub fn padded_tensor(img: &RgbImage) -> Tensor {
    padded_tensor_region(img, [0, padded(img.height()), 0, padded(img.width())])
}

/// Rows `y0..y1` and columns `x0..x1` of the padded image (see [`padded_tensor`]) as a
/// `[1, 3, y1 − y0, x1 − x0]` tensor: one tile of the encoder's analysis.
pub fn padded_tensor_region(img: &RgbImage, [y0, y1, x0, x1]: [usize; 4]) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (tw, th) = (x1 - x0, y1 - y0);
    let mut data = vec![0f32; 3 * tw * th];
    for y in 0..th {
        for x in 0..tw {
            let px = img.get_pixel((x0 + x).min(w - 1) as u32, (y0 + y).min(h - 1) as u32);
            for c in 0..3 {
                data[(c * th + y) * tw + x] = px[c] as f32 / 255.0;
            }
        }
    }
    Tensor::from_slice(&data).view([1, 3, th as i64, tw as i64])
}

/// One tile of a network that runs on part of an image at a time, on a grid of
/// latent positions (the core's transforms) or realism-map cells (the predictor).
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    /// The core region, in grid positions: y0, y1, x0, x1.
    pub core: [usize; 4],
    /// The core plus context, clipped to the grid.
    pub padded: [usize; 4],
}

impl Tile {
    /// Copies the core of `part` (a network's output on this tile's padded region,
    /// `[B, C, h, w]` at one value per grid position) into its place in `whole`
    /// (`[B, C, H, W]`, the output for the whole grid). The margin is dropped: it was
    /// there only as context.
    pub fn paste_core(&self, part: &Tensor, whole: &Tensor) {
        let [py0, _, px0, _] = self.padded;
        let [y0, y1, x0, x1] = self.core;
        let (h, w) = ((y1 - y0) as i64, (x1 - x0) as i64);
        let core = part
            .narrow(2, (y0 - py0) as i64, h)
            .narrow(3, (x0 - px0) as i64, w);
        tch::no_grad(|| {
            whole
                .narrow(2, y0 as i64, h)
                .narrow(3, x0 as i64, w)
                .copy_(&core)
        });
    }
}

/// Tiles of `rows × cols` grid positions covering a `yh × yw` grid (latent positions, or
/// realism-map cells), each with up
/// to `margin` positions of context.
pub fn tiles_of(yh: usize, yw: usize, (rows, cols): (usize, usize), margin: usize) -> Vec<Tile> {
    let mut out = vec![];
    for y0 in (0..yh).step_by(rows) {
        for x0 in (0..yw).step_by(cols) {
            let (y1, x1) = ((y0 + rows).min(yh), (x0 + cols).min(yw));
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

/// The realism map of a container, if it has one (checked against the image size).
pub fn realism_map(c: &Container) -> Result<Option<RealismMap>> {
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
