"""The one interface both rollout engines (vLLM, HF transformers) implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from PIL import Image


class Prompt(NamedTuple):
    """Compact token ids (ONE <|image_pad|> per image, as vLLM takes them) and the images, already rendered
    to the pixel budget (mgpo.crop.render_view), in order."""

    ids: list[int]
    images: list[Image.Image]


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()  # stop strings, kept in the output (the closing JSON fence is part of turn 1)
    stop_ids: tuple[int, ...] = ()  # stop tokens, kept in the output (<|im_end|> closes the turn)
    seed: int | None = None  # per batch; prompt i uses seed + i
    # never sampled: a generated <|image_pad|> would claim an image that is not there
    banned_ids: tuple[int, ...] = ()


class Completion(NamedTuple):
    ids: list[int]  # sampled token ids, the stop token or stop-string token included
    logprobs: list[float]  # behaviour logprob of each sampled token (raw model distribution)
    finish_reason: str  # "stop" (stop token or string) | "length"


class Engine(Protocol):
    """Generate for a batch of multimodal prompts; swap weights between calls."""

    @property
    def version(self) -> int:
        """Policy version of the weights in use."""
        ...

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        """`sampling.n` completions per prompt, in prompt order."""
        ...

    def load_weights(self, path: str, version: int) -> None:
        """Load a safetensors file of the full policy state (HF names) and tag it `version`."""
        ...

    def receive_weights(
        self, address: Sequence[object], rank: int, plan: list, version: int, stream: bool = False
    ) -> None:
        """Receive the learner's broadcast (runtime.broadcast.Address, our rank, wire plan) and tag it
        `version`. All buckets land before any is applied; `stream`: each is applied as it lands (one bucket
        of extra memory instead of a second copy of the weights, but a broadcast that fails midway leaves
        them part new, part old)."""
        ...

    def reset_caches(self) -> None: ...

    def close(self) -> None: ...
