//! The smaller report of runs at fixed codec settings (`mirage eval --fixed`).

use super::*;

/// Runs at fixed codec settings, without rate matching (`mirage eval --fixed`): to check
/// the classic codecs against published or noted figures for a given setting.
#[derive(Clone, Debug, Default)]
pub struct FixedReport {
    /// One per (image, codec, setting); `target_bpp` is NaN (there is no target).
    pub rows: Vec<Row>,
    /// `(name, description)` of each codec, in run order.
    pub codecs: Vec<(String, String)>,
    pub images: Vec<String>,
    pub workers: usize,
}

impl FixedReport {
    /// Means per (codec, setting), in run order: `(codec, setting label, means)`.
    pub fn means(&self) -> Vec<(String, String, MeanPoint)> {
        let mut keys: Vec<(String, String)> = Vec::new();
        for r in &self.rows {
            let key = (r.codec.clone(), r.setting_label.clone());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys.into_iter()
            .filter_map(|(codec, setting)| {
                let rows: Vec<&Row> = self
                    .rows
                    .iter()
                    .filter(|r| r.codec == codec && r.setting_label == setting)
                    .collect();
                mean_point(f64::NAN, &rows).map(|p| (codec, setting, p))
            })
            .collect()
    }

    pub fn csv(&self) -> String {
        rows_csv(&self.rows)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Fixed settings: {} images\n\nbpp = file bytes × 8 / pixels, whole file. Mean \
             over the images; PSNR on RGB; MS-SSIM per RGB channel, averaged; speeds are total \
             megapixels / total wall time of the codec's own process ({} images at once).\n",
            self.images.len(),
            self.workers
        );
        for (name, description) in &self.codecs {
            let _ = writeln!(md, "- `{name}`: {description}");
        }
        md.push_str(
            "\n| codec | setting | images | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | butteraugli \
             | enc MP/s | dec MP/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (codec, setting, p) in self.means() {
            let butteraugli = p
                .butteraugli
                .map_or_else(|| "–".to_string(), |b| format!("{b:.2}"));
            let _ = writeln!(
                md,
                "| {codec} | {setting} | {} | {:.4} | {:.2} | {:.4} | {:.1} | {butteraugli} | \
                 {:.1} | {:.1} |",
                p.images, p.bpp, p.psnr, p.ms_ssim, p.ssimulacra2, p.encode_mps, p.decode_mps
            );
        }
        md
    }

    /// Writes `fixed.csv` and `fixed.md` into `dir`.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        for (name, text) in [("fixed.csv", self.csv()), ("fixed.md", self.markdown())] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }
}
