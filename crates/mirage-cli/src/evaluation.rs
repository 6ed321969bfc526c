//! Mirage in the evaluation suite (`mirage-eval`): as a codec under test, so that it is
//! rate-matched, measured and reported exactly like the classic codecs, and its realism
//! measure (MFD/MKD) as a set measure of every codec's decodes.
//!
//! The suite evaluates several images at once. libtorch work here (Mirage's networks, the
//! realism extractor) runs one call at a time under [`TORCH`]: the networks already use
//! every core, and Mirage's peak-memory measurement needs the process to itself.

use crate::codec::{Analysis, Codec};
use crate::model_file::id_hex;
use crate::realism_measure::naturalness::NaturalnessModel;
use crate::realism_measure::RealismMeasure;
use anyhow::Result;
use image::RgbImage;
use mirage::decoders::{AddOns, Decoder, Realism, RealismDecoder};
use mirage::ultralow::{CaptionUse, POINT_COUNT};
use mirage_eval::codecs::{CallStats, LastCallStats, MoreBits, SettingRange};
use mirage_eval::{CodecUnderTest, FeatureRows, SetMeasure};
use mirage_format::RATE_MAX;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tch::{Kind, Tensor};

/// Held during every libtorch call made by the evaluation (see the module docs).
static TORCH: Mutex<()> = Mutex::new(());

fn torch_lock() -> MutexGuard<'static, ()> {
    TORCH.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct MirageUnderTest {
    /// `None`: the MSE decode; `Some(w)`: decoded at hallucination weight `w` by the
    /// realism generator, from the same files (`mirage decode --realism w`).
    realism: Option<f32>,
    /// The realism generator, for `realism: Some(w)` with `w > 0`.
    generator: Mutex<Option<RealismDecoder>>,
    /// Behind a mutex because tensors are `Send` but not `Sync`; calls are serialised by
    /// [`TORCH`] anyway.
    codec: Mutex<Codec>,
    /// The analyses of the last few images encoded, most recent last (see
    /// [`MirageUnderTest::encode`]).
    analyses: Mutex<Vec<CachedAnalysis>>,
    last_call: LastCallStats,
}

/// Images whose analysis is kept: one per evaluation worker is enough, a few more cost
/// about 1 MB each.
const CACHED_ANALYSES: usize = 4;

struct CachedAnalysis {
    key: u64,
    analysis: Analysis,
    /// What computing it cost, charged to every encode that uses it.
    stats: CallStats,
}

/// Identifies an image by its size and a hash of its pixels.
fn image_key(img: &RgbImage) -> u64 {
    let mut hasher = DefaultHasher::new();
    img.dimensions().hash(&mut hasher);
    img.as_raw().hash(&mut hasher);
    hasher.finish()
}

impl MirageUnderTest {
    pub fn new(codec: Codec) -> MirageUnderTest {
        MirageUnderTest {
            realism: None,
            generator: Mutex::new(None),
            codec: Mutex::new(codec),
            analyses: Mutex::new(Vec::new()),
            last_call: LastCallStats::default(),
        }
    }

    /// Mirage decoded at hallucination weight `w` (the realism decoder), named
    /// `mirage-w{w}` in the reports. Fails if `w` is outside [0, 1] or the codec has no
    /// realism generator loaded for `w > 0`.
    pub fn with_realism(codec: Codec, add_ons: AddOns, w: f32) -> Result<MirageUnderTest> {
        if !(0.0..=1.0).contains(&w) {
            anyhow::bail!("hallucination weight {w} is outside 0..1");
        }
        if w > 0.0 {
            add_ons.realism()?;
        }
        Ok(MirageUnderTest {
            realism: Some(w),
            generator: Mutex::new(add_ons.realism),
            ..MirageUnderTest::new(codec)
        })
    }

    fn codec(&self) -> MutexGuard<'_, Codec> {
        self.codec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one piece of a codec call and measures its wall time and the process's peak
    /// resident memory during it. Mirage runs in this process, so the peak is measured by
    /// resetting Linux's high-water mark (`/proc/self/clear_refs`, "5") before the call
    /// and reading `VmHWM` after it; it includes the loaded models, as a `mirage`
    /// process would (and whatever another evaluation worker allocates meanwhile outside
    /// libtorch: metric buffers, tens of MB). Elsewhere the peak is left unknown. The
    /// caller holds [`TORCH`].
    fn measure<T>(call: impl FnOnce() -> Result<T>) -> Result<(T, CallStats)> {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let start = Instant::now();
        let out = call()?;
        let wall_s = start.elapsed().as_secs_f64();
        let peak_rss_kib = reset.then(peak_rss_kib).flatten();
        Ok((
            out,
            CallStats {
                wall_s,
                peak_rss_kib,
            },
        ))
    }
}

