"""What the fusions that fit themselves share (trees: lightgbm.py; the linear probe: linear.py).

Such a fusion is not trained by gradients: the training loop's gradient-free path
(train/fit_once.py) gathers every training and val row's inputs once (the frozen towers' pooled
encodings, read from the feature cache, and the raw tabular columns), lets the fusion fit its
input transforms on the training rows (``fit_inputs``), builds the features and calls ``fit``.
Everything fitted lives in buffers, so it travels in the trial's safetensors file and the bundle
like any weights (no pickle); buffers whose shape only the fit knows are taken at the loaded shape.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import Fusion, ModelOutput


class FittedFusion(Fusion):
    reads = "pooled"
    fits_itself = True
    reads_raw_tabular = True  # no tabular encoder is built: the fusion reads the columns itself

    def __init__(self, dims, n_out):
        super().__init__(dims, n_out)
        self.n_out = n_out
        self.head = nn.Identity()  # the contract's head: the fitted model's output is already the logits
        self.fused_dim = n_out
        self.feature_dim = 0
        self.register_buffer("_device", torch.zeros(0), persistent=False)  # where the logits go

    @staticmethod
    def inputs(outputs, batch) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """What features() reads, as arrays: (modality -> pooled float64 [B, d], num, num_mask, cat)."""
        pooled = {m: out.pooled.float().cpu().numpy().astype(np.float64) for m, out in outputs.items()}
        return pooled, batch["num"].float().cpu().numpy(), batch["num_mask"].cpu().numpy(), batch["cat"].cpu().numpy()

    def fit_inputs(self, pooled: dict[str, np.ndarray], num: np.ndarray, num_mask: np.ndarray, cat: np.ndarray) -> None:
        """Fit the input transforms on the training rows' inputs (before features() and fit)."""

    def features(self, pooled: dict[str, np.ndarray], num: np.ndarray, num_mask: np.ndarray, cat: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, n_cat: int,
            problem_type: str, seed: int, threads: int) -> dict:
        """Fit on the training rows' features, early-stopped or regularized on val's; return a few
        numbers to report (e.g. {"trees": 120})."""
        raise NotImplementedError

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Logits [B, n_out] (float64) of the features x."""
        raise NotImplementedError

    def forward(self, outputs, batch) -> ModelOutput:
        logits = self.predict_array(self.features(*self.inputs(outputs, batch)))
        logits = torch.as_tensor(logits, dtype=torch.float32, device=self._device.device)
        return ModelOutput(logits=logits, features={}, fused=logits)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the fitted buffers' shapes are the fit's, not the freshly built (empty) ones'
        for name, _ in self.named_buffers(recurse=False):
            if prefix + name in state_dict and name != "_device":
                setattr(self, name, state_dict[prefix + name].clone())
        self._loaded()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _loaded(self) -> None:
        """Drop what was derived from the buffers (they were just replaced)."""
