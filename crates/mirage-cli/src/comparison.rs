//! Side-by-side crops: the same bitstream decoded several ways, next to the original,
//! on regions chosen for what people notice (faces, text and straight edges) and for
//! where invented texture is welcome (water, gravel, grass).
//!
//! Each image is encoded once at the target rate; every column decodes that one file,
//! so the columns differ only by the decoder.

use crate::codec::{Codec, RateTarget};
use crate::error::MirageError;
use crate::image_io::read_image;
use crate::metrics;
use anyhow::Result;
use image::{imageops, Rgb, RgbImage};
use mirage::decoders::{AddOns, Decoder, FlowSettings, Realism};
use mirage::ultralow::{CaptionUse, POINT_COUNT};
use mirage_eval::codecs::{ClassicCodec, ClassicKind, CodecUnderTest};
use mirage_eval::rate_match::{RateMatcher, Reach};
use std::path::Path;

/// A square region of a Kodak image, in original pixels.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub image: &'static str,
    pub x: u32,
    pub y: u32,
    pub size: u32,
    /// What the region tests, for the caption.
    pub content: &'static str,
}

/// The default regions, two per kind of content.
pub const KODAK_REGIONS: [Region; 6] = [
    Region {
        image: "kodim04",
        x: 200,
        y: 300,
        size: 128,
        content: "face (eyes)",
    },
    Region {
        image: "kodim15",
        x: 420,
        y: 110,
        size: 128,
        content: "face (eye, paint)",
    },
    Region {
        image: "kodim08",
        x: 600,
        y: 250,
        size: 128,
        content: "text, straight edges",
    },
    Region {
        image: "kodim19",
        x: 60,
        y: 560,
        size: 128,
        content: "fence, straight edges",
    },
    Region {
        image: "kodim13",
        x: 300,
        y: 330,
        size: 128,
        content: "water, gravel",
    },
    Region {
        image: "kodim22",
        x: 420,
        y: 380,
        size: 128,
        content: "grass, reflections",
    },
];

/// One way to decode a file: a column of the sheet, a row of the decoder benchmark.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Column {
    /// The synthesis at hallucination weight w (0: the MSE decode).
    Realism(f32),
    /// The MSE decode refined by the rectified flow in this many steps at this
    /// temperature (seed 0).
    Flow(usize, f32),
    /// ConHa: the realism predictor's per-region map, added to the file (which grows
    /// by the map's bytes) and followed by the decoder.
    Auto,
    /// ConHa-fixed: the one weight the predictor's file names (`Predictor::fixed_weight`).
    Fixed,
    /// A classic codec (`avif`, `jxl`, `webp`, ...) at the largest file no bigger than
    /// Mirage's file: the user's question "Mirage or AVIF, at this size?".
    Classic(ClassicKind),
    /// The ultra-low mode (PerCo) at an operating point, decoded at w = 1: a file of
    /// its own (0.003–0.03 bpp), whatever the rate of the core's file.
    Ultralow(usize),
}

impl Column {
    pub fn label(&self) -> String {
        match self {
            Column::Realism(w) => format!("w = {w}"),
            Column::Flow(steps, t) => format!("flow {steps} steps, T {t}"),
            Column::Auto => "ConHa map".into(),
            Column::Fixed => "ConHa-fixed".into(),
            Column::Classic(kind) => format!("{} (same bytes)", ClassicCodec::new(*kind).name()),
            Column::Ultralow(point) => format!("ultra-low p{point}"),
        }
    }

