//! The codecs under test: a trait that every codec implements (Mirage later, in the `mirage`
//! crate), and adapters for the classic codecs, which run the Debian command-line tools
//! through temporary files.
//!
//! The adapters run the tools as separate processes rather than linking the libraries, so the
//! numbers are those of the exact, versioned encoders people use (and that
//! `../shared/notes/baselines-kodak.md` was measured with), and nothing here needs a C build.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;

/// Which way the quality knob moves the rate. Rate matching needs it to know which half of
/// the range to search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoreBits {
    /// A higher setting spends more bits (JPEG/WebP/HEIC quality, Mirage quality).
    HigherSetting,
    /// A lower setting spends more bits (AVIF quantizer, JPEG XL distance).
    LowerSetting,
}

/// The valid values of a codec's quality knob: `min..=max` on a grid of `step`.
///
/// Settings are always taken on the grid, so rate matching is a bisection over integers
/// (exact for integer knobs, and it makes encodings cacheable by grid index), and settings
/// print reproducibly (no `0.07000000000000001` on a command line).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SettingRange {
    pub min: f64,
    pub max: f64,
    /// Grid spacing: 1 for integer knobs; e.g. 0.1 for Mirage's continuous quality 0..100.
    pub step: f64,
    pub more_bits: MoreBits,
}

impl SettingRange {
    /// Number of grid intervals; grid indices run over `0..=steps()`.
    pub fn steps(&self) -> u64 {
        ((self.max - self.min) / self.step + 1e-9).floor().max(0.0) as u64
    }

    /// The setting at a grid index counted in rate order: index 0 is the setting that spends
    /// the fewest bits, index `steps()` the one that spends the most.
    pub fn setting_at(&self, index: u64) -> f64 {
        let index = index.min(self.steps()) as f64;
        let raw = match self.more_bits {
            MoreBits::HigherSetting => self.min + index * self.step,
            MoreBits::LowerSetting => self.max - index * self.step,
        };
        // Snap to the grid to cancel accumulated float error.
        let snapped = self.min + ((raw - self.min) / self.step).round() * self.step;
        let decimals = self.decimals();
        let scale = 10f64.powi(decimals as i32);
        (snapped * scale).round() / scale
    }

    /// Decimal places needed to print a setting of this grid exactly.
    pub fn decimals(&self) -> usize {
        (0..6)
            .find(|&d| {
                let scaled = self.step * 10f64.powi(d);
                (scaled - scaled.round()).abs() < 1e-9
            })
            .unwrap_or(6) as usize
    }

    /// Formats a setting with as many decimals as the grid needs.
    pub fn format(&self, setting: f64) -> String {
        format!("{:.*}", self.decimals(), setting)
    }

    fn validate(&self) -> Result<()> {
        if !(self.min.is_finite()
            && self.max.is_finite()
            && self.step > 0.0
            && self.max >= self.min)
        {
            bail!("invalid setting range {self:?}");
        }
        Ok(())
    }
}

/// What a codec measured about its own last `encode` or `decode` call.
///
/// The caller can only time the whole trait call; for external tools that includes writing
/// and reading temporary files in this harness, which is not the codec's cost. Codecs that
/// can measure better (the child process alone, its peak memory) report it here.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CallStats {
    /// Wall time of the codec's own work, in seconds.
    pub wall_s: f64,
    /// Peak resident memory of the codec's process, in KiB, if known (external tools: needs
    /// GNU `time`, Debian package `time`).
    pub peak_rss_kib: Option<u64>,
}

/// The [`CallStats`] of each thread's last codec call.
///
/// The suite runs several images at once, so "the last call" must be the last call *of the
/// calling thread*: a single shared slot would hand one worker the other's measurement.
#[derive(Debug, Default)]
pub struct LastCallStats(Mutex<HashMap<ThreadId, CallStats>>);

impl LastCallStats {
    /// Records the calling thread's last call.
    pub fn record(&self, stats: CallStats) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(std::thread::current().id(), stats);
    }

    /// The calling thread's last recorded call.
    pub fn get(&self) -> Option<CallStats> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&std::thread::current().id()).copied()
    }
}

/// A codec under test. Implemented by the classic-codec adapters here and by Mirage (in the
/// `mirage` crate).
///
/// `setting` is the codec's own quality knob; [`CodecUnderTest::settings`] tells the rate
/// matcher its range, grid and which direction spends more bits. Mirage plugs in with
/// `SettingRange { min: 0.0, max: 100.0, step: 0.1, more_bits: MoreBits::HigherSetting }`.
///
/// `Sync` because the suite evaluates several images in parallel with the same codec;
/// an implementation that cannot run two calls at once serialises them itself.
pub trait CodecUnderTest: Sync {
    /// Short identifier used in file names, CSV and plots (e.g. `avif`, `jxl-r8`).
    fn name(&self) -> String;

