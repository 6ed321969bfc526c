//! Matched rates: find, per image, the codec setting whose file comes closest to a target
//! bits-per-pixel without exceeding it.
//!
//! Comparing codecs at their own "quality 50" says nothing; comparing them at the same file
//! size per image is what a user choosing a codec does. The rule is "largest file whose bpp
//! does not exceed the target": a codec is never credited with bits it did not have, and the
//! error is on the side of disadvantaging the codec under test (by at most one setting step).
//!
//! The search works on the setting grid ([`SettingRange`]), assuming the rate grows
//! monotonically along it: secant steps on `ln(bpp)` with a bisection safeguard, until two
//! neighbouring grid points bracket the target, so the answer is exact on the grid. Real
//! encoders are only nearly monotone (JPEG and HEIC have small wiggles); the search then
//! still returns a file within the target, but possibly not the largest one.
//!
//! A fine grid (JPEG XL's distance in 0.01 steps, Mirage's quality in 0.1 steps) can put
//! many settings within a fraction of a percent of the target, and closing the bracket
//! there costs probes that change nothing a reader can see. So the search also stops when
//! the best fitting file is within a relative [tolerance](RateMatcher::with_tolerance) of
//! the target (default [`DEFAULT_TOLERANCE`]); 0 asks for the exact grid answer. Encodings are
//! cached per grid index, so probes are reused across the targets of one image, and a target
//! is declared unreachable only after the relevant end of the range was actually encoded.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use image::RgbImage;

use crate::codecs::{CodecUnderTest, SettingRange};

/// Default budget of encodes per target. Pure bisection would need 12 on JPEG XL's
/// 2491-point distance grid; the secant steps typically need 3 to 6.
pub const DEFAULT_MAX_ITERATIONS: usize = 12;

/// Default relative tolerance: a file with `target × (1 − 0.005) <= bpp <= target` is
/// accepted without closing the bracket. Half a percent of rate is far below what BD-rates
/// or a reader can resolve.
pub const DEFAULT_TOLERANCE: f64 = 0.005;

/// One encoding of one image at one setting.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    pub setting: f64,
    pub bytes: Vec<u8>,
    /// `bytes.len() * 8 / pixels`: the whole file, headers and container included.
    pub bpp: f64,
    /// Encode wall time in seconds (the codec's own measurement if it gives one).
    pub encode_s: f64,
    /// Peak resident memory of the encoder process, if the codec measured it.
    pub encode_peak_rss_kib: Option<u64>,
}

/// Whether the target rate was reachable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reach {
    /// The encoding is the largest found with `bpp <= target`.
    Reached,
    /// Even the setting that spends the fewest bits exceeds the target; the encoding returned
    /// is that lowest-rate one (so its bpp is above the target).
    BelowLowestRate { lowest_bpp: f64 },
    /// Even the setting that spends the most bits stays below the target; the encoding
    /// returned is that highest-rate one. Reported, because comparing it "at the target"
    /// would flatter the other codecs.
    AboveHighestRate { highest_bpp: f64 },
}

impl Reach {
    pub fn is_reached(&self) -> bool {
        matches!(self, Reach::Reached)
    }

    /// Short machine-readable label for the CSV.
    pub fn label(&self) -> &'static str {
        match self {
            Reach::Reached => "reached",
            Reach::BelowLowestRate { .. } => "below_lowest_rate",
            Reach::AboveHighestRate { .. } => "above_highest_rate",
        }
    }

    /// Human-readable explanation for the reports.
    pub fn explain(&self, target_bpp: f64) -> String {
        match self {
            Reach::Reached => format!("reached {target_bpp} bpp"),
            Reach::BelowLowestRate { lowest_bpp } => format!(
                "target {target_bpp} bpp is below the lowest reachable rate {lowest_bpp:.4} bpp"
            ),
            Reach::AboveHighestRate { highest_bpp } => format!(
                "target {target_bpp} bpp is above the highest reachable rate {highest_bpp:.4} bpp"
            ),
        }
    }
}

