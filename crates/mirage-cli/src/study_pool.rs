//! `mirage study pool`: the decodes a preference study compares, written as a pool
//! folder for the study app (`mirage study serve --pool DIR`; layout in docs/study.md).
//!
//! Each image is encoded once at the target rate and every condition decodes that
//! one file, so a pair differs only by how the decoder hallucinated: exactly what the
//! study asks people to judge (ConHa's protocol: same bitrate, original shown).

use crate::codec::{Codec, RateTarget};
use crate::comparison::Column;
use crate::image_io::{read_image, write_image};
use anyhow::{bail, Context, Result};
use mirage::decoders::AddOns;
use std::fmt::Write as _;
use std::path::Path;

/// The study app's name of a condition: `[A-Za-z0-9._-]`, as its pool rules require.
pub fn condition_name(column: &Column) -> String {
    match column {
        Column::Realism(w) => format!("mirage-w{w}"),
        Column::Flow(steps, t) => format!("mirage-flow{steps}-t{t}"),
        Column::Auto => "conha-map".into(),
        Column::Fixed => "conha-fixed".into(),
        Column::Classic(kind) => {
            use mirage_eval::codecs::CodecUnderTest;
            mirage_eval::codecs::ClassicCodec::new(*kind).name()
        }
        Column::Ultralow(point) => format!("mirage-ultralow-p{point}"),
    }
}

/// Writes `out/<image>/original.png`, `out/<image>/<condition>.png` and `out/pool.toml`
/// (the bpp of each file, and the rate setting of each image). Refuses to touch an existing
/// pool unless `force`, since a study's votes refer to its files.
pub fn write(
    codec: &Codec,
    add_ons: &AddOns,
    images: &[std::path::PathBuf],
    target_bpp: f64,
    columns: &[Column],
    out: &Path,
    force: bool,
) -> Result<()> {
    if columns.len() < 2 {
        bail!("a study needs at least two conditions");
    }
    if out.join("pool.toml").exists() && !force {
        bail!(
            "{} already holds a pool; pass --force to replace its files",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let names: Vec<String> = columns.iter().map(condition_name).collect();
    let mut toml = String::from("# Written by `mirage study pool`: every image encoded once at the target rate,\n# each condition a decode of that one file.\n");
    let _ = writeln!(toml, "# target: {target_bpp} bpp\n\n[bpp]");
    // Each image's rate setting: `train predictor --votes` gives it to the predictor.
    let mut rates = String::from("\n[rate]\n");
    let bar = crate::progress::bar((images.len() * columns.len()) as u64, "study decodes");
    for path in images {
        let original = read_image(path)?.image;
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let dir = out.join(&stem);
        std::fs::create_dir_all(&dir)?;
        write_image(&original, &dir.join("original.png"), true)?;
        let (bytes, report) = codec
            .compress(&original, RateTarget::Bpp(target_bpp))
            .with_context(|| path.display().to_string())?;
        let _ = writeln!(rates, "\"{stem}\" = {}", report.rate);
        let pixels = (original.width() * original.height()) as f64;
        for (column, name) in columns.iter().zip(&names) {
            let (decoded, file_bytes) = column.decode(codec, add_ons, &original, &bytes)?;
            write_image(&decoded, &dir.join(format!("{name}.png")), true)?;
            let _ = writeln!(
                toml,
                "\"{stem}/{name}\" = {:.5}",
                file_bytes as f64 * 8.0 / pixels
            );
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    toml.push_str(&rates);
    crate::image_io::write_atomically(&out.join("pool.toml"), toml.as_bytes(), true)?;
    Ok(())
}
