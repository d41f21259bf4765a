"""HF transformers engine: the reference for parity tests, and the engine where vLLM is not installed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from actors.engine import Completion, Prompt, Sampling
from mgpo.masks import Sequence as TokenSequence
from mgpo.masks import expand_image_pads
from mgpo.models.tiny import load_policy, load_processor
from mgpo.resize import MERGE, PixelBudget


def processor_size(budget: PixelBudget) -> dict[str, dict[str, int]]:
    """The processor's resize bounds = the budget. Images arrive rendered to the budget (multiples of 28
    inside it), a fixed point of smart_resize, so the processor leaves them as they are. (Never pass
    unbounded sizes: vLLM profiles memory with a dummy image of the largest allowed size.)"""
    return {"size": {"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels}}


def model_inputs(
    processor: object, prompts: Sequence[Prompt], pad_id: int, budget: PixelBudget
) -> dict[str, torch.Tensor]:
    """Expand compact prompts, left-pad them into a batch, and add pixels and mRoPE inputs.

    Used by the HF engine and the learner alike: one path from compact ids + images to a forward's inputs.
    """
    image_processor = processor.image_processor  # type: ignore[attr-defined]
    image_pad = processor.image_token_id  # type: ignore[attr-defined]
    rows, pixel_values, grids = [], [], []
    for prompt in prompts:
        counts: list[int] = []
        if prompt.images:
            pixels = image_processor(prompt.images, **processor_size(budget), return_tensors="pt")
            pixel_values.append(pixels["pixel_values"])
            grids.append(pixels["image_grid_thw"])
            counts = [int(g.prod()) // (MERGE * MERGE) for g in pixels["image_grid_thw"]]
        ids = np.asarray(prompt.ids, dtype=np.int32)
        compact = TokenSequence(ids, np.zeros(len(ids), bool), np.zeros(len(ids), np.float32))
        rows.append(torch.from_numpy(expand_image_pads(compact, image_pad, counts).ids.astype(np.int64)))
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row) :] = row
        attention[i, width - len(row) :] = 1
    # mm_token_type_ids: without it transformers computes no 3-D (mRoPE) positions for the images
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "mm_token_type_ids": (input_ids == image_pad).long(),
    }
    if pixel_values:
        inputs["pixel_values"] = torch.cat(pixel_values)
        inputs["image_grid_thw"] = torch.cat(grids)
    return inputs


class HFEngine:
    """Batched `generate` of a transformers Qwen2.5-VL; logprobs from the raw logits."""

    def __init__(self, model_path: str, budget: PixelBudget, dtype: torch.dtype = torch.float32) -> None:
        self.budget = budget
        self.processor = load_processor(model_path)
        self.tokenizer = self.processor.tokenizer
        self.model = load_policy(model_path, dtype=dtype).eval()
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[Completion]]:
        results = []
        for i, prompt in enumerate(prompts):
            # one prompt (x n samples) per call, so a prompt's samples do not depend on its batch-mates
            seed = None if sampling.seed is None else sampling.seed + i
            results.append(self._generate_one(prompt, sampling, seed))
        return results

    def _generate_one(self, prompt: Prompt, sampling: Sampling, seed: int | None) -> list[Completion]:
        inputs = model_inputs(self.processor, [prompt], self.tokenizer.pad_token_id, self.budget)
        if seed is not None:
            torch.manual_seed(seed)
        self.model.model.rope_deltas = None  # cached from the previous call otherwise
        greedy = sampling.temperature == 0.0
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                num_return_sequences=sampling.n,
                eos_token_id=list(sampling.stop_ids) or None,
                stop_strings=list(sampling.stop) or None,
                suppress_tokens=list(sampling.banned_ids) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.pad_token_id,
                output_logits=True,
                return_dict_in_generate=True,
            )
        start = inputs["input_ids"].shape[1]
        logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # [n, steps, V]
        completions = []
        for row in range(sampling.n):
            ids = out.sequences[row, start:].tolist()
            token_logprobs = logprobs[row, torch.arange(len(ids)), out.sequences[row, start:]].tolist()
            completions.append(self._trim(ids, token_logprobs, sampling))
        return completions

    def _trim(self, ids: list[int], logprobs: list[float], sampling: Sampling) -> Completion:
        """Cut at the first stop token or the token that completes a stop string (both kept)."""
        for end in range(1, len(ids) + 1):
            if ids[end - 1] in sampling.stop_ids:
                return Completion(ids[:end], logprobs[:end], "stop")
            if sampling.stop and any(s in self.tokenizer.decode(ids[:end]) for s in sampling.stop):
                return Completion(ids[:end], logprobs[:end], "stop")
        return Completion(ids, logprobs, "length")

    def load_weights(self, path: str, version: int) -> None:
        state = load_file(path)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
            raise ValueError(
                f"weights at {path} do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self._version = version

    def reset_caches(self) -> None:
        self.model.model.rope_deltas = None

    def close(self) -> None:
        pass
