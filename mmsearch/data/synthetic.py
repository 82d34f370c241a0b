"""A small synthetic multimodal table: images drawn in memory, text, tabular, a label that each
modality predicts only in part, so fusing all three beats any one of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

COLORS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 180, 20), (150, 60, 190), (20, 170, 180)]
WORDS = ["apple", "river", "stone", "cloud", "ember", "frost"]
FILLER = "the a small large old new bright dark quiet loud round sharp soft heavy light".split()


def make_synthetic(
    out_dir: str | Path,
    *,
    n: int = 240,
    n_classes: int = 3,
    signal: float = 0.75,
    missing: float = 0.0,
    image_size: int = 32,
    regression: bool = False,
    seed: int = 0,
) -> Path:
    """Write `out_dir/table.csv` (+ images/) and return its path. Label column: "label".

    Each modality shows the row's class with probability `signal` (else a random class): the
    image as the colour of a shape, the text as a keyword, the table as a shifted numeric and a
    category. `missing` blanks each cell (image path, text, number, category) independently.
    """
    if not 2 <= n_classes <= len(COLORS):
        raise ValueError(f"n_classes must be in 2..{len(COLORS)}")
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    y = rng.integers(0, n_classes, size=n)

    def noisy(c: int) -> int:
        return int(c) if rng.random() < signal else int(rng.integers(0, n_classes))

    rows = []
    for i, c in enumerate(y):
        img = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        r = image_size // 2 - 2 - int(rng.integers(0, image_size // 6))
        cx, cy = image_size // 2 + rng.integers(-2, 3, size=2)
        ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLORS[noisy(c)])
        path = f"images/{i:05d}.png"
        img.save(out / path)
        words = list(rng.choice(FILLER, size=int(rng.integers(4, 9))))
        words.insert(int(rng.integers(0, len(words))), WORDS[noisy(c)])
        rows.append({
            "image": path,
            "description": " ".join(words),
            "size": float(noisy(c) + rng.normal(0, 0.6)),
            "weight": float(rng.normal(0, 1)),
            "kind": f"k{noisy(c)}",
            "label": float(c + rng.normal(0, 0.3)) if regression else f"class_{c}",
        })
    df = pd.DataFrame(rows)
    if missing > 0:
        for col in ["image", "description", "size", "kind"]:
            df[col] = df[col].astype(object).where(rng.random(n) >= missing, None)
    path = out / "table.csv"
    df.to_csv(path, index=False)
    return path
