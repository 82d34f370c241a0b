"""What several benchmark scripts share: the machine they ran on and a seeded sample of a table."""
from __future__ import annotations

import dataclasses
import os
import platform
import sys
from pathlib import Path


def environment(**more_versions: str) -> dict:
    """{"machine": ..., "versions": ...} for a results file; more_versions adds e.g. ray=ray.__version__."""
    import torch

    import mmsearch

    return {
        "machine": {"cores": os.cpu_count(), "gpu": torch.cuda.is_available(), "platform": platform.platform()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "mmsearch": mmsearch.__version__,
                     **more_versions},
    }


def sample_rows(dataset, rows: int, work: Path):
    """The built-in TableDataset `dataset` cut to `rows` rows (seeded: the same rows every time),
    written as a CSV under `work`. Image paths relative to the table's folder are made absolute, so
    the sample can live elsewhere."""
    import pandas as pd

    table_dir = Path(dataset.path).parent
    df = dataset.load().sample(n=rows, random_state=0)
    for col in df.columns:
        first = df[col].dropna()
        if not pd.api.types.is_numeric_dtype(first) and len(first) and (table_dir / str(first.iloc[0])).is_file():
            df[col] = [str(table_dir / v) if isinstance(v, str) and not pd.isna(v) else v for v in df[col]]
    path = Path(work) / f"{dataset.name}_{rows}.csv"
    df.to_csv(path, index=False)
    return dataclasses.replace(dataset, path=path)
