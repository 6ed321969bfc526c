//! A pool: the images a study compares, read from a folder.
//!
//! ```text
//! <pool>/<image>/original.png
//! <pool>/<image>/<condition>.png     e.g. mirage-w0.0.png, mirage-auto.png, avif.png
//! <pool>/pool.toml                   optional (or pool.json): bpp per file, pairs to compare
//! ```
//!
//! ```toml
//! # Condition pairs to compare within each image (default: every pair of conditions).
//! pairs = [["mirage-w0.0", "mirage-w1.0"], ["mirage-auto", "avif"]]
//! # Bits per pixel of each reconstruction, keyed "<image>/<condition>".
//! [bpp]
//! "kodim01/mirage-w0.0" = 0.121
//! ```
//!
//! Pairs are only ever formed within one image, so a pool should hold, per image,
//! reconstructions at the same bitrate (that is what makes the comparison fair).

use crate::error::StudyError;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The file name of the reference image in each image folder.
pub const ORIGINAL: &str = "original";

/// One reconstruction (or the original) of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolFile {
    pub image: String,
    pub condition: String,
    pub path: PathBuf,
    pub bpp: Option<f64>,
}

/// Two conditions of one image that raters will compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPair {
    pub image: String,
    pub a: String,
    pub b: String,
}

/// A scanned pool: every file and the pairs to compare.
#[derive(Debug, Clone)]
pub struct Pool {
    pub dir: PathBuf,
    /// Originals and reconstructions, sorted by image then condition.
    pub files: Vec<PoolFile>,
    pub pairs: Vec<PoolPair>,
}

/// `pool.toml` / `pool.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolConfig {
    pairs: Option<Vec<[String; 2]>>,
    #[serde(default)]
    bpp: BTreeMap<String, f64>,
    /// The codec's rate setting per image, written by `mirage study pool` for
    /// `mirage train predictor --votes`; the study app does not need it.
    #[serde(default, rename = "rate")]
    _rate: BTreeMap<String, f64>,
}

/// Names that appear in URLs, CSV files and the database: kept to a safe alphabet so
/// that none of them needs escaping anywhere.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Pool {
    /// Reads a pool folder. Every image folder needs `original.png` and at least two
    /// conditions; names outside `[A-Za-z0-9._-]` are an error rather than skipped, so a
    /// typo does not silently shrink a study.
    pub fn scan(dir: &Path) -> Result<Pool, StudyError> {
        let bad = |reason: String| StudyError::Pool {
            dir: dir.to_path_buf(),
            reason,
        };
        if !dir.is_dir() {
            return Err(bad("not a folder (or not readable)".into()));
        }
        let config = read_config(dir)?;
        let mut files = vec![];
        for image_dir in sorted_entries(dir)? {
            if !image_dir.is_dir() {
                continue;
            }
            let image = file_name(&image_dir);
            if !valid_name(&image) {
                return Err(bad(format!(
                    "image folder name {image:?} must be 1–64 characters of A-Z a-z 0-9 . _ -"
                )));
            }
            let mut conditions = vec![];
            for path in sorted_entries(&image_dir)? {
                if path.extension().and_then(|e| e.to_str()) != Some("png") {
                    continue;
                }
                let condition = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if !valid_name(&condition) {
                    return Err(bad(format!(
                        "{image}/{condition}.png: condition names must be 1–64 characters of A-Z a-z 0-9 . _ -"
                    )));
                }
                let bpp = config.bpp.get(&format!("{image}/{condition}")).copied();
                if bpp.is_some_and(|b| !(b.is_finite() && b >= 0.0)) {
                    return Err(bad(format!("{image}/{condition}: bpp must be ≥ 0")));
                }
                conditions.push(PoolFile {
                    image: image.clone(),
                    condition,
                    path,
                    bpp,
                });
            }
            if !conditions.iter().any(|f| f.condition == ORIGINAL) {
                return Err(bad(format!("{image}/ has no {ORIGINAL}.png")));
            }
            if conditions.len() < 3 {
                return Err(bad(format!(
                    "{image}/ needs at least two reconstructions beside {ORIGINAL}.png"
                )));
            }
            files.extend(conditions);
        }
        if files.is_empty() {
            return Err(bad(
                "no image folders (expected <pool>/<image>/original.png and <condition>.png files)"
                    .into(),
            ));
        }
        for key in config.bpp.keys() {
            if !files
                .iter()
                .any(|f| format!("{}/{}", f.image, f.condition) == *key)
            {
                return Err(bad(format!(
                    "bpp is given for {key}, which is not in the pool"
                )));
            }
        }
        let pairs = plan_pairs(&files, config.pairs.as_deref()).map_err(bad)?;
        Ok(Pool {
            dir: dir.to_path_buf(),
            files,
            pairs,
        })
    }
}

