//! Pairwise votes for the ConHa predictor: reading them, and the Bradley–Terry loss that
//! turns "the viewer preferred A to B on this crop" into a gradient on the predicted map.
//!
//! A vote names a crop of a study-pool image and two of its conditions. Only votes between
//! two constant hallucination weights (`mirage-w<w>`) say something about where the weight
//! should be; votes involving other conditions (the map, a classic codec) are counted and
//! skipped.
//!
//! ## The model
//!
//! The predictor gives a map over the crop; `ŵ` is its mean over the crop's cells. A
//! condition decoded at weight `w` gets the utility `s(w) = −(w − ŵ)² / τ`: the viewer
//! likes most the weight the predictor names, and less the further a decode is from it.
//! Bradley–Terry: `P(A preferred to B) = σ(s(w_A) − s(w_B))`, and the loss is the negative
//! log-likelihood of the votes. With `τ = 0.25`, a decode one full step (|Δw| = 1) from the
//! optimum loses to the optimum 98 % of the time, and one at a third 61 %: close to how
//! clearly the model raters preferred ⅔ to 0 and to 1 (`../shared/votes/README.md`).

use anyhow::{bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use tch::Tensor;

/// The utility's temperature `τ` (see the module docs).
pub const TEMPERATURE: f64 = 0.25;

/// One usable vote: a crop of one pool image, the winner's and the loser's weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Vote {
    pub image: String,
    pub x0: u32,
    pub y0: u32,
    pub size: u32,
    pub winner_w: f32,
    pub loser_w: f32,
}

/// The weight of a condition named `mirage-w<w>`, or `None` for any other condition.
pub fn condition_weight(name: &str) -> Option<f32> {
    let w: f32 = name.strip_prefix("mirage-w")?.parse().ok()?;
    (0.0..=1.0).contains(&w).then_some(w)
}

/// What [`read_votes`] found.
#[derive(Debug)]
pub struct VoteSet {
    pub votes: Vec<Vote>,
    /// Votes skipped because a side was not a constant weight (the map, a classic codec).
    pub skipped: usize,
}

/// Reads a vote CSV in the format of `vote_campaign.py score` (columns `image, crop_x,
/// crop_y, crop_w, crop_h, winner, loser` by name; others ignored). Crops must be square.
pub fn read_votes(path: &Path) -> Result<VoteSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading votes {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("the vote file is empty")?
        .split(',')
        .map(str::trim)
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{}: no column `{name}`", path.display()))
    };
    let (image, x, y, w, h, winner, loser) = (
        column("image")?,
        column("crop_x")?,
        column("crop_y")?,
        column("crop_w")?,
        column("crop_h")?,
        column("winner")?,
        column("loser")?,
    );
    let mut out = VoteSet {
        votes: vec![],
        skipped: 0,
    };
    for (n, line) in lines.enumerate() {
        let v: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |i: usize| {
            v.get(i)
                .copied()
                .with_context(|| format!("{}: vote {} is short", path.display(), n + 1))
        };
        let number = |i: usize| -> Result<u32> {
            field(i)?
                .parse()
                .with_context(|| format!("{}: vote {}: not a number", path.display(), n + 1))
        };
        let (size, height) = (number(w)?, number(h)?);
        if size != height || size == 0 {
            bail!(
                "{}: vote {}: the crop must be square, got {size}×{height}",
                path.display(),
                n + 1
            );
        }
        match (
            condition_weight(field(winner)?),
            condition_weight(field(loser)?),
        ) {
            (Some(winner_w), Some(loser_w)) => out.votes.push(Vote {
                image: field(image)?.to_string(),
                x0: number(x)?,
                y0: number(y)?,
                size,
                winner_w,
                loser_w,
            }),
            _ => out.skipped += 1,
        }
    }
    Ok(out)
}

/// The rate setting of each pool image, from the `[rate]` table of its `pool.toml`.
pub fn pool_rates(pool: &Path) -> Result<HashMap<String, f32>> {
    let path = pool.join("pool.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut rates = HashMap::new();
    let mut in_rates = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_rates = line == "[rate]";
        } else if let (true, Some((key, value))) = (in_rates, line.split_once('=')) {
            let image = key.trim().trim_matches('"').to_string();
            let rate: f32 = value
                .trim()
                .parse()
                .with_context(|| format!("{}: bad rate for {image}", path.display()))?;
            rates.insert(image, rate);
        }
    }
    if rates.is_empty() {
        bail!(
            "{} has no [rate] table: write the pool again with this version of `mirage study pool`",
            path.display()
        );
    }
    Ok(rates)
}

