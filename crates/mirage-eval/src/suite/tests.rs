use super::*;
use crate::codecs::{MoreBits, SettingRange, Tool};

/// A lossless fake codec: the file is a 8-byte size header, the raw pixels and `setting`
/// bytes of padding, so the rate is known exactly; with `blur`, the decoder returns a
/// 3×3 box blur of the image instead.
struct Raw {
    name: &'static str,
    blur: bool,
    missing_tool: bool,
    decodes: AtomicUsize,
}

impl Raw {
    fn new(name: &'static str, blur: bool) -> Self {
        Raw {
            name,
            blur,
            missing_tool: false,
            decodes: AtomicUsize::new(0),
        }
    }
}

impl CodecUnderTest for Raw {
    fn name(&self) -> String {
        self.name.into()
    }
    fn settings(&self) -> SettingRange {
        SettingRange {
            min: 0.0,
            max: 400.0,
            step: 1.0,
            more_bits: MoreBits::HigherSetting,
        }
    }
    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&img.width().to_le_bytes());
        bytes.extend_from_slice(&img.height().to_le_bytes());
        bytes.extend_from_slice(img.as_raw());
        bytes.resize(bytes.len() + setting as usize, 0);
        Ok(bytes)
    }
    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        self.decodes.fetch_add(1, Ordering::Relaxed);
        let w = u32::from_le_bytes(bytes[0..4].try_into()?);
        let h = u32::from_le_bytes(bytes[4..8].try_into()?);
        let len = (w * h * 3) as usize;
        let img = RgbImage::from_raw(w, h, bytes[8..8 + len].to_vec()).context("size")?;
        Ok(if self.blur {
            image::imageops::blur(&img, 1.5)
        } else {
            img
        })
    }
    fn check_available(&self) -> Result<()> {
        if self.missing_tool {
            Tool::new("surely-not-an-installed-encoder", "some-codec-package").locate()?;
        }
        Ok(())
    }
}

/// A set measure with one feature row per image: mean |horizontal difference| (detail)
/// and mean value. The distance is the mean absolute difference of the detail column.
struct Detail;

impl SetMeasure for Detail {
    fn title(&self) -> String {
        "Detail distance".into()
    }
    fn description(&self) -> String {
        "Test measure.".into()
    }
    fn columns(&self) -> Vec<String> {
        vec!["detail".into(), "rows".into()]
    }
    fn features(&self, img: &RgbImage) -> Result<FeatureRows> {
        let (mut detail, mut sum) = (0.0, 0.0);
        for y in 0..img.height() {
            for x in 0..img.width() {
                let v = f64::from(img.get_pixel(x, y)[0]);
                sum += v;
                if x > 0 {
                    detail += (v - f64::from(img.get_pixel(x - 1, y)[0])).abs();
                }
            }
        }
        let n = f64::from(img.width() * img.height());
        FeatureRows::new(2, vec![detail / n, sum / n])
    }
    fn distance(&self, originals: &FeatureRows, decoded: &FeatureRows) -> Result<Vec<f64>> {
        let rows = originals.rows();
        let d: f64 = (0..rows)
            .map(|i| (originals.values[2 * i] - decoded.values[2 * i]).abs())
            .sum();
        Ok(vec![d / rows as f64, rows as f64])
    }
}

