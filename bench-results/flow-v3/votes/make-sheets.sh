#!/usr/bin/env bash
# The blind sheets of bench-results/flow-v3/votes: the 16 held-out training photos
# (`scripts/dev/held-out-photos HELDOUT_DIR`) at 0.12 bpp, decoded by the flow refiner at
# 4 steps and temperature 0.6, the old refiner (models/v2.3/) against the retrained one,
# in random order (../shared/tools/blind_pairs.py, seeds 1501–1516). The keys go to
# OUT_DIR/keys, away from the sheets the raters see.
set -euo pipefail
d=$(realpath -m "${1:?usage: make-sheets.sh OUT_DIR HELDOUT_DIR}")
heldout=$(realpath "${2:?usage: make-sheets.sh OUT_DIR HELDOUT_DIR}")
cd "$(dirname "$0")/../../.."
export LD_LIBRARY_PATH=$(scripts/setup-libtorch.sh)/lib
m=target/release/mirage
mkdir -p $d/dec $d/sheets $d/keys
for f in $heldout/*.png; do
  n=$(basename $f .png)
  [ -f $d/dec/$n.mrg ] || $m encode $f $d/dec/$n.mrg --bpp 0.12 >/dev/null
  MIRAGE_FLOW_MODEL=models/v2.3/flow.safetensors $m decode $d/dec/$n.mrg $d/dec/$n-old.png --decoder flow --steps 4 >/dev/null
  MIRAGE_FLOW_MODEL=models/flow.safetensors $m decode $d/dec/$n.mrg $d/dec/$n-new.png --decoder flow --steps 4 >/dev/null
done
i=0
for f in $heldout/*.png; do
  n=$(basename $f .png); i=$((i+1)); s=$(printf %02d $i)
  python3 ../shared/tools/blind_pairs.py $d/tmp-$s $f $d/dec/$n-old.png $d/dec/$n-new.png --seed $((1500+i))
  mv $d/tmp-$s/sheet.png $d/sheets/sheet-$s.png; mv $d/tmp-$s/key.json $d/keys/key-$s.json; rmdir $d/tmp-$s
done