/// Held out for the report: every fifth image of the sorted list of voted images.
pub fn held_out_images(votes: &[Vote]) -> BTreeSet<String> {
    let names: BTreeSet<&str> = votes.iter().map(|v| v.image.as_str()).collect();
    names
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The Bradley–Terry loss of a batch: `predicted` is ŵ per vote `[B]`, the weights `[B]`.
pub fn bradley_terry_loss(predicted: &Tensor, winner_w: &Tensor, loser_w: &Tensor) -> Tensor {
    let utility = |w: &Tensor| -(w - predicted).square() / TEMPERATURE;
    // −log σ(d) = softplus(−d), stable for large |d|.
    (-(utility(winner_w) - utility(loser_w)))
        .softplus()
        .mean(tch::Kind::Float)
}

/// Whether weight `w` predicts the vote right: the winner is nearer to `w` (ties count half).
pub fn agrees(w: f32, vote: &Vote) -> f64 {
    let (a, b) = ((vote.winner_w - w).abs(), (vote.loser_w - w).abs());
    if (a - b).abs() < 1e-6 {
        0.5
    } else if a < b {
        1.0
    } else {
        0.0
    }
}

/// The single weight that agrees with most of `votes` (on a grid of 1/30): the best
/// constant, the baseline a map must beat.
pub fn best_constant(votes: &[&Vote]) -> f32 {
    (0..=30)
        .map(|i| i as f32 / 30.0)
        .max_by(|&a, &b| {
            let score = |w: f32| votes.iter().map(|v| agrees(w, v)).sum::<f64>();
            score(a).total_cmp(&score(b))
        })
        .unwrap_or(0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn conditions_name_their_weights() {
        assert_eq!(condition_weight("mirage-w0.6667"), Some(0.6667));
        assert_eq!(condition_weight("mirage-w1"), Some(1.0));
        assert_eq!(condition_weight("conha-map"), None);
        assert_eq!(condition_weight("avif"), None);
        assert_eq!(condition_weight("mirage-w2"), None);
    }

    #[test]
    fn the_loss_pulls_the_weight_toward_the_winners() {
        // Votes say 1/3 beats 0 and 1/3 beats 1: the optimum of the likelihood lies between.
        let winners = Tensor::from_slice(&[1.0f32 / 3.0, 1.0 / 3.0]);
        let losers = Tensor::from_slice(&[0.0f32, 1.0]);
        let loss_at = |w: f32| {
            bradley_terry_loss(&Tensor::from_slice(&[w, w]), &winners, &losers).double_value(&[])
        };
        assert!(loss_at(1.0 / 3.0) < loss_at(0.0));
        assert!(loss_at(1.0 / 3.0) < loss_at(1.0));
        let p = Tensor::from_slice(&[0.9f32, 0.9]).set_requires_grad(true);
        bradley_terry_loss(&p, &winners, &losers).backward();
        assert!(
            p.grad().sum(Kind::Float).double_value(&[]) > 0.0,
            "w = 0.9 should fall"
        );
    }

    #[test]
    fn votes_are_read_by_column_name_and_non_weight_pairs_are_skipped() {
        let dir = std::env::temp_dir().join(format!("mirage-votes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("votes.csv");
        std::fs::write(
            &path,
            "sheet,image,crop_x,crop_y,crop_w,crop_h,left,right,winner,loser,rater\n\
             1,a,0,64,256,256,mirage-w0,mirage-w1,mirage-w1,mirage-w0,r\n\
             2,b,0,0,256,256,avif,mirage-w1,avif,mirage-w1,r\n",
        )
        .unwrap();
        let set = read_votes(&path).unwrap();
        assert_eq!(set.skipped, 1);
        assert_eq!(
            set.votes,
            vec![Vote {
                image: "a".into(),
                x0: 0,
                y0: 64,
                size: 256,
                winner_w: 1.0,
                loser_w: 0.0
            }]
        );
        std::fs::write(&path, "image,crop_x\na,1\n").unwrap();
        assert!(read_votes(&path).is_err());
        std::fs::write(
            dir.join("pool.toml"),
            "[bpp]\n\"a/mirage-w0\" = 0.1\n\n[rate]\n\"a\" = 2.5\n",
        )
        .unwrap();
        assert_eq!(pool_rates(&dir).unwrap()["a"], 2.5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_best_constant_follows_the_majority() {
        let v = |winner_w, loser_w| Vote {
            image: "a".into(),
            x0: 0,
            y0: 0,
            size: 64,
            winner_w,
            loser_w,
        };
        let votes = [v(0.6667, 0.0), v(0.6667, 1.0), v(1.0, 0.0)];
        let refs: Vec<&Vote> = votes.iter().collect();
        let w = best_constant(&refs);
        assert!((0.5..0.84).contains(&w), "{w}");
    }
}
