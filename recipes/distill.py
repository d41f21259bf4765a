"""`mgpo data distill`: an MGPO-trained policy's own solutions, rewritten into the multi-turn format.

For every multiple-choice question, the way the policy solves it (mgpo.data.distill.LookPath). Each
question is asked `n` times, each time with its options in another order (`variants`): a policy that cannot
read the detail and guesses a favourite letter then passes about one time in the number of options, not
every time. A pass rate is the share of the `n` answers that named the right option, four per question:
- direct: shown the whole image alone (the recognition prompt);
- blind: the same, the image blurred past reading: what a guess scores (with options in a fixed order a
  favourite letter passes every time, so only `direct - blind` says the policy read the detail);
- letter: what naming letters at the shares the policy names them over the whole set scores: a guess that
  a kind of image draws (blurring changes the image, so `blind` misses it);
- crop: its MGPO rollouts (turn 1 box, turn 2 answer), right with a valid crop.
Where a crop would be the path, `crop_blind`: the same rollouts with every crop blurred past reading
(`BlindCrops`), or the letter rate if higher: what a guess after the crop scores. A crop path must beat it
by `bars.crop_margin`, as a direct answer must beat a guess; a crop of the crop likewise, on the crop. A
crop shows a kind of image the whole view does not, and a policy may answer it with a favourite value.
The first three may come from another policy, the reader (`distill(reader=...)`, `--reader`): MGPO's RL
never asks for an answer from the whole image and wears that reading down, so the policy it started from
says better where no crop is needed.
`first_way` (the bars, against the higher of the two guesses) picks a direct answer or the first solved
sample's own box, its crop and the answer; where neither clears its bar, a crop of the crop: the policy's most
frequent first crop, cut out and given to it as the image of new MGPO rollouts; a box there and a right
answer often enough gives two crops.
Questions solved by none are left out (counted). Each path's boxes are in pixels of the view they cut from,
as the multi-turn loop reads them, and its regions are the loop's own (`crop_region`), so SFT on the folder
teaches exactly the tokens and pixels RL with `rollout.mode: multiturn` will produce. `rates.jsonl` keeps
every question's rates, kept or not, and `distill.json` their means per category: how much a look
adds, category by category. A stopped distillation goes on where it was when run again with the same
settings (`recipes.distill_progress`).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageFilter
from tqdm import tqdm

from actors.engine import Engine, Prompt, Sampling
from actors.loop import Loop, Tokenizer
from actors.rollout_actor import ActorSpec, build_engine, engine_tokenizer, rollout_settings
from mgpo.boxes import Box, parse_box
from mgpo.cold_start import RECOGNITION_PROMPT, RECOGNITION_SYSTEM
from mgpo.crop import crop_region, render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts, write_subset
from mgpo.data.distill import (
    Bars,
    LookPath,
    answer_turn,
    crop_request,
    first_way,
    letter_rate,
    letter_shares,
    looks_share,
    pass_rate,
    write_paths,
)
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, TaskKind, TrajectorySample
from mgpo.resize import PixelBudget
from mgpo.templates import LETTERS, format_choices, single_prompt
from recipes.distill_progress import Progress
from recipes.evaluate import eval_spec

RATES_FILE = "rates.jsonl"  # every question's pass rates without a crop and with one
# Blurring the whole view by 4 of its pixels wipes every stripe and glyph a 224-px view can show (the looks
# set's coarsest stripes are ~2 view pixels wide) and keeps layout and colours: what is left is a guess.
BLUR_RADIUS = 4.0
MAX_CROPS = 2  # the paths go up to a crop of a crop; RL must allow as many (rollout.max_crops)


def variants(record: PromptRecord, n: int, shuffle: bool = True) -> list[PromptRecord]:
    """`n` copies of a question, the k-th with its options in the k-th seeded order (k = 0: as given).
    `shuffle` False keeps the order: for a policy trained on a set whose letters always mean the same value
    (`data.shuffle_options: false`), which may read the detail yet not the option texts."""
    out = []
    for k in range(n):
        order = list(range(len(record.choices)))
        if k and shuffle:
            random.Random(f"{record.id}#{k}").shuffle(order)
        answer = LETTERS[order.index(LETTERS.index(record.answer))]
        choices = tuple(record.choices[i] for i in order)
        out.append(dataclasses.replace(record, id=f"{record.id}#{k}", choices=choices, answer=answer))
    return out


Ask = Callable[[PromptRecord], list[PromptRecord]]  # a question -> the variants it is asked as


Asked = list[tuple[PromptRecord, str]]  # a question's variants, each with the policy's reply


def direct_replies(
    policy: Engine,
    records: Sequence[PromptRecord],
    store: ImageStore,
    budget: PixelBudget,
    ask: Ask,
    blind: bool = False,
    progress: Progress | None = None,
) -> dict[str, Asked]:
    """Each question's variants answered from the whole image alone, at temperature 1. `blind`: from the
    whole image blurred past reading (BLUR_RADIUS), what the policy answers without the detail. Replies in
    `progress` are kept; new ones are added to it."""
    tok = Tokenizer(engine_tokenizer(policy))
    sampling = Sampling(n=1, max_tokens=32, temperature=1.0, stop_ids=(tok.im_end,), seed=0)
    step = "blind" if blind else "direct"
    done = progress.replies[step] if progress is not None else {}
    out = {}
    for record in tqdm(records, desc=f"distill: no crop{' (blind)' if blind else ''}", unit="question"):
        asked = ask(record)
        if len(done.get(record.id, ())) == len(asked):
            out[record.id] = list(zip(asked, done[record.id], strict=True))
            continue
        image = render_view(store.get(record.images[0]), None, budget)
        if blind:
            image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))
        texts = [
            RECOGNITION_PROMPT.format(question=v.question, choices=format_choices(v.choices)) for v in asked
        ]
        prompts = [Prompt(tok.encode(single_prompt(t, 1, RECOGNITION_SYSTEM)), [image]) for t in texts]
        replies = [tok.decode(c.ids) for (c,) in policy.generate(prompts, sampling)]
        out[record.id] = list(zip(asked, replies, strict=True))
        if progress is not None:
            progress.add_replies(step, record.id, replies)
    return out


def no_crop_rates(
    direct: dict[str, Asked], blind: dict[str, Asked], shares: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Each question's pass rates without a crop: `direct`, `blind` (blurred) and `letter` (naming letters
    at the `shares` the policy names them over all the questions' direct askings)."""
    return {
        "direct": {q: pass_rate(asked) for q, asked in direct.items()},
        "blind": {q: pass_rate(asked) for q, asked in blind.items()},
        "letter": {q: letter_rate([v for v, _ in asked], shares) for q, asked in direct.items()},
    }


