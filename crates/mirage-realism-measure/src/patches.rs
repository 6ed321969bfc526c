//! The HiFiC patch protocol (Mentzer et al. 2020, appendix): FID/KID on a few images
//! are computed over 256×256 patches cut on a grid, plus a second grid shifted by half
//! a patch in both directions, so that content on the first grid's seams is counted too.

use image::RgbImage;
use tch::Tensor;

/// Where patches are cut: a grid of `size`×`size` tiles from the top-left corner, and a
/// second grid starting at (`shift`, `shift`). Partial tiles at the borders are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchGrid {
    pub size: u32,
    pub shift: u32,
}

impl PatchGrid {
    /// 256×256 patches, second pass shifted by 128 px: the HiFiC protocol.
    pub const HIFIC: PatchGrid = PatchGrid {
        size: 256,
        shift: 128,
    };

    /// Top-left corners of all patches of a `width`×`height` image: the first pass, row
    /// by row, then the shifted pass.
    pub fn origins(&self, width: u32, height: u32) -> Vec<(u32, u32)> {
        let mut out = vec![];
        let offsets: &[u32] = if self.shift == 0 {
            &[0]
        } else {
            &[0, self.shift]
        };
        for &start in offsets {
            let mut y = start;
            while y + self.size <= height {
                let mut x = start;
                while x + self.size <= width {
                    out.push((x, y));
                    x += self.size;
                }
                y += self.size;
            }
        }
        out
    }

    /// All patches of one image as a `[N, 3, size, size]` tensor in [0, 1].
    pub fn cut(&self, img: &RgbImage) -> Tensor {
        let s = self.size as usize;
        let origins = self.origins(img.width(), img.height());
        let mut data = vec![0f32; origins.len() * 3 * s * s];
        for (i, &(x0, y0)) in origins.iter().enumerate() {
            for y in 0..s {
                for x in 0..s {
                    let px = img.get_pixel(x0 + x as u32, y0 + y as u32);
                    for c in 0..3 {
                        data[((i * 3 + c) * s + y) * s + x] = px[c] as f32 / 255.0;
                    }
                }
            }
        }
        Tensor::from_slice(&data).view([origins.len() as i64, 3, s as i64, s as i64])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kodak_landscape_gives_six_plus_two_patches() {
        // 768×512: 3×2 on the grid; shifted by 128: x ∈ {128, 384}, y ∈ {128} → 2.
        let origins = PatchGrid::HIFIC.origins(768, 512);
        assert_eq!(origins.len(), 8);
        assert_eq!(&origins[6..], &[(128, 128), (384, 128)]);
        // Portrait Kodak images give the same count.
        assert_eq!(PatchGrid::HIFIC.origins(512, 768).len(), 8);
    }

    #[test]
    fn small_images_give_no_patches_and_cut_matches_pixels() {
        assert!(PatchGrid::HIFIC.origins(255, 1000).is_empty());
        let grid = PatchGrid { size: 2, shift: 1 };
        let img = RgbImage::from_fn(4, 3, |x, y| image::Rgb([(10 * x + y) as u8, 0, 255]));
        let t = grid.cut(&img);
        // First pass: (0,0), (2,0); shifted pass: (1,1).
        assert_eq!(t.size(), vec![3, 3, 2, 2]);
        let v = |i: i64, c: i64, y: i64, x: i64| (t.double_value(&[i, c, y, x]) * 255.0).round();
        assert_eq!(v(1, 0, 1, 1), 31.0); // pixel (3, 1)
        assert_eq!(v(2, 0, 0, 0), 11.0); // pixel (1, 1)
        assert_eq!(v(0, 2, 0, 0), 255.0);
    }
}
