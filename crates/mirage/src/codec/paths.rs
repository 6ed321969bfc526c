//! Where the bundled models are (each can be overridden by an environment variable).

use std::path::Path;

/// The first core (format v1's mean-scale hyperprior, no context model), kept because
/// the realism generator, the flow refiner and the ConHa predictor were trained on it
/// and live beside it in `models/v1/` until they are retrained on the current core.
pub fn v1_model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/hyperprior.safetensors")
}

/// The model bundled with the repository.
pub fn default_model_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/hyperprior.safetensors")
        })
}

/// The realism generator bundled with the repository (or `$MIRAGE_REALISM_MODEL`).
pub fn default_realism_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_REALISM_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/realism.safetensors")
        })
}

/// The flow refiner bundled with the repository (or `$MIRAGE_FLOW_MODEL`).
pub fn default_flow_path() -> std::path::PathBuf {
    std::env::var_os("MIRAGE_FLOW_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/v1/flow.safetensors")
        })
}
