//! The Markdown summary: means per target, set measures, speed and memory, BD-rates.

use std::fmt::Write as _;

use super::*;

impl Report {
    fn set_markdown(&self) -> String {
        let mut md = String::new();
        let mut offset = 0;
        for measure in &self.set_measures {
            let columns = offset..offset + measure.columns.len();
            offset = columns.end;
            let _ = writeln!(md, "\n## {}\n\n{}\n", measure.title, measure.description);
            md.push_str(
                "Each value compares the set of one codec's decodes at one target with the set \
                 of the same originals, over the images that reached the target (`reached`); \
                 sets missing images are not comparable with complete ones. Lower is closer.\n\n",
            );
            let _ = writeln!(
                md,
                "| codec | target bpp | reached | bpp | {} |\n|---|---|---|---|{}",
                measure.columns.join(" | "),
                "---|".repeat(measure.columns.len())
            );
            for r in &self.set_rows {
                let cells: Vec<String> = r.values[columns.clone()]
                    .iter()
                    .map(|v| v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}")))
                    .collect();
                let bpp = if r.reached > 0 {
                    format!("{:.4}", r.bpp)
                } else {
                    "–".into()
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {}/{} | {bpp} | {} |",
                    r.codec,
                    r.target_bpp,
                    r.reached,
                    r.images,
                    cells.join(" | ")
                );
            }
            let notes: BTreeSet<String> = self
                .set_rows
                .iter()
                .flat_map(|r| {
                    r.notes
                        .iter()
                        .map(move |n| format!("{} at {} bpp: {n}", r.codec, r.target_bpp))
                })
                .collect();
            if !notes.is_empty() {
                md.push('\n');
            }
            for note in notes {
                let _ = writeln!(md, "- {note}");
            }
        }
        md
    }

    /// The Markdown summary: codecs, means per codec and target, unreachable targets,
    /// BD-rates against the anchor, caveats.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Evaluation: {} images, targets {} bpp\n",
            self.images.len(),
            self.targets_bpp
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        md.push_str(
            "bpp = file bytes × 8 / pixels, whole file. Each codec's setting is searched per \
             image for the largest file not above the target",
        );
        if self.rate_tolerance > 0.0 {
            let _ = write!(
                md,
                " (or any file within {}% below it)",
                self.rate_tolerance * 100.0
            );
        }
        md.push_str(
            ". Means are over the images that reached the target (column `reached`). PSNR on \
             RGB; MS-SSIM per RGB channel, averaged; speeds are total megapixels / total wall \
             time of the codec's own process, one thread; peak memory is the largest peak RSS \
             of one process.",
        );
        if self.workers > 1 {
            let _ = write!(
                md,
                " {} images were evaluated at once, so each codec call shared the cores \
                 with other work: for speed alone, run with one worker (`--jobs 1`).",
                self.workers
            );
        }
        md.push_str("\n\n");
        md.push_str("## Codecs\n\n");
        for (name, description) in &self.codecs {
            let _ = writeln!(md, "- `{name}`: {description}");
        }
        md.push_str("\n## Means per codec and target\n\n");
        md.push_str(
            "Block edges: how much larger the luma steps across the edges of Mirage's 16 × 16 \
             latent blocks are than elsewhere, beyond the original's (0: none; 0.3: 30 % \
             larger; `mirage_eval::block_edges`). Other codecs' blocks count only where they \
             fall on that grid.\n\n",
        );
        md.push_str(
            "| codec | target bpp | reached | bpp | PSNR dB | MS-SSIM | SSIMULACRA2 | \
             butteraugli | butteraugli 3-norm | block edges | enc MP/s | dec MP/s | \
             enc peak MiB | dec peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let opt = |v: Option<f64>, decimals: usize| {
            v.map(|v| format!("{v:.decimals$}"))
                .unwrap_or_else(|| "–".into())
        };
        for codec in self.codec_names() {
            for p in self.mean_curve(&codec) {
                if p.reached == 0 {
                    let _ = writeln!(
                        md,
                        "| {codec} | {} | 0/{} | – | – | – | – | – | – | – | – | – | – | – |",
                        p.target_bpp, p.images
                    );
                    continue;
                }
                let _ = writeln!(
                    md,
                    "| {codec} | {} | {}/{} | {:.4} | {:.2} | {:.4} | {:.1} | {} | {} | {:.3} | \
                     {:.1} | {:.1} | {} | {} |",
                    p.target_bpp,
                    p.reached,
                    p.images,
                    p.bpp,
                    p.psnr,
                    p.ms_ssim,
                    p.ssimulacra2,
                    opt(p.butteraugli, 2),
                    opt(p.butteraugli_3norm, 2),
                    p.block_edges,
                    p.encode_mps,
                    p.decode_mps,
                    opt(p.encode_peak_mib, 0),
                    opt(p.decode_peak_mib, 0),
                );
            }
        }

