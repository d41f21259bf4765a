"""`mgpo sft`: the supervised cold start that gives the tiny model a base model's prior skills.

Grounding and recognition examples (mgpo.cold_start) from the synthetic training split, full fine-tuning
with AdamW or LoRA adapters (`lora:`), minibatches of mixed skills, greedy evaluation of both skills on a
held-out split, checkpoints (model or adapter + optimizer + step) to resume from, `metrics.jsonl`, and the
final model as an HF folder (with LoRA: the adapter in `adapter/`, merged into `model/`).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import PeftModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tqdm import tqdm
from transformers.optimization import get_wsd_schedule

from learner.lora import add_lora, load_adapter
from mgpo.boxes import BoxRule, iou, parse_box
from mgpo.cold_start import Example, format_example, panel_view, skill_examples, zoom_skill_examples
from mgpo.crop import render_view
from mgpo.data.cot import pairs as cot_pairs
from mgpo.data.cot import read_replies
from mgpo.data.dataset import META_FILE, open_store, read_prompts
from mgpo.data.distill import PATHS_FILE, conversation, read_paths
from mgpo.data.synth import synth_choice_sample, synth_looks_sample
from mgpo.images import ImageStore
from mgpo.masks import Sequence as TokenSequence
from mgpo.masks import decision_weights
from mgpo.models.inputs import build_batch, compact
from mgpo.models.tiny import load_policy, load_processor
from mgpo.resize import PixelBudget
from mgpo.rewards import choice_reward, last_boxed, parse_answer
from mgpo.templates import IM_END, IMAGE_PLACEHOLDER, MGPO, multiturn, opening_prompt
from mgpo.turns import crop_source
from runtime.config import SFTConfig


def build_examples(
    config: SFTConfig, seed: int, n: int, desc: str, with_format: bool = False
) -> list[Example]:
    """Both skills on every tag of `n` synthetic samples of the split `seed`; `with_format` (and a
    `format_share`): one turn-1 format example per sample too."""
    knobs = config.data.knobs()
    budget = PixelBudget(config.min_pixels, config.max_pixels)
    rng = random.Random(seed)
    out: list[Example] = []
    for index in tqdm(range(n), desc=desc, unit="image"):
        if config.data.task == "looks":
            sample = synth_looks_sample(seed, index, knobs)
            out += zoom_skill_examples(
                sample,
                budget,
                config.box_cells,
                rng,
                config.product_wording,
                config.grounding_frames,
                config.whole_view_read_frames,
            )
        else:
            sample = synth_choice_sample(seed, index, knobs)
            out += skill_examples(
                sample,
                budget,
                config.box_cells,
                tuple(config.close_up_scale),
                rng,
                config.grounding_frames,
                config.product_wording,
            )
        if with_format and config.format_share > 0:
            on_target = config.format_box_on == "target"
            views = [sample]
            if config.format_in_panel:  # the looks set's alone (SFTConfig refuses it elsewhere)
                views += [v for v in (panel_view(sample),) if v is not None]
            out += [
                format_example(v, budget, config.box_cells, rng, config.format_box_share, on_target)
                for v in views
            ]
    return out


def cot_examples(config: SFTConfig, budget: PixelBudget) -> tuple[list[Example], list[Example]]:
    """(train, held out) from an SFT folder: each record's opening prompt, its images and its taught reply
    (`mgpo data cot`), or its whole multi-turn exchange (`mgpo data distill`)."""
    folder = str(config.data.path)
    meta = json.loads((Path(folder) / META_FILE).read_text()) if (Path(folder) / META_FILE).exists() else {}
    if (meta.get("min_pixels"), meta.get("max_pixels")) not in (
        (None, None),
        (budget.min_pixels, budget.max_pixels),
    ):
        raise ValueError(
            f"{folder} was written for pixels {meta['min_pixels']}..{meta['max_pixels']} (its boxes are in "
            f"those inputs' pixels), the config trains at {budget.min_pixels}..{budget.max_pixels}"
        )
    store = open_store(folder)
    if (Path(folder) / PATHS_FILE).exists():
        examples = look_examples(folder, store, budget, int(meta.get("max_crops", 2)))
    else:
        examples = [
            Example(
                "mig",
                opening_prompt(record, MGPO),
                tuple(render_view(store.get(h), None, budget) for h in record.images),
                reply + IM_END,
                reply,
            )
            for record, reply in cot_pairs(read_prompts(folder), read_replies(folder))
        ]
    if len(examples) <= config.data.eval_n:
        raise ValueError(
            f"{folder}: {len(examples)} examples, not more than data.eval_n ({config.data.eval_n})"
        )
    return examples[: -config.data.eval_n], examples[-config.data.eval_n :]


def look_examples(folder: str, store: ImageStore, budget: PixelBudget, max_crops: int) -> list[Example]:
    """A distilled folder's multi-turn exchanges (mgpo.data.distill), in the template RL rolls out with
    `rollout.mode: multiturn` and this `max_crops`: the original, then each crop as the loop renders it."""
    template = multiturn(max_crops)
    paths = read_paths(folder)
    out = []
    for record in read_prompts(folder):
        if record.id not in paths:
            continue
        path = paths[record.id]
        original = store.get(record.images[0])
        images = (
            render_view(original, None, budget),
            *(render_view(original, r, budget) for r in path.regions),
        )
        pieces = conversation(record, template, path)
        out.append(Example("look", pieces[0][0], images, path.turns[0], path.turns[0], tuple(pieces[1:])))
    return out


def mixed_batch(
    by_skill: Sequence[Sequence[Example]], shares: Sequence[float], size: int, rng: random.Random
) -> list[Example]:
    """`size` examples, a fixed share from each skill's list (largest remainders round): the skills come in
    unequal numbers and are learned at different rates, and neither may starve."""
    pools = [(pool, share) for pool, share in zip(by_skill, shares, strict=True) if pool]
    total = sum(share for _, share in pools)
    exact = [size * share / total for _, share in pools]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(pools)), key=lambda i: counts[i] - exact[i])[: size - sum(counts)]:
        counts[i] += 1
    return [e for (pool, _), k in zip(pools, counts, strict=True) for e in rng.choices(pool, k=k)]


def _encode(tokenizer: object, example: Example) -> TokenSequence:
    """Each piece tokenised on its own, as the rollout loop does (prompt, sampled and injected ids)."""
    pieces = ((example.prompt, False), *(example.pieces or ((example.reply, True),)))
    ids: list[int] = []
    trained: list[bool] = []
    for text, train in pieces:
        part = tokenizer(text, add_special_tokens=False).input_ids  # type: ignore[operator]
        ids += part
        trained += [train] * len(part)
    return TokenSequence(np.asarray(ids, np.int32), np.asarray(trained, bool), np.zeros(len(ids), np.float32))


def train_step(
    model: torch.nn.Module,
    processor: object,
    batch: Sequence[Example],
    budget: PixelBudget,
    decision_weight: float = 1.0,
) -> float:
    """Mean cross-entropy over the replies of one minibatch (backward done, no optimizer step), each model
    turn's first token counted `decision_weight` times (mgpo.masks.turn_starts)."""
    sequences = [_encode(processor.tokenizer, e) for e in batch]  # type: ignore[attr-defined]
    built = build_batch(processor, sequences, [list(e.images) for e in batch], budget, left_pad=False)
    labels = built.inputs["input_ids"].masked_fill(~built.loss_mask, -100)
    reset_rope(model)
    if decision_weight == 1.0:
        loss = model(**built.inputs, labels=labels).loss
    else:
        logits = model(**built.inputs).logits[:, :-1]
        trained = built.loss_mask[:, 1:]  # position t-1 predicts the token at t
        weights = decision_weights(built.loss_mask, decision_weight)[:, 1:][trained]
        tokens = F.cross_entropy(
            logits[trained].float(), built.inputs["input_ids"][:, 1:][trained], reduction="none"
        )
        loss = (tokens * weights).sum() / trained.sum()
    loss.backward()
    return float(loss.item())


