#!/usr/bin/env bash
# Fetch a CPU-only libtorch 2.13.0 (the version tch 0.26 requires) into an ignored
# cache directory, from PyPI wheels. Idempotent: a finished install is detected by a
# stamp file and left alone. Prints the directory on stdout.
#
# Why this recipe: PyPI only carries the CUDA build of torch. Its libtorch_cpu.so works
# on a CPU-only machine once the two small CUDA runtime libraries it links against are
# present, and libtorch.so is replaced by an empty library so that libtorch_cuda.so
# (cudnn, cublas, ...) is never pulled in. See docs/libtorch.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MIRAGE_CACHE:-$root/.cache}
dest=$cache/libtorch-2.13.0-cpu
stamp=$dest/.complete

if [ -f "$stamp" ]; then
  echo "$dest"
  exit 0
fi

echo "setting up CPU libtorch 2.13.0 in $dest (one-time, ~550 MB download)" >&2
dl=$cache/downloads
mkdir -p "$dl"
py=${PYTHON:-python3}
if [ -z "$(ls "$dl"/torch-2.13.0-*.whl 2>/dev/null)" ]; then
  "$py" -m pip download --quiet --no-deps --dest "$dl" torch==2.13.0 >&2
fi
if [ -z "$(ls "$dl"/nvidia_cuda_runtime*.whl 2>/dev/null)" ] || [ -z "$(ls "$dl"/nvidia_cuda_cupti*.whl 2>/dev/null)" ]; then
  "$py" -m pip download --quiet --dest "$dl" "cuda-toolkit[cudart,cupti]==13.0.3" >&2
fi

tmp=$(mktemp -d "$cache/libtorch-tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" - "$dl" "$tmp" <<'PY'
import glob, os, sys, zipfile
dl, out = sys.argv[1], sys.argv[2]
torch = glob.glob(os.path.join(dl, "torch-2.13.0-*.whl"))[0]
keep_libs = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1"}
with zipfile.ZipFile(torch) as z:
    for name in z.namelist():
        if name.endswith("/"):
            continue
        if name.startswith(("torch/include/", "torch/share/")) or (
            name.startswith("torch/lib/") and os.path.basename(name) in keep_libs
        ):
            target = os.path.join(out, name[len("torch/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
for pattern in ("nvidia_cuda_runtime*.whl", "nvidia_cuda_cupti*.whl"):
    for whl in glob.glob(os.path.join(dl, pattern)):
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                base = os.path.basename(name)
                if base in ("libcudart.so.13", "libcupti.so.13"):
                    with z.open(name) as src, open(os.path.join(out, "lib", base), "wb") as dst:
                        dst.write(src.read())
PY
for lib in libtorch_cpu.so libc10.so libgomp.so.1 libcudart.so.13 libcupti.so.13; do
  [ -f "$tmp/lib/$lib" ] || { echo "setup-libtorch: $lib missing from the wheels" >&2; exit 1; }
done
# An empty libtorch.so: tch links against it, and the real one would drag in CUDA.
echo "" > "$tmp/empty.c"
gcc -shared -fPIC -o "$tmp/lib/libtorch.so" "$tmp/empty.c"
rm -f "$tmp/empty.c"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$stamp"
echo "$dest"
