"""Build segmentation networks by name from segmentation-models-pytorch."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import segmentation_models_pytorch as smp
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from torch import nn

WEIGHTS_DOC = "docs/weights.md"


def available_architectures() -> tuple[str, ...]:
    """Names accepted for ``arch`` (segmentation-models-pytorch class names)."""
    return tuple(sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()))


def build_smp_net(
    arch: str,
    encoder_name: str,
    num_classes: int,
    encoder_weights: str | None = None,
    in_channels: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """Create an encoder-decoder network from segmentation-models-pytorch.

    Args:
        arch: Architecture class name, e.g. ``"DeepLabV3Plus"``, ``"Unet"``, ``"FPN"``.
        encoder_name: Encoder name, e.g. ``"resnet18"``, ``"mobilenet_v2"``.
        num_classes: Number of output channels (classes, background included).
        encoder_weights: Pretrained weights name, or ``None`` for random initialisation.
            segmend never downloads: the weights must already be in the local cache smp / timm
            load them from (see :func:`cached_encoder_weights` and ``docs/weights.md``).
        in_channels: Number of image channels.
        **kwargs: Further arguments of the architecture (e.g. ``decoder_channels``).

    Returns:
        The network; ``forward`` maps (B, in_channels, H, W) to (B, num_classes, H, W) logits.

    Raises:
        ValueError: If the architecture or encoder name is unknown, or ``encoder_weights`` is
            not a known weight name or not in the local cache.

    """
    arch_cls = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}.get(arch)
    if arch_cls is None:
        raise ValueError(
            f"Unknown segmentation-models-pytorch architecture arch={arch!r}; "
            f"expected one of {', '.join(available_architectures())}."
        )
    if not encoder_name.startswith("tu-") and encoder_name not in smp.encoders.get_encoder_names():
        raise ValueError(
            f"Unknown encoder_name={encoder_name!r}; see "
            "segmentation_models_pytorch.encoders.get_encoder_names() for the accepted names "
            "(for example 'resnet18', 'resnet50', 'mobilenet_v2'), or 'tu-<timm model name>'."
        )
    if encoder_weights is not None:
        weights_file = cached_encoder_weights(encoder_name, encoder_weights)
        if encoder_name.startswith("tu-"):  # make timm read the cached file instead of asking the hub
            overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
            overlay.setdefault("file", str(weights_file))
            kwargs["pretrained_cfg_overlay"] = overlay
    return arch_cls(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        in_channels=in_channels,
        classes=num_classes,
        **kwargs,
    )


def input_size_divisor(net: nn.Module) -> int | None:
    """The number the height and width of ``net``'s input must be a multiple of, or ``None`` if unknown.

    Read from every segmentation-models-pytorch model inside ``net`` (``net`` itself or wrapped, as in
    :class:`~segmend.nets.box_attention.BoxAttentionNet`) the way smp's own
    ``SegmentationModel.check_input_shape`` does: ``encoder.output_stride`` (2 ** encoder depth, at most
    32, for CNN encoders; the patch size, e.g. 14 or 16, for DPT's ViT encoders) where the
    architecture sets ``requires_divisible_input_shape`` (every architecture but ``Unet``). Several
    models give the least common multiple.

    Args:
        net: Any network.

    Returns:
        The divisor, or ``None`` when ``net`` holds no smp model that needs one.

    """
    strides = [
        int(module.encoder.output_stride)
        for module in net.modules()
        if isinstance(module, smp.base.SegmentationModel)
        and getattr(module, "requires_divisible_input_shape", True)
        and hasattr(getattr(module, "encoder", None), "output_stride")
    ]
    return math.lcm(*strides) if strides else None


def _hf_cached_file(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The file of a Hugging Face repo in the local hub cache, or ``None``; never touches the network."""
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def _hf_repo_folder(repo_id: str) -> Path:
    """The folder of a Hugging Face model repo in the hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``)."""
    return Path(hf_constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def _hf_cache_path(repo_id: str, filename: str, revision: str | None) -> Path:
    """Where ``huggingface_hub`` keeps ``filename`` of ``repo_id`` at ``revision`` in the cache."""
    return _hf_repo_folder(repo_id) / "snapshots" / (revision or "<commit named in refs/main>") / filename


def _weights_error(encoder_name: str, encoder_weights: str, looked_at: list[Path], how: str) -> ValueError:
    places = "\n".join(f"  {path}" for path in looked_at)
    return ValueError(
        f"encoder_weights={encoder_weights!r} for encoder_name={encoder_name!r}: the pretrained weights are "
        "not in the local cache, and segmend never downloads (no network is used). Looked for:\n"
        f"{places}\n"
        f"To use them: {how} Or set HF_HUB_CACHE (or HF_HOME, TORCH_HOME) to a cache folder that holds "
        "them, or set encoder_weights: null to start from random weights. See "
        f"{WEIGHTS_DOC}."
    )


def cached_encoder_weights(encoder_name: str, encoder_weights: str | bool) -> Path:
    """The local file the pretrained weights of an encoder would be loaded from; never downloads.

    segmentation-models-pytorch 0.6 loads its own encoders' weights with
    ``huggingface_hub.hf_hub_download`` from the repo ``smp-hub/<encoder>.<weights>`` at a pinned
    commit (``model.safetensors`` and ``config.json``), so a cached pair is read without any network
    access. ``tu-`` (timm) encoders load from the Hugging Face repo of the model's pretrained config
    (``model.safetensors`` or ``pytorch_model.bin``) or, failing that, from its URL through torch
    hub (``torch.hub.get_dir()/checkpoints/<file>``); :func:`build_smp_net` hands timm the file found
    here, so timm never asks the hub either.

    Args:
        encoder_name: smp encoder name, or ``tu-<timm model name>[.<pretrained tag>]``.
        encoder_weights: Weight name of an smp encoder (e.g. ``"imagenet"``); for ``tu-``
            encoders any value asks for the model's pretrained weights.

    Returns:
        The cached weight file.

    Raises:
        ValueError: If the weight name is unknown for the encoder, or the file is not cached; the
            message gives the paths looked at and how to put the weights there.

    """
    if encoder_name.startswith("tu-"):
        return _cached_timm_weights(encoder_name, str(encoder_weights))
    if encoder_name not in smp.encoders.encoders:
        raise ValueError(f"Unknown encoder_name={encoder_name!r}; see build_smp_net for the accepted names.")
    settings = smp.encoders.encoders[encoder_name]["pretrained_settings"]
    if encoder_weights not in settings:
        raise ValueError(
            f"encoder_weights={encoder_weights!r} is not a weight name of encoder_name={encoder_name!r}; "
            f"expected one of {sorted(settings)} or null (random weights)."
        )
    repo_id, revision = settings[encoder_weights]["repo_id"], settings[encoder_weights]["revision"]
    files = ("model.safetensors", "config.json")  # smp downloads both
    cached = [_hf_cached_file(repo_id, name, revision) for name in files]
    if all(cached):
        return cached[0]  # type: ignore[return-value]
    raise _weights_error(
        encoder_name,
        str(encoder_weights),
        [_hf_cache_path(repo_id, name, revision) for name in files],
        f"on a machine with internet, run `hf download {repo_id} --revision {revision}` (or "
        "`huggingface-cli download ...`), then copy its cache folder "
        f"{_hf_repo_folder(repo_id)} to the same place here.",
    )


def _cached_timm_weights(encoder_name: str, encoder_weights: str) -> Path:
    """The cached pretrained weights of a ``tu-`` encoder (see :func:`cached_encoder_weights`)."""
    import timm  # smp depends on timm

    model_name = encoder_name[3:]
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise ValueError(
            f"encoder_weights={encoder_weights!r}: timm knows no pretrained weights for {model_name!r} "
            f"(encoder_name={encoder_name!r}); use a name with a pretrained tag, e.g. 'tu-resnet18.a1_in1k', "
            "or set encoder_weights: null."
        )
    looked_at: list[Path] = []
    if cfg.file:
        looked_at.append(Path(cfg.file))
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        for name in (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin"):
            looked_at.append(
                _hf_cached_file(repo_id, name, revision or None) or _hf_cache_path(repo_id, name, revision)
            )
    if cfg.url:
        looked_at.append(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path))
    for path in looked_at:
        if path.is_file():
            return path
    if cfg.hf_hub_id:
        repo_id = cfg.hf_hub_id.partition("@")[0]
        how = (
            f"on a machine with internet, run `hf download {cfg.hf_hub_id.replace('@', ' --revision ')}` (or "
            f"`huggingface-cli download ...`) and copy its cache folder {_hf_repo_folder(repo_id)} to the same "
            "place here" + (f", or put the file of {cfg.url} at {looked_at[-1]}." if cfg.url else ".")
        )
    elif cfg.url:
        how = f"download {cfg.url} and put it at {looked_at[-1]}."
    else:
        how = f"put the weight file at {looked_at[0]}." if looked_at else "give the weights of a checkpoint instead."
    raise _weights_error(encoder_name, encoder_weights, looked_at, how)