    /// One line for the report saying exactly what runs (command, version, knob).
    fn description(&self) -> String {
        self.name()
    }

    /// The range of the quality knob.
    fn settings(&self) -> SettingRange;

    /// Encodes an image at a setting; returns the complete file, whose length is the rate.
    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>>;

    /// Decodes a file produced by [`CodecUnderTest::encode`].
    fn decode(&self, bytes: &[u8]) -> Result<RgbImage>;

    /// Fails with an actionable message if something the codec needs is missing; the suite
    /// calls it for every codec before doing any work.
    fn check_available(&self) -> Result<()> {
        Ok(())
    }

    /// The codec's own measurement of the calling thread's last `encode`/`decode` call, if it
    /// has one (see [`LastCallStats`]); else the caller's wall time of the call is used.
    fn last_call_stats(&self) -> Option<CallStats> {
        None
    }

    /// A setting as shown in reports, e.g. `q40` or `d15.00`.
    fn format_setting(&self, setting: f64) -> String {
        self.settings().format(setting)
    }
}

/// An external program and the Debian package that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub binary: &'static str,
    pub package: &'static str,
}

/// Errors that the caller may want to tell apart from generic failures.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "`{binary}` was not found on PATH; it is in the Debian package `{package}`: \
         install it with `apt-get install -y {package}`"
    )]
    Missing {
        binary: &'static str,
        package: &'static str,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
}

impl Tool {
    pub const fn new(binary: &'static str, package: &'static str) -> Self {
        Tool { binary, package }
    }

    /// Finds the binary on `PATH`, or explains how to install it.
    pub fn locate(&self) -> Result<PathBuf, ToolError> {
        let missing = || ToolError::Missing {
            binary: self.binary,
            package: self.package,
        };
        let path = std::env::var_os("PATH").ok_or_else(missing)?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(self.binary))
            .find(|p| p.is_file())
            .ok_or_else(missing)
    }

    /// Runs the tool to completion and measures it: wall time and, when GNU `time` is
    /// installed, the tool's peak resident memory. Output goes to files named in `args`; the
    /// tool's stdout and stderr are captured and quoted in the error if it fails.
    pub fn run(&self, args: &[OsString]) -> Result<CallStats> {
        self.run_captured(args).map(|(stats, _)| stats)
    }

    /// Like [`Tool::run`], and also returns what the tool printed (stdout then stderr).
    pub fn run_captured(&self, args: &[OsString]) -> Result<(CallStats, String)> {
        let binary = self.locate()?;
        // Peak memory goes through GNU `time` because a child's own `ru_maxrss` (from
        // `wait4`) is useless here: Linux counts the parent's resident set inherited at
        // fork/exec, so every tool would "peak" at this process's size. `time` is a small
        // process, so what it reports (`%M`) is the tool's own peak.
        let memory_file =
            tempfile::NamedTempFile::new().context("cannot create a temporary file")?;
        let mut command = match GNU_TIME.locate() {
            Ok(time) => {
                let mut c = Command::new(time);
                c.args(["-f", "%M", "-o"])
                    .arg(memory_file.path())
                    .arg(&binary);
                c
            }
            Err(_) => Command::new(&binary),
        };
        // Files rather than pipes: nothing can block on a full pipe while we wait.
        let mut stdout = tempfile::tempfile().context("cannot create a temporary file")?;
        let mut stderr = tempfile::tempfile().context("cannot create a temporary file")?;
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout.try_clone()?))
            .stderr(Stdio::from(stderr.try_clone()?));
        let start = Instant::now();
        let status = command
            .status()
            .with_context(|| format!("cannot run `{}`", self.binary))?;
        let wall_s = start.elapsed().as_secs_f64();
        let mut output = String::new();
        for file in [&mut stdout, &mut stderr] {
            file.seek(SeekFrom::Start(0))?;
            file.read_to_string(&mut output).ok();
        }
        if !status.success() {
            let command = std::iter::once(self.binary.to_string())
                .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(" ");
            return Err(ToolError::Failed {
                command,
                status,
                stderr: output.trim().chars().take(2000).collect(),
            }
            .into());
        }
        // `time` writes "%M" (KiB) as its last line.
        let peak_rss_kib = std::fs::read_to_string(memory_file.path())
            .ok()
            .and_then(|text| text.lines().last()?.trim().parse().ok());
        let stats = CallStats {
            wall_s,
            peak_rss_kib,
        };
        Ok((stats, output))
    }
}

