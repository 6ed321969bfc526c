//! Training data: every photo under `../shared/data/train`, decoded once into memory,
//! served as random crops with random horizontal flips.
//!
//! Kodak is the evaluation set and is refused here by path, so it can never leak into
//! training by a mistyped flag.

use anyhow::{bail, Context, Result};
use image::RgbImage;
use rand::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub struct Dataset {
    pub train: Vec<RgbImage>,
    /// Held-out photos (every 50th file) for the learning curve. Not Kodak.
    pub validation: Vec<RgbImage>,
    /// The files of `train` and `validation`, in the same order (captions are matched
    /// to photos by file name).
    pub train_paths: Vec<PathBuf>,
    pub validation_paths: Vec<PathBuf>,
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if matches!(
            path.extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_ascii_lowercase())
                .as_deref(),
            Some("jpg" | "jpeg" | "png")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

impl Dataset {
    pub fn load(root: &Path, min_side: u32) -> Result<Dataset> {
        if root
            .components()
            .any(|c| c.as_os_str().to_string_lossy().contains("kodak"))
        {
            bail!(
                "refusing to train on {}: Kodak is the evaluation set",
                root.display()
            );
        }
        let mut paths = vec![];
        collect_images(root, &mut paths)?;
        paths.sort();
        if paths.is_empty() {
            bail!("no training images under {}", root.display());
        }
        let images: Vec<(usize, RgbImage)> = paths
            .par_iter()
            .enumerate()
            .filter_map(|(i, p)| match image::open(p) {
                Ok(img) => Some((i, img.to_rgb8())),
                Err(e) => {
                    eprintln!("skipping {}: {e}", p.display());
                    None
                }
            })
            .filter(|(_, img)| img.width() >= min_side && img.height() >= min_side)
            .collect();
        let (validation, train): (Vec<_>, Vec<_>) =
            images.into_iter().partition(|(i, _)| i % 50 == 0);
        Ok(Dataset {
            train_paths: train.iter().map(|(i, _)| paths[*i].clone()).collect(),
            validation_paths: validation.iter().map(|(i, _)| paths[*i].clone()).collect(),
            train: train.into_iter().map(|(_, im)| im).collect(),
            validation: validation.into_iter().map(|(_, im)| im).collect(),
        })
    }

    /// A batch `[B, 3, crop, crop]` of random crops in [0, 1].
    pub fn batch(&self, rng: &mut impl Rng, batch: usize, crop: u32) -> Tensor {
        let c = crop as usize;
        let mut data = vec![0f32; batch * 3 * c * c];
        for b in 0..batch {
            let img = &self.train[rng.gen_range(0..self.train.len())];
            let x0 = rng.gen_range(0..=img.width() - crop);
            let y0 = rng.gen_range(0..=img.height() - crop);
            let flip = rng.gen_bool(0.5);
            for y in 0..c {
                for x in 0..c {
                    let sx = if flip { c - 1 - x } else { x };
                    let px = img.get_pixel(x0 + sx as u32, y0 + y as u32);
                    for ch in 0..3 {
                        data[((b * 3 + ch) * c + y) * c + x] = px[ch] as f32 / 255.0;
                    }
                }
            }
        }
        Tensor::from_slice(&data).view([batch as i64, 3, c as i64, c as i64])
    }

    /// The centre crop of each validation photo, `[1, 3, crop, crop]`.
    pub fn validation_crops(&self, crop: u32) -> Vec<Tensor> {
        self.validation
            .iter()
            .map(|img| {
                let (x0, y0) = ((img.width() - crop) / 2, (img.height() - crop) / 2);
                let view = image::imageops::crop_imm(img, x0, y0, crop, crop).to_image();
                crate::image_io::to_tensor(&view)
            })
            .collect()
    }
}

/// Mean squared error per image of a batch, `[B]`.
pub fn mse_per_image(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b)
        .square()
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
}
