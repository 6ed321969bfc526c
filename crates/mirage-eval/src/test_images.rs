//! Synthetic images shared by the measures' tests.

use image::RgbImage;

/// A smooth grey ramp with seeded noise of ±`amplitude` levels: a stand-in for texture
/// with no phase, which a measure of periodic marks or added detail must not mistake for
/// them.
pub(crate) fn noisy_ramp(width: u32, height: u32, seed: u32, amplitude: i32) -> RgbImage {
    let mut state = seed;
    RgbImage::from_fn(width, height, |x, y| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n = ((state >> 16) % (2 * amplitude as u32 + 1)) as i32 - amplitude;
        let v = (96 + (x / 8) as i32 + (y / 8) as i32 + n).clamp(0, 255) as u8;
        image::Rgb([v, v, v])
    })
}

/// `img` with `offset(x, y)` levels added to every channel of each pixel (clamped): how
/// the tests draw marks or hatching over a base image.
pub(crate) fn with_offset(img: &RgbImage, offset: impl Fn(u32, u32) -> i32) -> RgbImage {
    RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let d = offset(x, y);
        let p = img.get_pixel(x, y);
        image::Rgb(p.0.map(|c| (c as i32 + d).clamp(0, 255) as u8))
    })
}