    /// Decodes `bytes` (a file of `original`) this column's way; returns the decode
    /// and the size of the file it decoded (larger than `bytes` for [`Column::Auto`]).
    pub fn decode(
        &self,
        codec: &Codec,
        add_ons: &AddOns,
        original: &RgbImage,
        bytes: &[u8],
    ) -> Result<(RgbImage, usize)> {
        let realism = |realism: Realism, bytes: &[u8]| {
            add_ons
                .decoder_for(bytes, realism)?
                .decompress(codec, bytes)
        };
        let decoded = match self {
            Column::Realism(w) => realism(Realism::Weight(*w), bytes)?.0,
            Column::Flow(steps, t) => {
                let settings = FlowSettings {
                    steps: *steps,
                    seed: 0,
                    temperature: *t,
                };
                Decoder::Flow(add_ons.flow()?, settings)
                    .decompress(codec, bytes)?
                    .0
            }
            Column::Fixed => {
                let w = add_ons.predictor()?.fixed_weight();
                realism(Realism::Weight(w), bytes)?.0
            }
            Column::Auto => {
                let rate = mirage_format::read(bytes)?.header.rate;
                let map = add_ons.predictor()?.predict(original, rate)?;
                let with_map = crate::codec::attach_realism_map(bytes, &map)?;
                let decoded = realism(Realism::Auto, &with_map)?.0;
                return Ok((decoded, with_map.len()));
            }
            Column::Classic(kind) => {
                let classic = ClassicCodec::new(*kind);
                classic.check_available()?;
                let pixels = f64::from(original.width()) * f64::from(original.height());
                let target = bytes.len() as f64 * 8.0 / pixels;
                let matched = RateMatcher::new(&classic, original)
                    .with_tolerance(0.0)
                    .encode_at_bpp(target)?;
                if !matches!(matched.reach, Reach::Reached) {
                    anyhow::bail!(
                        "{} cannot make a file as small as Mirage's {} bytes",
                        classic.name(),
                        bytes.len()
                    );
                }
                let decoded = classic.decode(&matched.encoding.bytes)?;
                return Ok((decoded, matched.encoding.bytes.len()));
            }
            Column::Ultralow(point) => {
                let (file, _) = add_ons
                    .ultralow(codec)?
                    .compress(codec, original, *point, None)?;
                let (decoded, _, _) =
                    add_ons.decompress_any(codec, &file, Realism::Auto, CaptionUse::FromFile)?;
                return Ok((decoded, file.len()));
            }
        };
        Ok((decoded, bytes.len()))
    }

    /// Parses `w0.5` / `0.5` (a realism weight), `flow4` (flow steps), `auto` (the
    /// ConHa map), `fixed` (ConHa-fixed), `ultralow0`–`ultralow2` (the ultra-low mode's
    /// points) or a classic codec's name (`avif`, `jxl`, ...).
    pub fn parse(s: &str) -> std::result::Result<Column, String> {
        if let Some(point) = s.strip_prefix("ultralow") {
            return match point.parse::<usize>() {
                Ok(p) if p < POINT_COUNT => Ok(Column::Ultralow(p)),
                _ => Err(format!(
                    "expected ultralow0 to ultralow{} (an operating point), not `{s}`",
                    POINT_COUNT - 1
                )),
            };
        }
        match s {
            "auto" => return Ok(Column::Auto),
            "fixed" => return Ok(Column::Fixed),
            _ => {}
        }
        if let Some(classic) = ClassicCodec::by_name(s) {
            return Ok(Column::Classic(classic.kind()));
        }
        if let Some(rest) = s.strip_prefix("flow") {
            // `flow4` (the default temperature) or `flow4t0.5` (temperature 0.5).
            let default = mirage::decoders::DEFAULT_FLOW_TEMPERATURE.to_string();
            let (steps, t) = rest.split_once('t').unwrap_or((rest, &default));
            return match (steps.parse(), t.parse::<f32>()) {
                (Ok(steps), Ok(t)) if (0.0..=1.0).contains(&t) => Ok(Column::Flow(steps, t)),
                _ => Err(format!(
                    "expected flowN or flowNtT (N steps, temperature T in 0..1), not `{s}`"
                )),
            };
        }
        match s.trim_start_matches('w').parse::<f32>() {
            Ok(w) if (0.0..=1.0).contains(&w) => Ok(Column::Realism(w)),
            _ => Err(format!(
                "expected a weight from 0 to 1, flowN, auto, fixed, ultralowN or a classic codec (avif, jxl, webp, jpeg, heic), not `{s}`"
            )),
        }
    }
}