        md.push_str(&self.set_markdown());

        md.push_str("\n## Targets not reached\n\n");
        let unreached: Vec<&Row> = self.rows.iter().filter(|r| !r.reach.is_reached()).collect();
        if unreached.is_empty() {
            md.push_str("Every codec reached every target on every image.\n");
        } else {
            md.push_str(
                "| image | codec | nearest setting | bpp | reason |\n|---|---|---|---|---|\n",
            );
            for r in unreached {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.4} | {} |",
                    r.image,
                    r.codec,
                    r.setting_label,
                    r.bpp,
                    r.reach.explain(r.target_bpp)
                );
            }
        }
        let not_converged = self.rows.iter().filter(|r| !r.converged).count();
        if not_converged > 0 {
            let _ = writeln!(
                md,
                "\n{not_converged} matches ran out of bisection steps: within target, but a \
                 slightly larger file may exist."
            );
        }

        md.push_str(&self.bd_rate_markdown());
        md.push_str(&self.time_markdown());
        md
    }

    /// Where the time went: one row per codec, in seconds summed over images.
    fn time_markdown(&self) -> String {
        let mut md = String::new();
        if self.stages.is_empty() {
            return md;
        }
        md.push_str("\n## Time\n\n");
        if self.wall_s > 0.0 {
            let _ = writeln!(
                md,
                "Wall time {:.1} min with {} worker(s).",
                self.wall_s / 60.0,
                self.workers
            );
        }
        md.push_str(
            "Seconds summed over images as the workers saw them. Butteraugli runs in its own \
             process alongside the other metrics, so a worker's time counts the longer of the \
             two.\n\n| codec | rate search | decode | PSNR, MS-SSIM, SSIMULACRA2 | butteraugli \
             | realism features | worker total |\n|---|---|---|---|---|---|---|\n",
        );
        let mut total = StageSeconds::default();
        for stage in &self.stages {
            total.add(stage);
            let _ = writeln!(md, "{}", stage_row(&stage.codec, stage));
        }
        let _ = writeln!(md, "{}", stage_row("all", &total));
        if self.original_features_s > 0.0 {
            let _ = writeln!(
                md,
                "\nRealism features of the originals: {:.1} s.",
                self.original_features_s
            );
        }
        md
    }

    fn bd_rate_markdown(&self) -> String {
        let mut md = String::new();
        let Some(anchor) = &self.anchor else {
            return md;
        };
        let _ = writeln!(md, "\n## BD-rate against `{anchor}`\n");
        md.push_str(
            "Rate difference at equal quality, in percent (negative = fewer bits than the \
             anchor), computed on each image from all its distinct files (targets reached or \
             not), then summarised over the images: mean / median (images with a value). \
             Values per image are in `bd_rates.csv`.\n\n",
        );
        let _ = writeln!(
            md,
            "| codec | {} |\n|---|{}",
            Metric::ALL.map(|m| m.label()).join(" | "),
            "---|".repeat(Metric::ALL.len())
        );
        let mut reasons = BTreeSet::new();
        for codec in self.codec_names().iter().filter(|c| *c != anchor) {
            let cells: Vec<String> = Metric::ALL
                .iter()
                .map(|&m| {
                    let summary = self.bd_rate_summary(anchor, codec, m);
                    for (_, value) in &summary.per_image {
                        if let Err(e) = value {
                            reasons.insert(e.to_string());
                        }
                    }
                    match (summary.mean(), summary.median()) {
                        (Some(mean), Some(median)) => format!(
                            "{mean:+.1}% / {median:+.1}% ({}/{})",
                            summary.values().len(),
                            summary.per_image.len()
                        ),
                        _ => "n/a".into(),
                    }
                })
                .collect();
            let _ = writeln!(md, "| {codec} | {} |", cells.join(" | "));
        }
        if !reasons.is_empty() {
            md.push_str("\nImages without a value (or `n/a`): ");
            md.push_str(&reasons.into_iter().collect::<Vec<_>>().join("; "));
            md.push('\n');
        }
        md.push_str(
            "\nCaveats: Bjøntegaard with monotone piecewise cubic (PCHIP) interpolation of \
             log-rate against quality, over the quality interval both curves cover; no \
             extrapolation, so a codec is not credited outside the shared interval, and on an \
             image where the curves barely overlap the value rests on a narrow interval; needs \
             at least 4 points per curve; if curves cross, gains and losses cancel in the \
             average; the mean over images is pulled by outliers, hence the median; each \
             number holds for its metric only.\n",
        );
        md
    }
}
