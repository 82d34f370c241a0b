"""Gradient-boosted trees as a member of the pool: LightGBM over the frozen towers' pooled
encodings and the raw tabular columns (issue 15's tree members).

LightGBM rather than XGBoost or CatBoost: all three are maintained (releases in 2026), but
LightGBM's wheel is a few MB (XGBoost's carries CUDA libraries, CatBoost's is ~100 MB), it is the
fastest of the three on 2 CPU cores at these sizes, takes missing values and categorical columns
natively, and saves a model as plain text (no pickle).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import register_fusion
from ._fitted import FittedFusion


@register_fusion
class LightGBMFusion(FittedFusion):
    """The pretrained towers are frozen (whatever model.finetune says) and read from the feature
    cache; the tabular columns go to the trees as they are (standardized numbers, missing ones as
    NaN; category ids as categorical features), so no tabular encoder is built. Not trained by
    gradients: the training loop calls ``fit`` once (``fits_itself``), early-stopped on the val
    rows, and no trick applies. The fitted booster is kept as LightGBM's text model in a uint8
    buffer, ``booster_text``: it travels in the trial's safetensors file and the bundle's (the
    same checksums as any weights), and is parsed again on the first prediction after loading.
    Logits: log-probabilities (classification: the loop's softmax gives back LightGBM's
    probabilities) or the predicted value (regression, on the standardized target)."""
    name = "lightgbm"

    @dataclass(frozen=True)
    class Config:
        num_leaves: int = 15
        learning_rate: float = 0.05
        n_estimators: int = 1000        # at most; early stopping on val picks the number
        early_stopping_rounds: int = 50
        min_child_samples: int = 10
        feature_fraction: float = 0.5
        lambda_l2: float = 1.0
        # each tower's encoding is reduced to this many principal components (fitted on the
        # training rows) before the trees see it; 0 keeps it whole. Trees split one feature at a
        # time, so 1280 Lite0 dimensions mostly cost time: on emoji (1,332 rows, 9 classes) the
        # whole encodings took 107 s to fit
        embed_dims: int = 32

    def __init__(self, dims, n_out, **params):
        super().__init__(dims, n_out)
        self.params = params
        self.register_buffer("booster_text", torch.zeros(0, dtype=torch.uint8))
        for m in self.modalities:  # PCA of each tower's encoding: mean [d], components [k, d] (empty: not reduced)
            self.register_buffer(f"pca_mean_{m}", torch.zeros(0))
            self.register_buffer(f"pca_components_{m}", torch.zeros(0))
        self._booster = None

    # -- features -------------------------------------------------------------------------------
    def features(self, pooled: dict[str, np.ndarray], num: np.ndarray, num_mask: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """[B, F]: each modality's pooled encoding [B, d] (sorted by modality; reduced once
        fit_inputs ran), the numbers (NaN where missing) and the category ids."""
        num = np.where(num_mask, num.astype(np.float64), np.nan)
        parts = [self._reduced(m, pooled[m]) for m in self.modalities] + [num, cat.astype(np.float64)]
        return np.concatenate(parts, axis=1)

    def _reduced(self, m: str, x: np.ndarray) -> np.ndarray:
        components = getattr(self, f"pca_components_{m}")
        if components.numel() == 0:
            return x
        return (x - getattr(self, f"pca_mean_{m}").double().numpy()) @ components.double().numpy().T

    def fit_inputs(self, pooled, num, num_mask, cat) -> None:
        """PCA of each tower's training encodings [N, d] (features() then reduces)."""
        k = self.params["embed_dims"]
        for m, x in pooled.items():
            if not k or x.shape[1] <= k:
                continue
            mean = x.mean(0)
            _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
            setattr(self, f"pca_mean_{m}", torch.as_tensor(mean, dtype=torch.float32))
            setattr(self, f"pca_components_{m}", torch.as_tensor(vt[:k], dtype=torch.float32))

    # -- fit and predict ------------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, n_cat: int,
            problem_type: str, seed: int, threads: int) -> dict:
        import lightgbm as lgb

        objective = {"regression": "regression", "binary": "binary"}.get(problem_type, "multiclass")
        params = {"objective": objective, "num_leaves": self.params["num_leaves"], "learning_rate": self.params["learning_rate"],
                  "min_child_samples": self.params["min_child_samples"], "feature_fraction": self.params["feature_fraction"],
                  "lambda_l2": self.params["lambda_l2"], "seed": seed, "deterministic": True, "num_threads": threads,
                  "verbosity": -1, **({"num_class": self.n_out} if objective == "multiclass" else {})}
        cats = list(range(x.shape[1] - n_cat, x.shape[1]))
        train = lgb.Dataset(x, y, categorical_feature=cats, free_raw_data=False)
        val = lgb.Dataset(x_val, y_val, categorical_feature=cats, reference=train)
        booster = lgb.train(params, train, num_boost_round=self.params["n_estimators"], valid_sets=[val],
                            callbacks=[lgb.early_stopping(self.params["early_stopping_rounds"], verbose=False)])
        text = booster.model_to_string(num_iteration=booster.best_iteration)
        self.booster_text = torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8).to(self.booster_text.device)
        self._booster = None
        return {"trees": int(booster.best_iteration), "features": int(x.shape[1])}

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        if self._booster is None:
            if self.booster_text.numel() == 0:
                raise RuntimeError("the lightgbm member has not been fitted")
            import lightgbm as lgb

            self._booster = lgb.Booster(model_str=bytes(self.booster_text.cpu().numpy()).decode())
        p = np.asarray(self._booster.predict(x), dtype=np.float64)
        if self.n_out == 1:
            return p.reshape(-1, 1)
        probs = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
        return np.log(np.clip(probs, 1e-12, 1.0))

    def _loaded(self) -> None:
        self._booster = None
