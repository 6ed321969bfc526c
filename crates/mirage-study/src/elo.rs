//! Elo scores with bootstrapped confidence intervals, as in ConHa's Figure 4
//! (Agustsson et al., "Multi-Realism Image Compression with a Conditional Generator",
//! CVPR 2023), which follows HiFiC's user study.
//!
//! Method, per bootstrap round: draw as many votes as were cast, uniformly with
//! replacement (so each round also sees the votes in a random order), start every
//! condition at [`EloOptions::initial`], and apply the standard Elo update for each
//! vote in turn:
//!
//! ```text
//! expected_w = 1 / (1 + 10^((R_l - R_w) / 400))
//! R_w += K · (1 - expected_w)
//! R_l -= K · (1 - expected_w)
//! ```
//!
//! The reported score is the median over rounds and the interval is the 2.5th–97.5th
//! percentile. Online Elo depends on vote order; resampling the order is what makes
//! the median stable and the interval honest. Defaults: initial 1500, K = 16 (between
//! chess's 32, which is noisy for a few hundred votes, and LMSYS Arena's 4, which
//! needs tens of thousands), 1000 rounds, fixed seed so a report is reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::collections::BTreeMap;

/// One vote: the condition the rater preferred over the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub winner: String,
    pub loser: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EloOptions {
    pub initial: f64,
    pub k: f64,
    pub rounds: usize,
    pub seed: u64,
}

impl Default for EloOptions {
    fn default() -> Self {
        EloOptions {
            initial: 1500.0,
            k: 16.0,
            rounds: 1000,
            seed: 1,
        }
    }
}

/// A condition's score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionScore {
    pub condition: String,
    /// Median over bootstrap rounds.
    pub elo: f64,
    /// 2.5th percentile over rounds.
    pub ci_low: f64,
    /// 97.5th percentile over rounds.
    pub ci_high: f64,
    pub wins: u64,
    pub losses: u64,
}

/// One pass of online Elo over votes in the given order (indexes into `conditions`).
pub fn ratings(votes: &[(usize, usize)], conditions: usize, options: &EloOptions) -> Vec<f64> {
    let mut r = vec![options.initial; conditions];
    for &(w, l) in votes {
        let expected_w = 1.0 / (1.0 + 10f64.powf((r[l] - r[w]) / 400.0));
        let delta = options.k * (1.0 - expected_w);
        r[w] += delta;
        r[l] -= delta;
    }
    r
}

