//! The per-region realism map: one hallucination weight per 64×64-pixel cell, chosen
//! by the encoder's content predictor and applied by the decoder (Mirage's extension
//! of ConHa's one weight per image).
//!
//! It travels as an optional third payload section of the container:
//!
//! ```text
//! byte 0          cell side as a power of two (6: 64 pixels; the only value written)
//! bytes 1..       the levels, 2 bits each, row-major, least significant bits first;
//!                 unused bits of the last byte are zero
//! ```
//!
//! A level `k` in `0..LEVELS` is the weight `k / (LEVELS − 1)`. Two bits per 4096
//! pixels cost 0.0005 bpp, half a percent of a 0.1 bpp file: the map is coarse on
//! purpose, since people judge hallucination by region (a face, a sign, a lawn), not
//! by pixel. The cell count follows from the header's width and height, so the
//! section's length is checked exactly and a map never needs its own dimensions.

use crate::FormatError;

/// Number of weight levels: 0, 1/3, 2/3, 1.
pub const LEVELS: u8 = 4;
/// log2 of the cell side in pixels.
pub const CELL_LOG2: u8 = 6;
/// Cell side in pixels.
pub const CELL: u32 = 1 << CELL_LOG2;

/// One level per cell, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealismMap {
    pub cols: u32,
    pub rows: u32,
    pub levels: Vec<u8>,
}

impl RealismMap {
    /// The grid of cells covering a `width × height` image.
    pub fn grid(width: u32, height: u32) -> (u32, u32) {
        (width.div_ceil(CELL), height.div_ceil(CELL))
    }

    /// The weight in [0, 1] of a level.
    pub fn weight(level: u8) -> f32 {
        level as f32 / (LEVELS - 1) as f32
    }

    /// The nearest level of a weight (clamped to [0, 1]).
    pub fn level(weight: f32) -> u8 {
        let w = if weight.is_nan() {
            0.0
        } else {
            weight.clamp(0.0, 1.0)
        };
        (w * (LEVELS - 1) as f32).round() as u8
    }

    /// Whether every cell has the same level (then a header weight says it all).
    pub fn uniform(&self) -> Option<u8> {
        let first = *self.levels.first()?;
        self.levels.iter().all(|&l| l == first).then_some(first)
    }

    /// The mean weight over the cells: the map's one-number summary.
    pub fn mean_weight(&self) -> f32 {
        let sum: f32 = self.levels.iter().map(|&l| Self::weight(l)).sum();
        sum / self.levels.len().max(1) as f32
    }

