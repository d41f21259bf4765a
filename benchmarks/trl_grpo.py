"""TRL's side of benchmarks/peer_trl.py: TRL's GRPOTrainer on the same model, data, prompt, reward and settings
as our run. It runs in .venv-trl (TRL's pins never touch ours) with the repository on PYTHONPATH for the pure
core (prompt text, reward, resize); it prints one JSON line: the wall clock at each step's end and the
completion tokens per step.

    .venv-trl/bin/python benchmarks/trl_grpo.py --model DIR --data DIR --out DIR [--steps 10] ...
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from datasets import Dataset
from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from mgpo.data.dataset import open_store, read_prompts
from mgpo.models.tiny import load_processor
from mgpo.resize import PixelBudget, resize_to_budget
from mgpo.rewards import choice_reward
from mgpo.templates import GRPO, format_choices


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step (the driver compares it with its own clock)."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201 (TRL's signature)
        self.ends.append(time.time())


def dataset(data: str, budget: PixelBudget) -> Dataset:
    """Our prompts in TRL's conversational form, the image already at our input size (as our actor sends it:
    TRL would otherwise resize the ~2K original again for each of its 8 copies of a prompt)."""
    store = open_store(data)
    rows = []
    for record in read_prompts(data):
        text = GRPO.first.format(question=record.question, choices=format_choices(record.choices))
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": GRPO.system},
                    {"role": "user", "content": text},
                ],
                "image": resize_to_budget(store.get(record.images[0]), budget),
                "answer": record.answer,
                "choices": list(record.choices),
            }
        )
    return Dataset.from_list(rows)


def reward(completions: list, answer: list, choices: list, **_: object) -> list[float]:
    """Our answer reward (mgpo.rewards.choice_reward), the one our GRPO mode trains on."""
    return [
        choice_reward(c[0]["content"], a, tuple(ch))
        for c, a, ch in zip(completions, answer, choices, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per reply at most")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--min-pixels", type=int, default=50176)
    parser.add_argument("--max-pixels", type=int, default=200704)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    processor = load_processor(args.model)  # TRL's own loading needs torchvision for the image processor
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    config = GRPOConfig(
        output_dir=args.out,
        max_steps=args.steps,
        per_device_train_batch_size=args.prompts * args.n,
        num_generations=args.n,
        max_completion_length=args.tokens,
        temperature=1.0,
        learning_rate=args.lr,
        beta=0.0,  # no reference model, as on our side (kl_coef 0)
        num_iterations=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        remove_unused_columns=False,
        seed=args.seed,
    )
    clock = StepClock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset(args.data, PixelBudget(args.min_pixels, args.max_pixels)),
        processing_class=processor,
        callbacks=[clock],
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "completions/mean_length" in e]
    tokens = [e["completions/mean_length"] * args.prompts * args.n for e in logs]
    rewards = [e.get("reward", 0.0) for e in logs]
    print(json.dumps({"step_ends": clock.ends, "tokens": tokens, "reward": rewards}))


if __name__ == "__main__":
    main()