/// Bootstrapped Elo per condition, sorted best first. Conditions that appear in no
/// vote are not listed.
pub fn bootstrap(outcomes: &[Outcome], options: &EloOptions) -> Vec<ConditionScore> {
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes {
        for c in [&o.winner, &o.loser] {
            let next = index.len();
            index.entry(c.as_str()).or_insert(next);
        }
    }
    let names: Vec<&str> = {
        let mut names = vec![""; index.len()];
        for (name, &i) in &index {
            names[i] = name;
        }
        names
    };
    let votes: Vec<(usize, usize)> = outcomes
        .iter()
        .map(|o| (index[o.winner.as_str()], index[o.loser.as_str()]))
        .collect();
    let mut wins = vec![0u64; names.len()];
    let mut losses = vec![0u64; names.len()];
    for &(w, l) in &votes {
        wins[w] += 1;
        losses[l] += 1;
    }
    let mut per_round: Vec<Vec<f64>> = vec![Vec::with_capacity(options.rounds); names.len()];
    if !votes.is_empty() {
        let mut rng = StdRng::seed_from_u64(options.seed);
        let mut sample = Vec::with_capacity(votes.len());
        for _ in 0..options.rounds.max(1) {
            sample.clear();
            sample.extend((0..votes.len()).map(|_| votes[rng.gen_range(0..votes.len())]));
            for (i, r) in ratings(&sample, names.len(), options)
                .into_iter()
                .enumerate()
            {
                per_round[i].push(r);
            }
        }
    }
    let mut scores: Vec<ConditionScore> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let rounds = &mut per_round[i];
            rounds.sort_by(f64::total_cmp);
            ConditionScore {
                condition: name.to_string(),
                elo: quantile(rounds, 0.5),
                ci_low: quantile(rounds, 0.025),
                ci_high: quantile(rounds, 0.975),
                wins: wins[i],
                losses: losses[i],
            }
        })
        .collect();
    scores.sort_by(|a, b| b.elo.total_cmp(&a.elo).then(a.condition.cmp(&b.condition)));
    scores
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(w: &str, l: &str) -> Outcome {
        Outcome {
            winner: w.into(),
            loser: l.into(),
        }
    }

    #[test]
    fn one_vote_between_equals_moves_half_k() {
        let options = EloOptions::default();
        let r = ratings(&[(0, 1)], 2, &options);
        assert_eq!(r, vec![1508.0, 1492.0]);
    }

    #[test]
    fn updates_are_zero_sum() {
        let options = EloOptions::default();
        let votes: Vec<(usize, usize)> = (0..200)
            .map(|i| (i % 3, (i * 7 + 1) % 3))
            .filter(|(a, b)| a != b)
            .collect();
        let r = ratings(&votes, 3, &options);
        assert!((r.iter().sum::<f64>() - 3.0 * 1500.0).abs() < 1e-6);
    }

    #[test]
    fn a_condition_always_preferred_ranks_first_with_separated_intervals() {
        let mut outcomes = vec![];
        for i in 0..300 {
            let other = if i % 2 == 0 { "w0" } else { "avif" };
            outcomes.push(outcome("auto", other));
            // The two others split evenly between themselves.
            outcomes.push(if i % 2 == 0 {
                outcome("w0", "avif")
            } else {
                outcome("avif", "w0")
            });
        }
        let scores = bootstrap(&outcomes, &EloOptions::default());
        assert_eq!(scores.len(), 3);
        assert_eq!(scores[0].condition, "auto");
        assert_eq!((scores[0].wins, scores[0].losses), (300, 0));
        for other in &scores[1..] {
            assert!(
                scores[0].ci_low > other.ci_high + 100.0,
                "{:?} vs {:?}",
                scores[0],
                other
            );
        }
        // The evenly matched pair overlaps and straddles the same middle.
        assert!(scores[1].ci_low < scores[2].ci_high && scores[2].ci_low < scores[1].ci_high);
        for s in &scores {
            assert!(s.ci_low <= s.elo && s.elo <= s.ci_high, "{s:?}");
        }
    }

    #[test]
    fn evenly_split_votes_give_an_interval_around_the_initial_rating() {
        let outcomes: Vec<Outcome> = (0..400)
            .map(|i| {
                if i % 2 == 0 {
                    outcome("a", "b")
                } else {
                    outcome("b", "a")
                }
            })
            .collect();
        let scores = bootstrap(&outcomes, &EloOptions::default());
        for s in &scores {
            assert!(s.ci_low < 1500.0 && 1500.0 < s.ci_high, "{s:?}");
            assert!((s.elo - 1500.0).abs() < 40.0, "{s:?}");
            assert!(
                s.ci_high - s.ci_low > 10.0,
                "a bootstrap interval has width: {s:?}"
            );
        }
    }

    #[test]
    fn bootstrap_is_reproducible_for_a_seed_and_varies_with_it() {
        let outcomes: Vec<Outcome> = (0..50)
            .map(|i| {
                if i % 3 == 0 {
                    outcome("a", "b")
                } else {
                    outcome("b", "a")
                }
            })
            .collect();
        let options = EloOptions::default();
        assert_eq!(
            bootstrap(&outcomes, &options),
            bootstrap(&outcomes, &options)
        );
        let other = EloOptions { seed: 2, ..options };
        assert_ne!(bootstrap(&outcomes, &options), bootstrap(&outcomes, &other));
    }

    #[test]
    fn no_votes_no_scores() {
        assert!(bootstrap(&[], &EloOptions::default()).is_empty());
    }

    #[test]
    fn quantiles_interpolate() {
        let v = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(quantile(&v, 0.5), 20.0);
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 1.0), 40.0);
        assert_eq!(quantile(&v, 0.125), 5.0);
    }
}
