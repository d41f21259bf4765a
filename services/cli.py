"""The `mgpo` command line. Each subcommand parses its flags and calls one function; nothing runs at import."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mgpo.data.loaders import LOADERS
from mgpo.resize import FACTOR, PixelBudget
from runtime.lifetime import die_with_parent

# Kept in step with mgpo.models.tiny.SIZES by a test; importing it here would load transformers for --help.
TINY_SIZES = ("m", "s", "xs")
Subparsers = Any  # argparse's _SubParsersAction, which it does not export


def _budget_flags(parser: argparse.ArgumentParser, min_tokens: int, max_tokens: int) -> None:
    parser.add_argument(
        "--min-pixels",
        type=int,
        default=min_tokens * FACTOR * FACTOR,
        help="pixel budget lower bound (default %(default)s)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=max_tokens * FACTOR * FACTOR,
        help="pixel budget upper bound (default %(default)s)",
    )


def _model_dir(value: str) -> str:
    """A local HF model folder; never a hub name (there is no hub here, and a typo must not go looking)."""
    if not (Path(value) / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a model folder (no config.json there)")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds are not negative")
    return values


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return int(value)


def cmd_merge(args: argparse.Namespace) -> int:
    from learner.lora import merge

    start = time.perf_counter()
    out = merge(args.adapter, args.out, args.base)
    print(f"merged {args.adapter} into {out} in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_model_tiny(args: argparse.Namespace) -> int:
    from mgpo.models.tiny import build_tiny

    start = time.perf_counter()
    out = build_tiny(
        args.out,
        tokenizer=args.tokenizer,
        size=args.size,
        seed=args.seed,
        budget=PixelBudget(args.min_pixels, args.max_pixels),
    )
    print(
        f"tiny Qwen2.5-VL ({args.size}, {args.tokenizer} tokenizer) written to {out} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mgpo.data.dataset import write_synthetic
    from mgpo.data.synth import SynthKnobs

    knobs = SynthKnobs(
        min_side=args.min_side,
        max_side=args.max_side,
        tag_size=args.tag_size,
        distractors=args.distractors,
        clutter=args.clutter,
        options=args.options,
        shuffle_options=not args.fixed_options,
        kinds=tuple(args.kinds.split(",")),
        stripe_width=args.stripe_width,
        stripe_period=args.stripe_period,
        grid=args.grid,
        position_cue=args.position_cue,
        index_cue=args.index_cue,
        grounding_sides=tuple(args.grounding_sides),
        grounding_images=tuple(args.grounding_images),
        looks=tuple(args.looks),
        look0_factor=args.look0_factor,
        look0_alone=args.look0_alone,
    )
    start = time.perf_counter()
    out = write_synthetic(
        args.out, args.n, args.seed, task=args.task, knobs=knobs, image_format=args.image_format
    )
    print(f"{args.n} synthetic {args.task} samples written to {out} in {time.perf_counter() - start:.1f}s")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from mgpo.data.check import check_dataset

    try:
        summary = check_dataset(args.format, args.path)
    except (FileNotFoundError, ValueError) as err:
        print(
            json.dumps({"format": args.format, "path": args.path, "ok": False, "error": str(err)}, indent=2)
        )
        return 2
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


def cmd_data_cot(args: argparse.Namespace) -> int:
    from recipes.cot import make_cot

    make_cot(
        args.data,
        args.out,
        teacher=args.teacher,
        engine=_offline_engine(args),
        budget=PixelBudget(args.min_pixels, args.max_pixels),
    )
    return 0


def cmd_data_select(args: argparse.Namespace) -> int:
    from recipes.select import select

    if args.config:
        return _select_on_cluster(args)
    if not args.model or not args.data:
        print(
            "mgpo data select: give --model and --data (offline), or --config (the run's actors)",
            file=sys.stderr,
        )
        return 2
    if args.n < 2:
        print("mgpo data select: --n must be at least 2 to tell sometimes from always", file=sys.stderr)
        return 2
    select(
        args.model,
        args.data,
        args.out,
        n=args.n,
        low=args.low,
        high=args.high,
        engine=_offline_engine(args),
        budget=PixelBudget(args.min_pixels, args.max_pixels),
        max_turn_tokens=args.max_turn_tokens,
    )
    return 0


def _select_on_cluster(args: argparse.Namespace) -> int:
    """`mgpo data select --config RUN.yaml`: the run's model, data, actors and rollout settings (its n)."""
    from runtime.config import load_config
    from services.driver.ray_start import stop_on_sigterm
    from services.driver.selector import Selector

    config = load_config(args.config)
    if args.name:
        config = config.model_copy(update={"name": args.name})
    stop_on_sigterm()
    try:
        Selector(config, args.out, (args.low, args.high)).run()
    except ValueError as err:
        print(f"mgpo data select: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stopped; the same command continues it (pass rates in {args.out})", file=sys.stderr)
        return 130
    return 0