    /// The section bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        if self.levels.len() != (self.cols as usize) * (self.rows as usize) {
            return Err(FormatError::BadSection(
                "realism map size does not match its grid".into(),
            ));
        }
        if self.levels.iter().any(|&l| l >= LEVELS) {
            return Err(FormatError::BadSection(
                "realism map level out of range".into(),
            ));
        }
        let mut out = vec![0u8; 1 + self.levels.len().div_ceil(4)];
        out[0] = CELL_LOG2;
        for (i, &level) in self.levels.iter().enumerate() {
            out[1 + i / 4] |= level << (2 * (i % 4));
        }
        Ok(out)
    }

    /// Reads a section for an image of `width × height` pixels (from the header, which
    /// the container has already checked).
    pub fn from_bytes(bytes: &[u8], width: u32, height: u32) -> Result<Self, FormatError> {
        let (cols, rows) = Self::grid(width, height);
        let cells = cols as usize * rows as usize;
        let expected = 1 + cells.div_ceil(4);
        match bytes.first() {
            None => return Err(FormatError::BadSection("empty realism map".into())),
            Some(&CELL_LOG2) => {}
            Some(_) => {
                return Err(FormatError::BadSection(
                    "unsupported realism map cell".into(),
                ))
            }
        }
        if bytes.len() != expected {
            return Err(FormatError::BadSection(
                "realism map length does not match the image size".into(),
            ));
        }
        let levels: Vec<u8> = (0..cells)
            .map(|i| (bytes[1 + i / 4] >> (2 * (i % 4))) & 0b11)
            .collect();
        // Padding bits must be zero, so each map has exactly one byte representation.
        let used_bits = 2 * (cells % 4);
        if used_bits != 0 && bytes[expected - 1] >> used_bits != 0 {
            return Err(FormatError::BadSection(
                "realism map padding bits are set".into(),
            ));
        }
        Ok(RealismMap { cols, rows, levels })
    }

    /// The weight at every pixel of a `width × height` region starting at pixel
    /// (`x0`, `y0`), row-major: bilinear between cell centres (clamped at the borders),
    /// so the amount of texture fades across a cell instead of stepping at its edge.
    ///
    /// Plain `f32` arithmetic in a fixed order without fused multiply-adds, so every
    /// machine computes the same weights (they scale decoded pixels, not probabilities,
    /// but decodes should still match everywhere).
    pub fn weights(&self, x0: u32, y0: u32, width: u32, height: u32) -> Vec<f32> {
        let axis = |p: u32, cells: u32| -> (usize, usize, f32) {
            // Position in cell units, measured from the first cell's centre.
            let t = (p as f32 + 0.5) / CELL as f32 - 0.5;
            let t = t.clamp(0.0, (cells - 1) as f32);
            let i = (t.floor() as usize).min(cells as usize - 1);
            let j = (i + 1).min(cells as usize - 1);
            (i, j, t - i as f32)
        };
        let at = |r: usize, c: usize| Self::weight(self.levels[r * self.cols as usize + c]);
        let xs: Vec<_> = (x0..x0 + width).map(|x| axis(x, self.cols)).collect();
        let mut out = Vec::with_capacity(width as usize * height as usize);
        for y in y0..y0 + height {
            let (r0, r1, fy) = axis(y, self.rows);
            for &(c0, c1, fx) in &xs {
                let top = at(r0, c0) * (1.0 - fx) + at(r0, c1) * fx;
                let bottom = at(r1, c0) * (1.0 - fx) + at(r1, c1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(cols: u32, rows: u32) -> RealismMap {
        let levels = (0..cols * rows).map(|i| (i * 7 % 4) as u8).collect();
        RealismMap { cols, rows, levels }
    }

    #[test]
    fn round_trips_at_every_padding() {
        for (w, h) in [(64, 64), (65, 64), (768, 512), (130, 200), (1, 1)] {
            let (cols, rows) = RealismMap::grid(w, h);
            let m = map(cols, rows);
            let bytes = m.to_bytes().unwrap();
            assert_eq!(RealismMap::from_bytes(&bytes, w, h).unwrap(), m);
        }
    }

    #[test]
    fn costs_at_most_one_percent_of_a_tenth_of_a_bit_per_pixel() {
        // 768×512 at 0.1 bpp is 4915 bytes; the map plus its 4-byte section length.
        let bytes = map(12, 8).to_bytes().unwrap().len() + 4;
        assert!(bytes as f64 <= 0.01 * 768.0 * 512.0 * 0.1 / 8.0, "{bytes}");
    }

    #[test]
    fn rejects_wrong_length_cell_and_padding() {
        let bytes = map(3, 1).to_bytes().unwrap();
        assert!(RealismMap::from_bytes(&bytes, 64 * 5, 64).is_err());
        assert!(RealismMap::from_bytes(&bytes[..1], 64 * 3, 64).is_err());
        assert!(RealismMap::from_bytes(&[], 64 * 3, 64).is_err());
        let mut cell = bytes.clone();
        cell[0] = 5;
        assert!(RealismMap::from_bytes(&cell, 64 * 3, 64).is_err());
        let mut padding = bytes.clone();
        padding[1] |= 0b1100_0000;
        assert!(RealismMap::from_bytes(&padding, 64 * 3, 64).is_err());
    }

    #[test]
    fn weights_are_the_levels_at_cell_centres_and_blend_between() {
        let m = RealismMap {
            cols: 2,
            rows: 1,
            levels: vec![0, 3],
        };
        let w = m.weights(0, 0, 128, 1);
        assert_eq!(w[0], 0.0); // clamped before the first centre
        assert_eq!(w[127], 1.0);
        // Halfway between the centres (pixels 31.5 and 95.5) the weight is 1/2.
        assert!((w[63] - 0.4921875).abs() < 1e-6 && (w[64] - 0.5078125).abs() < 1e-6);
        assert!(w.windows(2).all(|p| p[1] >= p[0]));
        // A region gives the same values as the whole.
        assert_eq!(m.weights(60, 0, 8, 1), w[60..68].to_vec());
    }

    #[test]
    fn levels_and_weights_agree() {
        for l in 0..LEVELS {
            assert_eq!(RealismMap::level(RealismMap::weight(l)), l);
        }
        assert_eq!(RealismMap::level(f32::NAN), 0);
        assert_eq!(RealismMap::level(7.0), LEVELS - 1);
        assert_eq!(map(2, 2).uniform(), None);
    }
}