/// The outcome of matching one target rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Matched {
    pub target_bpp: f64,
    /// The chosen encoding; when the target was unreachable, the nearest endpoint.
    pub encoding: Encoding,
    pub reach: Reach,
    /// False if the probe budget ran out before the bracket closed: the encoding is then
    /// within the target but a slightly larger one may exist.
    pub converged: bool,
    /// Encoder runs this call needed (cache hits excluded).
    pub encodes: usize,
    /// Wall time of those encoder runs, as seen by the caller (process start-up included).
    pub search_s: f64,
}

/// Rate matching for one codec on one image, with a cache of encodings by grid index.
///
/// Create one per (codec, image) and ask it for every target; later targets reuse earlier
/// probes both as cache hits and to narrow the initial bracket.
pub struct RateMatcher<'a> {
    codec: &'a dyn CodecUnderTest,
    img: &'a RgbImage,
    range: SettingRange,
    max_iterations: usize,
    tolerance: f64,
    cache: BTreeMap<u64, Encoding>,
}

impl<'a> RateMatcher<'a> {
    pub fn new(codec: &'a dyn CodecUnderTest, img: &'a RgbImage) -> Self {
        RateMatcher {
            codec,
            img,
            range: codec.settings(),
            max_iterations: DEFAULT_MAX_ITERATIONS,
            tolerance: DEFAULT_TOLERANCE,
            cache: BTreeMap::new(),
        }
    }

