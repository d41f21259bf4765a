"""A model folder kept in the repository (the demo's cold start), with a manifest: the config and commit that
made it, its held-out scores and every file's sha256. `verify` checks all of them before the folder is used,
so a changed file or a config edited since gives a clear error that names the command to rebuild it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from runtime.config import load_sft_config

MANIFEST = "manifest.json"
# Where the SFT ran does not change what it made: the output folder is left out of the comparison.
NOT_COMPARED = ("output_dir",)
# A model trained from another pinned folder (its `base`) names that folder by its weights' hash, not by the
# config's model.path, which may be written from anywhere.
BASE_WEIGHTS = "model.safetensors"


class PinnedModelError(RuntimeError):
    """The pinned folder is missing, changed, or no longer matches the config that made it."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_values(config: Path) -> dict[str, object]:
    """The SFT config as validated (defaults filled in), flattened to dotted keys: what the manifest compares."""
    raw = load_sft_config(config).model_dump(mode="json")
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat[prefix[:-1]] = value

    walk("", raw)
    return {k: v for k, v in flat.items() if k not in NOT_COMPARED}


def current_commit(repo: Path) -> str:
    """HEAD, with "-dirty" when tracked files differ from it (then the commit alone does not say what ran)."""
    run = lambda *args: subprocess.run(args, cwd=repo, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = run("git", "rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if run("git", "status", "--porcelain", "--untracked-files=no") else "")


def pin(
    model: Path, dest: Path, config: Path, made_by: dict[str, object], base: Path | None = None
) -> dict[str, object]:
    """Copy the HF folder `model` to `dest` and write its manifest (`made_by`: commit, command, scores...);
    `base`: the pinned folder it was trained from, recorded by path (relative to `dest`) and weights hash."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(model, dest)
    values = config_values(config)
    if base is not None:
        made_by = {
            **made_by,
            "base": {"path": os.path.relpath(base, dest), BASE_WEIGHTS: sha256(base / BASE_WEIGHTS)},
        }
        values.pop("model.path")
    manifest = {
        **made_by,
        "config_values": values,
        "files": {p.name: sha256(p) for p in sorted(dest.iterdir()) if p.is_file()},
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def verify(dest: Path, config: Path, rebuild: str) -> dict[str, object]:
    """The manifest of `dest` after checking every file's hash and every config value; else PinnedModelError
    naming what differs and the `rebuild` command."""
    how = f"rebuild it with `{rebuild}`"
    if not (dest / MANIFEST).exists():
        raise PinnedModelError(f"{dest}: no {MANIFEST} (the pinned model is missing): {how}")
    manifest = json.loads((dest / MANIFEST).read_text())
    files: dict[str, str] = manifest["files"]
    present = {p.name for p in dest.iterdir() if p.is_file()} - {MANIFEST}
    problems = [f"{name} missing" for name in sorted(set(files) - present)]
    problems += [f"{name} not in the manifest" for name in sorted(present - set(files))]
    problems += [
        f"{name} changed (sha256 {sha256(dest / name)[:12]}, pinned {digest[:12]})"
        for name, digest in sorted(files.items())
        if name in present and sha256(dest / name) != digest
    ]
    if problems:
        raise PinnedModelError(f"{dest}: {'; '.join(problems)}: {how}")
    _check_base(dest, manifest.get("base"), how)
    now, then = config_values(config), manifest["config_values"]
    # keys added to the config since (with defaults) do not count: what made the model is what was there
    changed = [
        f"{key} {then[key]!r} -> {now.get(key)!r}" for key in sorted(then) if now.get(key) != then[key]
    ]
    if changed:
        raise PinnedModelError(
            f"{config} changed since {dest} was made ({'; '.join(changed)}): {how}, or undo the change"
        )
    return manifest


def _check_base(dest: Path, base: dict[str, str] | None, how: str) -> None:
    """The folder `dest` was trained from still holds the weights it was trained from."""
    if base is None:
        return
    folder = (dest / base["path"]).resolve()
    if not (folder / BASE_WEIGHTS).exists():
        raise PinnedModelError(f"{dest} was trained from {folder}, which is missing: {how}")
    if sha256(folder / BASE_WEIGHTS) != base[BASE_WEIGHTS]:
        raise PinnedModelError(
            f"{dest} was trained from {folder} as it was then, and that model changed since: {how}"
        )
