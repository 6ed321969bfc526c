//! Where the bundled models are (each can be overridden by an environment variable).

use std::path::Path;

/// The first core (format v1's mean-scale hyperprior, no context model), kept because
/// the realism generator, the flow refiner and the ConHa predictor were trained on it
/// and live beside it in `models/v1/` until they are retrained on the current core.
pub fn v1_model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/hyperprior.safetensors")
}

/// Earlier releases of the current core, kept so that the files they made still decode
/// (`--model PATH`; the wrong-model error names the one a file needs): the fourth
/// (v2.3), whole, because the ultra-low mode encodes through it, the latest two, and any
/// that keeps an add-on trained on it (v2.10), decode-only. Older ones are in
/// [`RETIRED_CORES`].
pub fn earlier_model_paths() -> Vec<std::path::PathBuf> {
    ["v2.3", "v2.10", "v2.15", "v2.16"]
        .iter()
        .map(|v| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../../models/{v}/hyperprior.safetensors"))
        })
        .collect()
}

/// A release of the core that `models/` no longer holds. Each release adds 5.7 MB, so
/// only the latest two earlier releases stay (plus those an add-on needs), to keep the
/// bundle well under 100 MB. A retired release's files are refused with the way to get
/// its model back from the repository's history, where `commit` still holds it.
#[derive(Clone, Copy, Debug)]
pub struct RetiredCore {
    /// The model id, as `mirage info` shows it.
    pub id: &'static str,
    /// Its folder under `models/` while it was kept.
    pub release: &'static str,
    /// A commit of the Mirage repository with `models/<release>/hyperprior.safetensors`.
    pub commit: &'static str,
}

impl RetiredCore {
    /// The model file's path in `commit`.
    pub fn path_in_history(&self) -> String {
        format!("models/{}/hyperprior.safetensors", self.release)
    }
}

/// The retired releases, oldest first.
pub const RETIRED_CORES: &[RetiredCore] = &[
    RetiredCore {
        id: "7c757dd45a5403e5",
        release: "v2.0",
        commit: LAST_WITH_V2_0_TO_V2_4,
    },
    RetiredCore {
        id: "19b73cef13f819a1",
        release: "v2.1",
        commit: LAST_WITH_V2_0_TO_V2_4,
    },
    RetiredCore {
        id: "c3fffef8cd00b631",
        release: "v2.2",
        commit: LAST_WITH_V2_0_TO_V2_4,
    },
    RetiredCore {
        id: "80d3a1a636e87c42",
        release: "v2.4",
        commit: LAST_WITH_V2_0_TO_V2_4,
    },
    RetiredCore {
        id: "d42deaf7af00996d",
        release: "v2.5",
        commit: "8b7a845fb249",
    },
    RetiredCore {
        id: "56f1112c9dd07556",
        release: "v2.6",
        commit: "ce6d45098db2",
    },
    RetiredCore {
        id: "2f79340500924f53",
        release: "v2.7",
        commit: "86353f9fe989",
    },
    RetiredCore {
        id: "0329c775bb2df37a",
        release: "v2.8",
        commit: "1ed625d0a790",
    },
    RetiredCore {
        id: "6d354dadac5f21b8",
        release: "v2.9",
        commit: "ae14d8d111e5",
    },
    RetiredCore {
        id: "893a7de4418c4a5d",
        release: "v2.11",
        commit: "1ada083e33a2",
    },
    RetiredCore {
        id: "bcec5ebf5989f66c",
        release: "v2.12",
        commit: "3d1faa36948c",
    },
    RetiredCore {
        id: "0ce861ea63373437",
        release: "v2.13",
        commit: "1b81ce608e03",
    },
    RetiredCore {
        id: "e1f988cf41b03cea",
        release: "v2.14",
        commit: "fb29b55fc33e",
    },
];

/// The last commit that bundled v2.0, v2.1, v2.2 and v2.4.
const LAST_WITH_V2_0_TO_V2_4: &str = "c657c5b66e61";

/// The model bundled with the repository.
pub fn default_model_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/hyperprior.safetensors")
        })
}

/// The realism generator bundled for the bundled core (or `$MIRAGE_REALISM_MODEL`).
pub fn default_realism_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_REALISM_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/realism.safetensors")
        })
}

