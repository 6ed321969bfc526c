//! Bjøntegaard delta rate (BD-rate): the average rate difference between two rate–quality
//! curves at equal quality, as one number.
//!
//! Method: for each curve, log-rate is interpolated as a function of quality with a
//! monotone piecewise cubic Hermite interpolant (PCHIP, Fritsch–Carlson), both curves are
//! integrated over the quality interval they share, and the difference of the mean
//! log-rates is turned back into a percentage: `(exp(mean(ln R_test − ln R_anchor)) − 1)·100`.
//! Negative means the test codec needs fewer bits than the anchor for the same quality.
//! PCHIP rather than Bjøntegaard's original single cubic polynomial, because the polynomial
//! can overshoot between points (the fix adopted by JVET/AOM's reporting tools).
//!
//! Caveats, which the report repeats:
//! - **No extrapolation.** Only the quality interval covered by both curves counts; a codec
//!   that is better only outside it gets no credit. If the curves do not overlap there is no
//!   number ([`BdRateError::NoOverlap`]).
//! - **Needs at least [`MIN_POINTS`] points per curve**, as in Bjøntegaard's method; fewer
//!   make the interpolant (and the number) mostly an artefact of its shape.
//! - **Crossing curves.** If the curves cross, gains on one part of the interval cancel
//!   losses on the other; the single average hides that. Look at the plot.
//! - **Per metric.** A BD-rate only means something for the metric it was computed with;
//!   a codec tuned for one metric can win on it and lose on another.
//! - Quality must be "higher is better" (pass `-butteraugli`) and strictly increasing along
//!   each curve once sorted; noisy, non-monotone measurements are rejected, not smoothed.

use thiserror::Error;

/// Minimum number of rate–quality points per curve.
pub const MIN_POINTS: usize = 4;

/// One operating point of a codec: a rate (any positive unit, e.g. bpp) and a quality where
/// higher is better.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatePoint {
    pub rate: f64,
    pub quality: f64,
}

impl RatePoint {
    pub fn new(rate: f64, quality: f64) -> Self {
        RatePoint { rate, quality }
    }
}

/// Why a BD-rate could not be computed.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum BdRateError {
    #[error("a curve has {0} points; BD-rate needs at least {MIN_POINTS}")]
    TooFewPoints(usize),
    #[error("rates must be positive and finite, and qualities finite")]
    InvalidValue,
    #[error("quality is not strictly increasing along a curve (repeated quality {0})")]
    RepeatedQuality(f64),
    #[error("the curves' quality ranges do not overlap")]
    NoOverlap,
}

/// BD-rate of `test` against `anchor` in percent, or `None` if it cannot be computed (see
/// [`bd_rate_checked`] for the reason).
pub fn bd_rate(anchor: &[RatePoint], test: &[RatePoint]) -> Option<f64> {
    bd_rate_checked(anchor, test).ok()
}

/// BD-rate of `test` against `anchor` in percent, with the reason when there is none.
pub fn bd_rate_checked(anchor: &[RatePoint], test: &[RatePoint]) -> Result<f64, BdRateError> {
    let anchor = LogRateCurve::new(anchor)?;
    let test = LogRateCurve::new(test)?;
    let lo = anchor.q_min().max(test.q_min());
    let hi = anchor.q_max().min(test.q_max());
    if hi <= lo {
        return Err(BdRateError::NoOverlap);
    }
    let mean_diff = (test.integrate(lo, hi) - anchor.integrate(lo, hi)) / (hi - lo);
    Ok(mean_diff.exp_m1() * 100.0)
}

/// Natural log-rate as a PCHIP function of quality.
struct LogRateCurve(Pchip);

impl LogRateCurve {
    fn new(points: &[RatePoint]) -> Result<Self, BdRateError> {
        if points.len() < MIN_POINTS {
            return Err(BdRateError::TooFewPoints(points.len()));
        }
        if points
            .iter()
            .any(|p| !(p.rate.is_finite() && p.rate > 0.0 && p.quality.is_finite()))
        {
            return Err(BdRateError::InvalidValue);
        }
        let mut sorted = points.to_vec();
        sorted.sort_by(|a, b| a.quality.total_cmp(&b.quality));
        if let Some(w) = sorted.windows(2).find(|w| w[0].quality == w[1].quality) {
            return Err(BdRateError::RepeatedQuality(w[0].quality));
        }
        let x = sorted.iter().map(|p| p.quality).collect();
        let y = sorted.iter().map(|p| p.rate.ln()).collect();
        Ok(LogRateCurve(Pchip::new(x, y)))
    }