/// `VmHWM` of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl CodecUnderTest for MirageUnderTest {
    fn name(&self) -> String {
        match self.realism {
            None => "mirage".into(),
            Some(w) => format!("mirage-w{w}"),
        }
    }

    fn description(&self) -> String {
        let codec = self.codec();
        let core = format!(
            "Mirage mean-scale hyperprior (model {}), --quality 0..100",
            id_hex(&codec.id())
        );
        let generator = self.generator.lock().unwrap_or_else(|e| e.into_inner());
        match (self.realism, generator.as_ref().map(|g| g.id)) {
            (Some(w), Some(generator)) => format!(
                "{core}, decoded at realism w = {w} (generator {})",
                id_hex(&generator)
            ),
            (Some(w), None) => format!("{core}, decoded at realism w = {w}"),
            (None, _) => format!("{core}, MSE decode"),
        }
    }

    fn settings(&self) -> SettingRange {
        SettingRange {
            min: 0.0,
            max: 100.0,
            step: 0.1,
            more_bits: MoreBits::HigherSetting,
        }
    }

    /// `mirage encode --quality q`: the analysis transform, then coding at the rate
    /// setting. The rate search encodes one image at many settings, so the analysis of
    /// recent images is kept and reused; its time is still charged to every encode (and
    /// its peak memory counted), so the reported figures are those of a full encode. The
    /// file is the same as `Codec::compress` gives.
    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        if !(0.0..=100.0).contains(&setting) {
            anyhow::bail!("quality {setting} is outside 0..100");
        }
        let rate = (setting / 100.0 * f64::from(RATE_MAX)).round() as u16;
        let _torch = torch_lock();
        let codec = self.codec();
        let key = image_key(img);
        let mut analyses = self.analyses.lock().unwrap_or_else(|e| e.into_inner());
        let index = match analyses.iter().position(|c| c.key == key) {
            Some(i) => i,
            None => {
                let (analysis, stats) = Self::measure(|| Ok(codec.analyse(img)?))?;
                if analyses.len() == CACHED_ANALYSES {
                    analyses.remove(0);
                }
                analyses.push(CachedAnalysis {
                    key,
                    analysis,
                    stats,
                });
                analyses.len() - 1
            }
        };
        let cached = &analyses[index];
        let ((bytes, _), coding) =
            Self::measure(|| Ok(codec.encode_analysis(&cached.analysis, rate)?))?;
        self.last_call.record(CallStats {
            wall_s: cached.stats.wall_s + coding.wall_s,
            peak_rss_kib: cached.stats.peak_rss_kib.max(coding.peak_rss_kib),
        });
        Ok(bytes)
    }

    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        let _torch = torch_lock();
        let codec = self.codec();
        let generator = self.generator.lock().unwrap_or_else(|e| e.into_inner());
        let decoder = match (self.realism, generator.as_ref()) {
            (Some(w), Some(generator)) if w > 0.0 => {
                Decoder::Realism(generator, Realism::Weight(w))
            }
            _ => Decoder::Mse,
        };
        let ((decoded, _), stats) = Self::measure(|| Ok(decoder.decompress(&codec, bytes)?))?;
        self.last_call.record(stats);
        Ok(decoded)
    }

    fn last_call_stats(&self) -> Option<CallStats> {
        self.last_call.get()
    }

    fn format_setting(&self, setting: f64) -> String {
        format!("q{setting:.1}")
    }
}

/// The ultra-low mode (PerCo) as a codec under test, named `mirage-ultralow`: its
/// setting is the operating point (0, 1, 2: about 0.003, 0.01 and 0.03 bpp), files
/// carry no caption, and decodes are at the file's weight (w = 1).
pub struct UltralowUnderTest {
    /// Behind mutexes for the reason [`MirageUnderTest`]'s codec is.
    codec: Mutex<Codec>,
    add_ons: Mutex<AddOns>,
    description: String,
    last_call: LastCallStats,
}

impl UltralowUnderTest {
    /// Fails if the bundled ultra-low model does not fit the loaded core.
    pub fn new(codec: Codec, add_ons: AddOns) -> Result<UltralowUnderTest> {
        let description = format!(
            "Mirage ultra-low mode (model {}, on core {}), operating points 0..{}",
            id_hex(&add_ons.ultralow(&codec)?.id),
            id_hex(&codec.id()),
            POINT_COUNT - 1
        );
        Ok(UltralowUnderTest {
            codec: Mutex::new(codec),
            add_ons: Mutex::new(add_ons),
            description,
            last_call: LastCallStats::default(),
        })
    }
}

impl CodecUnderTest for UltralowUnderTest {
    fn name(&self) -> String {
        "mirage-ultralow".into()
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn settings(&self) -> SettingRange {
        SettingRange {
            min: 0.0,
            max: (POINT_COUNT - 1) as f64,
            step: 1.0,
            more_bits: MoreBits::HigherSetting,
        }
    }

    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        let point = setting.round() as usize;
        if setting < 0.0 || point >= POINT_COUNT {
            anyhow::bail!(
                "operating point {setting} is outside 0..{}",
                POINT_COUNT - 1
            );
        }
        let _torch = torch_lock();
        let codec = self.codec.lock().unwrap_or_else(|e| e.into_inner());
        let add_ons = self.add_ons.lock().unwrap_or_else(|e| e.into_inner());
        let ((bytes, _), stats) = MirageUnderTest::measure(|| {
            Ok(add_ons
                .ultralow(&codec)?
                .compress(&codec, img, point, None)?)
        })?;
        self.last_call.record(stats);
        Ok(bytes)
    }

    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        let _torch = torch_lock();
        let codec = self.codec.lock().unwrap_or_else(|e| e.into_inner());
        let add_ons = self.add_ons.lock().unwrap_or_else(|e| e.into_inner());
        let ((decoded, _, _), stats) = MirageUnderTest::measure(|| {
            Ok(add_ons.decompress_any(&codec, bytes, Realism::Auto, CaptionUse::FromFile)?)
        })?;
        self.last_call.record(stats);
        Ok(decoded)
    }

    fn last_call_stats(&self) -> Option<CallStats> {
        self.last_call.get()
    }

    fn format_setting(&self, setting: f64) -> String {
        format!("p{setting:.0}")
    }
}

