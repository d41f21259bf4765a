"""Learner checkpoints: DeepSpeed state for exact resume, the policy weights actors load, the learner's
counters, and an HF-format export of the policy.

Layout of `<run_dir>/checkpoints/`:
    step-000012/deepspeed/...        DeepSpeed engine state (module, optimizer, its own metadata)
    step-000012/policy.safetensors   HF-named weights: what a resumed or joining actor loads
    step-000012/learner.json         version, counters, and the ids of the groups this checkpoint used
    latest                           the tag of the newest complete checkpoint (written last, atomically)
A checkpoint without a `latest` pointing at it was interrupted and is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

LATEST = "latest"


def tag_for(version: int) -> str:
    return f"step-{version:06d}"


def save_checkpoint(
    engine: object,
    root: str | os.PathLike[str],
    version: int,
    meta: dict,
    policy: dict[str, torch.Tensor],
    keep: int = 2,
    rank: int = 0,
) -> Path:
    """Write a complete checkpoint, then point `latest` at it, then prune all but the newest `keep`.

    Collective over a learner's ranks (each writes its optimizer shard to the same folder: on a cluster the
    run folder is shared storage); rank 0 makes the folder and writes the rest.
    """
    root = Path(root)
    tag = tag_for(version)
    folder = root / tag
    if rank == 0:
        if folder.exists():  # a rerun of the same version (e.g. Ctrl-C right after a periodic checkpoint)
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    _barrier()  # the folder exists before any rank writes into it
    engine.save_checkpoint(str(folder / "deepspeed"), tag="state", save_latest=False)  # type: ignore[attr-defined]
    _barrier()  # every shard is written before `latest` points at them
    if rank != 0:
        return folder
    save_file(policy, str(folder / "policy.safetensors"))
    (folder / "learner.json").write_text(json.dumps({**meta, "version": version}, indent=1))
    tmp = root / f".{LATEST}.tmp"
    tmp.write_text(tag)
    os.replace(tmp, root / LATEST)
    for old in sorted(p for p in root.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _barrier() -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    pointer = Path(root) / LATEST
    if not pointer.exists():
        return None
    folder = Path(root) / pointer.read_text().strip()
    return folder if (folder / "learner.json").exists() else None


def check_layout(saved: dict | None, now: dict, folder: str | os.PathLike[str]) -> None:
    """Refuse to resume a checkpoint written by a learner of another shape: DeepSpeed's ZeRO states are one
    file per rank, laid out for that stage (and a LoRA policy's modules are named differently)."""
    if saved is None or saved == now:  # None: written before the layout was recorded
        return
    shown = lambda layout: ", ".join(f"{k} {v}" for k, v in sorted(layout.items()))  # noqa: E731
    raise ValueError(
        f"checkpoint {folder} was written by a learner of {shown(saved)}; this run's is {shown(now)}: resume "
        "with the same learner.world_size, learner.zero_stage and learner.lora (or start a fresh run from "
        "its policy.safetensors as model weights)"
    )


def load_checkpoint(engine: object, folder: str | os.PathLike[str], layout: dict | None = None) -> dict:
    """Restore module + optimizer state into `engine`; returns learner.json. `layout`: this learner's
    (world_size, zero_stage, lora), checked against the checkpoint's before anything loads."""
    folder = Path(folder)
    if layout is not None:
        check_layout(json.loads((folder / "learner.json").read_text()).get("layout"), layout, folder)
    path, _ = engine.load_checkpoint(  # type: ignore[attr-defined]
        str(folder / "deepspeed"), tag="state", load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise FileNotFoundError(f"no DeepSpeed state in {folder / 'deepspeed'}")
    return json.loads((folder / "learner.json").read_text())


def export_hf(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    base: str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> Path:
    """A complete HF model folder of the trained policy: the base folder's tokenizer and processor files
    plus the new config and weights (loads with from_pretrained, vLLM, and `--model.path`)."""
    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in base.iterdir():
        weights = ".safetensors" in item.name or item.name.startswith("pytorch_model")  # incl. shard indexes
        if item.is_file() and not weights and item.name != "config.json":
            shutil.copy2(item, out / item.name)
    model.save_pretrained(out, state_dict=state)  # type: ignore[attr-defined]  # the whole weights, gathered
    return out