/// The bundled realism generators, each trained for one core: the default one, then
/// the earlier ones (or only `$MIRAGE_REALISM_MODEL`). A decoder takes the first made
/// for its core, or for a core whose add-ons its core takes.
pub fn realism_paths() -> Vec<std::path::PathBuf> {
    add_on_paths("MIRAGE_REALISM_MODEL", "realism.safetensors")
}

/// Where an add-on that a newer one replaced stays, beside the core it was trained on,
/// so that the files of that core and of the releases that take its add-ons keep
/// decoding the same: the eleventh release's (`v2.10/`, the realism generator v3), the
/// fourth's (`v2.3/`), then v1's.
const EARLIER_ADD_ON_DIRS: [&str; 3] = ["v2.10", "v2.3", "v1"];

/// The bundled add-ons of one kind, each trained for one core: the current core's
/// (`models/<file>`), then the earlier ones ([`EARLIER_ADD_ON_DIRS`]); or only the file
/// `$env` names. A missing file is simply not there to fit.
fn add_on_paths(env: &str, file: &str) -> Vec<std::path::PathBuf> {
    match std::env::var_os(env) {
        Some(path) => vec![path.into()],
        None => bundled_add_on_paths(file),
    }
}

/// The bundled add-ons of one kind, whatever the environment says: `models/<file>`,
/// then the earlier ones ([`EARLIER_ADD_ON_DIRS`]).
fn bundled_add_on_paths(file: &str) -> Vec<std::path::PathBuf> {
    std::iter::once(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../models/{file}")))
        .chain(EARLIER_ADD_ON_DIRS.iter().map(|dir| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../models/{dir}/{file}"))
        }))
        .collect()
}

/// The bundled realism generators, ignoring `$MIRAGE_REALISM_MODEL`: the ultra-low mode
/// needs the one its model names, whichever generator the user chose for the core mode.
pub fn bundled_realism_paths() -> Vec<std::path::PathBuf> {
    bundled_add_on_paths("realism.safetensors")
}

/// An add-on made for the v1 core, `models/v1/<file>`.
pub fn v1_add_on_path(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../models/v1/{file}"))
}

/// The flow refiner bundled for the bundled core (or `$MIRAGE_FLOW_MODEL`).
pub fn default_flow_path() -> std::path::PathBuf {
    flow_paths().remove(0)
}

/// The bundled flow refiners, the current core's first (see [`realism_paths`]).
pub fn flow_paths() -> Vec<std::path::PathBuf> {
    add_on_paths("MIRAGE_FLOW_MODEL", "flow.safetensors")
}

/// The bundled ConHa predictors, the current core's first (see [`realism_paths`]).
pub fn predictor_paths() -> Vec<std::path::PathBuf> {
    add_on_paths("MIRAGE_PREDICTOR_MODEL", "realism-predictor.safetensors")
}

/// ", which is --model PATH" when `id` is one of the bundled cores (checked only on the
/// error path: it hashes the model files).
/// For a retired release, how to get it back from git instead.
pub(crate) fn bundled_model_hint(id: &[u8; 8]) -> String {
    if let Some(p) = bundled_core_path(id) {
        let shown = p
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .map(Path::to_path_buf)
            .unwrap_or(p);
        return format!(", which is --model {}", shown.display());
    }
    let hex = crate::model_file::id_hex(id);
    match RETIRED_CORES.iter().find(|r| r.id == hex) {
        Some(r) => format!(
            ", core release {release}, no longer bundled: in a clone of the Mirage repository, \
             `git show {commit}:{path} > {release}.safetensors`, then --model {release}.safetensors",
            release = r.release,
            commit = r.commit,
            path = r.path_in_history(),
        ),
        None => String::new(),
    }
}

/// The bundled core whose model id is `id` (the current one, v1 or an earlier release).
/// It hashes the model files, so it is for rare paths (errors, the ultra-low mode on a
/// later core).
pub fn bundled_core_path(id: &[u8; 8]) -> Option<std::path::PathBuf> {
    [default_model_path(), v1_model_path()]
        .into_iter()
        .chain(earlier_model_paths())
        .find(|p| std::fs::read(p).is_ok_and(|b| crate::model_file::core_id(&b) == Ok(*id)))
}