/// MFD and MKD (Mirage's realism measure, `crate::realism_measure`) as a set measure of the
/// evaluation: every decode is cut into the HiFiC patches and reduced to its extractor
/// features at once, and each (codec, target) set is compared with its originals at the end.
pub struct RealismSetMeasure {
    measure: Mutex<RealismMeasure>,
    extractor_id: String,
}

impl RealismSetMeasure {
    pub fn new(measure: RealismMeasure) -> RealismSetMeasure {
        RealismSetMeasure {
            extractor_id: measure.extractor_id.clone(),
            measure: Mutex::new(measure),
        }
    }

    fn measure(&self) -> MutexGuard<'_, RealismMeasure> {
        self.measure.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SetMeasure for RealismSetMeasure {
    fn title(&self) -> String {
        "MFD/MKD (Mirage feature distance, own extractor)".into()
    }

    fn description(&self) -> String {
        let m = self.measure();
        format!(
            "MFD (Fréchet distance) and MKD (kernel distance ×1000): the formulas of FID and \
             KID on the features of Mirage's self-trained realism extractor `{}` (no \
             ImageNet network), so **not** comparable with FID/KID values anywhere else. \
             HiFiC patch protocol: {}×{} patches on a grid plus a grid shifted by {} px. With \
             few patches per set MFD has a large positive bias, so compare only sets with the \
             same patch count; MKD is unbiased (paired) and can be slightly negative. See \
             docs/realism-measure.md.",
            self.extractor_id, m.grid.size, m.grid.size, m.grid.shift
        )
    }

    fn columns(&self) -> Vec<String> {
        vec!["MFD".into(), "MKD ×1000".into()]
    }

    fn features(&self, img: &RgbImage) -> Result<FeatureRows> {
        let _torch = torch_lock();
        let m = self.measure();
        let features = m.patch_features(&m.grid.cut(img));
        let dim = features.size()[1] as usize;
        let values = Vec::<f64>::try_from(features.to_kind(Kind::Double).flatten(0, -1))?;
        FeatureRows::new(dim, values)
    }

    fn distance(&self, originals: &FeatureRows, decoded: &FeatureRows) -> Result<Vec<f64>> {
        let _torch = torch_lock();
        let as_tensor =
            |f: &FeatureRows| Tensor::from_slice(&f.values).view([f.rows() as i64, f.dim as i64]);
        let d = self
            .measure()
            .distance_between(&as_tensor(originals), &as_tensor(decoded))?;
        Ok(vec![d.mfd, d.mkd])
    }
}

/// The no-reference naturalness score (NIQE-like, `realism_measure::naturalness`) as a set
/// measure: one row per image holding its score, and the set's value is the mean score
/// of the decodes (the originals' own is printed beside it for scale).
pub struct NaturalnessSetMeasure {
    model: Mutex<NaturalnessModel>,
}

impl NaturalnessSetMeasure {
    pub fn new(model: NaturalnessModel) -> NaturalnessSetMeasure {
        NaturalnessSetMeasure {
            model: Mutex::new(model),
        }
    }
}

impl SetMeasure for NaturalnessSetMeasure {
    fn title(&self) -> String {
        "Naturalness (no-reference, NIQE-like)".into()
    }

    fn description(&self) -> String {
        "Naturalness: NIQE's recipe (generalised-Gaussian fits to locally normalised luma \
         and neighbour products on 96×96 patches at two scales) against a Gaussian fitted on \
         sharp patches of the training photos (models/naturalness.safetensors). It needs no \
         reference and no network; lower is more natural. Blur, noise, blocking and strong \
         periodic marks raise it (docs/realism-measure.md). The value is the mean over the \
         decodes; `originals` is the originals' own mean."
            .into()
    }

    fn columns(&self) -> Vec<String> {
        vec!["naturalness".into(), "originals".into()]
    }

    fn features(&self, img: &RgbImage) -> Result<FeatureRows> {
        let _torch = torch_lock();
        let score = self
            .model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .score(img)?;
        FeatureRows::new(1, vec![score])
    }

    fn distance(&self, originals: &FeatureRows, decoded: &FeatureRows) -> Result<Vec<f64>> {
        let mean = |f: &FeatureRows| f.values.iter().sum::<f64>() / f.values.len().max(1) as f64;
        Ok(vec![mean(decoded), mean(originals)])
    }
}