def cmd_data_distill(args: argparse.Namespace) -> int:
    from mgpo.data.distill import Bars
    from recipes.distill import distill

    bars = Bars(args.direct_bar, args.blind_margin, args.crop_bar, args.crop_margin)
    if not all(0.0 <= v <= 1.0 for v in bars):
        print(
            "mgpo data distill: --direct-bar, --blind-margin, --crop-bar and --crop-margin are pass rates in 0..1",
            file=sys.stderr,
        )
        return 2
    try:
        distill(
            args.model,
            args.data,
            args.out,
            n=args.n,
            engine=_offline_engine(args),
            budget=PixelBudget(args.min_pixels, args.max_pixels),
            bars=bars,
            shuffle=not args.keep_option_order,
            reader=args.reader,
        )
    except ValueError as err:
        print(f"mgpo data distill: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"stopped; the same command goes on from where it was ({args.out}/progress.jsonl)",
            file=sys.stderr,
        )
        return 130
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from actors.offline import run_offline_rollout
    from actors.rollout_actor import ActorSpec

    engine = _offline_engine(args)
    spec = ActorSpec(
        name="offline",
        model_path=args.model,
        engine=engine,
        redis_url="",
        run="offline",
        image_store="",
        mode=args.mode,
        max_crops=args.max_crops,
        n=args.n,
        temperature=args.temperature,
        max_turn_tokens=args.max_turn_tokens,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        seed=args.seed,
    )
    summary = run_offline_rollout(spec, args.data, args.out, args.batch, args.limit)
    print(json.dumps(summary, indent=2))
    return 0


def _offline_engine(args: argparse.Namespace) -> str:
    """The engine an offline command runs (`--engine`, else vLLM when installed); vLLM's in this process."""
    import importlib.util

    engine = args.engine or ("vllm" if importlib.util.find_spec("vllm") is not None else "hf")
    if engine == "vllm":
        from actors.vllm_engine import engine_in_this_process

        engine_in_this_process()
    return engine


def cmd_demo(args: argparse.Namespace) -> int:
    from recipes.demo import rebuild_cold_start, run_demo

    if args.rebuild_cold_start:
        rebuild_cold_start()
    run_demo(args.out, smoke=args.smoke)
    return 0


def cmd_look(args: argparse.Namespace) -> int:
    from recipes.look import run_look

    run_look(args.out, seed=args.seed)
    return 0


def _config(args: argparse.Namespace) -> object:
    from runtime.config import load_config

    config = load_config(args.config)
    overrides = {k: v for k, v in (("name", args.name), ("output_dir", args.output_dir)) if v is not None}
    return config.model_copy(update=overrides) if overrides else config


