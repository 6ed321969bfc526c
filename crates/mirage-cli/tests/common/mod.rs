//! What several CLI test files share: running the `mirage` binary with a chosen model.

use std::path::Path;
use std::process::Command;

/// Runs `mirage --threads THREADS ARGS...` with `$MIRAGE_MODEL` set to `model`, asserts
/// that it succeeded (showing its stderr if not), and returns its stdout.
pub fn run_with_model(model: &Path, args: &[&str], threads: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mirage"))
        .env("MIRAGE_MODEL", model)
        .args(["--threads", threads])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}