/// GNU `time`, used only to measure the codec tools' peak memory.
pub const GNU_TIME: Tool = Tool::new("time", "time");

/// Reads any image file the `image` crate understands as 8-bit RGB, naming the file on error.
pub fn load_image(path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let img = reader
        .decode()
        .with_context(|| format!("cannot decode image {}", path.display()))?;
    Ok(img.to_rgb8())
}

/// Writes a PNG quickly (fast deflate): it is only an input file for a tool.
pub(crate) fn write_png(img: &RgbImage, path: &Path) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let file = std::io::BufWriter::new(File::create(path)?);
    PngEncoder::new_with_quality(file, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a binary PPM (P6), the input `cjpeg` 2.1 reads (it has no PNG reader).
pub(crate) fn write_ppm(img: &RgbImage, path: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::new(File::create(path)?);
    write!(file, "P6\n{} {}\n255\n", img.width(), img.height())?;
    file.write_all(img.as_raw())?;
    file.flush()?;
    Ok(())
}

/// The classic codecs of issue 3, with the exact commands of the Kodak baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicKind {
    /// `cjpeg -quality Q -optimize` (libjpeg-turbo), Q 1..100.
    Jpeg,
    /// `cwebp -q Q -m 6`, Q 0..100 in steps of 0.25 (cwebp takes a float).
    WebP,
    /// `avifenc -j 1 -s 6 -y 420 -c aom --min Q --max Q`, Q 0..63, lower = more bits.
    Avif,
    /// `cjxl -d D -e 7`, D 0.1..25 in steps of 0.01, lower = more bits; with `resampling`,
    /// adds `--resampling=N` (N = 2, 4 or 8) for the very-low-rate form.
    JpegXl { resampling: Option<u8> },
    /// `heif-enc -q Q` (x265), Q 0..100.
    Heic,
}

/// A classic codec run through its Debian command-line encoder and decoder.
#[derive(Debug)]
pub struct ClassicCodec {
    kind: ClassicKind,
    /// Measurement of each thread's last tool run, handed out by `last_call_stats`.
    last_call: LastCallStats,
}

impl ClassicCodec {
    pub fn new(kind: ClassicKind) -> Self {
        ClassicCodec {
            kind,
            last_call: LastCallStats::default(),
        }
    }

    /// JPEG, WebP, AVIF, JPEG XL, JPEG XL with 8× resampling, HEIC.
    pub fn all() -> Vec<ClassicCodec> {
        [
            ClassicKind::Jpeg,
            ClassicKind::WebP,
            ClassicKind::Avif,
            ClassicKind::JpegXl { resampling: None },
            ClassicKind::JpegXl {
                resampling: Some(8),
            },
            ClassicKind::Heic,
        ]
        .into_iter()
        .map(ClassicCodec::new)
        .collect()
    }

    /// Looks a codec up by its [`CodecUnderTest::name`].
    pub fn by_name(name: &str) -> Option<ClassicCodec> {
        Self::all().into_iter().find(|c| c.name() == name)
    }

    pub fn kind(&self) -> ClassicKind {
        self.kind
    }

    /// The encoder and decoder binaries.
    pub fn tools(&self) -> [Tool; 2] {
        match self.kind {
            ClassicKind::Jpeg => [
                Tool::new("cjpeg", "libjpeg-turbo-progs"),
                Tool::new("djpeg", "libjpeg-turbo-progs"),
            ],
            ClassicKind::WebP => [Tool::new("cwebp", "webp"), Tool::new("dwebp", "webp")],
            ClassicKind::Avif => [
                Tool::new("avifenc", "libavif-bin"),
                Tool::new("avifdec", "libavif-bin"),
            ],
            ClassicKind::JpegXl { .. } => [
                Tool::new("cjxl", "libjxl-tools"),
                Tool::new("djxl", "libjxl-tools"),
            ],
            ClassicKind::Heic => [
                Tool::new("heif-enc", "libheif-examples"),
                Tool::new("heif-convert", "libheif-examples"),
            ],
        }
    }

