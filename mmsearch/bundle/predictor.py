"""Load a bundle and score new rows: a plain Python process, no Ray, CPU or GPU.

Every step is the training code's own: rows are cast as prepare casts them (data.conform), turned
into tensors by the same RowDataset and TabularPreprocessor state, run through the same model in
eval mode with the same precision rule (fp32 on CPU, bf16 autocast on CUDA) and, by default, in
the same batches as the trial's own holdout predictions. So on CPU a member reproduces the
predictions it made during the search bit for bit, and the ensemble reproduces its blend.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from .. import metrics
from ..config import TrialConfig
from ..data.conform import InputReport, conform
from ..data.dataset import RowDataset
from ..data.prepare import read_table
from ..data.schema import Schema
from ..data.tabular import TabularPreprocessor, TargetEncoder
from ..ensemble.blending import blend
from ..errors import DataError
from ..models.model import MultimodalModel, build_model
from ..train.evaluate import infer
from .manifest import MANIFEST, BundleError, read_verified, verified_file


@dataclass
class Member:
    trial_id: str
    weight: float
    model: MultimodalModel
    precision: str       # the trial's train.precision: the same autocast rule as its evaluation
    batch_size: int      # the batch size of its in-search predictions


@dataclass
class _Preprocessing:
    """What build_model and RowDataset read from a prepared data directory."""
    schema: Schema
    tabular: TabularPreprocessor


class Predictor:
    """An exported ensemble. `Predictor.load(BUNDLE)`, then `predict(df)`, `predict_proba(df)`,
    `evaluate(df)`. `data` is a DataFrame or a table file (CSV / TSV / Parquet); relative image
    paths are read from the table file's folder (for a DataFrame: `base_dir`, default the current
    directory). After each call, `last_report` counts the cells that took a missing-value path."""

    def __init__(self, manifest: dict, members: list[Member], device: torch.device, pre: _Preprocessing):
        self.manifest = manifest
        self.members = members
        self.device = device
        self.schema, self.tabular = pre.schema, pre.tabular
        self.target = TargetEncoder(**manifest["preprocess"]["target"])
        self.last_report: InputReport | None = None

    @classmethod
    def load(cls, bundle: str | Path, *, device: str | None = None) -> "Predictor":
        """Check every file against the manifest's sha256 (BundleError names the first that
        differs), then build each member and load its safetensors weights (no pickle)."""
        bundle = Path(bundle)
        manifest = read_verified(bundle)
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        pre = _Preprocessing(Schema(**manifest["schema"]), TabularPreprocessor(**manifest["preprocess"]["tabular"]))
        members = [_load_member(bundle, manifest, m, pre, dev) for m in manifest["members"]]
        return cls(manifest, members, dev, pre)

    # -- public API -----------------------------------------------------------------------------
    @property
    def problem_type(self) -> str:
        return self.schema.problem_type

    @property
    def classes(self) -> list | None:
        return self.schema.classes

    def predict_proba(self, data, **kw) -> pd.DataFrame:
        """Ensemble class probabilities: one column per class label, rows as in `data`."""
        if self.problem_type == "regression":
            raise DataError("predict_proba is for classification; this bundle predicts a regression target: use predict")
        frame, blended, _ = self._run(data, **kw)
        return pd.DataFrame(blended, index=frame.index, columns=self.classes)

    def predict(self, data, **kw) -> pd.Series:
        """Predicted class labels (classification) or values on the label's scale (regression)."""
        frame, blended, _ = self._run(data, **kw)
        return pd.Series(self._decide(blended), index=frame.index, name=self.schema.label)

    def predict_table(self, data, *, proba: bool = False, **kw) -> pd.DataFrame:
        """`prediction`, plus `proba_<class>` columns with proba=True: what `mmsearch predict` writes."""
        frame, blended, _ = self._run(data, **kw)
        out = pd.DataFrame({"prediction": self._decide(blended)}, index=frame.index)
        if proba and self.problem_type != "regression":
            for j, c in enumerate(self.classes):
                out[f"proba_{c}"] = blended[:, j]
        return out

    def member_predictions(self, data, **kw) -> dict[str, np.ndarray]:
        """Each member's own predictions (for search rows: what its checkpoint saved)."""
        _, _, per = self._run(data, **kw)
        return {m.trial_id: p for m, p in zip(self.members, per)}

    def evaluate(self, data, **kw) -> dict:
        """The problem type's metrics of the ensemble against the label column (rows without a
        label are predicted but not scored)."""
        frame, blended, _ = self._run(data, **kw)
        label = self.schema.label
        if label not in frame.columns:
            raise DataError(f"evaluate needs the label column {label!r}, which the table lacks")
        has = frame[label].notna().to_numpy()
        if not has.any():
            raise DataError(f"label column {label!r} is empty in every row")
        y_raw, pred = frame[label][has], blended[has]
        if self.problem_type == "regression":
            y = y_raw.to_numpy(dtype=float)
            names = sorted(metrics.REGRESSION_METRICS)
        else:
            known = set(self.classes)
            unknown = sorted({str(v) for v in y_raw.tolist() if v not in known})
            if unknown:
                raise DataError(f"label column {label!r} holds values the model never saw: {', '.join(unknown[:5])}; "
                                f"its classes: {', '.join(map(str, self.classes))}")
            y = self.target.encode(y_raw)
            names = sorted(metrics.CLASSIFICATION_METRICS)
        return {"rows": int(has.sum()), "metric": self.manifest["metric"], **{n: metrics.score(n, y, pred) for n in names}}

    # -- the one prediction path ----------------------------------------------------------------
    def _run(self, data, *, base_dir: str | Path | None = None, batch_size: int | None = None,
             progress: bool | None = None) -> tuple[pd.DataFrame, np.ndarray, list[np.ndarray]]:
        """(conformed rows, ensemble blend, per-member predictions). batch_size None: each
        member's in-search batch size (bit-exact reproduction on CPU); any other size gives the
        same predictions up to float rounding."""
        if isinstance(data, pd.DataFrame):
            df, base = data, Path(base_dir) if base_dir is not None else Path.cwd()
        else:
            df, folder = read_table(data)
            base = Path(base_dir) if base_dir is not None else folder
        if len(df) == 0:
            raise DataError("the table has no rows to predict")
        rows, report = conform(df, self.schema, self.tabular, base)
        bar = _progress(len(rows) * len(self.members), progress)
        per = []
        try:
            for m in self.members:
                ds = RowDataset.from_rows(rows, m.model.view, image_size=m.model.image_size, tokenize=m.model.tokenize)
                loader = DataLoader(ds, batch_size=batch_size or m.batch_size)
                p = infer(m.model, loader, self.device, m.precision, self.problem_type, on_batch=bar.update)
                # the loop saves regression predictions back on the label's scale: so do we
                per.append(self.target.decode_regression(p) if self.problem_type == "regression" else p)
        finally:
            bar.close()
        self.last_report = report
        return rows, blend([m.weight for m in self.members], per), per

    def _decide(self, blended: np.ndarray) -> np.ndarray:
        if self.problem_type == "regression":
            return blended
        # np.argmax: ties go to the lowest class id, as in metrics.accuracy
        return np.asarray(self.classes, dtype=object)[np.argmax(blended, axis=1)]