    fn q_min(&self) -> f64 {
        self.0.x[0]
    }

    fn q_max(&self) -> f64 {
        *self.0.x.last().expect("at least MIN_POINTS")
    }

    fn integrate(&self, lo: f64, hi: f64) -> f64 {
        self.0.integrate(lo, hi)
    }
}

/// Monotone piecewise cubic Hermite interpolant (Fritsch & Carlson 1980, with the
/// Fritsch–Butland weighted harmonic mean for interior slopes and the non-overshooting
/// three-point end slopes, as in SciPy's `PchipInterpolator`). Monotone data stay monotone
/// between the points, so the interpolant never invents rate bumps.
struct Pchip {
    x: Vec<f64>,
    y: Vec<f64>,
    /// Derivative at each knot.
    d: Vec<f64>,
}

impl Pchip {
    /// `x` strictly increasing, at least two points.
    fn new(x: Vec<f64>, y: Vec<f64>) -> Self {
        let n = x.len();
        assert!(n >= 2 && y.len() == n);
        let h: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
        let delta: Vec<f64> = (0..n - 1).map(|k| (y[k + 1] - y[k]) / h[k]).collect();
        let mut d = vec![0.0; n];
        if n == 2 {
            d = vec![delta[0]; 2];
        } else {
            for k in 1..n - 1 {
                let (d0, d1) = (delta[k - 1], delta[k]);
                if d0 * d1 > 0.0 {
                    let w1 = 2.0 * h[k] + h[k - 1];
                    let w2 = h[k] + 2.0 * h[k - 1];
                    d[k] = (w1 + w2) / (w1 / d0 + w2 / d1);
                }
            }
            d[0] = end_slope(h[0], h[1], delta[0], delta[1]);
            d[n - 1] = end_slope(h[n - 2], h[n - 3], delta[n - 2], delta[n - 3]);
        }
        Pchip { x, y, d }
    }

    /// Value at `t` (inside `[x_0, x_n]`).
    fn eval(&self, t: f64) -> f64 {
        // Index of the piece containing t.
        let k = match self.x.partition_point(|&xi| xi <= t) {
            0 => 0,
            p => (p - 1).min(self.x.len() - 2),
        };
        let h = self.x[k + 1] - self.x[k];
        let s = (t - self.x[k]) / h;
        let (s2, s3) = (s * s, s * s * s);
        let h00 = 2.0 * s3 - 3.0 * s2 + 1.0;
        let h10 = s3 - 2.0 * s2 + s;
        let h01 = -2.0 * s3 + 3.0 * s2;
        let h11 = s3 - s2;
        h00 * self.y[k] + h10 * h * self.d[k] + h01 * self.y[k + 1] + h11 * h * self.d[k + 1]
    }

    /// Exact integral over `[lo, hi]`: the interval is split at the knots, and on each part
    /// the interpolant is one cubic, which Simpson's rule integrates exactly.
    fn integrate(&self, lo: f64, hi: f64) -> f64 {
        let mut cuts = vec![lo];
        cuts.extend(self.x.iter().copied().filter(|&x| x > lo && x < hi));
        cuts.push(hi);
        cuts.windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                (b - a) / 6.0 * (self.eval(a) + 4.0 * self.eval(0.5 * (a + b)) + self.eval(b))
            })
            .sum()
    }
}