    fn extension(&self) -> &'static str {
        match self.kind {
            ClassicKind::Jpeg => "jpg",
            ClassicKind::WebP => "webp",
            ClassicKind::Avif => "avif",
            ClassicKind::JpegXl { .. } => "jxl",
            ClassicKind::Heic => "heic",
        }
    }

    /// Encoder arguments. Tools that default to several threads are pinned to one, so speed
    /// is per core and comparable (and the encoded bytes do not depend on the machine).
    fn encode_args(&self, setting: &str, input: &Path, output: &Path) -> Vec<OsString> {
        let s = |x: &str| OsString::from(x);
        let (i, o) = (input.as_os_str().to_owned(), output.as_os_str().to_owned());
        match self.kind {
            ClassicKind::Jpeg => vec![
                s("-quality"),
                s(setting),
                s("-optimize"),
                s("-outfile"),
                o,
                i,
            ],
            ClassicKind::WebP => vec![
                s("-quiet"),
                s("-q"),
                s(setting),
                s("-m"),
                s("6"),
                i,
                s("-o"),
                o,
            ],
            ClassicKind::Avif => vec![
                s("-j"),
                s("1"),
                s("-s"),
                s("6"),
                s("-y"),
                s("420"),
                s("-c"),
                s("aom"),
                s("--min"),
                s(setting),
                s("--max"),
                s(setting),
                i,
                o,
            ],
            ClassicKind::JpegXl { resampling } => {
                let mut args = vec![
                    i,
                    o,
                    s("-d"),
                    s(setting),
                    s("-e"),
                    s("7"),
                    s("--num_threads=0"),
                ];
                if let Some(r) = resampling {
                    args.push(OsString::from(format!("--resampling={r}")));
                }
                args
            }
            ClassicKind::Heic => vec![s("-q"), s(setting), i, s("-o"), o],
        }
    }

    fn decode_args(&self, input: &Path, output: &Path) -> Vec<OsString> {
        let s = |x: &str| OsString::from(x);
        let (i, o) = (input.as_os_str().to_owned(), output.as_os_str().to_owned());
        match self.kind {
            ClassicKind::Jpeg => vec![s("-outfile"), o, i],
            ClassicKind::WebP => vec![s("-quiet"), s("-ppm"), i, s("-o"), o],
            ClassicKind::Avif => vec![
                s("-j"),
                s("1"),
                s("-d"),
                s("8"),
                s("--png-compress"),
                s("0"),
                i,
                o,
            ],
            ClassicKind::JpegXl { .. } => vec![
                i,
                o,
                s("--bits_per_sample=8"),
                s("--num_threads=1"),
                s("--quiet"),
            ],
            ClassicKind::Heic => vec![s("--quiet"), i, o],
        }
    }
}

impl CodecUnderTest for ClassicCodec {
    fn name(&self) -> String {
        match self.kind {
            ClassicKind::Jpeg => "jpeg".into(),
            ClassicKind::WebP => "webp".into(),
            ClassicKind::Avif => "avif".into(),
            ClassicKind::JpegXl { resampling: None } => "jxl".into(),
            ClassicKind::JpegXl {
                resampling: Some(r),
            } => format!("jxl-r{r}"),
            ClassicKind::Heic => "heic".into(),
        }
    }

    fn description(&self) -> String {
        match self.kind {
            ClassicKind::Jpeg => "JPEG: `cjpeg -quality Q -optimize` (libjpeg-turbo)".into(),
            ClassicKind::WebP => "WebP: `cwebp -q Q -m 6`".into(),
            ClassicKind::Avif => {
                "AVIF: `avifenc -j 1 -s 6 -y 420 -c aom --min Q --max Q` (Q 0..63)".into()
            }
            ClassicKind::JpegXl { resampling: None } => {
                "JPEG XL: `cjxl -d D -e 7 --num_threads=0`".into()
            }
            ClassicKind::JpegXl {
                resampling: Some(r),
            } => {
                format!("JPEG XL, very low rate: `cjxl -d D -e 7 --num_threads=0 --resampling={r}`")
            }
            ClassicKind::Heic => "HEIC: `heif-enc -q Q` (x265)".into(),
        }
    }

