from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import task_loss
from . import Trick, register_trick


class Augmenter(nn.Module):
    """A small VAE-MLP: fused vector -> (mu, logvar) of a z_dim Gaussian -> sample z -> decoder ->
    a change of the vector. The decoder's last layer starts at zero, so augmented == x at first."""

    def __init__(self, dim: int, hidden: int, z_dim: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, z_dim)
        self.logvar = nn.Linear(hidden, z_dim)
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(augmented = x + decoder(z), mu, logvar)."""
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return x + self.decoder(z), mu, logvar


@register_trick
class LeMDA(Trick):
    """LeMDA: a learned augmenter of the fused vector, trained adversarially; training only.
    (Liu et al. 2022, "Learning Multimodal Data Augmentation in Feature Space".) A small VAE-MLP
    augmenter, trained alongside the model, turns each row's detached fused vector x into an
    augmented one, aug = x + dec(z); the task network also learns to predict the row's label from
    aug. Evaluation and prediction never run the augmenter.

    Task side (``on_loss``): the loss gets w * L(head(aug), y) added (w: the fused loss weight),
    with aug detached, so these gradients reach only the fusion's head. The reference trains on the
    concatenation [x, aug] with the labels repeated, i.e. the mean of the two halves' losses; here
    the augmented half is added to the fused term (their sum, twice that mean), so the trick
    composes with others that change the fused term (manifold_mixup) without knowing them. Under
    Adam the factor 2 only halves the other terms' weight relative to the fused one.

    Augmenter side: its own loss
        - adv_weight * L(head(aug), y)              adversarial: the gradient reversal of the
                                                     augmented-sample loss (make it harder)
        + mse_weight * MSE(aug, x)                   stay near the row
        + kl_weight * KL(N(mu, sigma) || N(0, 1))    the VAE prior
        + consist_weight * consistency               keep the prediction: KL(p(x) || p(aug)) per
                                                     row, only rows where max p(aug) > threshold
                                                     (regression: MSE of the two predictions)
    is differentiated with respect to the augmenter's parameters only (torch.autograd.grad), so no
    part of it reaches the model's gradients; its own Adam (lr 1e-4, constant) steps in
    ``before_step``. Under DDP the augmenter is outside the wrapped model: ``before_step`` averages
    its gradients over the workers every step, so every worker's augmenter stays identical.

    The augmenter is the trick's, not the model's: built in ``configure_model`` for the fusion's
    ``fused_dim``, saved with its optimizer state in ``state_dict`` (a resumed trial continues
    it), never exported (the bundle holds the model's weights only). The Fusion contract (logits =
    head(fused)) is what lets any fusion be augmented: ``head`` is called on changed vectors.
    """
    name = "lemda"

    @dataclass(frozen=True)
    class Config:  # weights, threshold and lr: the reference's (tricks.md; AutoGluon's lemda defaults)
        hidden: int = 128  # one hidden layer each way (AutoGluon tapers over 6 layers to z_dim)
        z_dim: int = 8
        adv_weight: float = 1e-4
        mse_weight: float = 0.1
        kl_weight: float = 0.1
        consist_weight: float = 0.01
        consist_threshold: float = 0.5
        lr: float = 1e-4

    space = {"adv_weight": {"loguniform": [3e-5, 3e-4]}}

    def configure_model(self, model, state):
        # the head that ran this step's forward, wherever it lives: inside a DDP wrapper, or in a
        # copy of the model that a later trick's configure_model returns (a copy keeps the hook)
        def remember(head, args, output):
            self.head = head

        model.fusion.head.register_forward_hook(remember)
        self.augmenter = Augmenter(model.fusion.fused_dim, self.config.hidden, self.config.z_dim).to(state.device)
        self.optimizer = torch.optim.Adam(self.augmenter.parameters(), lr=self.config.lr)
        return model

    def on_loss(self, loss, out, batch, state):
        c, y, problem = self.config, batch["label"], state.problem_type
        x = out.fused.detach()
        aug, mu, logvar = self.augmenter(x)
        augmented_loss = task_loss(self.head(aug.detach()), y, problem)  # the task side: head only

        aug_logits = self.head(aug)
        with torch.no_grad():
            x_logits = self.head(x)
        own = (-c.adv_weight * task_loss(aug_logits, y, problem)
               + c.mse_weight * F.mse_loss(aug.float(), x.float())
               + c.kl_weight * _kl_to_standard_normal(mu.float(), logvar.float())
               + c.consist_weight * _consistency(x_logits.float(), aug_logits.float(), problem, c.consist_threshold))
        params = list(self.augmenter.parameters())
        for p, g in zip(params, torch.autograd.grad(own, params)):
            p.grad = g
        state.log("lemda_augmented_loss", augmented_loss.item())
        state.log("lemda_augmenter_loss", own.item())
        return loss + state.fused_loss_weight * augmented_loss

    def before_step(self, model, state) -> None:
        if state.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            for p in self.augmenter.parameters():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                torch.distributed.all_reduce(p.grad)
                p.grad /= state.world_size
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self):
        return {"augmenter": {k: v.detach().cpu() for k, v in self.augmenter.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state) -> None:
        self.augmenter.load_state_dict(state["augmenter"])
        self.optimizer.load_state_dict(state["optimizer"])


def _kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), averaged over rows and latent dimensions."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def _consistency(x_logits: torch.Tensor, aug_logits: torch.Tensor, problem_type: str, threshold: float) -> torch.Tensor:
    """How much augmenting changed the prediction. Classification (binary too: two logits):
    KL(p(x) || p(aug)) per row, counted only where the augmented prediction is confident (max
    probability > threshold), averaged over all rows. Regression: MSE of the two predictions."""
    if problem_type == "regression":
        return F.mse_loss(aug_logits, x_logits)
    log_p, log_q = F.log_softmax(x_logits, -1), F.log_softmax(aug_logits, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    confident = log_q.exp().max(-1).values > threshold
    return (kl * confident).mean()
