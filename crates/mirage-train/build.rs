// Bake libtorch's library directory into the binaries' rpath, so `mirage` runs without
// LD_LIBRARY_PATH. LIBTORCH comes from .cargo/config.toml (the ignored cache that
// scripts/setup-libtorch.sh fills).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
