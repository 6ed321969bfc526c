//! Image files in and out, and conversions between images and tensors.
//!
//! Inputs are converted to 8-bit RGB with a note saying what was done (alpha, grey or
//! 16-bit precision dropped, an EXIF orientation applied, an ICC profile dropped, the
//! frames after an animation's first), never silently. Outputs are written through a temporary
//! file in the same folder and then linked (or, when replacing is allowed, renamed) into
//! place, so a failure never leaves a partial file, and an existing file is only replaced
//! when the caller allows it.

use crate::error::{MirageError, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::Write;
use std::path::Path;
use tch::Tensor;

/// A decoded input image and, if it was not 8-bit RGB, what the conversion did.
pub struct LoadedImage {
    pub image: RgbImage,
    pub note: Option<String>,
    /// The image's own description (EXIF ImageDescription, else XMP dc:description),
    /// the ultra-low mode's default caption; `Err` says why it cannot be used.
    pub description: std::result::Result<Option<String>, String>,
}

fn unreadable(path: &Path, reason: impl ToString) -> MirageError {
    MirageError::UnreadableImage {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

pub fn read_image(path: &Path) -> Result<LoadedImage> {
    let reader = || -> Result<ImageReader<std::io::BufReader<std::fs::File>>> {
        let mut reader = ImageReader::open(path)
            .map_err(|e| unreadable(path, e))?
            .with_guessed_format()
            .map_err(|e| unreadable(path, e))?;
        // Refuse absurd dimensions before the decoder allocates anything.
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(crate::layout::MAX_SIDE);
        limits.max_image_height = Some(crate::layout::MAX_SIDE);
        limits.max_alloc = Some(2 << 30);
        reader.limits(limits);
        Ok(reader)
    };
    let first = reader()?;
    let format = first.format();
    let mut decoder = first.into_decoder().map_err(|e| unreadable(path, e))?;
    // The side limits above still let through 16384² = 268 M pixels, which the decoder
    // would allocate (over 1 GB, from a 32 KB PNG) before the codec refused it: check the
    // pixel count from the header first.
    let (width, height) = decoder.dimensions();
    crate::layout::check_size(width, height).map_err(|e| unreadable(path, e))?;
    // A camera's JPEG is often stored sideways with an EXIF orientation tag: the picture
    // the user sees is the one with the orientation applied.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let icc = decoder.icc_profile().ok().flatten();
    let exif = decoder.exif_metadata().ok().flatten();
    let description = match decoder.xmp_metadata() {
        Ok(xmp) => crate::caption::description(exif.as_deref(), xmp.as_deref()),
        Err(e) => Err(format!(
            "its XMP metadata cannot be read ({e}); give --caption or --no-caption"
        )),
    };
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| unreadable(path, e))?;
    img.apply_orientation(orientation);

    let mut notes: Vec<String> = vec![];
    let conversion = match &img {
        DynamicImage::ImageRgb8(_) => None,
        DynamicImage::ImageLuma8(_) => Some("greyscale image converted to RGB"),
        DynamicImage::ImageLuma16(_) => Some("16-bit greyscale image converted to 8-bit RGB"),
        DynamicImage::ImageLumaA8(_) => {
            Some("greyscale image with alpha: alpha dropped, converted to RGB")
        }
        DynamicImage::ImageLumaA16(_) => {
            Some("16-bit greyscale image with alpha: alpha dropped, converted to 8-bit RGB")
        }
        DynamicImage::ImageRgba8(_) => Some("alpha channel dropped (Mirage codes RGB only)"),
        DynamicImage::ImageRgba16(_) => {
            Some("16-bit image with alpha: alpha dropped, converted to 8-bit RGB")
        }
        DynamicImage::ImageRgba32F(_) => {
            Some("floating-point image with alpha: alpha dropped, converted to 8-bit RGB")
        }
        DynamicImage::ImageRgb16(_) => Some("16-bit image converted to 8-bit RGB"),
        DynamicImage::ImageRgb32F(_) => Some("floating-point image converted to 8-bit RGB"),
        _ => Some("converted to 8-bit RGB"),
    };
    notes.extend(conversion.map(String::from));
    if orientation != image::metadata::Orientation::NoTransforms {
        notes.push(format!("EXIF orientation applied ({orientation:?})"));
    }
    if let Some(icc) = &icc {
        notes.push(format!(
            "its ICC colour profile ({} bytes) is dropped; the pixels are coded as sRGB",
            icc.len()
        ));
    }
    if is_animated(format, reader) {
        notes.push("animated image: only the first frame is coded".into());
    }
    Ok(LoadedImage {
        image: img.to_rgb8(),
        note: (!notes.is_empty()).then(|| format!("{}: {}", path.display(), notes.join("; "))),
        description,
    })
}

/// Whether a GIF, WebP or PNG file holds more than one frame (the decoders above give
/// the first one).
fn is_animated(
    format: Option<ImageFormat>,
    reader: impl Fn() -> Result<ImageReader<std::io::BufReader<std::fs::File>>>,
) -> bool {
    use image::AnimationDecoder;
    let Ok(reader) = reader() else { return false };
    let input = reader.into_inner();
    match format {
        Some(ImageFormat::Gif) => image::codecs::gif::GifDecoder::new(input)
            .map(|d| d.into_frames().take(2).count() > 1)
            .unwrap_or(false),
        Some(ImageFormat::WebP) => image::codecs::webp::WebPDecoder::new(input)
            .map(|d| d.has_animation())
            .unwrap_or(false),
        Some(ImageFormat::Png) => image::codecs::png::PngDecoder::new(input)
            .and_then(|d| d.is_apng())
            .unwrap_or(false),
        _ => false,
    }
}

/// Whether something, even a dangling symbolic link, is at `path` (which
/// `Path::exists` would deny, and a rename would then replace).
pub fn occupied(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// The error for an output that is there already and may not be replaced.
pub fn exists_error(path: &Path) -> MirageError {
    MirageError::Unwritable {
        path: path.to_owned(),
        reason: "file exists (use --force to replace it)".into(),
    }
}

/// Writes `bytes` to `path` atomically. Refuses to replace an existing file unless
/// `overwrite` is set.
pub fn write_atomically(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let fail = |reason: String| MirageError::Unwritable {
        path: path.to_owned(),
        reason,
    };
    if !overwrite && occupied(path) {
        return Err(exists_error(path));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail("not a file name".into()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|_| publish(&tmp, path, overwrite));
    let _ = std::fs::remove_file(&tmp);
    match result {
        Err(e) if !overwrite && e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(exists_error(path))
        }
        Err(e) => Err(fail(e.to_string())),
        Ok(()) => Ok(()),
    }
}

/// Puts the finished temporary file at `path`. Without `overwrite`, a hard link does it,
/// which fails if another process has created `path` since the check above (a rename
/// would silently replace that file); where the file system has no hard links, the
/// rename is the fallback.
fn publish(tmp: &Path, path: &Path, overwrite: bool) -> std::io::Result<()> {
    if overwrite {
        return std::fs::rename(tmp, path);
    }
    match std::fs::hard_link(tmp, path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            if occupied(path) {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(tmp, path)
        }
        other => other,
    }
}

/// Encodes an image in the format its extension names (PNG, JPEG, WebP, BMP, TIFF,
/// PPM) and writes it atomically.
pub fn write_image(img: &RgbImage, path: &Path, overwrite: bool) -> Result<()> {
    let format = ImageFormat::from_path(path).map_err(|_| MirageError::Unwritable {
        path: path.to_owned(),
        reason: "unknown image format; use an extension such as .png".into(),
    })?;
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, format)
        .map_err(|e| MirageError::Unwritable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    write_atomically(path, bytes.get_ref(), overwrite)
}

/// An RGB image as a `[1, 3, H, W]` f32 tensor in [0, 1].
pub fn to_tensor(img: &RgbImage) -> Tensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * w * h];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            data[(c * h + y as usize) * w + x as usize] = px[c] as f32 / 255.0;
        }
    }
    Tensor::from_slice(&data).view([1, 3, h as i64, w as i64])
}

/// A `[1, 3, H, W]` tensor in [0, 1] as an 8-bit image (rounded to nearest).
pub fn from_tensor(t: &Tensor) -> Result<RgbImage> {
    let (h, w) = (t.size()[2] as usize, t.size()[3] as usize);
    let data = Vec::<f32>::try_from(t.flatten(0, -1))?;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (x, y, px) in img.enumerate_pixels_mut() {
        for c in 0..3 {
            let v = data[(c * h + y as usize) * w + x as usize];
            px[c] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    }
    Ok(img)
}
