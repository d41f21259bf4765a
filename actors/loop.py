"""The grounding-crop-answer loop: prompt records in, scored trajectory groups out.

Token-exact: every turn's prompt is the previous prompt ids + the sampled ids + the injected ids; no text is
ever decoded and re-encoded (the published MGPO code did, and trained on tokens it never sampled). The crop
is cut from the ORIGINAL image. Turns run batched: every live sample of every prompt in one engine call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from actors.engine import Completion, Engine, Prompt, Sampling
from mgpo.boxes import Box, BoxRule, Grounding, parse_box
from mgpo.crop import View, crop_region, full_region, render_view, view_input_size
from mgpo.images import ImageStore
from mgpo.masks import Segment, Source, build_sequence
from mgpo.records import PromptRecord, TaskKind, TrajectoryGroup, TrajectorySample
from mgpo.resize import PixelBudget, num_visual_tokens
from mgpo.rewards import (
    choice_reward,
    counting_reward,
    grounding_reward,
    grounding_score,
    last_boxed,
    with_direct_bonus,
)
from mgpo.templates import (
    VISION_TOKENS,
    Mode,
    Template,
    followup,
    opening_prompt,
)
from mgpo.turns import INVALID_CROP, crop_source


@dataclass(frozen=True)
class RolloutSettings:
    template: Template
    budget: PixelBudget
    n: int = 8
    max_turn_tokens: int = 256
    max_model_len: int = 8192
    temperature: float = 1.0
    top_p: float = 1.0
    box_rule: BoxRule = BoxRule.STRICT  # the rule that decides the crop and valid_grounding
    iou_reward: str = "continuous"  # multi-image grounding: "continuous" IoU or "thresholded" at 0.5
    format_weight: float = 0.5  # multi-image grounding: weight of the format reward
    invalid_crop: str = "original"  # multiturn: "original" again, or "end" the trajectory at reward 0
    direct_bonus: float = 0.0  # multiturn: added to a right answer given without asking for a crop


@dataclass
class _Sample:
    """One trajectory while it is being rolled out."""

    record: PromptRecord
    segments: list[Segment]
    views: list[View]
    regions: list[Box]  # where each view sits in its original
    images: list[Image.Image]  # rendered views, for the engine
    texts: list[str] = field(default_factory=list)
    boxes_valid: list[bool] = field(default_factory=list)
    boxes_lenient: list[bool] = field(default_factory=list)  # the same boxes by the lenient rule
    answer_iou: float | None = None  # multi-image grounding
    right_image: bool | None = None
    answer_image: int | None = None
    answer_box: Box | None = None
    finish_reason: str = ""
    done: bool = False
    keep: bool = True  # False: masked out of the loss (over turns / over length)
    reward: float = 0.0

    @property
    def ids(self) -> list[int]:
        return [t for s in self.segments for t in s.ids]


class Tokenizer:
    """The few tokenizer facts the loop needs (encode without specials, decode, <|im_end|>)."""

    def __init__(self, hf_tokenizer: object) -> None:
        self._tok = hf_tokenizer
        self.im_end = hf_tokenizer.convert_tokens_to_ids("<|im_end|>")  # type: ignore[attr-defined]
        self.vision = tuple(hf_tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))  # type: ignore[attr-defined]

    def encode(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False).input_ids  # type: ignore[operator]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)  # type: ignore[attr-defined]


class Loop:
    """Rolls out prompt records with one engine; the mode's turn logic is chosen once, here."""

    def __init__(
        self,
        engine: Engine,
        tokenizer: Tokenizer,
        store: ImageStore,
        settings: RolloutSettings,
        actor: str = "",
    ) -> None:
        self.engine, self.tok, self.store, self.settings, self.actor = (
            engine,
            tokenizer,
            store,
            settings,
            actor,
        )
        self._originals: dict[str, Image.Image] = {}  # per rollout call: decoded originals
        self._rendered: dict[tuple[str, Box | None], Image.Image] = {}  # per rollout call: rendered views
        self._after_turn: Callable[[_Sample, Completion, int], None] = {
            Mode.MGPO: self._mgpo_turn,
            Mode.GRPO: self._final_turn,
            Mode.MULTITURN: self._multiturn_turn,
        }[settings.template.mode]

    def rollout(
        self, records: Sequence[PromptRecord], seed: int | None = None, group_ids: Sequence[str] | None = None
    ) -> list[TrajectoryGroup]:
        """n samples of each record, run to the end, scored; one group per record, in record order.

        `group_ids` name the groups (the queue derives them from prompt message ids, so a redelivered
        prompt yields the same id); random ids otherwise.
        """
        start = time.perf_counter()
        self._originals.clear()
        self._rendered.clear()
        version = self.engine.version
        n = self.settings.n
        samples = [s for r in records for s in self._start(r, n)]
        # multiple choice follows the mode's template; counting and grounding are single-turn tasks
        choice = [s for s in samples if s.record.kind is TaskKind.MULTIPLE_CHOICE]
        self._run(choice, self._after_turn, self.settings.template, seed)
        others = [s for s in samples if s.record.kind is not TaskKind.MULTIPLE_CHOICE]
        self._run(others, self._final_turn, None, seed)
        seconds = time.perf_counter() - start
        ids = (
            list(group_ids) if group_ids is not None else [f"{r.id}:{uuid.uuid4().hex[:12]}" for r in records]
        )
        return [
            self._group(ids[i], records[i], samples[i * n : (i + 1) * n], version, seconds)
            for i in range(len(records))
        ]

    def _run(
        self,
        samples: list[_Sample],
        after_turn: Callable[[_Sample, Completion, int], None],
        template: Template | None,
        seed: int | None,
    ) -> None:
        for sample in samples:
            self._check_length(sample)  # a prompt that cannot fit is masked before any engine call
        turn = 0
        while live := [s for s in samples if not s.done]:
            completions = self.engine.generate(
                [Prompt(s.ids, s.images) for s in live], self._sampling(template, turn, seed)
            )
            for sample, (completion,) in zip(live, completions, strict=True):
                self._record_reply(sample, completion)
                after_turn(sample, completion, turn)
                if not sample.done:
                    self._check_length(sample)
            turn += 1

    def _sampling(self, template: Template | None, turn: int, seed: int | None) -> Sampling:
        # a turn that may end in a crop request stops at the closing JSON fence; a final turn at <|im_end|>
        may_crop = template is not None and (template.mode is Mode.MULTITURN or turn < template.max_crops)
        return Sampling(
            n=1,
            max_tokens=self.settings.max_turn_tokens,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            stop=template.stop if may_crop else (),  # type: ignore[union-attr]
            stop_ids=(self.tok.im_end,),
            banned_ids=self.tok.vision,
            seed=None if seed is None else seed + 1_000_003 * turn,
        )

    def _render(self, digest: str, region: Box | None = None) -> Image.Image:
        """A view (the original, or its `region`) rendered to the budget once per rollout call: the n samples
        of a prompt share the whole image, and a crop where their boxes agree. Resizing is most of the loop's
        own cost: uncached, the crops took 29% of an MGPO rollout on the demo's batches (cProfile)."""
        key = (digest, region)
        if key not in self._rendered:
            self._rendered[key] = render_view(self._original(digest), region, self.settings.budget)
        return self._rendered[key]

    def original_size(self, digest: str) -> tuple[int, int]:
        """(width, height) of an original (decoded at most once per rollout call)."""
        return self._original(digest).size

    def _original(self, digest: str) -> Image.Image:
        if digest not in self._originals:
            self._originals[digest] = self.store.get(digest)
        return self._originals[digest]

    def _start(self, record: PromptRecord, n: int) -> list[_Sample]:
        """The n samples of a record, sharing one tokenised prompt and one rendering of each original."""
        originals = [self._original(h) for h in record.images]
        prompt = Segment(Source.PROMPT, self.tok.encode(opening_prompt(record, self.settings.template)))
        return [
            _Sample(
                record=record,
                segments=[prompt],
                views=[View(h) for h in record.images],
                regions=[full_region(o) for o in originals],
                images=[self._render(h) for h in record.images],
            )
            for _ in range(n)
        ]

    def _record_reply(self, sample: _Sample, completion: Completion) -> None:
        sample.segments.append(Segment(Source.GENERATED, completion.ids, completion.logprobs))
        sample.texts.append(self.tok.decode(completion.ids))

    def _input_size(self, sample: _Sample, index: int) -> tuple[int, int]:
        original = self._original(sample.views[index].image)
        return view_input_size(original.size, sample.views[index].region, self.settings.budget)

    def _add_view(self, sample: _Sample, source: int, grounding: Grounding) -> bool:
        """Append the crop the grounding names (from view `source`), or the original again; True if a crop."""
        original = self._original(sample.views[source].image)
        region = crop_region(
            grounding, self._input_size(sample, source), sample.regions[source], original.size
        )
        sample.views.append(View(sample.views[source].image, region))
        sample.regions.append(region if region is not None else full_region(original))
        sample.images.append(self._render(sample.views[source].image, region))
        return region is not None

    def _inject(self, sample: _Sample, completion: Completion, valid: bool) -> None:
        record = sample.record
        closed = bool(completion.ids) and completion.ids[-1] == self.tok.im_end
        text = followup(
            self.settings.template, record.question, record.choices, valid, closed, len(sample.views)
        )
        sample.segments.append(Segment(Source.INJECTED, self.tok.encode(text)))

    def _mgpo_turn(self, sample: _Sample, completion: Completion, turn: int) -> None:
        if turn > 0:
            self._final_turn(sample, completion, turn)
            return
        grounding = self._ground(sample, sample.texts[-1], 0)
        # invalid: the original again, as the paper's template does (MGPO sec. 3)
        valid = self._add_view(sample, 0, grounding)
        self._inject(sample, completion, valid)

    def _multiturn_turn(self, sample: _Sample, completion: Completion, turn: int) -> None:
        reply = sample.texts[-1]
        if last_boxed(reply) is not None or completion.finish_reason == "length":
            self._final_turn(sample, completion, turn)
            return
        if len(sample.boxes_valid) >= self.settings.template.max_crops:
            # asked for more crops than allowed: masked out of the loss, not punished
            self._finish(sample, "over_turn", keep=False)
            return
        number = crop_source(reply, len(sample.views))
        source = 0 if number is None else number - 1
        # our own format ({"bbox_2d": ..., "image": N}, no list, no label): read by the lenient rule
        grounding = parse_box(reply, self._input_size(sample, source), BoxRule.LENIENT)
        if number is None:
            grounding = Grounding(grounding.box, False, "named an image that does not exist")
        sample.boxes_valid.append(grounding.valid)
        sample.boxes_lenient.append(grounding.valid)
        if not grounding.valid and self.settings.invalid_crop == "end":
            self._finish(sample, INVALID_CROP, keep=True)  # reward stays 0: the penalty
            return
        valid = self._add_view(sample, source, grounding)
        self._inject(sample, completion, valid)

    def _final_turn(self, sample: _Sample, completion: Completion, turn: int) -> None:
        record = sample.record
        reply = sample.texts[-1]
        if record.kind is TaskKind.MULTIPLE_CHOICE:
            sample.reward = choice_reward(reply, record.answer, record.choices)
            if self.settings.template.mode is Mode.MULTITURN:
                asked = len(sample.texts) > 1
                sample.reward = with_direct_bonus(sample.reward, asked, self.settings.direct_bonus)
            if self.settings.template.mode is Mode.GRPO:
                self._ground(sample, reply, 0)
        elif record.kind is TaskKind.COUNTING:
            sample.reward = counting_reward(reply, int(record.answer)).reward
        else:
            sizes = [self._input_size(sample, i) for i in range(len(sample.views))]
            result = grounding_reward(reply, int(record.answer), record.target_box or Box(0, 0, 0, 0), sizes)
            sample.reward = grounding_score(result, self.settings.iou_reward, self.settings.format_weight)
            sample.answer_iou, sample.right_image = result.iou, result.image == int(record.answer)
            if result.box is not None:
                sample.answer_image, sample.answer_box = result.image, result.box
            sample.boxes_valid.append(result.iou > 0)
            sample.boxes_lenient.append(result.iou > 0)
        self._finish(sample, completion.finish_reason, keep=True)

    def _ground(self, sample: _Sample, reply: str, source: int) -> Grounding:
        """The box of `reply` in view `source` by the configured rule; both rules are recorded."""
        size = self._input_size(sample, source)
        grounding = parse_box(reply, size, self.settings.box_rule)
        sample.boxes_valid.append(grounding.valid)
        sample.boxes_lenient.append(parse_box(reply, size, BoxRule.LENIENT).valid)
        return grounding

    def _check_length(self, sample: _Sample) -> None:
        """Mask (not punish) a trajectory whose next turn could not fit: each image's one placeholder id
        expands to its real visual tokens in the engine (up to 1,280 at the paper's budget)."""
        expanded = sum(num_visual_tokens(*image.size) - 1 for image in sample.images)
        if len(sample.ids) + expanded + self.settings.max_turn_tokens > self.settings.max_model_len:
            self._finish(sample, "over_length", keep=False)

    @staticmethod
    def _finish(sample: _Sample, reason: str, keep: bool) -> None:
        sample.done, sample.finish_reason, sample.keep = True, reason, keep

    def _group(
        self, group_id: str, record: PromptRecord, samples: list[_Sample], version: int, seconds: float
    ) -> TrajectoryGroup:
        out = []
        for s in samples:
            seq = build_sequence(s.segments, keep=s.keep)
            out.append(
                TrajectorySample(
                    ids=seq.ids,
                    loss_mask=seq.loss_mask,
                    logprobs=seq.logprobs,
                    views=tuple(s.views),
                    reward=s.reward,
                    valid_grounding=bool(s.boxes_valid) and all(s.boxes_valid),
                    turns=len(s.texts),
                    finish_reason=s.finish_reason,
                    text=tuple(s.texts),
                    sampled_tokens=sum(len(x.ids) for x in s.segments if x.source is Source.GENERATED),
                    valid_grounding_lenient=bool(s.boxes_lenient) and all(s.boxes_lenient),
                    answer_iou=s.answer_iou,
                    right_image=s.right_image,
                    answer_image=s.answer_image,
                    answer_box=s.answer_box,
                )
            )
        return TrajectoryGroup(
            id=group_id,
            prompt_id=record.id,
            policy_version=version,
            samples=tuple(out),
            min_pixels=self.settings.budget.min_pixels,
            max_pixels=self.settings.budget.max_pixels,
            actor=self.actor,
            timings={"rollout_s": seconds},
        )