    /// Accepts a fitting file whose rate is within `tolerance` (relative, 0..1) below the
    /// target, without closing the bracket on the grid; 0 asks for the exact grid answer.
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance.clamp(0.0, 1.0);
        self
    }

    /// Encodes (cache hits included) allowed per target before settling for the best fitting
    /// one; endpoint probes that decide reachability may go beyond it.
    pub fn with_max_iterations(mut self, max_iterations: usize) -> Self {
        self.max_iterations = max_iterations;
        self
    }

    /// All encodings made so far, in rate order of their settings.
    pub fn cached(&self) -> impl Iterator<Item = &Encoding> {
        self.cache.values()
    }

    fn pixels(&self) -> f64 {
        f64::from(self.img.width()) * f64::from(self.img.height())
    }

    /// Encodes at a grid index (index 0 = fewest bits), through the cache. Returns whether a
    /// new encode was run.
    fn probe(&mut self, index: u64) -> Result<(&Encoding, bool, f64)> {
        let fresh = !self.cache.contains_key(&index);
        let mut caller_s = 0.0;
        if fresh {
            let setting = self.range.setting_at(index);
            let start = Instant::now();
            let bytes = self.codec.encode(self.img, setting).with_context(|| {
                format!(
                    "{} failed at setting {}",
                    self.codec.name(),
                    self.codec.format_setting(setting)
                )
            })?;
            caller_s = start.elapsed().as_secs_f64();
            let stats = self.codec.last_call_stats();
            let encoding = Encoding {
                setting,
                bpp: bytes.len() as f64 * 8.0 / self.pixels(),
                bytes,
                encode_s: stats.map_or(caller_s, |s| s.wall_s),
                encode_peak_rss_kib: stats.and_then(|s| s.peak_rss_kib),
            };
            self.cache.insert(index, encoding);
        }
        Ok((&self.cache[&index], fresh, caller_s))
    }

    /// Finds the largest encoding with `bpp <= target_bpp` (see the module docs), or reports
    /// the target as unreachable together with the nearest endpoint encoding.
    pub fn encode_at_bpp(&mut self, target_bpp: f64) -> Result<Matched> {
        if !(target_bpp.is_finite() && target_bpp > 0.0) {
            bail!("target bpp must be a positive number, got {target_bpp}");
        }
        let top = self.range.steps();
        let mut encodes = 0;
        let mut search_s = 0.0;
        let mut probes = 0;
        // Which side the last probes moved, for the Illinois-style safeguard.
        let mut last_sides: [Option<bool>; 2] = [None, None];
        loop {
            let (lo, hi) = self.bracket(target_bpp);
            let close_enough = |i: u64| self.cache[&i].bpp >= target_bpp * (1.0 - self.tolerance);
            match (lo, hi) {
                (Some(lo), Some(hi)) if hi - lo <= 1 => {
                    return Ok(self.matched(
                        target_bpp,
                        lo,
                        Reach::Reached,
                        true,
                        (encodes, search_s),
                    ));
                }
                (Some(lo), _) if self.tolerance > 0.0 && close_enough(lo) => {
                    return Ok(self.matched(
                        target_bpp,
                        lo,
                        Reach::Reached,
                        true,
                        (encodes, search_s),
                    ));
                }
                (Some(lo), None) if lo == top => {
                    let highest_bpp = self.cache[&top].bpp;
                    let reach = Reach::AboveHighestRate { highest_bpp };
                    return Ok(self.matched(target_bpp, top, reach, true, (encodes, search_s)));
                }
                (None, Some(0)) => {
                    let lowest_bpp = self.cache[&0].bpp;
                    let reach = Reach::BelowLowestRate { lowest_bpp };
                    return Ok(self.matched(target_bpp, 0, reach, true, (encodes, search_s)));
                }
                _ => {}
            }
            let next = if probes >= self.max_iterations {
                match (lo, hi) {
                    // Out of budget: settle for the best fitting file found.
                    (Some(lo), Some(_)) => {
                        return Ok(self.matched(
                            target_bpp,
                            lo,
                            Reach::Reached,
                            false,
                            (encodes, search_s),
                        ));
                    }
                    // Reachability still unknown: the endpoints decide it.
                    (Some(_), None) => top,
                    _ => 0,
                }
            } else {
                let same_side_twice = last_sides[0].is_some() && last_sides[0] == last_sides[1];
                self.next_probe(target_bpp, lo, hi, same_side_twice)
            };
            let (e, fresh, seconds) = self.probe(next)?;
            let fits = e.bpp <= target_bpp;
            encodes += usize::from(fresh);
            search_s += seconds;
            probes += 1;
            last_sides = [last_sides[1], Some(fits)];
        }
    }

    /// From the cache: `hi` = the lowest-rate index known to exceed the target, `lo` = the
    /// highest index below it known to fit.
    fn bracket(&self, target_bpp: f64) -> (Option<u64>, Option<u64>) {
        let hi = self
            .cache
            .iter()
            .find(|(_, e)| e.bpp > target_bpp)
            .map(|(&i, _)| i);
        let below = match hi {
            Some(hi) => self.cache.range(..hi),
            None => self.cache.range(..),
        };
        let lo = below
            .rev()
            .find(|(_, e)| e.bpp <= target_bpp)
            .map(|(&i, _)| i);
        (lo, hi)
    }

    /// Chooses the next grid index to encode.
    ///
    /// Rate is close to exponential in the setting for these codecs, so `ln(bpp)` is
    /// interpolated linearly in the grid index (a secant step). Inside a bracket, the step is
    /// replaced by plain bisection whenever the last two probes fell on the same side (the
    /// Illinois safeguard: a secant can otherwise creep towards one end). Outside a bracket,
    /// it extrapolates a little past the target so that the next probe likely closes it.
    /// The very slow highest-rate endpoint is only encoded when a target may lie beyond it.
    fn next_probe(&self, target: f64, lo: Option<u64>, hi: Option<u64>, bisect: bool) -> u64 {
        let top = self.range.steps();
        let ln_at = |i: u64| self.cache[&i].bpp.max(1e-12).ln();
        let secant = |a: u64, b: u64, goal: f64| -> Option<f64> {
            let (ya, yb) = (ln_at(a), ln_at(b));
            ((yb - ya).abs() > 1e-12)
                .then(|| a as f64 + (goal - ya) * (b as f64 - a as f64) / (yb - ya))
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) => {
                let mid = lo + (hi - lo) / 2;
                if bisect {
                    return mid;
                }
                secant(lo, hi, target.ln())
                    .map_or(mid, |x| (x.round() as u64).clamp(lo + 1, hi - 1))
            }
            (None, None) => top / 2,
            (Some(lo), None) => {
                // Everything known fits: step up, aiming 20% above the target.
                let below: Vec<u64> = self
                    .cache
                    .range(..lo)
                    .rev()
                    .take(1)
                    .map(|(&i, _)| i)
                    .collect();
                below
                    .first()
                    .and_then(|&b| secant(b, lo, (target * 1.2).ln()))
                    .map_or(lo + (top - lo).div_ceil(2), |x| {
                        (x.ceil().max(0.0) as u64).clamp(lo + 1, top)
                    })
            }
            (None, Some(hi)) => {
                // Everything known is too big: step down, aiming 20% below the target.
                let above: Vec<u64> = self
                    .cache
                    .range(hi + 1..)
                    .take(1)
                    .map(|(&i, _)| i)
                    .collect();
                above
                    .first()
                    .and_then(|&a| secant(hi, a, (target / 1.2).ln()))
                    .map_or(hi / 2, |x| (x.floor().max(0.0) as u64).min(hi - 1))
            }
        }
    }

    fn matched(
        &self,
        target_bpp: f64,
        index: u64,
        reach: Reach,
        converged: bool,
        (encodes, search_s): (usize, f64),
    ) -> Matched {
        Matched {
            target_bpp,
            encoding: self.cache[&index].clone(),
            reach,
            converged,
            encodes,
            search_s,
        }
    }
}

