from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from . import Stage, Trick, register_trick


@register_trick
class GreedySoup(Trick):
    """Model soup along one run. Keeps the top_k checkpoints by validation score; at the end:
    greedy: sort best first, start from the best, add the next one if the validation score of the
    averaged weights does not get worse; uniform: average all top_k; best: the best one alone.
    Floats are averaged in float64; integer buffers (e.g. num_batches_tracked) come from the best."""
    name = "soup"
    stage = Stage.FINAL_WEIGHTS  # after_fit last: the soup is the final model

    @dataclass(frozen=True)
    class Config:
        method: Literal["greedy", "uniform", "best"] = "greedy"
        top_k: int = 3

    space = {"method": {"choice": ["greedy", "uniform", "best"]}}

    def __init__(self, config):
        super().__init__(config)
        self.candidates: list[tuple[float, int, dict[str, torch.Tensor]]] = []  # (score, epoch, weights)

    def on_epoch_end(self, model, state) -> None:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.candidates.append((state.val_score, state.epoch, weights))
        self.candidates.sort(key=lambda c: (-c[0], c[1]))  # best first; earlier epoch on ties
        del self.candidates[self.config.top_k:]

    def after_fit(self, model, state):
        if not self.candidates:
            return model
        ranked = self.candidates
        if self.config.method == "best":
            chosen = ranked[:1]
        elif self.config.method == "uniform":
            chosen = ranked
        else:
            chosen = ranked[:1]
            score = ranked[0][0]
            for cand in ranked[1:]:
                model.load_state_dict(average([c[2] for c in chosen + [cand]]))
                trial_score = state.evaluate(model)
                if trial_score >= score:
                    chosen, score = chosen + [cand], trial_score
        model.load_state_dict(average([c[2] for c in chosen]))
        state.info["soup_epochs"] = [c[1] for c in chosen]
        return model

    def state_dict(self):
        return {"candidates": [{"score": s, "epoch": e, "weights": w} for s, e, w in self.candidates]}

    def load_state_dict(self, state) -> None:
        self.candidates = [(c["score"], c["epoch"], c["weights"]) for c in state["candidates"]]


def average(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dicts[0].items():
        if v.is_floating_point():
            out[k] = (sum(sd[k].double() for sd in state_dicts) / len(state_dicts)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out
