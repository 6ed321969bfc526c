//! The training photos' captions (MS-COCO annotations) as sentence vectors, for the
//! ultra-low mode's caption conditioning.
//!
//! The COCO caption files (`captions_*.json` in the annotation format: `images` with
//! `id` and `file_name`, `annotations` with `image_id` and `caption`) name photos by
//! file name; a training photo of the same name gets their captions. Every caption is
//! embedded once, at the start of a run, by the same sentence encoder the decoder uses.

use anyhow::{Context, Result};
use mirage_text::{SentenceEncoder, EMBEDDING_DIM};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    caption: String,
}

/// Captions by file name, from every `captions_*.json` in `dir`.
pub fn load_coco_captions(dir: &Path) -> Result<HashMap<String, Vec<String>>> {
    let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("captions_") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no captions_*.json under {}", dir.display());
    }
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let coco: CocoFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a COCO caption file", path.display()))?;
        let names: HashMap<u64, &str> = coco
            .images
            .iter()
            .map(|i| (i.id, i.file_name.as_str()))
            .collect();
        for a in coco.annotations {
            if let Some(name) = names.get(&a.image_id) {
                by_name
                    .entry(name.to_string())
                    .or_default()
                    .push(a.caption.trim().to_string());
            }
        }
    }
    Ok(by_name)
}

/// Per photo, the sentence vectors of its captions, `[n, 384]`; `None` for a photo
/// without captions.
pub fn embed_captions(
    paths: &[PathBuf],
    captions: &HashMap<String, Vec<String>>,
    encoder: &SentenceEncoder,
) -> Result<Vec<Option<Tensor>>> {
    paths
        .iter()
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(texts) = captions.get(name) else {
                return Ok(None);
            };
            let mut flat = Vec::with_capacity(texts.len() * EMBEDDING_DIM);
            for t in texts {
                flat.extend_from_slice(&encoder.embed(t)?);
            }
            Ok(Some(
                Tensor::from_slice(&flat).view([texts.len() as i64, EMBEDDING_DIM as i64]),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_are_matched_to_files_by_name() {
        let dir = std::env::temp_dir().join(format!("mirage-coco-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("captions_val.json"),
            r#"{"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 9, "file_name": "b.jpg"}],
                "annotations": [{"image_id": 7, "caption": " A cat. "},
                                {"image_id": 7, "caption": "A kitten."},
                                {"image_id": 3, "caption": "no such image"}]}"#,
        )
        .unwrap();
        let by_name = load_coco_captions(&dir).unwrap();
        assert_eq!(by_name["a.jpg"], vec!["A cat.", "A kitten."]);
        assert!(!by_name.contains_key("b.jpg"));
        assert_eq!(by_name.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