    fn settings(&self) -> SettingRange {
        let (min, max, step, more_bits) = match self.kind {
            // libjpeg treats quality 0 as 1.
            ClassicKind::Jpeg => (1.0, 100.0, 1.0, MoreBits::HigherSetting),
            ClassicKind::WebP => (0.0, 100.0, 0.25, MoreBits::HigherSetting),
            ClassicKind::Avif => (0.0, 63.0, 1.0, MoreBits::LowerSetting),
            ClassicKind::JpegXl { resampling: None } => (0.1, 25.0, 0.01, MoreBits::LowerSetting),
            // Resampling is for very low rates only; below d1 it would just waste the search.
            ClassicKind::JpegXl {
                resampling: Some(_),
            } => (1.0, 25.0, 0.01, MoreBits::LowerSetting),
            ClassicKind::Heic => (0.0, 100.0, 1.0, MoreBits::HigherSetting),
        };
        SettingRange {
            min,
            max,
            step,
            more_bits,
        }
    }

    fn format_setting(&self, setting: f64) -> String {
        let prefix = match self.kind {
            ClassicKind::JpegXl { .. } => "d",
            _ => "q",
        };
        format!("{prefix}{}", self.settings().format(setting))
    }

    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        let range = self.settings();
        range.validate()?;
        if !(range.min..=range.max).contains(&setting) {
            bail!(
                "{}: setting {setting} outside {}..={}",
                self.name(),
                range.min,
                range.max
            );
        }
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let input = match self.kind {
            ClassicKind::Jpeg => {
                let p = dir.path().join("input.ppm");
                write_ppm(img, &p)?;
                p
            }
            _ => {
                let p = dir.path().join("input.png");
                write_png(img, &p)?;
                p
            }
        };
        let output = dir.path().join(format!("output.{}", self.extension()));
        let [encoder, _] = self.tools();
        let stats = encoder.run(&self.encode_args(&range.format(setting), &input, &output))?;
        self.last_call.record(stats);
        std::fs::read(&output).with_context(|| {
            format!(
                "`{}` reported success but wrote no {}",
                encoder.binary,
                output.display()
            )
        })
    }

    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let input = dir.path().join(format!("input.{}", self.extension()));
        std::fs::write(&input, bytes)?;
        // Uncompressed output where the decoder can write it, so that decode time is not
        // mostly zlib: PPM from djpeg, dwebp and djxl, uncompressed PNG from avifdec.
        // heif-convert can only write compressed PNG (or JPEG/Y4M), which inflates HEIC's
        // decode time.
        let output = dir.path().join(match self.kind {
            ClassicKind::Jpeg | ClassicKind::WebP | ClassicKind::JpegXl { .. } => "output.ppm",
            ClassicKind::Avif | ClassicKind::Heic => "output.png",
        });
        let [_, decoder] = self.tools();
        let stats = decoder.run(&self.decode_args(&input, &output))?;
        self.last_call.record(stats);
        load_image(&output).with_context(|| format!("reading the output of `{}`", decoder.binary))
    }

    fn check_available(&self) -> Result<()> {
        for tool in self.tools() {
            tool.locate()?;
        }
        Ok(())
    }

    fn last_call_stats(&self) -> Option<CallStats> {
        self.last_call.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_grid_is_in_rate_order_and_exact() {
        let avif = ClassicCodec::new(ClassicKind::Avif).settings();
        assert_eq!(avif.steps(), 63);
        assert_eq!(avif.setting_at(0), 63.0);
        assert_eq!(avif.setting_at(63), 0.0);
        let jxl = ClassicCodec::new(ClassicKind::JpegXl { resampling: None }).settings();
        assert_eq!(jxl.steps(), 2490);
        assert_eq!(jxl.setting_at(0), 25.0);
        assert_eq!(jxl.setting_at(2490), 0.1);
        assert_eq!(jxl.format(jxl.setting_at(1)), "24.99");
        let mirage = SettingRange {
            min: 0.0,
            max: 100.0,
            step: 0.1,
            more_bits: MoreBits::HigherSetting,
        };
        assert_eq!(mirage.steps(), 1000);
        assert_eq!(mirage.setting_at(7), 0.7);
        assert_eq!(mirage.format(0.7), "0.7");
    }

    #[test]
    fn missing_tool_names_the_package_and_the_command() {
        let tool = Tool::new("surely-not-an-installed-binary", "some-package");
        let message = tool.locate().unwrap_err().to_string();
        assert!(message.contains("some-package"), "{message}");
        assert!(
            message.contains("apt-get install -y some-package"),
            "{message}"
        );
        let message = tool.run(&[]).unwrap_err().to_string();
        assert!(
            message.contains("apt-get install -y some-package"),
            "{message}"
        );
    }

    #[test]
    fn names_are_unique() {
        let names: Vec<String> = ClassicCodec::all().iter().map(|c| c.name()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names.len(), sorted.len());
        assert!(ClassicCodec::by_name("jxl-r8").is_some());
    }
}
