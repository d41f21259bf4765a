"""`mgpo data distill` on a real policy (the pinned demo cold start, HF engine), then `mgpo sft` on the
multi-turn paths it wrote; and the option variants that keep a blind letter guess from passing."""

import functools
import json
from collections import Counter

import pytest
from PIL import Image, ImageFilter

from actors.loop import Tokenizer
from actors.rollout_actor import build_engine, engine_tokenizer, rollout_settings
from learner.sft import _examples, look_examples
from mgpo.boxes import Box, BoxRule, parse_box
from mgpo.crop import crop_region, full_region, render_view, view_input_size
from mgpo.data.dataset import open_store, read_prompts, write_subset, write_synthetic
from mgpo.data.distill import Bars, LookPath, answer_turn, crop_request, read_paths, write_paths
from mgpo.images import ImageStore
from mgpo.records import PromptRecord, TaskKind
from mgpo.resize import PixelBudget
from recipes.distill import BLUR_RADIUS, BlindCrops, asking, distill, policy_spec, read_whole, variants
from recipes.distill_progress import PROGRESS_FILE, Progress
from runtime.config import load_sft_config
from services.cli import main

COLD_START = "models/demo-cold-start"
RL_START = "models/demo-rl-start"  # the cold start settled: another policy, same shapes
BUDGET = PixelBudget(224 * 224, 224 * 224)


def test_variants_move_the_answer_with_its_option_and_spread_the_letters():
    record = PromptRecord("q", TaskKind.MULTIPLE_CHOICE, "?", ("a" * 64,), "B", ("w", "x", "y", "z"))
    asked = variants(record, 8)
    assert asked[0].choices == record.choices and asked[0].answer == "B"
    assert all(v.choices["ABCD".index(v.answer)] == "x" for v in asked)
    assert len({v.id for v in asked}) == 8 and len(Counter(v.answer for v in asked)) >= 3
    assert {(v.choices, v.answer) for v in variants(record, 3, shuffle=False)} == {(record.choices, "B")}


@pytest.mark.slow
def test_distilled_paths_are_the_loops_own_crops(tmp_path):
    data, sft = tmp_path / "data", tmp_path / "distilled"
    knobs = load_sft_config("configs/demo/cold-start.yaml").data.knobs()
    write_synthetic(data, 6, 7, knobs=knobs, image_format="png", progress=False)
    # no direct answer, and any solved sample makes a crop path, so the cold start's few boxes give some; the
    # options as given, as it was trained (letters that always mean the same value)
    summary = distill(
        COLD_START,
        str(data),
        str(sft),
        n=8,
        engine="hf",
        budget=BUDGET,
        bars=Bars(direct=1.0, blind_margin=1.0, crop=0.0, crop_margin=0.0),
        shuffle=False,
    )
    paths = read_paths(sft)
    assert summary["questions"] == 6 and sum(summary["looks"].values()) == len(paths) >= 1
    assert sum(sum(c.values()) for c in summary["by_category"].values()) == 6
    shares = summary["letter_shares"]  # of 48 replies; one that names no option counts for none
    assert set(shares) == set("ABCD") and 0 < sum(shares.values()) <= 1
    store = open_store(sft)
    for record in read_prompts(sft):
        path = paths[record.id]
        assert path.turns[-1] == f"\\boxed{{{record.answer}}}"
        image = store.get(record.images[0])
        source, view = full_region(image), None
        for turn, region in zip(path.turns, path.regions, strict=False):
            # the multi-turn loop reads each request and cuts exactly the region taught with it
            seen = view_input_size(image.size, view, BUDGET)
            assert crop_region(parse_box(turn, seen, BoxRule.LENIENT), seen, source, image.size) == region
            source = view = region
    assert not (sft / "work").exists()  # the copies and cut-out crops are gone
    rates = [json.loads(line) for line in (sft / "rates.jsonl").read_text().splitlines()]
    # every question's rates, kept or not; a crop path is kept only where a crop solved something
    assert len(rates) == 6 and all(
        0 <= r[way] <= 1 for r in rates for way in ("direct", "blind", "letter", "crop")
    )
    assert all(r["crop"] > 0 for r in rates if r["id"] in paths and paths[r["id"]].looks == 1)
    assert set(summary["mean_rates"]) == set(summary["by_category"])
    meta = json.loads((sft / "dataset.json").read_text())
    assert meta["max_crops"] == 2 and meta["min_pixels"] == BUDGET.min_pixels


