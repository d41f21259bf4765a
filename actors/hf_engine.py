"""HF transformers engine: the reference for parity tests, and the engine where vLLM is not installed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from safetensors.torch import load_file

from actors.engine import Completion, Prompt, Sampling
from mgpo.models.inputs import build_batch, compact
from mgpo.models.tiny import load_policy, load_processor
from mgpo.resize import PixelBudget


class HFEngine:
    """transformers `generate` of a Qwen2.5-VL, one prompt (x n samples) per call; logprobs from raw logits."""

    def __init__(self, model_path: str, budget: PixelBudget, dtype: torch.dtype = torch.float32) -> None:
        self.budget = budget
        self.processor = load_processor(model_path)
        self.tokenizer = self.processor.tokenizer
        self.model = load_policy(model_path, dtype=dtype).eval()
        self._version = 0
        self._group: tuple[object, object] | None = None  # (address, process group) of the broadcast

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
        inputs = build_batch(
            self.processor, [compact(prompt.ids)], [prompt.images], self.budget, left_pad=True
        ).inputs
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
        # prefix decoding is quadratic: only pay for it when a stop string occurs at all
        check_strings = bool(sampling.stop) and any(x in self.tokenizer.decode(ids) for x in sampling.stop)
        for end in range(1, len(ids) + 1):
            if ids[end - 1] in sampling.stop_ids:
                return Completion(ids[:end], logprobs[:end], "stop")
            if check_strings and any(x in self.tokenizer.decode(ids[:end]) for x in sampling.stop):
                return Completion(ids[:end], logprobs[:end], "stop")
        return Completion(ids, logprobs, "length")

    def load_weights(self, path: str, version: int) -> None:
        self._apply(load_file(path), path)
        self._version = version

    def _apply(self, state: dict[str, torch.Tensor], source: str) -> None:
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:
            raise ValueError(
                f"weights from {source} do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )

    def receive_weights(
        self, address: Sequence[object], rank: int, plan: list, version: int, stream: bool = False
    ) -> None:
        from runtime.broadcast import Address, join, plan_from_wire, receive, receive_all

        address = Address(*address)
        if self._group is None or self._group[0] != address:  # a restarted learner counts generations anew
            self._group = (address, join(address, rank))
        try:
            if stream:  # each tensor into place as its bucket lands
                params = self.model.state_dict()
                with torch.no_grad():
                    for name, tensor in receive(plan_from_wire(plan), self._group[1]):
                        params[name].copy_(tensor)
            else:
                state = receive_all(plan_from_wire(plan), self._group[1])
        except Exception:
            self._group = None
            raise
        if not stream:
            self._apply(state, f"broadcast generation {address.generation}")
        self._version = version

    def reset_caches(self) -> None:
        self.model.model.rope_deltas = None

    def close(self) -> None:
        pass