def mgpo_samples(loop: Loop, record: PromptRecord, ask: Ask) -> list[TrajectorySample]:
    """The MGPO rollouts of a question's variants, one sample each."""
    return [g.samples[0] for g in loop.rollout(ask(record), seed=0)]


def _solved(sample: TrajectorySample) -> bool:
    return sample.reward >= 1.0 and sample.valid_grounding and sample.views[1].region is not None


def _first_box(sample: TrajectorySample, size: tuple[int, int], loop: Loop) -> Box:
    """The turn-1 box the loop cut `sample`'s crop by, in pixels of the `size` input it was read in."""
    box = parse_box(sample.text[0], size, loop.settings.box_rule).box
    assert box is not None  # a crop was cut, so its box parsed
    return box


def _crop_image(store: ImageStore, original: str, region: Box) -> str:
    """The crop as an image of its own (integer original pixels, PNG so no pixel changes), by hash."""
    buf = io.BytesIO()
    crop = store.get(original).crop((int(region.x1), int(region.y1), int(region.x2), int(region.y2)))
    crop.save(buf, format="PNG", compress_level=1)
    return store.put_bytes(buf.getvalue(), check=False)


def _most_common_first(samples: Sequence[TrajectorySample]) -> TrajectorySample | None:
    """A sample whose first crop is the one the policy cut most often (None: it never cut one)."""
    cropped = [s for s in samples if s.turns > 1 and s.views[1].region is not None]
    if not cropped:
        return None
    region = Counter(s.views[1].region for s in cropped).most_common(1)[0][0]
    return next(s for s in cropped if s.views[1].region == region)