@pytest.mark.slow
def test_a_stopped_distillation_goes_on_from_its_progress(tmp_path):
    """A progress file as a stop leaves it: every question's direct and blind replies, one question's crop
    step. The rerun asks none of those again (8 right direct replies of 8 on every question are the seeded
    ones, not the cold start's) and finishes the rest with the real policy."""
    data, out = tmp_path / "data", tmp_path / "distilled"
    knobs = load_sft_config("configs/demo/cold-start.yaml").data.knobs()
    write_synthetic(data, 6, 7, knobs=knobs, image_format="png", progress=False)
    records = list(read_prompts(data))
    bars = Bars(direct=1.0, blind_margin=0.0, crop=1.0, crop_margin=0.0)
    progress = Progress(out, asking(COLD_START, str(data), 8, BUDGET, bars, False, COLD_START))
    for record in records:
        progress.add_replies("direct", record.id, [answer_turn(record.answer)] * 8)
        progress.add_replies("blind", record.id, [answer_turn("Z")] * 8)
    seeded = LookPath(
        (crop_request(Box(0, 0, 56, 56), 1), answer_turn(records[0].answer)), (Box(0, 0, 64, 64),)
    )
    progress.add_crop(records[0].id, 0.625, None, seeded)
    distill(COLD_START, str(data), str(out), n=8, engine="hf", budget=BUDGET, bars=bars, shuffle=False)
    paths = read_paths(out)
    assert paths[records[0].id] == seeded
    assert all(paths[r.id] == LookPath((answer_turn(r.answer),), ()) for r in records[1:])
    rates = {
        json.loads(line)["id"]: json.loads(line) for line in (out / "rates.jsonl").read_text().splitlines()
    }
    assert rates[records[0].id]["crop"] == 0.625 and all(r["direct"] == 1.0 for r in rates.values())
    assert not (out / PROGRESS_FILE).exists()  # the folder is whole: a rerun starts again


@pytest.mark.slow
def test_the_reader_answers_from_the_whole_image_and_the_policy_crops(tmp_path):
    """With `reader`, the direct and blind rates are the reader's own answers (the same seeded askings
    through its engine), and the crop rates the policy's: a crop bar of 0 keeps a crop path wherever the
    policy solved one, if it beats a guess after the crop by the crop margin (asked only there)."""
    data, out = tmp_path / "data", tmp_path / "distilled"
    knobs = load_sft_config("configs/demo/cold-start.yaml").data.knobs()
    write_synthetic(data, 6, 7, knobs=knobs, image_format="png", progress=False)
    bars = Bars(direct=1.0, blind_margin=1.0, crop=0.0)
    summary = distill(
        COLD_START,
        str(data),
        str(out),
        n=8,
        engine="hf",
        budget=BUDGET,
        bars=bars,
        shuffle=False,
        reader=RL_START,
    )
    rates = [json.loads(line) for line in (out / "rates.jsonl").read_text().splitlines()]
    store = ImageStore(tmp_path / "store")
    records = list(read_prompts(data))
    for record in records:
        store.put_bytes(open_store(data).path(record.images[0]).read_bytes(), check=False)
    reader = build_engine(policy_spec(RL_START, store, "hf", BUDGET))
    try:
        ask = functools.partial(variants, n=8, shuffle=False)
        progress = Progress(tmp_path / "again", {"reader": RL_START})
        own, shares = read_whole(reader, records, store, BUDGET, ask, progress)
    finally:
        reader.close()
    assert [r["direct"] for r in rates] == [own["direct"][r.id] for r in records]
    assert [r["blind"] for r in rates] == [own["blind"][r.id] for r in records]
    assert summary["letter_shares"] == shares
    meta = json.loads((out / "dataset.json").read_text())
    assert (meta["model"], meta["reader"]) == (COLD_START, RL_START)
    paths = read_paths(out)
    asked = [r for r in rates if r["crop"] > 0]  # a crop bar of 0: wherever a crop solved one
    assert asked and all(r["crop_blind"] >= r["letter"] for r in asked)
    assert all(r["crop_blind"] is None for r in rates if r["crop"] == 0)
    kept = {r["id"] for r in asked if r["crop"] - r["crop_blind"] >= bars.crop_margin}
    assert {q for q, path in paths.items() if path.looks == 1} == kept


