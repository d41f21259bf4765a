"""Qwen2.5-VL in vLLM without torchvision (our CPU machines have no CPU build of it).

Registered as a vLLM general plugin (pyproject entry point `vllm.general_plugins`), so vLLM runs `install()`
in every process it starts. Where torchvision is importable (GPU images) it does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import TypedDict

_TV_MODULE = "transformers.models.qwen2_vl.image_processing_qwen2_vl"


def torchvision_available() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def install() -> None:
    """Apply the shims; idempotent (vLLM may load plugins several times per process)."""
    if torchvision_available():
        return
    _alias_image_processing_module()
    _processor_without_video()


def _alias_image_processing_module() -> None:
    # vLLM's qwen2_vl imports smart_resize from the torchvision-backed module; the PIL module has the
    # identical function and processor.
    if _TV_MODULE in sys.modules and getattr(sys.modules[_TV_MODULE], "_mgpo_alias", False):
        return
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil

    alias = types.ModuleType(_TV_MODULE)
    alias.__dict__.update({k: v for k, v in vars(pil).items() if not k.startswith("__")})
    alias.Qwen2VLImageProcessor = pil.Qwen2VLImageProcessorPil
    alias._mgpo_alias = True
    sys.modules[_TV_MODULE] = alias


class _NoVideoKwargs(TypedDict, total=False):
    """No video kwargs: the processor is fed images only."""


class _NoVideoProcessor:
    valid_kwargs = _NoVideoKwargs


def _processor_without_video() -> None:
    # vLLM calls Qwen2_5_VLProcessor.from_pretrained(dir), which insists on a video processor.
    from transformers import Qwen2_5_VLProcessor
    from transformers.processing_utils import ProcessorMixin

    from mgpo.models.tiny import QwenVLProcessor

    if getattr(Qwen2_5_VLProcessor.from_pretrained, "_mgpo_compat", False):
        return
    original = ProcessorMixin.from_pretrained.__func__  # type: ignore[attr-defined]

    def from_pretrained(cls: type, *args: object, **kwargs: object) -> Qwen2_5_VLProcessor:
        return original(QwenVLProcessor if cls is Qwen2_5_VLProcessor else cls, *args, **kwargs)

    # vLLM reads processor.video_processor.valid_kwargs to list video kwargs; we never feed video.
    QwenVLProcessor.video_processor = _NoVideoProcessor()  # type: ignore[attr-defined]
    from_pretrained._mgpo_compat = True  # type: ignore[attr-defined]
    Qwen2_5_VLProcessor.from_pretrained = classmethod(from_pretrained)  # type: ignore[method-assign]
