//! Decoding with the rectified-flow refiner (`model::flow`): the MSE decode, then N
//! Euler steps that add the detail it lacks, at no extra bits.
//!
//! Large images run in overlapping tiles. The source noise is drawn once for the
//! whole image from the seed, so overlapping tiles start from the same noise, and
//! their outputs are blended with linear ramps across the overlaps, which hides the
//! small differences that the tiles' different contexts cause. Tiles run in parallel
//! (single-threaded libtorch each) and are blended in a fixed order, so the output
//! depends only on the file, the step count and the seed, not on the thread count.

use crate::error::Result;
use crate::model::flow::{FlowRefiner, SOURCE_SCALE};
use crate::noise::seeded_normal;
use image::RgbImage;
use tch::Tensor;

/// Core size of a tile, and the overlap added on each side.
const TILE: usize = 256;
const OVERLAP: usize = 32;

/// A window of the (edge-padded) image: `[y0, y1, x0, x1]` in pixels.
fn windows(height: usize, width: usize) -> Vec<[usize; 4]> {
    let mut out = vec![];
    for y in (0..height).step_by(TILE) {
        for x in (0..width).step_by(TILE) {
            out.push([
                y.saturating_sub(OVERLAP),
                (y + TILE + OVERLAP).min(height),
                x.saturating_sub(OVERLAP),
                (x + TILE + OVERLAP).min(width),
            ]);
        }
    }
    out
}

/// Blending weight of a window pixel: rises linearly over the overlap from the
/// window's inner edges, and is 1 at the image's own borders.
fn ramp(pos: usize, start: usize, end: usize, size: usize) -> f32 {
    let from_start = if start == 0 { OVERLAP } else { pos - start };
    let from_end = if end == size { OVERLAP } else { end - 1 - pos };
    ((from_start.min(from_end) as f32 + 0.5) / OVERLAP as f32).min(1.0)
}

/// Refines an MSE decode with `steps` Euler steps from the seeded source noise, scaled
/// by `temperature` (1: the training distribution, σ = `SOURCE_SCALE`).
pub fn refine(
    flow: &FlowRefiner,
    decoded: &RgbImage,
    steps: usize,
    seed: u64,
    temperature: f32,
) -> Result<RgbImage> {
    let (w, h) = (decoded.width() as usize, decoded.height() as usize);
    // Pad to a multiple of 4 (the network's down- and up-sampling) by edge repetition.
    let (pw, ph) = (w.div_ceil(4) * 4, h.div_ceil(4) * 4);
    let mut x = vec![0f32; 3 * pw * ph];
    for y in 0..ph {
        for xx in 0..pw {
            let p = decoded.get_pixel(xx.min(w - 1) as u32, y.min(h - 1) as u32);
            for c in 0..3 {
                x[(c * ph + y) * pw + xx] = p[c] as f32 / 255.0;
            }
        }
    }
    let noise = seeded_normal(3 * pw * ph, seed);
    let windows = windows(ph, pw);
    let workers = (tch::get_num_threads().max(1) as usize).min(windows.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(vec![]);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let flow = flow.replica();
            let (windows, next, done, x, noise) = (&windows, &next, &done, &x, &noise);
            scope.spawn(move || {
                tch::set_num_threads(1);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&[y0, y1, x0, x1]) = windows.get(i) else {
                        break;
                    };
                    let cut = |v: &[f32]| -> Tensor {
                        let mut part = Vec::with_capacity(3 * (y1 - y0) * (x1 - x0));
                        for c in 0..3 {
                            for y in y0..y1 {
                                part.extend_from_slice(
                                    &v[(c * ph + y) * pw + x0..(c * ph + y) * pw + x1],
                                );
                            }
                        }
                        Tensor::from_slice(&part).view([1, 3, (y1 - y0) as i64, (x1 - x0) as i64])
                    };
                    let out = tch::no_grad(|| {
                        flow.sample(
                            &cut(x),
                            &(cut(noise) * (SOURCE_SCALE * temperature as f64)),
                            steps,
                        )
                    });
                    let result = Vec::<f32>::try_from(out.flatten(0, -1));
                    done.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, result));
                }
            });
        }
    });
    let mut results = done.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let mut sum = vec![0f32; 3 * pw * ph];
    let mut weight = vec![0f32; pw * ph];
    for (i, result) in results {
        let values = result?;
        let [y0, y1, x0, x1] = windows[i];
        let tw = x1 - x0;
        let th = y1 - y0;
        for y in y0..y1 {
            let wy = ramp(y, y0, y1, ph);
            for xx in x0..x1 {
                let wgt = wy * ramp(xx, x0, x1, pw);
                weight[y * pw + xx] += wgt;
                for c in 0..3 {
                    sum[(c * ph + y) * pw + xx] +=
                        wgt * values[(c * th + (y - y0)) * tw + (xx - x0)];
                }
            }
        }
    }
    Ok(RgbImage::from_fn(w as u32, h as u32, |xx, y| {
        let (xx, y) = (xx as usize, y as usize);
        let wgt = weight[y * pw + xx];
        image::Rgb(std::array::from_fn(|c| {
            let v = sum[(c * ph + y) * pw + xx] / wgt;
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_pixel_with_positive_weight() {
        for (h, w) in [(4, 4), (512, 768), (300, 1000)] {
            let mut weight = vec![0f32; h * w];
            for [y0, y1, x0, x1] in windows(h, w) {
                for y in y0..y1 {
                    for x in x0..x1 {
                        weight[y * w + x] += ramp(y, y0, y1, h) * ramp(x, x0, x1, w);
                    }
                }
            }
            assert!(weight.iter().all(|&v| v > 0.0), "{h}x{w}");
        }
    }
}