/// Three-point end slope, forced to keep the sign of the end secant and not to overshoot.
fn end_slope(h0: f64, h1: f64, delta0: f64, delta1: f64) -> f64 {
    let d = ((2.0 * h0 + h1) * delta0 - h0 * delta1) / (h0 + h1);
    if d.signum() != delta0.signum() || delta0 == 0.0 {
        0.0
    } else if delta0.signum() != delta1.signum() && d.abs() > 3.0 * delta0.abs() {
        3.0 * delta0
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible codec curve: PSNR-like quality against bpp.
    fn curve() -> Vec<RatePoint> {
        [
            (0.1, 26.6),
            (0.2, 29.0),
            (0.4, 31.5),
            (0.8, 35.0),
            (1.5, 38.2),
        ]
        .into_iter()
        .map(|(r, q)| RatePoint::new(r, q))
        .collect()
    }

    fn scaled(points: &[RatePoint], factor: f64) -> Vec<RatePoint> {
        points
            .iter()
            .map(|p| RatePoint::new(p.rate * factor, p.quality))
            .collect()
    }

    #[test]
    fn identical_curves_give_zero() {
        assert_eq!(bd_rate(&curve(), &curve()), Some(0.0));
    }

    #[test]
    fn scaled_rates_give_the_scale() {
        for (factor, expected) in [(0.9, -10.0), (1.25, 25.0)] {
            let got = bd_rate(&curve(), &scaled(&curve(), factor)).unwrap();
            assert!(
                ((got - expected) / expected).abs() < 1e-9,
                "{got} vs {expected}"
            );
        }
    }

    #[test]
    fn order_of_points_does_not_matter() {
        let mut shuffled = scaled(&curve(), 0.9);
        shuffled.reverse();
        let got = bd_rate(&curve(), &shuffled).unwrap();
        assert!((got + 10.0).abs() < 1e-9);
    }

    #[test]
    fn non_overlapping_curves_give_none() {
        let high: Vec<RatePoint> = curve()
            .iter()
            .map(|p| RatePoint::new(p.rate * 10.0, p.quality + 20.0))
            .collect();
        assert_eq!(bd_rate(&curve(), &high), None);
        assert_eq!(
            bd_rate_checked(&curve(), &high),
            Err(BdRateError::NoOverlap)
        );
    }

    #[test]
    fn rejects_bad_curves() {
        assert_eq!(
            bd_rate_checked(&curve()[..3], &curve()),
            Err(BdRateError::TooFewPoints(3))
        );
        let mut repeated = curve();
        repeated[1].quality = repeated[0].quality;
        assert!(matches!(
            bd_rate_checked(&curve(), &repeated),
            Err(BdRateError::RepeatedQuality(_))
        ));
        let mut zero = curve();
        zero[0].rate = 0.0;
        assert_eq!(
            bd_rate_checked(&curve(), &zero),
            Err(BdRateError::InvalidValue)
        );
    }

    #[test]
    fn partial_overlap_uses_the_shared_interval() {
        // Test curve is the anchor shifted by ×0.8 but only covers the upper half.
        let test = scaled(&curve()[2..], 0.8);
        let extra = RatePoint::new(2.4, 40.0);
        let mut test = test;
        test.push(extra);
        let got = bd_rate(&curve(), &test).unwrap();
        // Over [31.5, 38.2] both curves share knots except the test's extra point beyond,
        // which changes the end slope; the result stays close to -20%.
        assert!((got + 20.0).abs() < 2.0, "{got}");
    }

    #[test]
    fn pchip_interpolates_and_stays_monotone() {
        let x = vec![0.0, 1.0, 2.0, 3.0, 4.0];
        let y = vec![0.0, 0.1, 0.2, 2.0, 2.1];
        let p = Pchip::new(x.clone(), y.clone());
        for (xi, yi) in x.iter().zip(&y) {
            assert!((p.eval(*xi) - yi).abs() < 1e-12);
        }
        let mut last = f64::NEG_INFINITY;
        for i in 0..=400 {
            let v = p.eval(i as f64 / 100.0);
            assert!(v >= last - 1e-12, "not monotone at {i}");
            last = v;
        }
    }

    #[test]
    fn integral_is_exact_on_a_cubic() {
        // PCHIP reproduces a line exactly; its integral over [0.5, 3.5] of 2x+1 is 15.
        let x: Vec<f64> = (0..5).map(f64::from).collect();
        let y: Vec<f64> = x.iter().map(|v| 2.0 * v + 1.0).collect();
        let p = Pchip::new(x, y);
        assert!((p.integrate(0.5, 3.5) - 15.0).abs() < 1e-12);
    }
}
