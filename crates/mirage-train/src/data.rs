//! Training data: every photo under `../shared/data/train`, decoded once into memory,
//! served as random crops with random horizontal flips, drawn per photo or in
//! proportion to area and at a random scale ([`CropSampling`]).
//!
//! Kodak is the evaluation set and is refused here by path, so it can never leak into
//! training by a mistyped flag.

use anyhow::{bail, Context, Result};
use image::RgbImage;
use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// How training crops are drawn from the photos.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum CropSampling {
    /// Every photo equally often, at its own scale. With the training folders as they
    /// are, BSDS's 400 small photos get 52 % of the crops for a quarter of the pixels.
    #[default]
    PerPhoto,
    /// Photos in proportion to their area, each crop taken at a random scale in
    /// `[max(min_scale, crop / short side), 1]` (area-filtered; `min_scale` at least
    /// 0.05). Downscaling thins out the training photos'
    /// JPEG artefacts and sensor noise, as Ballé et al. (2018) did for theirs, and
    /// makes the large photos look like the 768×512 scans a user's photos resemble.
    ByArea { min_scale: f32 },
}

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

    /// A batch `[B, 3, crop, crop]` of random crops in [0, 1], one per photo drawn
    /// uniformly ([`CropSampling::PerPhoto`]).
    pub fn batch(&self, rng: &mut impl Rng, batch: usize, crop: u32) -> Tensor {
        self.batch_sampled(rng, batch, crop, CropSampling::PerPhoto)
    }

    /// A batch `[B, 3, crop, crop]` of random crops in [0, 1], drawn by `sampling`.
    pub fn batch_sampled(
        &self,
        rng: &mut impl Rng,
        batch: usize,
        crop: u32,
        sampling: CropSampling,
    ) -> Tensor {
        let c = crop as usize;
        let mut data = vec![0f32; batch * 3 * c * c];
        let by_area = match sampling {
            CropSampling::ByArea { .. } => Some(
                WeightedIndex::new(
                    self.train
                        .iter()
                        .map(|im| im.width() as u64 * im.height() as u64),
                )
                .expect("photos have pixels"),
            ),
            CropSampling::PerPhoto => None,
        };
        for b in 0..batch {
            let (img, x0, y0) = match sampling {
                // Kept draw for draw as it always was, so a run resumed with it
                // sees the crops it would have seen.
                CropSampling::PerPhoto => {
                    let img = &self.train[rng.gen_range(0..self.train.len())];
                    let x0 = rng.gen_range(0..=img.width() - crop);
                    let y0 = rng.gen_range(0..=img.height() - crop);
                    (std::borrow::Cow::Borrowed(img), x0, y0)
                }
                CropSampling::ByArea { min_scale } => (
                    std::borrow::Cow::Owned(self.scaled_crop(
                        rng,
                        by_area.as_ref().expect("built for ByArea"),
                        crop,
                        min_scale,
                    )),
                    0,
                    0,
                ),
            };
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

    /// One `crop × crop` crop of a photo drawn by `by_area` (weights: the photos' areas), taken from
    /// a square of side `crop / s` for a scale `s ~ U[max(min_scale, crop / short
    /// side), 1]` and resized down to `crop`.
    fn scaled_crop(
        &self,
        rng: &mut impl Rng,
        by_area: &WeightedIndex<u64>,
        crop: u32,
        min_scale: f32,
    ) -> RgbImage {
        let img = &self.train[by_area.sample(rng)];
        let short = img.width().min(img.height());
        let lowest = min_scale.clamp(0.05, 1.0).max(crop as f32 / short as f32);
        let scale = if lowest < 1.0 {
            rng.gen_range(lowest..=1.0)
        } else {
            1.0
        };
        let side = ((crop as f32 / scale).round() as u32).clamp(crop, short);
        let x0 = rng.gen_range(0..=img.width() - side);
        let y0 = rng.gen_range(0..=img.height() - side);
        downscale(
            image::imageops::crop_imm(img, x0, y0, side, side).to_image(),
            crop,
        )
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

/// A square `region` resized down to `crop × crop` with a triangle filter, which
/// `image` widens with the ratio, so it averages rather than aliases.
fn downscale(region: RgbImage, crop: u32) -> RgbImage {
    if region.width() == crop {
        region
    } else {
        image::imageops::resize(&region, crop, crop, image::imageops::FilterType::Triangle)
    }
}

/// Mean squared error per image of a batch, `[B]`.
pub fn mse_per_image(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b)
        .square()
        .mean_dim(&[1i64, 2, 3][..], false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn dataset(photos: Vec<RgbImage>) -> Dataset {
        Dataset {
            train_paths: vec![PathBuf::new(); photos.len()],
            train: photos,
            validation: vec![],
            validation_paths: vec![],
        }
    }

    /// The mean of a batch's first channel, per crop.
    fn crop_means(x: &Tensor) -> Vec<f64> {
        let m = x.select(1, 0).mean_dim(&[1i64, 2][..], false, Kind::Float);
        Vec::<f64>::try_from(&m.to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn by_area_draws_photos_in_proportion_to_their_pixels() {
        // A dark photo with a quarter of the pixels of a bright one: per photo each
        // gets half the crops, by area the dark one gets a fifth.
        let dark = RgbImage::from_pixel(256, 256, image::Rgb([0, 0, 0]));
        let bright = RgbImage::from_pixel(512, 512, image::Rgb([255, 255, 255]));
        let data = dataset(vec![dark, bright]);
        let share_dark = |sampling| {
            let x =
                data.batch_sampled(&mut rand::rngs::StdRng::seed_from_u64(1), 400, 16, sampling);
            crop_means(&x).iter().filter(|&&m| m < 0.5).count() as f64 / 400.0
        };
        let per_photo = share_dark(CropSampling::PerPhoto);
        let by_area = share_dark(CropSampling::ByArea { min_scale: 0.5 });
        assert!((per_photo - 0.5).abs() < 0.08, "per photo: {per_photo}");
        assert!((by_area - 0.2).abs() < 0.06, "by area: {by_area}");
    }

    #[test]
    fn a_downscaled_crop_averages_instead_of_aliasing() {
        // One-pixel stripes halved must come out as their mean grey, not as coarser
        // stripes (which a nearest-pixel resize would give).
        let stripes = RgbImage::from_fn(128, 128, |x, _| {
            let v = if x % 2 == 0 { 0 } else { 255 };
            image::Rgb([v, v, v])
        });
        let half = downscale(stripes, 64);
        assert_eq!(half.dimensions(), (64, 64));
        assert!(half.pixels().all(|p| (100..=155).contains(&p[0])));
    }

    #[test]
    fn by_area_keeps_small_photos_at_their_own_scale() {
        // A photo whose short side is the crop can only be cropped one to one.
        let gradient = RgbImage::from_fn(64, 80, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let data = dataset(vec![gradient.clone()]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let one = WeightedIndex::new([1u64]).unwrap();
        let crop = data.scaled_crop(&mut rng, &one, 64, 0.5);
        let y0 = crop.get_pixel(0, 0)[1] as u32;
        assert!(crop
            .enumerate_pixels()
            .all(|(x, y, p)| *p == *gradient.get_pixel(x, y0 + y)));
    }
}