/// The pairs to compare: the configured condition pairs for each image that has both
/// conditions, or every pair of reconstructions within each image.
fn plan_pairs(files: &[PoolFile], wanted: Option<&[[String; 2]]>) -> Result<Vec<PoolPair>, String> {
    let mut by_image: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.condition != ORIGINAL) {
        by_image.entry(&f.image).or_default().insert(&f.condition);
    }
    let mut pairs = vec![];
    for (image, conditions) in &by_image {
        let conditions: Vec<&str> = conditions.iter().copied().collect();
        match wanted {
            None => {
                for (i, a) in conditions.iter().enumerate() {
                    for b in &conditions[i + 1..] {
                        pairs.push(PoolPair {
                            image: image.to_string(),
                            a: a.to_string(),
                            b: b.to_string(),
                        });
                    }
                }
            }
            Some(wanted) => {
                for [a, b] in wanted {
                    if a == b {
                        return Err(format!(
                            "pair [{a:?}, {b:?}] compares a condition with itself"
                        ));
                    }
                    if conditions.contains(&a.as_str()) && conditions.contains(&b.as_str()) {
                        pairs.push(PoolPair {
                            image: image.to_string(),
                            a: a.clone(),
                            b: b.clone(),
                        });
                    }
                }
            }
        }
    }
    if pairs.is_empty() {
        return Err("no image has both conditions of any configured pair".into());
    }
    Ok(pairs)
}

fn read_config(dir: &Path) -> Result<PoolConfig, StudyError> {
    let toml_path = dir.join("pool.toml");
    let json_path = dir.join("pool.json");
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| StudyError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let invalid = |path: &Path, reason: String| StudyError::Pool {
        dir: dir.to_path_buf(),
        reason: format!("{}: {reason}", file_name(path)),
    };
    match (toml_path.exists(), json_path.exists()) {
        (true, true) => Err(StudyError::Pool {
            dir: dir.to_path_buf(),
            reason: "both pool.toml and pool.json exist; keep one".into(),
        }),
        (true, false) => toml::from_str(&read(&toml_path)?)
            .map_err(|e| invalid(&toml_path, e.message().to_string())),
        (false, true) => {
            serde_json::from_str(&read(&json_path)?).map_err(|e| invalid(&json_path, e.to_string()))
        }
        (false, false) => Ok(PoolConfig::default()),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, StudyError> {
    let io = |source| StudyError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, rel: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"png").unwrap();
    }

    fn pool_with(images: &[&str], conditions: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for image in images {
            touch(dir.path(), &format!("{image}/original.png"));
            for c in conditions {
                touch(dir.path(), &format!("{image}/{c}.png"));
            }
        }
        dir
    }

    #[test]
    fn all_pairs_within_each_image_by_default() {
        let dir = pool_with(&["img1", "img2"], &["avif", "mirage-w0.0", "mirage-w1.0"]);
        let pool = Pool::scan(dir.path()).unwrap();
        assert_eq!(pool.files.len(), 8);
        assert_eq!(pool.pairs.len(), 6);
        assert!(pool.pairs.iter().all(|p| p.a != p.b));
        assert_eq!(
            pool.pairs[0],
            PoolPair {
                image: "img1".into(),
                a: "avif".into(),
                b: "mirage-w0.0".into()
            }
        );
    }

    #[test]
    fn configured_pairs_and_bpp_from_toml() {
        let dir = pool_with(&["img1"], &["avif", "mirage-w0.0", "mirage-w1.0"]);
        std::fs::write(
            dir.path().join("pool.toml"),
            "pairs = [[\"mirage-w0.0\", \"mirage-w1.0\"]]\n[bpp]\n\"img1/avif\" = 0.12\n",
        )
        .unwrap();
        let pool = Pool::scan(dir.path()).unwrap();
        assert_eq!(pool.pairs.len(), 1);
        assert_eq!(pool.pairs[0].a, "mirage-w0.0");
        let avif = pool.files.iter().find(|f| f.condition == "avif").unwrap();
        assert_eq!(avif.bpp, Some(0.12));
    }

    #[test]
    fn json_config_is_read_too() {
        let dir = pool_with(&["img1"], &["a", "b", "c"]);
        std::fs::write(dir.path().join("pool.json"), r#"{"pairs": [["a", "c"]]}"#).unwrap();
        let pool = Pool::scan(dir.path()).unwrap();
        assert_eq!(pool.pairs.len(), 1);
        assert_eq!(
            (pool.pairs[0].a.as_str(), pool.pairs[0].b.as_str()),
            ("a", "c")
        );
    }

    #[test]
    fn bad_pools_are_rejected_with_a_reason() {
        let cases: Vec<(tempfile::TempDir, &str)> = vec![
            (tempfile::tempdir().unwrap(), "no image folders"),
            (pool_with(&["img1"], &["only-one"]), "at least two"),
            (pool_with(&["bad name"], &["a", "b"]), "image folder name"),
            (
                {
                    let d = pool_with(&["img1"], &["a", "b"]);
                    std::fs::remove_file(d.path().join("img1/original.png")).unwrap();
                    d
                },
                "no original.png",
            ),
            (
                {
                    let d = pool_with(&["img1"], &["a", "b"]);
                    std::fs::write(d.path().join("pool.toml"), "[bpp]\n\"img9/a\" = 0.1\n")
                        .unwrap();
                    d
                },
                "not in the pool",
            ),
            (
                {
                    let d = pool_with(&["img1"], &["a", "b"]);
                    std::fs::write(d.path().join("pool.toml"), "pairs = [[\"x\", \"y\"]]\n")
                        .unwrap();
                    d
                },
                "no image has both",
            ),
            (
                {
                    let d = pool_with(&["img1"], &["a", "b"]);
                    std::fs::write(d.path().join("pool.toml"), "colour = 3\n").unwrap();
                    d
                },
                "pool.toml",
            ),
        ];
        for (dir, expected) in cases {
            let err = Pool::scan(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn names_are_restricted() {
        assert!(valid_name("mirage-w0.5_b"));
        for bad in ["", ".hidden", "a/b", "a b", "ä", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