def reset_rope(model: torch.nn.Module) -> None:
    """Forget Qwen2.5-VL's cached rotary offsets: each batch has its own images (through a peft wrapper too)."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    inner.model.rope_deltas = None  # type: ignore[union-attr]


def greedy_replies(
    model: torch.nn.Module,
    processor: object,
    examples: Sequence[Example],
    budget: PixelBudget,
    batch: int = 8,
) -> list[str]:
    tokenizer = processor.tokenizer  # type: ignore[attr-defined]
    # room for the longest taught reply (a reasoning text is far longer than a box or a letter)
    longest = max(len(tokenizer(e.reply, add_special_tokens=False).input_ids) for e in examples)
    replies = []
    model.eval()
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        sequences = [compact(tokenizer(e.prompt, add_special_tokens=False).input_ids) for e in chunk]
        # a multi-turn example's later images belong to turns the model has not reached
        shown = [list(e.images[: e.prompt.count(IMAGE_PLACEHOLDER)]) for e in chunk]
        inputs = build_batch(processor, sequences, shown, budget, left_pad=True).inputs
        reset_rope(model)
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=longest + 16, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        start = inputs["input_ids"].shape[1]
        replies += tokenizer.batch_decode(out[:, start:], skip_special_tokens=False)
    model.train()
    return replies


def score(example: Example, reply: str) -> bool:
    """Grounding: the box parses and overlaps the taught one (IoU >= 0.5). Recognition: the right letter."""
    if example.skill == "recognition":
        return choice_reward(reply, example.target) == 1.0
    if example.skill == "look":  # the first turn: the taught crop (same image, IoU >= 0.5) or the letter
        if "bbox_2d" not in example.target:
            return "bbox_2d" not in reply and choice_reward(reply, last_boxed(example.target) or "") == 1.0
        size = example.images[0].size
        said, taught = (
            parse_box(reply, size, BoxRule.LENIENT),
            parse_box(example.target, size, BoxRule.LENIENT),
        )
        same = crop_source(reply, 1) == crop_source(example.target, 1)
        return same and said.valid and taught.valid and iou(said.box, taught.box) >= 0.5
    if example.skill == "mig":  # the right image, and a box over half the taught one (IoU >= 0.5)
        said, taught = parse_answer(reply), parse_answer(example.target)
        return (
            said is not None
            and taught is not None
            and said[0] == taught[0]
            and iou(said[1], taught[1]) >= 0.5
        )
    size = example.images[0].size
    predicted = parse_box(reply, size)
    taught = parse_box(example.target, size)
    return predicted.valid and iou(predicted.box, taught.box) >= 0.5


def evaluate(
    model: torch.nn.Module, processor: object, examples: Sequence[Example], budget: PixelBudget
) -> dict:
    replies = greedy_replies(model, processor, examples, budget)
    result = {}
    for skill in sorted({e.skill for e in examples}):
        pairs = [(e, r) for e, r in zip(examples, replies, strict=True) if e.skill == skill]
        result[f"{skill}_accuracy"] = sum(score(e, r) for e, r in pairs) / max(1, len(pairs))
    return result


def _start_model(config: SFTConfig, budget: PixelBudget, console: Console) -> Path:
    if config.model.path != "tiny":
        return Path(config.model.path)
    folder = config.run_dir / "model-init"
    if not (folder / "config.json").exists():
        from mgpo.models.tiny import build_tiny

        build_tiny(
            folder,
            tokenizer=config.model.tiny_tokenizer,
            size=config.model.tiny_size,
            seed=config.seed,
            budget=budget,
        )
        console.print(f"built the tiny Qwen2.5-VL ({config.model.tiny_size}) in {folder}")
    return folder


def _latest(folder: Path) -> Path | None:
    steps = sorted(folder.glob("step-*"))
    return steps[-1] if steps else None


def run_sft(config: SFTConfig, resume: bool = False, console: Console | None = None) -> dict[str, object]:
    console = console or Console()
    out = config.run_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(config.model_dump_json(indent=1))
    budget = PixelBudget(config.min_pixels, config.max_pixels)
    torch.manual_seed(config.seed)
    start_path = _start_model(config, budget, console)
    checkpoint = _latest(out / "checkpoints") if resume else None
    model = _policy(config, start_path, checkpoint)
    processor = load_processor(str(start_path))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule, step = _optimizer(config, trained, checkpoint)
    if checkpoint is not None:
        console.print(f"resuming from {checkpoint} (step {step})")
    by_skill, shares, held_out = _examples(config, budget)
    rng = random.Random(config.seed * 1000 + step)
    log = (out / "metrics.jsonl").open("a")
    model.train()
    columns = (
        TextColumn("[bold]sft"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[loss]}"),
    )
    started = time.perf_counter()
    last_eval: dict = {}
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("sft", total=config.steps, completed=step, loss="")
        while step < config.steps:
            examples = mixed_batch(by_skill, shares, config.batch, rng)
            loss = train_step(model, processor, examples, budget, config.decision_weight)
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
            step += 1
            progress.update(task, completed=step, loss=f"loss {loss:.3f}")
            lr = schedule.get_last_lr()[0]
            log.write(json.dumps({"step": step, "kind": "train", "loss": loss, "lr": lr}) + "\n")
            if step % config.eval_every == 0 or step == config.steps:
                last_eval = evaluate(model, processor, held_out, budget)
                log.write(json.dumps({"step": step, "kind": "eval", **last_eval}) + "\n")
                scores = "  ".join(f"{k.removesuffix('_accuracy')} {v:.2f}" for k, v in last_eval.items())
                console.print(f"step {step}: {scores}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                _checkpoint(
                    model,
                    optimizer,
                    schedule,
                    out / "checkpoints" / f"step-{step:06d}",
                    step,
                    config.keep_checkpoints,
                )
            log.flush()
    final = _save_final(model, processor, out)
    summary = {
        "model": str(final),
        "steps": step,
        "seconds": round(time.perf_counter() - started, 1),
        **last_eval,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _optimizer(
    config: SFTConfig, trained: list[torch.nn.Parameter], checkpoint: Path | None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, int]:
    """AdamW over the trained parameters, its lr schedule and the step to start at (a checkpoint's)."""
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=0.0)
    # Warm-up, stable, decay: a constant lr of 1e-3 leaves the tiny model's skills swinging from one eval to
    # the next (grounding 0.12 -> 0.81 -> 0.75 250 steps apart, measured), and decaying it over the whole run
    # starves the long stable stretch in which it leaves its first plateau (chance at both skills).
    schedule = get_wsd_schedule(
        optimizer,
        config.lr_warmup_steps,
        config.lr_decay_steps,
        num_stable_steps=config.steps - config.lr_warmup_steps - config.lr_decay_steps,
        min_lr_ratio=config.lr_min_ratio,
    )
    if checkpoint is None:
        return optimizer, schedule, 0
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    if not (checkpoint / "schedule.pt").exists():
        raise FileNotFoundError(
            f"{checkpoint} has no schedule.pt (written before `mgpo sft` had an lr schedule): "
            "run without --resume to start the cold start anew"
        )
    schedule.load_state_dict(torch.load(checkpoint / "schedule.pt", weights_only=True))
    return optimizer, schedule, json.loads((checkpoint / "state.json").read_text())["step"]