def load_bundle(bundle: str | Path, *, device: str | None = None) -> Predictor:
    return Predictor.load(bundle, device=device)


_MEMBER_KEYS = ("trial_id", "weight", "config", "eval_batch_size", "weights", "config_file")


def _load_member(bundle: Path, manifest: dict, entry: dict, pre: _Preprocessing, device: torch.device) -> Member:
    missing = [k for k in _MEMBER_KEYS if k not in entry] if isinstance(entry, dict) else list(_MEMBER_KEYS)
    if missing:
        raise BundleError(f"{bundle / MANIFEST}: a member lacks {', '.join(missing)}; re-export the bundle")
    tid = entry["trial_id"]
    config_file = verified_file(bundle, manifest, entry["config_file"], f"member {tid}'s config_file")
    weights = verified_file(bundle, manifest, entry["weights"], f"member {tid}'s weights")
    if json.loads(config_file.read_text()) != entry["config"]:
        raise BundleError(f"bundle file {config_file} disagrees with the manifest's config of member {tid}")
    cfg = TrialConfig.from_flat(entry["config"])
    # pretrained=False: the weights below replace every backbone weight, so none is fetched (no
    # network). fork_rng: random initialisation must not move the caller's torch RNG.
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg, pre, pretrained=False)
    except OSError as e:  # a hub name (encoder.hf, an open_clip hf-hub model) not in the local cache
        raise BundleError(f"member {tid}: its model cannot be built offline ({str(e).splitlines()[0]}); the `hf` text "
                          "encoder and hub open_clip names read their config and tokenizer from the Hugging Face "
                          "cache: load the bundle once with network access, or copy that cache") from None
    try:
        model.load_state_dict(load_file(str(weights)))  # strict: every tensor must fit
    except RuntimeError as e:
        raise BundleError(f"member {tid}: {weights} does not fit the model its config builds "
                          f"({str(e).splitlines()[0]}); was it exported by another mmsearch version?") from None
    model.to(device).eval()
    return Member(trial_id=tid, weight=float(entry["weight"]), model=model, precision=cfg.train.precision,
                  batch_size=int(entry["eval_batch_size"]))


def _progress(total: int, enabled: bool | None):
    """A tqdm bar over rows x members on stderr; None: only when stderr is a terminal."""
    from tqdm import tqdm

    disable = enabled is False or (enabled is None and not sys.stderr.isatty())
    return tqdm(total=total, desc="predict", unit="row", file=sys.stderr, disable=disable)