def _passes(samples: Sequence[TrajectorySample], bar: float) -> TrajectorySample | None:
    """The first sample solved with a valid crop, if at least `bar` of them were (else None)."""
    solved = [s for s in samples if _solved(s)]
    return solved[0] if solved and len(solved) >= bar * len(samples) else None


def one_crop_path(
    loop: Loop, record: PromptRecord, samples: Sequence[TrajectorySample], budget: PixelBudget
) -> LookPath:
    """The first MGPO rollout solved with a valid crop: its own box, its crop and the answer."""
    sample = next(s for s in samples if _solved(s))
    whole = view_input_size(loop.original_size(record.images[0]), None, budget)
    turns = (crop_request(_first_box(sample, whole, loop), 1), answer_turn(record.answer))
    return LookPath(turns, (sample.views[1].region,))  # type: ignore[arg-type]


def two_crop_path(
    loops: Loops,
    record: PromptRecord,
    samples: Sequence[TrajectorySample],
    budget: PixelBudget,
    ask: Ask,
    bars: Bars,
    letter: float,
) -> LookPath | None:
    """The policy's most frequent crop, given to it as a new image; solved there often enough, and more
    often than with its crops blurred (or at its `letter` rate), two crops."""
    loop = loops.sharp
    first = _most_common_first(samples)
    if first is None:
        return None
    region = first.views[1].region
    assert region is not None
    sub = dataclasses.replace(record, images=(_crop_image(loop.store, record.images[0], region),))
    again = mgpo_samples(loop, sub, ask)
    sample = _passes(again, bars.crop)
    if sample is None or crop_rate(again) - (loops.guess(sub, ask, letter) or 0.0) < bars.crop_margin:
        return None
    original = loop.original_size(record.images[0])
    seen = view_input_size(original, region, budget)  # the crop's input size: the sub-image's
    grounding = parse_box(sample.text[0], seen, loop.settings.box_rule)
    second = crop_region(grounding, seen, region, original)  # where the multi-turn loop will cut
    if second is None or grounding.box is None:
        return None
    whole = view_input_size(original, None, budget)
    turns = (
        crop_request(_first_box(first, whole, loop), 1),
        crop_request(grounding.box, 2),
        answer_turn(record.answer),
    )
    return LookPath(turns, (region, second))


def crop_rate(samples: Sequence[TrajectorySample]) -> float:
    """The share of MGPO rollouts solved with a valid crop."""
    return sum(_solved(s) for s in samples) / len(samples) if samples else 0.0


class BlindCrops(Loop):
    """The loop with every crop blurred past reading (BLUR_RADIUS; the whole view as it is): what the policy
    answers after a crop without its detail, a guess at the kind of image the crop shows."""

    def _render(self, digest: str, region: Box | None = None) -> Image.Image:
        view = super()._render(digest, region)
        return view if region is None else view.filter(ImageFilter.GaussianBlur(BLUR_RADIUS))


@dataclasses.dataclass
class Loops:
    """The policy's MGPO loop, and the same with its crops blurred (None: `bars.crop_margin` is 0)."""

    sharp: Loop
    blind: Loop | None

    def guess(self, record: PromptRecord, ask: Ask, letter: float) -> float | None:
        """What a crop path scores by guessing: the blurred crops' pass rate or the `letter` rate, whichever
        is higher (None: not asked)."""
        if self.blind is None:
            return None
        return max(crop_rate(mgpo_samples(self.blind, record, ask)), letter)


