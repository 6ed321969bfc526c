//! Mirage as a codec under test in the evaluation suite (`mirage-eval`), so that it is
//! rate-matched, measured and reported exactly like the classic codecs.

use crate::codec::{Codec, RateTarget};
use crate::model_file::id_hex;
use anyhow::Result;
use image::RgbImage;
use mirage_eval::codecs::{CallStats, MoreBits, SettingRange};
use mirage_eval::CodecUnderTest;
use std::sync::Mutex;
use std::time::Instant;

pub struct MirageUnderTest {
    pub codec: Codec,
    last_call: Mutex<Option<CallStats>>,
}

impl MirageUnderTest {
    pub fn new(codec: Codec) -> MirageUnderTest {
        MirageUnderTest {
            codec,
            last_call: Mutex::new(None),
        }
    }

    /// Runs one codec call and records its wall time and the process's peak resident
    /// memory during it. Mirage runs in this process, so the peak is measured by
    /// resetting Linux's high-water mark (`/proc/self/clear_refs`, "5") before the call
    /// and reading `VmHWM` after it; it includes the loaded models, as a `mirage`
    /// process would. Elsewhere the peak is left unknown.
    fn measured<T>(&self, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let start = Instant::now();
        let out = call()?;
        let wall_s = start.elapsed().as_secs_f64();
        let peak_rss_kib = reset.then(peak_rss_kib).flatten();
        *self.last_call.lock().unwrap_or_else(|e| e.into_inner()) = Some(CallStats {
            wall_s,
            peak_rss_kib,
        });
        Ok(out)
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
        "mirage".into()
    }

    fn description(&self) -> String {
        format!(
            "Mirage mean-scale hyperprior (model {}), --quality 0..100",
            id_hex(&self.codec.id())
        )
    }

    fn settings(&self) -> SettingRange {
        SettingRange {
            min: 0.0,
            max: 100.0,
            step: 0.1,
            more_bits: MoreBits::HigherSetting,
        }
    }

    fn encode(&self, img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
        self.measured(|| Ok(self.codec.compress(img, RateTarget::Quality(setting))?.0))
    }

    fn decode(&self, bytes: &[u8]) -> Result<RgbImage> {
        self.measured(|| Ok(self.codec.decompress(bytes)?.0))
    }

    fn last_call_stats(&self) -> Option<CallStats> {
        *self.last_call.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn format_setting(&self, setting: f64) -> String {
        format!("q{setting:.1}")
    }
}