/// One-shot convenience: [`RateMatcher::encode_at_bpp`] with a fresh cache.
pub fn encode_at_bpp(
    codec: &dyn CodecUnderTest,
    img: &RgbImage,
    target_bpp: f64,
) -> Result<Matched> {
    RateMatcher::new(codec, img).encode_at_bpp(target_bpp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::MoreBits;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fake codec whose file size is a known function of the setting.
    struct Fake {
        range: SettingRange,
        bytes_at: fn(f64) -> usize,
        calls: AtomicUsize,
    }

    impl CodecUnderTest for Fake {
        fn name(&self) -> String {
            "fake".into()
        }
        fn settings(&self) -> SettingRange {
            self.range
        }
        fn encode(&self, _img: &RgbImage, setting: f64) -> Result<Vec<u8>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Ok(vec![0; (self.bytes_at)(setting)])
        }
        fn decode(&self, _bytes: &[u8]) -> Result<RgbImage> {
            unreachable!()
        }
    }

    fn quality_codec() -> Fake {
        Fake {
            // 100 pixels below: bpp = 0.08 * bytes, bytes = 10 + setting.
            range: SettingRange {
                min: 0.0,
                max: 100.0,
                step: 1.0,
                more_bits: MoreBits::HigherSetting,
            },
            bytes_at: |q| 10 + q as usize,
            calls: AtomicUsize::new(0),
        }
    }

    fn img() -> RgbImage {
        RgbImage::new(10, 10)
    }

    #[test]
    fn finds_largest_file_within_target() {
        let codec = quality_codec();
        let img = img();
        // 4.0 bpp = 50 bytes -> q40 exactly.
        let m = encode_at_bpp(&codec, &img, 4.0).unwrap();
        assert_eq!(m.reach, Reach::Reached);
        assert_eq!(m.encoding.setting, 40.0);
        assert!(m.converged);
        // 4.05 bpp = 50.6 bytes -> still q40.
        let m = encode_at_bpp(&codec, &img, 4.05).unwrap();
        assert_eq!(m.encoding.setting, 40.0);
        assert!(m.encoding.bpp <= 4.05);
    }

    #[test]
    fn lower_setting_more_bits() {
        let codec = Fake {
            range: SettingRange {
                min: 0.0,
                max: 63.0,
                step: 1.0,
                more_bits: MoreBits::LowerSetting,
            },
            bytes_at: |q| 100 - q as usize,
            calls: AtomicUsize::new(0),
        };
        let img = img();
        // 6.4 bpp = 80 bytes -> Q20.
        let m = encode_at_bpp(&codec, &img, 6.4).unwrap();
        assert_eq!(m.encoding.setting, 20.0);
    }

    #[test]
    fn unreachable_targets_are_typed() {
        let codec = quality_codec();
        let img = img();
        let m = encode_at_bpp(&codec, &img, 0.5).unwrap();
        assert_eq!(m.reach, Reach::BelowLowestRate { lowest_bpp: 0.8 });
        assert_eq!(m.encoding.setting, 0.0);
        let m = encode_at_bpp(&codec, &img, 100.0).unwrap();
        assert_eq!(m.reach, Reach::AboveHighestRate { highest_bpp: 8.8 });
        assert_eq!(m.encoding.setting, 100.0);
    }

    #[test]
    fn cache_is_reused_across_targets() {
        let codec = quality_codec();
        let img = img();
        let mut matcher = RateMatcher::new(&codec, &img);
        let first = matcher.encode_at_bpp(4.0).unwrap();
        assert_eq!(first.encodes, codec.calls.load(Ordering::Relaxed));
        let again = matcher.encode_at_bpp(4.0).unwrap();
        assert_eq!(again.encodes, 0);
        assert_eq!(again.encoding, first.encoding);
        let before = codec.calls.load(Ordering::Relaxed);
        let other = matcher.encode_at_bpp(5.0).unwrap();
        assert_eq!(other.encoding.setting, 52.0);
        // The bracket starts from cached probes, so fewer than a full bisection.
        assert!(
            codec.calls.load(Ordering::Relaxed) - before < 7,
            "{}",
            codec.calls.load(Ordering::Relaxed) - before
        );
    }

    #[test]
    fn iteration_budget_is_respected() {
        let codec = quality_codec();
        let img = img();
        let mut matcher = RateMatcher::new(&codec, &img).with_max_iterations(1);
        // First probe q50 (too big); out of budget, the lowest endpoint decides reachability.
        let m = matcher.encode_at_bpp(4.0).unwrap();
        assert!(!m.converged);
        assert!(m.encoding.bpp <= 4.0);
        assert_eq!(codec.calls.load(Ordering::Relaxed), 2);
    }

    /// JPEG XL-like: distance 0.1..25 in 0.01 steps, rate falling roughly exponentially
    /// (monotone, but not a pure exponential, so the secant is not exact).
    fn jxl_like() -> Fake {
        Fake {
            range: SettingRange {
                min: 0.1,
                max: 25.0,
                step: 0.01,
                more_bits: MoreBits::LowerSetting,
            },
            bytes_at: |d| (40_000.0 * (-0.25 * d).exp() + 2_000.0 / (1.0 + d)) as usize,
            calls: AtomicUsize::new(0),
        }
    }

    #[test]
    fn exact_and_quick_on_a_large_exponential_grid() {
        let codec = jxl_like();
        let img = img();
        let range = codec.settings();
        let mut matcher = RateMatcher::new(&codec, &img).with_tolerance(0.0);
        for target in [15.0, 30.0, 300.0, 2000.0] {
            let before = codec.calls.load(Ordering::Relaxed);
            let m = matcher.encode_at_bpp(target).unwrap();
            let best = (0..=range.steps())
                .map(|i| range.setting_at(i))
                .filter(|&d| (codec.bytes_at)(d) as f64 * 0.08 <= target)
                .min_by(|a, b| a.total_cmp(b))
                .unwrap();
            assert_eq!(m.reach, Reach::Reached);
            assert!(m.converged);
            assert_eq!(m.encoding.setting, best, "target {target}");
            let used = codec.calls.load(Ordering::Relaxed) - before;
            assert!(used <= 8, "target {target}: {used} encodes");
        }
    }

    #[test]
    fn tolerance_accepts_a_near_file_with_fewer_encodes() {
        let img = img();
        let targets = [15.0, 30.0, 300.0, 2000.0];
        let (exact, near) = (jxl_like(), jxl_like());
        let mut exact_matcher = RateMatcher::new(&exact, &img).with_tolerance(0.0);
        let mut near_matcher = RateMatcher::new(&near, &img).with_tolerance(0.01);
        for target in targets {
            let best = exact_matcher.encode_at_bpp(target).unwrap().encoding.bpp;
            let m = near_matcher.encode_at_bpp(target).unwrap();
            assert_eq!(m.reach, Reach::Reached);
            assert!(
                m.encoding.bpp <= target,
                "target {target}: {}",
                m.encoding.bpp
            );
            assert!(
                m.encoding.bpp >= (target * 0.99).min(best),
                "target {target}: {} is not within 1% (best on the grid {best})",
                m.encoding.bpp
            );
        }
        let (exact, near) = (
            exact.calls.load(Ordering::Relaxed),
            near.calls.load(Ordering::Relaxed),
        );
        assert!(
            near < exact,
            "{near} encodes with tolerance, {exact} without"
        );
    }

    #[test]
    fn rejects_bad_targets() {
        let codec = quality_codec();
        assert!(encode_at_bpp(&codec, &img(), 0.0).is_err());
        assert!(encode_at_bpp(&codec, &img(), f64::NAN).is_err());
    }
}
