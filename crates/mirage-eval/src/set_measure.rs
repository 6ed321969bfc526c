//! Measures of a *set* of decoded images against their originals, such as a realism
//! distance between two distributions of patches, which has no per-image value.
//!
//! The suite cannot keep every decode until the end (24 Kodak images × 7 codecs × 6
//! targets is about 1 GB of pixels), and it should not have to know what the measure does.
//! So a measure works in two steps: [`SetMeasure::features`] turns one image into a few
//! feature rows right after it is decoded (then the pixels are dropped), and
//! [`SetMeasure::distance`] compares the concatenated rows of a whole set with those of the
//! originals. Mirage's MFD/MKD (in the `mirage` crate, on libtorch) implement it; this crate
//! stays free of libtorch.

use anyhow::{bail, Result};
use image::RgbImage;

/// Feature vectors of one image or one set of images: `rows` × `dim` values, row-major.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureRows {
    pub dim: usize,
    pub values: Vec<f64>,
}

impl FeatureRows {
    pub fn new(dim: usize, values: Vec<f64>) -> Result<Self> {
        if dim == 0 || !values.len().is_multiple_of(dim) {
            bail!("{} feature values do not make rows of {dim}", values.len());
        }
        Ok(FeatureRows { dim, values })
    }

    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Stacks several images' rows into one set (all must have the same `dim`).
    pub fn concat<'a>(parts: impl IntoIterator<Item = &'a FeatureRows>) -> Result<FeatureRows> {
        let mut out = FeatureRows::default();
        for part in parts {
            if out.dim == 0 {
                out.dim = part.dim;
            } else if part.dim != out.dim {
                bail!("feature rows of width {} and {} mixed", out.dim, part.dim);
            }
            out.values.extend_from_slice(&part.values);
        }
        Ok(out)
    }
}

/// A measure computed on a set of decoded images against the set of their originals.
///
/// `Sync` because the suite extracts features from several images in parallel; an
/// implementation that cannot run two extractions at once serialises them itself.
pub trait SetMeasure: Sync {
    /// Section title in the report, e.g. "MFD/MKD (Mirage feature distance, own extractor)".
    fn title(&self) -> String;

    /// What it is and how to read it (a paragraph for the report).
    fn description(&self) -> String;

    /// Names of the values [`SetMeasure::distance`] returns, in order, e.g. `["MFD", "MKD ×1000"]`.
    fn columns(&self) -> Vec<String>;

    /// Feature rows of one image (original or decode).
    fn features(&self, img: &RgbImage) -> Result<FeatureRows>;

    /// The values of [`SetMeasure::columns`] between the rows of a set of originals and the
    /// rows of their decodes (same images, same order). Lower is closer.
    fn distance(&self, originals: &FeatureRows, decoded: &FeatureRows) -> Result<Vec<f64>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_concat_and_check_width() {
        let a = FeatureRows::new(2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = FeatureRows::new(2, vec![5.0, 6.0]).unwrap();
        let ab = FeatureRows::concat([&a, &b]).unwrap();
        assert_eq!(ab.rows(), 3);
        assert_eq!(ab.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(FeatureRows::new(3, vec![1.0, 2.0]).is_err());
        let c = FeatureRows::new(1, vec![1.0]).unwrap();
        assert!(FeatureRows::concat([&a, &c]).is_err());
        assert_eq!(FeatureRows::concat([]).unwrap().rows(), 0);
    }
}