def best_paths(
    loops: Loops,
    records: Sequence[PromptRecord],
    rates: dict[str, dict[str, float]],
    budget: PixelBudget,
    ask: Ask,
    bars: Bars,
    progress: Progress,
) -> tuple[dict[str, LookPath], dict[str, float], dict[str, float | None]]:
    """Each question's path by `first_way` (none: left out), its one-crop pass rate (rolled out for every
    question, so `first_way` can weigh a crop against a direct answer and `rates.jsonl` tells what it adds)
    and, where a crop would be its path, what a guess scores after the crop (`Loops.guess`; else None).
    `rates`: each question's direct, blind and letter rates (`no_crop_rates`). Questions in `progress` are
    not asked again; each new one is added to it."""
    paths, crops, guesses = {}, {}, {}
    for record in tqdm(records, desc="distill", unit="question"):
        if record.id in progress.crops:
            crops[record.id], guesses[record.id], done = progress.crops[record.id]
            if done is not None:
                paths[record.id] = done
            continue
        samples = mgpo_samples(loops.sharp, record, ask)
        crop, letter = crop_rate(samples), rates["letter"][record.id]
        direct, guess = rates["direct"][record.id], max(rates["blind"][record.id], letter)
        guesses[record.id] = None
        if first_way(direct, guess, crop, bars) == 1:  # a crop would be its path: is it a reading?
            guesses[record.id] = loops.guess(record, ask, letter)
        way = first_way(direct, guess, crop, bars, guesses[record.id] or 0.0)
        if way == 0:
            path: LookPath | None = LookPath((answer_turn(record.answer),), ())
        elif way == 1:
            path = one_crop_path(loops.sharp, record, samples, budget)
        else:
            path = two_crop_path(loops, record, samples, budget, ask, bars, letter)
        if path is not None:
            paths[record.id] = path
        crops[record.id] = crop
        progress.add_crop(record.id, crop, guesses[record.id], path)
    return paths, crops, guesses


def asking(
    model: str,
    data: str,
    n: int,
    budget: PixelBudget,
    bars: Bars,
    shuffle: bool,
    reader: str,
) -> dict[str, object]:
    """What the answers depend on: a stopped distillation goes on only with the same (the engine may
    differ: both give the policy's own answers)."""
    pixels = [budget.min_pixels, budget.max_pixels]
    return {
        "model": model,
        "reader": reader,
        "data": data,
        "n": n,
        "pixels": pixels,
        "bars": bars._asdict(),
        "shuffle": shuffle,
    }


