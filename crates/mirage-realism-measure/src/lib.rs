//! The realism measure: "how realistic do decoded images look, as a set?" (MFD, MKD).
//!
//! It may depend on `mirage-nn` (layers, model ids), `mirage-train` (the optimizer and
//! data pipeline its extractor trains with), `mirage` (the codec, for the validation)
//! and `mirage-eval`; only the CLI depends on it.
//!
//! A realism measure that needs no downloaded network: FID and KID computed on the
//! features of an extractor that Mirage trains itself, named **MFD** (Mirage Fréchet
//! Distance) and **MKD** (Mirage Kernel Distance, reported ×1000), so that they are
//! never mistaken for (or compared with) Inception-based FID/KID.
//!
//! - [`extractor`]: the network (a small CNN; its figure is in the module docs);
//! - [`train`]: its self-supervised training (rotation + noise prediction) and export;
//! - [`patches`]: the HiFiC patch protocol (256×256 grid plus a grid shifted by 128);
//! - [`naturalness`]: a no-reference score in the manner of NIQE, for one image, which
//!   needs no reference set (lower is more natural);
//! - [`distance`]: Fréchet distance and unbiased kernel MMD² on feature sets;
//! - [`validate`]: the checks that it rises with blur and JPEG and separates real
//!   patches from reconstructions at equal PSNR (`docs/realism-measure.md`).
//!
//! ```no_run
//! use mirage_realism_measure::RealismMeasure;
//! # let (reference, test): (Vec<image::RgbImage>, Vec<image::RgbImage>) = (vec![], vec![]);
//! let measure = RealismMeasure::load_default()?;
//! let d = measure.distance(&reference, &test)?;
//! println!("MFD {:.2}  MKD {:.2}  over {} patches", d.mfd, d.mkd, d.patches);
//! # Ok::<(), mirage_nn::MirageError>(())
//! ```

pub mod distance;
pub mod extractor;
pub mod extractor_file;
pub mod naturalness;
pub mod patches;
pub mod train;
pub mod validate;

use mirage::{codec, image_io, progress};
use mirage_nn::{error, model, model_file};

use crate::error::{MirageError, Result};
use crate::model::layers::ConvPrecision;
use distance::{frechet_distance, kernel_distance, KernelOptions};
use extractor::Extractor;
use extractor_file::ExtractorFile;
use image::RgbImage;
use patches::PatchGrid;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Patches go through the network this many at a time (bounds memory: a batch of 16
/// 256×256 patches needs about 70 MB of activations).
const BATCH: usize = 16;

/// The bundled extractor, or `$MIRAGE_REALISM_EXTRACTOR`.
pub fn default_extractor_path() -> PathBuf {
    std::env::var_os("MIRAGE_REALISM_EXTRACTOR")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/realism-extractor.safetensors")
        })
}

/// Set-level distances between reference and test images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Distances {
    /// Mirage Fréchet Distance: FID's formula on the Mirage extractor's features.
    pub mfd: f64,
    /// Mirage Kernel Distance ×1000: KID's formula (unbiased MMD², cubic kernel).
    pub mkd: f64,
    /// Patches per set (both sets have as many when the images have the same sizes).
    pub patches: usize,
}

pub struct RealismMeasure {
    _vs: VarStore,
    extractor: Extractor,
    /// `[FEATURE_DIM]` f64 each: features become `(f − mean) · scale`.
    mean: Tensor,
    scale: Tensor,
    pub grid: PatchGrid,
    pub kernel: KernelOptions,
    /// First 8 bytes of the extractor file's SHA-256, in hex.
    pub extractor_id: String,
}

impl RealismMeasure {
    pub fn load(path: &Path) -> Result<RealismMeasure> {
        let file = ExtractorFile::load(path)?;
        let vs = VarStore::new(Device::Cpu);
        // f32, not bf16: the measure must not depend on the CPU having bf16 units.
        let extractor = Extractor::new(&vs.root(), ConvPrecision::F32);
        file.fill(&vs)?;
        let mean = Tensor::from_slice(&file.feature_mean).to_kind(Kind::Double);
        let scale = Tensor::from_slice(&file.feature_scale).to_kind(Kind::Double);
        Ok(RealismMeasure {
            _vs: vs,
            extractor,
            mean,
            scale,
            grid: PatchGrid::HIFIC,
            kernel: KernelOptions::default(),
            extractor_id: file.id,
        })
    }

    pub fn load_default() -> Result<RealismMeasure> {
        Self::load(&default_extractor_path())
    }

    /// Scaled features `[N, FEATURE_DIM]` (f64) of a batch of patches `[N, 3, H, W]`.
    pub fn patch_features(&self, patches: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let n = patches.size()[0];
            let chunks: Vec<Tensor> = (0..n)
                .step_by(BATCH)
                .map(|start| {
                    let len = (BATCH as i64).min(n - start);
                    self.extractor
                        .features(&patches.narrow(0, start, len))
                        .to_kind(Kind::Double)
                })
                .collect();
            if chunks.is_empty() {
                return Tensor::zeros([0, extractor::FEATURE_DIM], (Kind::Double, Device::Cpu));
            }
            (Tensor::cat(&chunks, 0) - self.mean.unsqueeze(0)) * self.scale.unsqueeze(0)
        })
    }

    /// Features of every patch of every image, in image order.
    pub fn features(&self, images: &[RgbImage]) -> Result<Tensor> {
        let parts: Vec<Tensor> = images
            .iter()
            .map(|img| self.patch_features(&self.grid.cut(img)))
            .collect();
        if parts.is_empty() {
            return Err(MirageError::BadParameter("no images".into()));
        }
        Ok(Tensor::cat(&parts, 0))
    }

    /// MFD and MKD between the patches of two sets of images.
    pub fn distance(&self, reference: &[RgbImage], test: &[RgbImage]) -> Result<Distances> {
        let a = self.features(reference)?;
        let b = self.features(test)?;
        self.distance_between(&a, &b)
    }

    /// MFD and MKD between two feature sets from [`RealismMeasure::features`].
    pub fn distance_between(&self, reference: &Tensor, test: &Tensor) -> Result<Distances> {
        let patches = reference.size()[0].min(test.size()[0]) as usize;
        if patches < 2 {
            return Err(MirageError::BadParameter(format!(
                "need at least 2 patches of {0}×{0} per set; the images give {patches}",
                self.grid.size
            )));
        }
        Ok(Distances {
            mfd: frechet_distance(reference, test)?,
            mkd: 1000.0 * kernel_distance(reference, test, self.kernel)?,
            patches,
        })
    }
}