def cmd_train(args: argparse.Namespace) -> int:
    import shutil

    from services.driver.ray_start import EarlyRay, stop_on_sigterm

    config = _config(args)
    if args.fresh and config.run_dir.exists():
        shutil.rmtree(config.run_dir)
    stop_on_sigterm()  # before Ray starts too: the private Redis is up first
    early_ray = EarlyRay(config)  # a local Ray comes up while the driver's modules import
    from services.driver.trainer import Trainer

    try:
        summary = Trainer(config, resume=args.resume, early_ray=early_ray).run()
    except KeyboardInterrupt:
        print(f"stopped; continue with: mgpo train --config {args.config} --resume", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    from services.driver.commands import scale

    print(f"desired rollout actors: {scale(_config(args), args.actors)}")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    from services.driver.commands import pause

    pause(_config(args), not args.off)
    print("paused: actors take no new prompts" if not args.off else "running: actors take prompts again")
    return 0


def _run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config YAML (see configs/)")
    parser.add_argument("--name", default=None, help="override the config's run name")
    parser.add_argument("--output-dir", default=None, help="override the config's output_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgpo",
        description="RL post-training for vision-language models that learn to look closer (MGPO).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_model_commands, _data_commands, _rollout_command, _run_commands, _experiment_commands):
        add(commands)
    _serve_command(commands)
    return parser


def _model_commands(commands: Subparsers) -> None:
    model = commands.add_parser("model", help="build models").add_subparsers(
        dest="model_command", required=True
    )
    tiny = model.add_parser("tiny", help="write a random-init tiny Qwen2.5-VL (HF layout) built offline")
    tiny.add_argument("--out", required=True, help="output directory")
    tiny.add_argument(
        "--tokenizer",
        choices=("qwen", "small"),
        default="small",
        help="qwen: the real Qwen2.5 vocabulary (ids match real checkpoints); small: a 2k BPE trained here, fast (default)",
    )
    tiny.add_argument(
        "--size",
        choices=TINY_SIZES,
        default="xs",
        help="xs ~0.6M, s ~2M, m ~9M params with the small tokenizer (default xs)",
    )
    tiny.add_argument("--seed", type=int, default=0)
    _budget_flags(tiny, 64, 256)
    tiny.set_defaults(func=cmd_model_tiny)

    merge = commands.add_parser(
        "merge", help="fold a LoRA adapter into its base model: a plain HF folder vLLM and model.path load"
    )
    merge.add_argument("--adapter", required=True, help="the adapter folder (an SFT run's adapter/)")
    merge.add_argument("--out", required=True, help="output directory")
    merge.add_argument(
        "--base", default=None, type=_model_dir, help="the base model (default: the one the adapter names)"
    )
    merge.set_defaults(func=cmd_merge)


def _data_commands(commands: Subparsers) -> None:
    data = commands.add_parser("data", help="make and check datasets").add_subparsers(
        dest="data_command", required=True
    )
    _synth_command(data)
    check = data.add_parser(
        "check", help="validate a dataset folder in a published layout; prints a JSON summary"
    )
    check.add_argument("--format", required=True, choices=sorted(LOADERS), help="layout of PATH")
    check.add_argument("path", help="the dataset's root folder as published")
    check.set_defaults(func=cmd_data_check)

    cot = data.add_parser(
        "cot", help="chain-of-thought SFT data for multi-image grounding (from a teacher or the records)"
    )
    cot.add_argument("--data", required=True, help="a dataset folder with grounding records")
    cot.add_argument("--out", required=True, help="the SFT dataset folder to write")
    cot.add_argument(
        "--teacher",
        default=None,
        type=_model_dir,
        help="a Qwen2.5-VL folder that reasons to the known answer (kept when right); "
        "default: rationales written from each record",
    )
    cot.add_argument("--engine", choices=("hf", "vllm"), default=None, help="the teacher's engine")
    _budget_flags(cot, 64, 256)
    cot.set_defaults(func=cmd_data_cot)
    _select_command(data)
    _distill_command(data)


def _select_command(data: Subparsers) -> None:
    select = data.add_parser(
        "select", help="rejection sampling: keep the prompts a model solves sometimes, never always or never"
    )
    select.add_argument("--model", type=_model_dir, help="the model that rolls out (merged SFT): offline")
    select.add_argument("--data", help="a dataset folder (our layout): offline")
    select.add_argument(
        "--config",
        help="instead of --model/--data: a run config; its rollout actors roll out model.path on data.path "
        "(rollout.n samples each) through the queue, scaled as in training",
    )
    select.add_argument("--name", default=None, help="with --config: override the run's name")
    select.add_argument(
        "--output-dir", default=None, help="with --config: unused (the run folder is in --out)"
    )
    select.add_argument("--out", required=True, help="the RL dataset folder to write (resumes if there)")
    select.add_argument("--n", type=int, default=8, help="offline: samples per prompt (default 8)")
    select.add_argument("--low", type=float, default=0.0, help="keep pass rates above this (default 0)")
    select.add_argument("--high", type=float, default=1.0, help="and below this (default 1)")
    select.add_argument("--engine", choices=("hf", "vllm"), default=None)
    select.add_argument(
        "--max-turn-tokens", type=int, default=256, help="offline: tokens per model turn (default 256)"
    )
    _budget_flags(select, 64, 256)
    select.set_defaults(func=cmd_data_select)


def _distill_command(data: Subparsers) -> None:
    distill = data.add_parser(
        "distill",
        help="self-distillation: an MGPO policy's own solutions (no crop, a crop, a crop of a crop) "
        "as multi-turn SFT data",
    )
    distill.add_argument("--model", required=True, help="an MGPO-trained policy (HF folder, e.g. RUN/final)")
    distill.add_argument("--data", required=True, help="a dataset folder of multiple-choice questions")
    distill.add_argument("--out", required=True, help="the SFT folder to write (paths.jsonl)")
    distill.add_argument(
        "--reader",
        default=None,
        help="the policy whose answers from the whole image say where no crop is needed (default: --model; "
        "e.g. the policy MGPO started from, which still reads there)",
    )
    distill.add_argument("--n", type=int, default=8, help="samples per question and way (default 8)")
    distill.add_argument(
        "--direct-bar", type=float, default=0.5, help="pass rate that makes a direct answer (default 0.5)"
    )
    distill.add_argument(
        "--blind-margin",
        type=float,
        default=0.25,
        help="and how much it must beat a guess's: the blurred image's or the letter shares' (default 0.25)",
    )
    distill.add_argument(
        "--crop-bar", type=float, default=0.5, help="pass rate that makes a crop path (default 0.5)"
    )
    distill.add_argument(
        "--crop-margin",
        type=float,
        default=0.25,
        help="and how much it must beat a guess's: with the crops blurred, or the letter shares' "
        "(default 0.25; 0: not asked)",
    )
    distill.add_argument(
        "--keep-option-order",
        action="store_true",
        help="ask every time with the options as given (a policy trained on fixed option orders)",
    )
    distill.add_argument("--engine", choices=("hf", "vllm"), default=None)
    _budget_flags(distill, 64, 256)
    distill.set_defaults(func=cmd_data_distill)


def _synth_command(data: Subparsers) -> None:
    synth = data.add_parser(
        "synth", help="write a V*-like synthetic high-resolution set (deterministic per seed)"
    )
    synth.add_argument("--out", required=True, help="output dataset folder")
    synth.add_argument("--n", type=int, required=True, help="number of samples")
    synth.add_argument(
        "--seed", type=int, default=0, help="set seed; use different seeds for train and test splits"
    )
    synth.add_argument(
        "--task",
        choices=("choice", "grounding", "counting", "looks"),
        default="choice",
        help="choice: V*-like multiple choice (default); grounding: multi-image; counting; looks: questions "
        "that need 0, 1 or 2 crops (with --grid)",
    )
    synth.add_argument("--image-format", choices=("jpeg", "png"), default="jpeg")
    synth.add_argument("--min-side", type=int, default=1536, help="smallest original side in pixels")
    synth.add_argument("--max-side", type=int, default=2048, help="largest original side in pixels")
    synth.add_argument("--tag-size", type=int, default=64, help="side of the target tag in original pixels")
    synth.add_argument(
        "--distractors", type=int, default=3, help="tags with other frame colours and wrong answers"
    )
    synth.add_argument("--clutter", type=int, default=150, help="background shapes per image")
    synth.add_argument("--options", type=int, default=4, help="choices per question (2-5)")
    synth.add_argument("--kinds", default="glyph,stripes,dots", help="detail kinds, comma-separated")
    synth.add_argument(
        "--fixed-options", action="store_true", help="options in a fixed order (a letter means one value)"
    )
    synth.add_argument("--stripe-width", type=int, default=1, help="dark pixels per stripe period")
    synth.add_argument("--stripe-period", type=int, default=3, help="stripe period in original pixels")
    synth.add_argument(
        "--grid",
        type=int,
        default=0,
        help="0: tags anywhere; G: centred in cells of a G x G grid (square image)",
    )
    synth.add_argument(
        "--position-cue",
        action="store_true",
        help="background colour ramps that show where a patch is (with --clutter 0)",
    )
    synth.add_argument(
        "--index-cue",
        action="store_true",
        help="--task grounding: each image's background green level tells its place (with --position-cue)",
    )
    synth.add_argument(
        "--grounding-sides",
        type=_int_list,
        default=(448, 896),
        help="--task grounding: MIN,MAX side of each image in px (default 448,896)",
    )
    synth.add_argument(
        "--grounding-images",
        type=_int_list,
        default=(2, 4),
        help="--task grounding: MIN,MAX images per prompt (default 2,4)",
    )
    synth.add_argument(
        "--looks",
        type=_int_list,
        default=(0, 1, 2),
        help="--task looks: how many crops its questions need, drawn from these (default 0,1,2)",
    )
    synth.add_argument(
        "--look0-factor",
        type=int,
        default=1,
        help="--task looks: look0 stripes this many times coarser (2: plain in the whole view; default 1)",
    )
    synth.add_argument(
        "--look0-alone",
        action="store_true",
        help="--task looks: a look0 question's distractor panels striped finely (only its red panel reads whole)",
    )
    synth.set_defaults(func=cmd_data_synth)


def _rollout_command(commands: Subparsers) -> None:
    rollout = commands.add_parser(
        "rollout",
        help="run the grounding-crop-answer loop over a dataset folder (no Redis); prints accuracy, valid-grounding ratio, tokens/s",
    )
    rollout.add_argument(
        "--model",
        required=True,
        type=_model_dir,
        help="model folder (tiny or a real Qwen2.5-VL / Qwen2-VL checkpoint)",
    )
    rollout.add_argument("--data", required=True, help="dataset folder (mgpo data synth layout)")
    rollout.add_argument("--mode", choices=("mgpo", "grpo", "multiturn"), default="mgpo")
    rollout.add_argument("--n", type=int, default=4, help="samples per prompt (default %(default)s)")
    rollout.add_argument("--out", required=True, help="JSONL file of trajectory groups")
    rollout.add_argument(
        "--engine", choices=("vllm", "hf"), default=None, help="default: vllm when installed, else hf"
    )
    rollout.add_argument(
        "--max-crops", type=int, default=3, help="multiturn: crops allowed (default %(default)s)"
    )
    rollout.add_argument("--temperature", type=float, default=1.0)
    rollout.add_argument("--max-turn-tokens", type=int, default=256)
    rollout.add_argument("--batch", type=int, default=8, help="prompts per engine call (default %(default)s)")
    rollout.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    rollout.add_argument("--seed", type=int, default=0)
    _budget_flags(rollout, 64, 256)
    rollout.set_defaults(func=cmd_rollout)


def _run_commands(commands: Subparsers) -> None:
    """Commands on one run: train it, and scale or pause it while it runs."""
    train = commands.add_parser(
        "train",
        help="run training: private Redis + local Ray (or the configured ones), a learner, rollout actors",
    )
    _run_flags(train)
    train.add_argument(
        "--resume", action="store_true", help="continue the run in its folder from its latest checkpoint"
    )
    train.add_argument("--fresh", action="store_true", help="delete the run folder first (for demos)")
    train.set_defaults(func=cmd_train)

    scale = commands.add_parser("scale", help="set the number of rollout actors of a running run")
    _run_flags(scale)
    scale.add_argument("--actors", type=int, required=True, help="desired rollout actors (>= 0)")
    scale.set_defaults(func=cmd_scale)

    pause = commands.add_parser("pause", help="pause a running run (actors take no new prompts)")
    _run_flags(pause)
    pause.add_argument("--off", action="store_true", help="un-pause")
    pause.set_defaults(func=cmd_pause)


def _experiment_commands(commands: Subparsers) -> None:
    """The recipes: cold start, evaluation, report, the reproduction and the demo."""
    sft = commands.add_parser(
        "sft", help="cold start: teach grounding and recognition (never the combined task) by SFT"
    )
    sft.add_argument("--config", required=True, help="SFT config YAML (configs/sft/cold-start.yaml)")
    sft.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    sft.set_defaults(func=cmd_sft)
    _eval_command(commands)
    _reproduce_command(commands)

    plan = commands.add_parser(
        "plan", help="memory per GPU of a run's learner ranks and rollout actors, and whether they fit"
    )
    plan.add_argument("--config", required=True, help="run config YAML")
    plan.add_argument(
        "--shapes",
        help="the model's config.json (default: model.path's; configs/shapes/ holds Qwen2.5-VL-7B's)",
    )
    plan.add_argument("--gpu-gib", type=float, default=80.0, help="memory of one GPU (default 80)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.set_defaults(func=cmd_plan)

    report = commands.add_parser("report", help="curves and a results table from run folders")
    report.add_argument("runs", nargs="+", help="run folders (metrics.jsonl, eval-*.json)")
    report.add_argument("--out", default="out/report", help="output folder (PNG, CSV, Markdown)")
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser(
        "demo", help="make demo: MGPO RL from the pinned cold start; grounding emerges (~5 min, 2 cores)"
    )
    demo.add_argument("--out", default="out/demo", help="output folder, emptied first (default %(default)s)")
    demo.add_argument("--smoke", action="store_true", help="every stage, a few steps and questions (tests)")
    demo.add_argument(
        "--rebuild-cold-start",
        action="store_true",
        help="first make models/demo-cold-start and models/demo-rl-start again from their configs in configs/demo/ (13-20 min)",
    )
    demo.set_defaults(func=cmd_demo)
    look = commands.add_parser("look", help="one ground-and-crop step of the tiny model, drawn as images")
    look.add_argument("--out", default="out/look", help="output folder (default %(default)s)")
    look.add_argument("--seed", type=int, default=0)
    look.set_defaults(func=cmd_look)


def _eval_command(commands: Subparsers) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="a policy on a test split or a benchmark folder: accuracy, grounding, IoU, crop-alone",
        description="mgpo eval --model DIR --data DIR (our synthetic layout), or "
        "mgpo eval --bench vstar|mme-realworld|mig-bench|pixmo|fsc147 PATH --model DIR --out FILE",
    )
    evaluate.add_argument(
        "--model", required=True, type=_model_dir, help="HF model folder (a run's final/, an SFT model)"
    )
    evaluate.add_argument(
        "--bench",
        choices=("synthetic", "vstar", "mme-realworld", "mig-bench", "pixmo", "fsc147"),
        default=None,
        help="a published benchmark's layout (PATH is its folder); without it, --data in our layout",
    )
    evaluate.add_argument("path", nargs="?", default=None, help="the benchmark folder (with --bench)")
    evaluate.add_argument("--data", default=None, help="dataset folder (mgpo data synth --seed <test seed>)")
    evaluate.add_argument(
        "--mode",
        choices=("mgpo", "grpo", "multiturn", "single"),
        default=None,
        help="default: mgpo for multiple choice, single (one turn) for grounding and counting",
    )
    evaluate.add_argument(
        "--image-root", default=None, help="MME-RealWorld: the folder its Image paths are relative to"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="V*: the seed its options are shuffled with")
    evaluate.add_argument(
        "--pre-shrink",
        action="store_true",
        help="the MGPO reference's input frame (NEAREST pre-shrink, then the processor's resize): "
        "to evaluate a released MGPO checkpoint on exactly its training input",
    )
    evaluate.add_argument(
        "--base", default=None, type=_model_dir, help="base model for the crop-alone ratio (the SFT model)"
    )
    evaluate.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    evaluate.add_argument("--limit", type=int, default=None, help="only the first N questions")
    evaluate.add_argument("--max-turn-tokens", type=int, default=64)
    evaluate.add_argument(
        "--max-crops", type=int, default=1, help="--mode multiturn: crops allowed (default %(default)s)"
    )
    evaluate.add_argument("--out", default=None, help="result JSON (default: <model>/eval-<mode>.json)")
    _budget_flags(evaluate, 64, 256)
    evaluate.set_defaults(func=cmd_eval)


def _reproduce_command(commands: Subparsers) -> None:
    repro = commands.add_parser(
        "reproduce", help="cold start, MGPO vs GRPO vs multi-turn RL, eval, report (make reproduce)"
    )
    repro.add_argument("--out", default="out/reproduce", help="output folder (default %(default)s)")
    repro.add_argument("--smoke", action="store_true", help="a few steps of every stage (CI)")
    repro.add_argument(
        "--experiment",
        choices=("mgpo", "mig", "multiturn"),
        default="mgpo",
        help="mgpo: cold start, MGPO vs GRPO (vs multi-turn); mig: multi-image grounding (CoT, LoRA SFT, "
        "selection, IoU RL); multiturn: MGPO vs a distilled policy that decides when to look (default mgpo)",
    )
    repro.add_argument(
        "--seeds",
        type=_int_list,
        default=(0,),
        help="comma-separated seeds (cold start, data, RL); more than one: each in OUT/seed-N (default 0)",
    )
    repro.add_argument(
        "--methods",
        type=lambda text: tuple(text.split(",")),
        default=("mgpo", "grpo", "multiturn"),
        help="comma-separated methods to train (default mgpo,grpo,multiturn)",
    )
    repro.set_defaults(func=cmd_reproduce)


def _serve_command(commands: Subparsers) -> None:
    serve = commands.add_parser("serve", help="the control plane: HTTP API, /metrics, the rollout viewer")
    serve.add_argument("--config", default=None, help="serve config YAML (default: built-in defaults)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    serve.add_argument("--port", type=_port, default=8000, help="port, 1-65535 (default %(default)s)")
    serve.set_defaults(func=cmd_serve)


def cmd_reproduce(args: argparse.Namespace) -> int:
    import signal

    from recipes.reproduce import reproduce

    # SIGTERM as an exception, so the running stage is terminated too, not left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.experiment == "mig":
        from recipes.reproduce_mig import reproduce_mig

        out = args.out if args.out != "out/reproduce" else "out/reproduce-mig"
        print(json.dumps(reproduce_mig(out, smoke=args.smoke), indent=2))
        return 0
    if args.experiment == "multiturn":
        from recipes.reproduce_looks import reproduce_looks

        out = args.out if args.out != "out/reproduce" else "out/reproduce-looks"
        print(json.dumps(reproduce_looks(out, smoke=args.smoke), indent=2))
        return 0
    try:
        result = reproduce(args.out, smoke=args.smoke, seeds=args.seeds, methods=args.methods)
    except ValueError as err:
        print(f"mgpo reproduce: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from learner.sft import run_sft
    from runtime.config import load_sft_config

    print(json.dumps(run_sft(load_sft_config(args.config), resume=args.resume), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.bench is not None:
        return _eval_bench(args)
    from recipes.evaluate import run_eval

    if args.data is None or args.path is not None:
        print("mgpo eval: give --data DIR (our layout) or --bench NAME PATH", file=sys.stderr)
        return 2
    args.mode = args.mode or "mgpo"
    if args.mode == "single":
        print("mgpo eval: --mode single is for grounding and counting benchmarks", file=sys.stderr)
        return 2
    out = args.out or str(Path(args.model) / f"eval-{args.mode}.json")
    result = run_eval(
        args.model,
        args.data,
        args.mode,
        out,
        base=args.base,
        engine=args.engine,
        limit=args.limit,
        budget=PixelBudget(args.min_pixels, args.max_pixels, args.pre_shrink),
        max_turn_tokens=args.max_turn_tokens,
        max_crops=args.max_crops,
    )
    print(json.dumps(result, indent=2))
    return 0


def _eval_bench(args: argparse.Namespace) -> int:
    from recipes.bench import run_bench

    path = args.path or args.data
    if path is None or not Path(path).is_dir():
        print(f"mgpo eval: --bench {args.bench} needs its folder as PATH (got {path!r})", file=sys.stderr)
        return 2
    out = args.out or str(Path(args.model) / f"bench-{args.bench}.json")
    try:
        result = run_bench(
            args.bench,
            path,
            args.model,
            out,
            mode=args.mode,
            base=args.base,
            image_root=args.image_root,
            engine=args.engine,
            limit=args.limit,
            seed=args.seed,
            budget=PixelBudget(args.min_pixels, args.max_pixels, args.pre_shrink),
            max_turn_tokens=args.max_turn_tokens,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"mgpo eval: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from recipes.plan import plan, render
    from runtime.config import load_config

    config = load_config(args.config)
    shapes = Path(args.shapes) if args.shapes else Path(config.model.path) / "config.json"
    if not shapes.is_file():
        raise FileNotFoundError(
            f"no model shapes at {shapes} (model.path {config.model.path!r}): pass --shapes CONFIG_JSON, "
            "e.g. configs/shapes/qwen2.5-vl-7b.json"
        )
    result = plan(config, shapes, args.gpu_gib)
    print(json.dumps(result.summary(), indent=2) if args.json else render(result))
    return 0 if result.learner.fits and result.actor.fits else 1


def cmd_report(args: argparse.Namespace) -> int:
    from recipes.report import write_report

    print(json.dumps(write_report(args.runs, args.out), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from runtime.config import load_serve_config
    from runtime.redis_server import persistent_server
    from services.auth import configured_token
    from services.control import create_app

    settings = load_serve_config(args.config)
    redis_url = (
        settings.redis_url
        or os.environ.get("MGPO_REDIS_URL")  # a password from a Secret stays out of files
        or persistent_server(Path(settings.state_dir) / "redis")
    )
    if configured_token() is None:
        print("mgpo serve: no MGPO_API_TOKEN / MGPO_API_TOKEN_FILE: every mutating request will be refused")
    shown = redis_url.split("@")[-1]  # never print a password
    print(f"mgpo serve: Redis {shown}, runs in {Path(settings.state_dir).resolve()}")
    print(
        f"mgpo serve: API docs http://{args.host}:{args.port}/docs, viewer http://{args.host}:{args.port}/viewer"
    )
    # h11, not httptools: h11 refuses request heads over 16 KB (httptools took a 64 MB header)
    uvicorn.run(create_app(settings, redis_url), host=args.host, port=args.port, log_level="info", http="h11")
    return 0


def _passive_threads() -> None:
    """OpenMP threads waiting for work sleep rather than spin, unless OMP_WAIT_POLICY says otherwise. Set
    before torch loads its OpenMP runtime, and inherited by Ray's workers and vLLM's engine processes. On a
    2-core machine shared with a 2-thread torch job, spinning waiters took the cores from the threads with
    work: `mgpo eval` of the demo's cold start took 42 s there against 9 s alone, and 11 s with this
    (10 s alone); the demo's RL made no step in 5 minutes."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    _passive_threads()
    die_with_parent()  # a recipe's stage: ends with the recipe, even one killed outright
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.func
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"mgpo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