/// Writes `n` textured `size`×`size` PNGs into a temporary folder.
fn images(n: u32, size: u32) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = (0..n)
        .map(|i| {
            let img = RgbImage::from_fn(size, size, |x, y| {
                let v = ((x * (7 + i) + y * 13 + (x * y) % 17) % 256) as u8;
                image::Rgb([v, v / 2, 255 - v])
            });
            let path = dir.path().join(format!("img{i}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect();
    (dir, paths)
}

fn options(targets: &[f64], jobs: usize) -> EvalOptions {
    EvalOptions {
        targets_bpp: targets.to_vec(),
        butteraugli: false,
        progress: false,
        jobs,
        ..EvalOptions::default()
    }
}

#[test]
fn set_measure_is_reported_per_codec_and_target_and_separates_codecs() {
    let (_dir, paths) = images(3, 16);
    let (raw, blurred) = (Raw::new("raw", false), Raw::new("blurred", true));
    let codecs: Vec<&dyn CodecUnderTest> = vec![&raw, &blurred];
    // 16×16 pixels: the raw file is 776 bytes = 24.25 bpp, + 1/32 bpp per setting step.
    // 10 bpp is below the lowest rate, so no image is in that set.
    let report = run(&codecs, &paths, &[&Detail], &options(&[10.0, 30.0], 2)).unwrap();
    assert_eq!(report.rows.len(), 3 * 2 * 2);
    assert_eq!(report.set_rows.len(), 2 * 2);
    let at = |codec: &str, target: f64| {
        report
            .set_rows
            .iter()
            .find(|r| r.codec == codec && r.target_bpp == target)
            .unwrap()
    };
    let (raw30, blurred30) = (at("raw", 30.0), at("blurred", 30.0));
    assert_eq!((raw30.reached, raw30.images), (3, 3));
    assert_eq!(raw30.values, vec![Some(0.0), Some(3.0)]);
    assert!(blurred30.values[0].unwrap() > 1.0, "{blurred30:?}");
    // Unreached: no values, and the reason is given.
    let raw10 = at("raw", 10.0);
    assert_eq!(raw10.reached, 0);
    assert_eq!(raw10.values, vec![None, None]);
    assert!(raw10.notes[0].contains("no image reached"), "{raw10:?}");
    let md = report.markdown();
    assert!(md.contains("## Detail distance"), "{md}");
    assert!(md.contains("| raw | 30 | 3/3 |"), "{md}");
    assert!(md.contains("| raw | 10 | 0/3 | – | – | – |"), "{md}");
    let csv = report.set_csv();
    assert!(
        csv.starts_with("codec,target_bpp,images,reached,bpp,detail,rows,notes\n"),
        "{csv}"
    );
    assert!(csv.contains("\nraw,30,3,3,"), "{csv}");
    // An empty set has no mean bpp (an empty field, not NaN).
    assert!(csv.contains("\nraw,10,3,0,,,,"), "{csv}");
    // The unreached rows are kept, in the CSV and in the Markdown.
    assert!(report.csv().contains(",false,below_lowest_rate,"));
    assert!(md.contains("below the lowest reachable rate"), "{md}");
    let dir = tempfile::tempdir().unwrap();
    report.write_all(dir.path()).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("rate_quality.svg")).unwrap();
    assert!(
        svg.contains("detail vs bpp"),
        "plot panel for the set measure"
    );
    assert!(dir.path().join("set_measures.csv").exists());
}

#[test]
fn targets_ending_on_the_same_file_are_decoded_once_and_timed() {
    let (_dir, paths) = images(2, 16);
    let raw = Raw::new("raw", false);
    let codecs: Vec<&dyn CodecUnderTest> = vec![&raw];
    // 16×16: every setting is above 24 bpp, so 5, 10 and 20 bpp all end on setting 0
    // (unreached); 30 bpp is reached at setting 184.
    let report = run(
        &codecs,
        &paths,
        &[&Detail],
        &options(&[5.0, 10.0, 20.0, 30.0], 1),
    )
    .unwrap();
    assert_eq!(report.rows.len(), 2 * 4);
    assert_eq!(raw.decodes.load(Ordering::Relaxed), 2 * 2);
    let low: Vec<&Row> = report.rows.iter().filter(|r| r.target_bpp < 25.0).collect();
    assert!(low
        .iter()
        .all(|r| !r.reach.is_reached() && r.setting == 0.0));
    // Each row keeps its own target even though the file and scores are shared.
    let targets: Vec<f64> = low.iter().map(|r| r.target_bpp).collect();
    assert_eq!(targets, vec![5.0, 10.0, 20.0, 5.0, 10.0, 20.0]);
    assert_eq!(report.stages.len(), 1);
    assert_eq!(report.stages[0].codec, "raw");
    assert!(report.stages[0].worker_total() > 0.0);
    assert!(report.wall_s > 0.0);
    assert!(report.markdown().contains("## Time"));
}

#[test]
fn workers_do_not_change_the_results() {
    let (_dir, paths) = images(5, 16);
    let (raw, blurred) = (Raw::new("raw", false), Raw::new("blurred", true));
    let codecs: Vec<&dyn CodecUnderTest> = vec![&raw, &blurred];
    let one = run(&codecs, &paths, &[&Detail], &options(&[25.0, 30.0], 1)).unwrap();
    let three = run(&codecs, &paths, &[&Detail], &options(&[25.0, 30.0], 3)).unwrap();
    assert_eq!(three.workers, 3);
    let key = |r: &Row| (r.image.clone(), r.codec.clone(), r.bytes, r.psnr.to_bits());
    let keys = |report: &Report| report.rows.iter().map(key).collect::<Vec<_>>();
    assert_eq!(keys(&one), keys(&three));
    assert_eq!(one.set_rows, three.set_rows);
    assert_eq!(one.crops, three.crops);
}

#[test]
fn missing_tool_is_named_with_its_install_command_before_any_work() {
    let (_dir, paths) = images(1, 16);
    let codec = Raw {
        missing_tool: true,
        ..Raw::new("raw", false)
    };
    let err = run(&[&codec], &paths, &[], &options(&[30.0], 1)).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("apt-get install -y some-codec-package"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn unreadable_image_is_named() {
    let (dir, mut paths) = images(2, 16);
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not an image").unwrap();
    paths.push(junk);
    let codec = Raw::new("raw", false);
    let err = run(&[&codec], &paths, &[], &options(&[30.0], 2)).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("junk.png"), "{message}");
}

#[test]
fn fixed_settings_are_run_as_given() {
    let (_dir, paths) = images(2, 16);
    let codec = Raw::new("raw", false);
    let report = run_fixed(&[(&codec, 0.0), (&codec, 32.0)], &paths, &options(&[], 2)).unwrap();
    assert_eq!(report.rows.len(), 4);
    let means = report.means();
    assert_eq!(means.len(), 2);
    assert_eq!((means[0].1.as_str(), means[1].1.as_str()), ("0", "32"));
    // 776 bytes and 808 bytes over 256 pixels.
    assert!((means[0].2.bpp - 24.25).abs() < 1e-12);
    assert!((means[1].2.bpp - 25.25).abs() < 1e-12);
    assert!(report.markdown().contains("| raw | 32 | 2 | 25.2500 |"));
    // No target: the CSV cell is empty.
    assert!(
        report.csv().contains("img0.png,raw,,0,776,"),
        "{}",
        report.csv()
    );
    let err = run_fixed(&[(&codec, 500.0)], &paths, &options(&[], 1)).unwrap_err();
    assert!(err.to_string().contains("outside its range"), "{err}");
}
