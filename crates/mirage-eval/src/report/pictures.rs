//! The pictures of a report: the SVG rate–quality plot and the HTML page of crops.

use super::*;

impl Report {
    /// Writes the rate–quality plot: PSNR and SSIMULACRA2 against bpp, one line per codec
    /// (means over complete targets, as for BD-rates), and one more panel per set-measure
    /// column (MFD, MKD: lower is better), over complete sets. Two panels per row.
    pub fn plot_svg(&self, path: &Path) -> Result<()> {
        use plotters::prelude::*;
        type Curves = Vec<(String, Vec<(f64, f64)>)>;
        let mut panels: Vec<(String, String, Curves)> = [Metric::Psnr, Metric::Ssimulacra2]
            .into_iter()
            .map(|metric| {
                let curves = self
                    .codec_names()
                    .into_iter()
                    .map(|c| {
                        let points = self.curve_points(&c, metric);
                        (c, points.iter().map(|p| (p.rate, p.quality)).collect())
                    })
                    .collect();
                let y_label = match metric {
                    Metric::Psnr => "PSNR (dB)".to_string(),
                    _ => metric.label().to_string(),
                };
                (format!("{} vs bpp", metric.label()), y_label, curves)
            })
            .collect();
        for (column, name) in self.set_columns().into_iter().enumerate() {
            let curves = self
                .codec_names()
                .into_iter()
                .map(|c| {
                    let points = self.set_curve(&c, column);
                    (c, points)
                })
                .collect();
            panels.push((format!("{name} vs bpp (lower is better)"), name, curves));
        }
        // A lossless decode has an infinite PSNR: it cannot be drawn (and an infinite axis
        // range would hang the plotting library).
        for (_, _, curves) in &mut panels {
            for (_, points) in curves.iter_mut() {
                points.retain(|(x, y)| x.is_finite() && y.is_finite());
            }
        }
        let rows = panels.len().div_ceil(2);
        let root = SVGBackend::new(path, (1200, 500 * rows as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((rows, 2));
        for (area, (caption, y_label, curves)) in areas.iter().zip(&panels) {
            let (mut x_max, mut y_min, mut y_max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
            for &(x, y) in curves.iter().flat_map(|(_, p)| p.iter()) {
                x_max = x_max.max(x);
                y_min = y_min.min(y);
                y_max = y_max.max(y);
            }
            if !y_min.is_finite() {
                (x_max, y_min, y_max) = (1.0, 0.0, 1.0);
            }
            let pad = ((y_max - y_min) * 0.05).max(0.5);
            let mut chart = ChartBuilder::on(area)
                .caption(caption, ("sans-serif", 20))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..x_max * 1.05, (y_min - pad)..(y_max + pad))?;
            chart
                .configure_mesh()
                .x_desc("bpp")
                .y_desc(y_label.as_str())
                .draw()?;
            for (i, (codec, points)) in curves.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(codec.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Writes `report.html` and the crops it shows (PNG files in `crops/`, referenced
    /// relatively, so the folder can be moved or served as is).
    pub fn write_html(&self, dir: &Path, links: &[(&str, &str)]) -> Result<PathBuf> {
        let crop_dir = dir.join("crops");
        std::fs::create_dir_all(&crop_dir)
            .with_context(|| format!("cannot create {}", crop_dir.display()))?;
        let mut html = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Mirage evaluation</title>\n\
             <style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:0 8px 12px 0;\
             vertical-align:top}figcaption{font-size:12px;max-width:256px}img.crop{image-rendering:pixelated}\
             .miss{color:#b00}table{border-collapse:collapse}</style></head><body>\n\
             <h1>Mirage evaluation</h1>\n",
        );
        let _ = writeln!(
            html,
            "<p>{} images; targets {} bpp. {}</p>",
            self.images.len(),
            self.targets_bpp
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            links
                .iter()
                .map(|(href, text)| format!("<a href=\"{}\">{}</a>", escape(href), escape(text)))
                .collect::<Vec<_>>()
                .join(" · ")
        );
        if let Some((svg, _)) = links.iter().find(|(href, _)| href.ends_with(".svg")) {
            let _ = writeln!(
                html,
                "<p><img src=\"{}\" alt=\"rate-quality plot\" width=\"1200\"></p>",
                escape(svg)
            );
        }
        let crop_images: Vec<&str> = {
            let mut seen = Vec::new();
            for c in &self.crops {
                if !seen.contains(&c.image.as_str()) {
                    seen.push(c.image.as_str());
                }
            }
            seen
        };
        for image in crop_images {
            let original = self
                .crops
                .iter()
                .find(|c| c.image == image && c.codec.is_none());
            let region = self
                .crops
                .iter()
                .find(|c| c.image == image)
                .map(|c| c.region)
                .expect("image has crops");
            let _ = writeln!(
                html,
                "<h2>{} — crop {}×{} at ({}, {})</h2>",
                escape(image),
                region.width,
                region.height,
                region.x,
                region.y
            );
            for &target in &self.targets_bpp {
                let _ = writeln!(html, "<h3>{target} bpp</h3>\n<div>");
                if let Some(o) = original {
                    let file = save_crop(&crop_dir, o)?;
                    let _ = writeln!(
                        html,
                        "<figure><img class=\"crop\" src=\"crops/{}\"><figcaption>original</figcaption></figure>",
                        escape(&file)
                    );
                }
                for crop in self
                    .crops
                    .iter()
                    .filter(|c| c.image == image && c.target_bpp == Some(target))
                {
                    let codec = crop.codec.as_deref().unwrap_or("?");
                    let file = save_crop(&crop_dir, crop)?;
                    let row = self
                        .rows
                        .iter()
                        .find(|r| r.image == image && r.codec == codec && r.target_bpp == target);
                    let caption = match row {
                        Some(r) => {
                            let miss = if r.reach.is_reached() {
                                String::new()
                            } else {
                                format!(
                                    "<br><span class=\"miss\">not reached: {}</span>",
                                    escape(&r.reach.explain(target))
                                )
                            };
                            format!(
                                "<b>{}</b> {} · {:.4} bpp<br>PSNR {:.2} dB · SSIMULACRA2 {:.1}{}",
                                escape(codec),
                                escape(&r.setting_label),
                                r.bpp,
                                r.psnr,
                                r.ssimulacra2,
                                miss
                            )
                        }
                        None => escape(codec),
                    };
                    let _ = writeln!(
                        html,
                        "<figure><img class=\"crop\" src=\"crops/{}\"><figcaption>{caption}</figcaption></figure>",
                        escape(&file)
                    );
                }
                html.push_str("</div>\n");
            }
        }
        html.push_str("</body></html>\n");
        let path = dir.join("report.html");
        std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}
