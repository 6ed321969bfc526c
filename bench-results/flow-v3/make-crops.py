#!/usr/bin/env python3
"""docs/flow-v3-crops.png: original, MSE decode, flow v2 and flow v3 (4 steps, T 0.6) of four
held-out photos at 0.12 bpp, one 192² crop each at 2×.

usage: make-crops.py OUT_DIR HELDOUT_DIR
OUT_DIR is make-sheets.sh's (its dec/ holds NAME.mrg, NAME-old.png and NAME-new.png); the MSE
decodes are made here with `target/release/mirage decode`. Needs Pillow and numpy.
"""
import os, subprocess, sys
import numpy as np
from PIL import Image, ImageDraw

out, heldout = sys.argv[1], sys.argv[2]
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
names = ["00-100007", "03-189006", "13-img_012", "08-000000000139"]
rows = []
for name in names:
    mse = f"{out}/dec/{name}-mse.png"
    if not os.path.exists(mse):
        subprocess.run([f"{root}/scripts/mirage", "decode", f"{out}/dec/{name}.mrg", mse], check=True)
    original = Image.open(f"{heldout}/{name}.png").convert("RGB")
    # The crop whose mean horizontal luma step is nearest 6 levels: texture and flat
    # areas together, where invented grain shows.
    luma = np.asarray(original.convert("L"), dtype=float)
    w, h = original.size
    _, x, y = max((-abs(np.abs(np.diff(luma[y:y + 192, x:x + 192], axis=1)).mean() - 6), x, y)
                  for y in range(0, h - 192, 48) for x in range(0, w - 192, 48))
    tiles = [original] + [Image.open(f"{out}/dec/{name}-{k}.png").convert("RGB") for k in ("mse", "old", "new")]
    rows.append([t.crop((x, y, x + 192, y + 192)).resize((384, 384), Image.NEAREST) for t in tiles])
gutter = 6
sheet = Image.new("RGB", (4 * 384 + 3 * gutter, len(rows) * (384 + gutter) - gutter + 28), "white")
draw = ImageDraw.Draw(sheet)
labels = ["original", "MSE decode (0.12 bpp)", "flow 4 steps, old refiner", "flow 4 steps, retrained (step 1,000)"]
for i, label in enumerate(labels):
    draw.text((i * (384 + gutter) + 4, 8), label, fill="black")
for r, row in enumerate(rows):
    for i, tile in enumerate(row):
        sheet.paste(tile, (i * (384 + gutter), 28 + r * (384 + gutter)))
sheet.save(f"{root}/docs/flow-v3-crops.png")