/// The figures of one row: the file's rate, and each column's PSNR and SSIMULACRA2
/// on the whole image.
pub struct Row {
    pub region: Region,
    pub bpp: f64,
    pub psnr: Vec<f64>,
    pub ssimulacra2: Vec<f64>,
}

const GUTTER: u32 = 4;

/// Builds the sheet: rows are regions, columns the original then each decode,
/// each crop enlarged `zoom` times (nearest neighbour, so pixels stay pixels).
pub fn side_by_side(
    codec: &Codec,
    add_ons: &AddOns,
    images: &Path,
    regions: &[Region],
    columns: &[Column],
    target: RateTarget,
    zoom: u32,
) -> Result<(RgbImage, Vec<Row>)> {
    let tile = |r: &Region| r.size * zoom;
    let width = (columns.len() as u32 + 1) * (regions.iter().map(tile).max().unwrap_or(0) + GUTTER);
    let height: u32 = regions.iter().map(|r| tile(r) + GUTTER).sum();
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut rows = vec![];
    let mut top = 0;
    let bar = crate::progress::bar(regions.len() as u64, "regions");
    for region in regions {
        let path = images.join(format!("{}.png", region.image));
        let original = read_image(&path)?.image;
        if region.x + region.size > original.width() || region.y + region.size > original.height() {
            return Err(MirageError::BadParameter(format!(
                "region {}+{} of {} lies outside the image",
                region.x,
                region.y,
                path.display()
            ))
            .into());
        }
        let (bytes, _) = codec.compress(&original, target)?;
        let mut place = |img: &RgbImage, column: u32| {
            let crop = imageops::crop_imm(img, region.x, region.y, region.size, region.size);
            let big = imageops::resize(
                &crop.to_image(),
                tile(region),
                tile(region),
                imageops::FilterType::Nearest,
            );
            imageops::replace(
                &mut sheet,
                &big,
                (column * (tile(region) + GUTTER)) as i64,
                top,
            );
        };
        place(&original, 0);
        let (mut psnr, mut ssimulacra2) = (vec![], vec![]);
        for (i, column) in columns.iter().enumerate() {
            let (decoded, _) = column.decode(codec, add_ons, &original, &bytes)?;
            psnr.push(metrics::psnr(&original, &decoded)?);
            ssimulacra2.push(metrics::ssimulacra2(&original, &decoded)?);
            place(&decoded, i as u32 + 1);
        }
        rows.push(Row {
            region: *region,
            bpp: bytes.len() as f64 * 8.0 / (original.width() * original.height()) as f64,
            psnr,
            ssimulacra2,
        });
        top += (tile(region) + GUTTER) as i64;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((sheet, rows))
}

/// The caption: what each row and column is, with the measured figures.
pub fn markdown(rows: &[Row], columns: &[Column], picture: &str) -> String {
    let mut s = format!("![side-by-side crops]({picture})\n\n");
    s += "Columns: original";
    for c in columns {
        s += &format!(", {}", c.label());
    }
    s += " (all decoded from the same file). Figures are on the whole image.\n\n";
    s += "| image | region | content | bpp |";
    for c in columns {
        s += &format!(" PSNR {0} | SSIMULACRA2 {0} |", c.label());
    }
    s += "\n|---|---|---|---|";
    s += &"---|---|".repeat(columns.len());
    s += "\n";
    for r in rows {
        let g = &r.region;
        s += &format!(
            "| {} | {}+{}, {}² | {} | {:.3} |",
            g.image, g.x, g.y, g.size, g.content, r.bpp
        );
        for (p, q) in r.psnr.iter().zip(&r.ssimulacra2) {
            s += &format!(" {p:.2} | {q:.1} |");
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_parse_by_name() {
        assert_eq!(Column::parse("ultralow2"), Ok(Column::Ultralow(2)));
        assert!(Column::parse("ultralow3").is_err());
        assert!(Column::parse("ultralow").is_err());
        assert_eq!(Column::parse("w0.5"), Ok(Column::Realism(0.5)));
        assert_eq!(Column::parse("auto"), Ok(Column::Auto));
        assert!(Column::parse("w2").is_err());
    }
}
