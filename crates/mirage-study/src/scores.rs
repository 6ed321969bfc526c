//! A study's results: bootstrapped Elo per condition beside its mean bpp.

use crate::elo::{bootstrap, ConditionScore, EloOptions, Outcome};
use crate::error::StudyError;
use crate::store::Store;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ConditionResult {
    #[serde(flatten)]
    pub score: ConditionScore,
    /// Mean over the pool's files of this condition that have a bpp (pool.toml).
    pub mean_bpp: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub study: String,
    pub votes: u64,
    pub initial: f64,
    pub k: f64,
    pub rounds: usize,
    pub seed: u64,
    pub conditions: Vec<ConditionResult>,
}

pub fn compute(store: &Store, study: &str, options: &EloOptions) -> Result<Scores, StudyError> {
    Ok(from_outcomes(
        study,
        &store.outcomes(study)?,
        &store.mean_bpp(study)?,
        options,
    ))
}

/// Scores from votes already read; `bpp` is the mean bpp per condition.
pub fn from_outcomes(
    study: &str,
    outcomes: &[Outcome],
    bpp: &[(String, f64)],
    options: &EloOptions,
) -> Scores {
    let conditions = bootstrap(outcomes, options)
        .into_iter()
        .map(|score| ConditionResult {
            mean_bpp: bpp
                .iter()
                .find(|(c, _)| *c == score.condition)
                .map(|(_, b)| *b),
            score,
        })
        .collect();
    Scores {
        study: study.to_string(),
        votes: outcomes.len() as u64,
        initial: options.initial,
        k: options.k,
        rounds: options.rounds,
        seed: options.seed,
        conditions,
    }
}