@pytest.mark.slow
def test_blind_crops_blur_every_crop_and_leave_the_whole_view(tmp_path):
    store = ImageStore(tmp_path / "store")
    digest = store.put_image(Image.effect_noise((448, 448), 64).convert("RGB"))
    spec = policy_spec(COLD_START, store, "hf", BUDGET)
    policy = build_engine(spec)
    try:
        blind = BlindCrops(policy, Tokenizer(engine_tokenizer(policy)), store, rollout_settings(spec))
        region = Box(0, 0, 224, 224)
        sharp = render_view(store.get(digest), region, BUDGET)
        assert (
            blind._render(digest, region).tobytes()
            == sharp.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)).tobytes()
        )
        assert blind._render(digest).tobytes() == render_view(store.get(digest), None, BUDGET).tobytes()
    finally:
        policy.close()


@pytest.mark.slow
def test_sft_trains_multi_turn_paths_with_their_crops(tmp_path):
    """A distilled folder written by hand (a direct answer, one crop, a crop of the crop, each at the true
    tag), then two SFT steps on it and the held-out first-turn score."""
    data, sft = tmp_path / "data", tmp_path / "distilled"
    knobs = load_sft_config("configs/demo/cold-start.yaml").data.knobs()
    write_synthetic(data, 3, 7, knobs=knobs, image_format="png", progress=False)
    records = list(read_prompts(data))
    paths = {}
    for looks, record in enumerate(records):
        tag = record.target_box  # original pixels of a 1024-px image seen at 224: x 0.21875
        cell = Box(tag.x1 - 64, tag.y1 - 64, tag.x2 + 64, tag.y2 + 64)  # the tag's grid cell (256 px)
        turns = [crop_request(Box(*(v * 224 / 1024 for v in cell)), 1)]
        regions = [cell]
        if looks == 2:  # then the tag itself, inside the cell's view (256 px seen at 224)
            turns.append(crop_request(Box(28, 28, 196, 196), 2))
            regions.append(Box(cell.x1 + 32, cell.y1 + 32, cell.x2 - 32, cell.y2 - 32))
        paths[record.id] = LookPath((*turns[:looks], answer_turn(record.answer)), tuple(regions[:looks]))
    write_subset(sft, records, open_store(data), {"max_crops": 2, "min_pixels": 50176, "max_pixels": 50176})
    write_paths(sft, paths)
    budget = PixelBudget(50176, 50176)
    examples = look_examples(str(sft), open_store(sft), budget, 2)
    assert [len(e.images) for e in examples] == [1, 2, 3]
    assert [sum(t for _, t in e.pieces) for e in examples] == [1, 2, 3]  # model turns trained

    config = tmp_path / "sft.yaml"
    config.write_text(
        f"name: looks\noutput_dir: {tmp_path / 'runs'}\nmodel: {{path: {COLD_START}}}\n"
        f"data: {{path: {sft}, eval_n: 1}}\nmin_pixels: 50176\nmax_pixels: 50176\n"
        "steps: 2\nbatch: 2\neval_every: 2\ncheckpoint_every: 2\ndirect_share: 0.25\n"
    )
    by_looks, shares, held_out = _examples(load_sft_config(config), budget)  # the crop of a crop held out
    assert [[len(e.images) for e in pool] for pool in by_looks] == [[1], [2]] and shares == (0.25, 0.75)
    assert main(["sft", "--config", str(config)]) == 0
    summary = json.loads((tmp_path / "runs" / "looks" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["look_accuracy"] in (0.0, 1.0)  # one held-out exchange