def _examples(
    config: SFTConfig, budget: PixelBudget
) -> tuple[list[list[Example]], tuple[float, ...], list[Example]]:
    """Training examples by skill, each skill's share of a batch, and the held-out examples."""
    if config.data.path is not None:
        train, held_out = cot_examples(config, budget)
        if config.direct_share is None:
            return [train], (1.0,), held_out
        share = config.direct_share
        return _by_looks(train, str(config.data.path)), (share, 1.0 - share), held_out
    if config.direct_share is not None:
        raise ValueError("direct_share: needs data.path, a distilled folder (mgpo data distill)")
    train = build_examples(
        config, config.data.train_seed, config.data.train_n, "train examples", with_format=True
    )
    # the format examples are not evaluated: their rate shows at the first RL step, at temperature 1
    held_out = build_examples(config, config.data.eval_seed, config.data.eval_n, "eval examples")
    by_skill = [[e for e in train if e.skill == skill] for skill in ("grounding", "recognition", "format")]
    # mixed_batch normalises the shares: a format share takes its part from both skills, in proportion
    return by_skill, (config.grounding_share, 1.0 - config.grounding_share, config.format_share), held_out


def _by_looks(train: list[Example], folder: str) -> list[list[Example]]:
    """A distilled folder's paths as (direct answers, crop paths): few direct paths among many crop paths
    teach a greedy policy to crop everywhere, so `direct_share` sets their part of each batch."""
    if any(e.skill != "look" for e in train):
        raise ValueError(f"direct_share: {folder} is not a distilled folder (mgpo data distill)")
    direct = [e for e in train if len(e.pieces or ()) == 1]  # the answer alone, no crop request before it
    crops = [e for e in train if len(e.pieces or ()) > 1]
    print(f"sft: {len(direct)} direct-answer and {len(crops)} crop paths", flush=True)
    return [direct, crops]


def _policy(config: SFTConfig, start: Path, checkpoint: Path | None) -> torch.nn.Module:
    """The model to train: the whole policy, or the start model with (new or resumed) LoRA adapters."""
    if config.lora is None:
        return load_policy(str(checkpoint or start))
    if checkpoint is not None:
        return load_adapter(start, checkpoint, trainable=True)
    return add_lora(load_policy(str(start)), config.lora)


def _save_final(model: torch.nn.Module, processor: object, out: Path) -> Path:
    """`out/model`, a plain HF folder; with LoRA also `out/adapter` (what `mgpo merge` takes)."""
    final = out / "model"
    if isinstance(model, PeftModel):
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(final)
    processor.save_pretrained(final)  # type: ignore[attr-defined]
    return final


def _checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    folder: Path,
    step: int,
    keep: int,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(schedule.state_dict(), folder / "schedule.pt")
    (folder / "state.json").write_text(json.dumps({"step": step}))  # written last: the step is complete
    for old in sorted(folder.parent.glob("step-*"))[:-keep]:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