def read_whole(
    policy: Engine,
    records: Sequence[PromptRecord],
    store: ImageStore,
    budget: PixelBudget,
    ask: Ask,
    progress: Progress,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Each question's pass rates without a crop (`no_crop_rates`) and the letter shares they guess by."""
    direct = direct_replies(policy, records, store, budget, ask, progress=progress)
    shares = letter_shares([pair for asked in direct.values() for pair in asked])
    blind = direct_replies(policy, records, store, budget, ask, blind=True, progress=progress)
    return no_crop_rates(direct, blind, shares), shares


def distill(
    model: str,
    data: str,
    out: str,
    n: int = 8,
    engine: str = "vllm",
    budget: PixelBudget = PixelBudget(64 * 28 * 28, 256 * 28 * 28),
    bars: Bars = Bars(),
    shuffle: bool = True,
    reader: str | None = None,
) -> dict[str, object]:
    """Write the SFT folder `out`: the multiple-choice questions of `data` the policy `model` solves, each
    with its path (`paths.jsonl`), and `distill.json` (how many took 0, 1, 2 crops, per category).
    `reader`: the policy whose answers from the whole image (direct and blind) say where no crop is needed
    (default `model`). RL in MGPO's two turns never asks its policy to answer from the whole image and wears
    that reading down; the policy it started from still reads there (README, Results)."""
    reader = reader or model
    source = open_store(data)
    records = [r for r in read_prompts(data) if r.kind is TaskKind.MULTIPLE_CHOICE]
    if not records:
        raise ValueError(f"{data}: no multiple-choice question to distill")
    folder = Path(out)
    progress = Progress(folder, asking(model, data, n, budget, bars, shuffle, reader))
    if progress.replies["direct"]:
        done = f"{len(progress.replies['direct'])} questions answered, {len(progress.crops)} cropped"
        print(f"distill: going on from {progress.path} ({done}, of {len(records)})", flush=True)
    work = ImageStore(folder / "work" / "images")  # the originals and the policy's crops as images
    for record in records:
        work.put_bytes(source.path(record.images[0]).read_bytes(), check=False)
    ask = functools.partial(variants, n=n, shuffle=shuffle)
    try:
        if reader != model:  # its own engine first and closed: a 7B and its reader may not both fit
            judge = build_engine(policy_spec(reader, work, engine, budget))
            try:
                rates, shares = read_whole(judge, records, work, budget, ask, progress)
            finally:
                judge.close()
        spec = policy_spec(model, work, engine, budget)
        policy = build_engine(spec)
        try:
            if reader == model:
                rates, shares = read_whole(policy, records, work, budget, ask, progress)
            args = (policy, Tokenizer(engine_tokenizer(policy)), work, rollout_settings(spec), "distill")
            loops = Loops(Loop(*args), BlindCrops(*args) if bars.crop_margin else None)
            paths, rates["crop"], rates["crop_blind"] = best_paths(
                loops, records, rates, budget, ask, bars, progress
            )
        finally:
            policy.close()
    finally:
        shutil.rmtree(work.root.parent)  # copies and cut-out crops: the folder keeps what it teaches
    kept = [r for r in records if r.id in paths]
    settings = {"n": n, "shuffle": shuffle, "bars": bars._asdict(), "letter_shares": shares}
    summary = _summary(records, paths, rates, settings)
    meta = {"format": "mgpo-distilled", "source": data, "model": model, "reader": reader}
    meta |= {"max_crops": MAX_CROPS, "min_pixels": budget.min_pixels, "max_pixels": budget.max_pixels}
    write_subset(folder, kept, source, meta | summary)
    write_paths(folder, {r.id: paths[r.id] for r in kept})
    _write_rates(folder / RATES_FILE, records, rates)
    (folder / "distill.json").write_text(json.dumps(summary, indent=1) + "\n")
    progress.remove()  # the folder is whole: a rerun starts again
    print(json.dumps({"out": str(folder), **summary["looks"], "kept": len(kept), "questions": len(records)}))  # type: ignore[dict-item]
    return summary


def policy_spec(model: str, work: ImageStore, engine: str, budget: PixelBudget) -> ActorSpec:
    """How distillation asks a policy: its own samples (temperature 1), one per asking, MGPO's turns."""
    return eval_spec(model, "mgpo", str(work.root), engine, budget, max_turn_tokens=64, n=1, temperature=1.0)


def _write_rates(
    file: Path, records: Sequence[PromptRecord], rates: dict[str, dict[str, float | None]]
) -> None:
    """Every question's pass rates, kept or not: what the bars chose from."""
    with open(file, "w") as out:
        for r in records:
            line = {"id": r.id, "category": r.category, **{way: rate[r.id] for way, rate in rates.items()}}
            out.write(json.dumps(line) + "\n")


def _summary(
    records: Sequence[PromptRecord],
    paths: dict[str, LookPath],
    rates: dict[str, dict[str, float | None]],
    settings: dict[str, object],
) -> dict[str, object]:
    by_category: dict[str, Counter[str]] = {}
    asked: dict[str, dict[str, list[float]]] = {}  # per category and way: the rates measured
    for r in records:
        category = r.category or "-"
        taken = f"look{paths[r.id].looks}" if r.id in paths else "unsolved"
        by_category.setdefault(category, Counter())[taken] += 1
        for way, rate in rates.items():
            measured = asked.setdefault(category, {}).setdefault(way, [])
            if rate[r.id] is not None:  # a crop's guess is asked only where a crop would be the path
                measured.append(rate[r.id])  # type: ignore[arg-type]
    mean_rates = {
        c: {way: round(sum(v) / len(v), 3) if v else None for way, v in ways.items()}
        for c, ways in sorted(asked.items())
    }
    return {
        "questions": len(records),
        **settings,
        "looks": looks_share(list(paths.values())),
        "by_category": {c: dict(sorted(v.items())) for c, v in sorted(by_category.items())},
        "mean_rates": mean_rates,  # per category: the pass rate without a crop and with one
    }
