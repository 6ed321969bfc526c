//! Block edges: steps in a decode along the edges of the latent's 16 × 16 cells.
//!
//! Each latent position of the core stands for a 16 × 16 block of pixels. At low rates
//! a viewer sees faint straight lines along those blocks' edges, in water, foliage and
//! skies (`docs/core13-vs-avif-crops.png`). [`grid_marks`](crate::grid_marks) does not
//! see them: a step's sign follows the content, so it averages out over the blocks.
//!
//! [`block_edge_ratio`] measures the step itself, in the manner of classic blockiness
//! measures (Wang, Sheikh & Bovik 2002): the mean absolute luma difference between
//! neighbouring pixels across block edges, over the same mean between all neighbouring
//! pixels. A photo has no preferred phase, so its ratio is close to 1; lines along the
//! edges raise it. [`block_edge_excess`] reports a decode's ratio less its original's,
//! so that content that happens to line up with the grid does not count.

use image::RgbImage;

use crate::metrics::luma;

/// The latent's stride: the side of the block each latent position stands for (the
/// codec's `mirage::layout::LATENT_STRIDE`; this crate does not depend on the codec).
pub const BLOCK: u32 = 16;

/// Mean |Δ luma| across block edges (between pixels `k·BLOCK − 1` and `k·BLOCK`, in
/// rows and in columns) over the mean |Δ luma| between all neighbouring pixels. `None`
/// when the image holds no block edge or no variation at all.
pub fn block_edge_ratio(image: &RgbImage) -> Option<f64> {
    let (w, h) = image.dimensions();
    if w <= BLOCK && h <= BLOCK {
        return None;
    }
    let l: Vec<f64> = image.pixels().map(luma).collect();
    let at = |x: u32, y: u32| l[(y * w + x) as usize];
    let (mut edge, mut edge_n, mut all, mut all_n) = (0.0, 0u64, 0.0, 0u64);
    for y in 0..h {
        for x in 0..w {
            // The step to the right neighbour, and the step to the one below.
            let steps = [
                (x + 1 < w).then(|| ((at(x + 1, y) - at(x, y)).abs(), (x + 1) % BLOCK == 0)),
                (y + 1 < h).then(|| ((at(x, y + 1) - at(x, y)).abs(), (y + 1) % BLOCK == 0)),
            ];
            for (d, on_edge) in steps.into_iter().flatten() {
                all += d;
                all_n += 1;
                if on_edge {
                    edge += d;
                    edge_n += 1;
                }
            }
        }
    }
    if edge_n == 0 || all == 0.0 {
        return None;
    }
    Some((edge / edge_n as f64) / (all / all_n as f64))
}

/// The decode's [`block_edge_ratio`] less the original's: about 0 for a decode without
/// block edges, 0.3 where the steps across them are 30 % larger than elsewhere. `None`
/// if the sizes differ or either ratio is undefined.
pub fn block_edge_excess(original: &RgbImage, decode: &RgbImage) -> Option<f64> {
    if original.dimensions() != decode.dimensions() {
        return None;
    }
    Some(block_edge_ratio(decode)? - block_edge_ratio(original)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_images::{noisy_ramp, with_offset};

    fn photo(width: u32, height: u32) -> RgbImage {
        noisy_ramp(width, height, 5, 10)
    }

    /// `image` with each 16 × 16 block shifted by its own offset in ±`strength` levels:
    /// a step at every block edge.
    fn blocky(image: &RgbImage, strength: i32) -> RgbImage {
        with_offset(image, |x, y| {
            let (bx, by) = (x / BLOCK, y / BLOCK);
            let h = (bx.wrapping_mul(73_856_093) ^ by.wrapping_mul(19_349_663)) % 1001;
            (h as i32 - 500) * strength / 500
        })
    }

    #[test]
    fn a_photo_like_image_has_no_preferred_phase() {
        let image = photo(96, 64);
        let ratio = block_edge_ratio(&image).unwrap();
        assert!((ratio - 1.0).abs() < 0.1, "{ratio}");
        assert_eq!(block_edge_excess(&image, &image), Some(0.0));
    }

    #[test]
    fn steps_along_block_edges_raise_the_excess_with_their_strength() {
        let image = photo(96, 64);
        let weak = block_edge_excess(&image, &blocky(&image, 4)).unwrap();
        let strong = block_edge_excess(&image, &blocky(&image, 12)).unwrap();
        assert!(weak > 0.02, "{weak}");
        assert!(strong > weak + 0.2, "{strong} against {weak}");
    }

    /// The same steps moved half a block off the grid are not block edges.
    #[test]
    fn steps_off_the_grid_do_not_count() {
        let image = photo(96, 64);
        let off_grid = |img: &RgbImage| image::imageops::crop_imm(img, 8, 8, 80, 48).to_image();
        let excess = block_edge_excess(&off_grid(&image), &off_grid(&blocky(&image, 12))).unwrap();
        // Below zero, not at it: the steps off the grid still raise the mean step
        // everywhere, against which the edges' steps are measured.
        assert!(excess < 0.0, "{excess}");
    }

    #[test]
    fn sizes_must_match_and_flat_or_tiny_images_have_no_ratio() {
        let image = photo(96, 64);
        assert_eq!(block_edge_excess(&image, &photo(64, 64)), None);
        assert_eq!(block_edge_ratio(&RgbImage::new(64, 64)), None);
        assert_eq!(block_edge_ratio(&photo(16, 16)), None);
    }
}
