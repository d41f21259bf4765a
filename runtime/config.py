"""The configs: a run (with its autoscale section), an SFT cold start, the control plane (`mgpo serve`). Each is
one YAML file, validated once at load time, with every problem reported together.

Each role later receives only the fields it uses (ActorSpec, LossConfig, EngineConfig are built from here).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mgpo.boxes import BoxRule
from mgpo.checks import prompt_image_limit
from mgpo.data.synth import SynthKnobs
from mgpo.images import MAX_IMAGE_PIXELS
from mgpo.resize import FACTOR
from mgpo.templates import Mode, template_for


class ConfigError(ValueError):
    """A config that cannot run, with every problem listed."""


class _Section(BaseModel):
    # no NaN or Infinity anywhere: a size or a rate of Infinity is a typo, never a setting
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: object, info: ValidationInfo) -> object:
        # YAML reads yes/no/on/off as booleans, and pydantic would take `zero_stage: yes` as 1
        if isinstance(value, bool) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(
                f"{value} is a boolean here (YAML reads yes/no/on/off as booleans): write a number"
            )
        return value


def _takes_bool(annotation: object) -> bool:
    if annotation is bool:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(v, bool) for v in get_args(annotation))
    return any(_takes_bool(a) for a in get_args(annotation))


# a Ray resource amount: 0 or more, and finite (negative amounts made Ray refuse the actor at placement)
Amount = Annotated[float, Field(ge=0.0, le=1e6)]


class ModelConfig(_Section):
    path: str = Field("tiny", description="checkpoint folder, or 'tiny' to build the tiny model for the run")
    tiny_size: Literal["xs", "s", "m"] = "xs"
    tiny_tokenizer: Literal["small", "qwen"] = "small"
    dtype: Literal["fp32", "bf16"] = "fp32"
    warmup_steps: int = Field(
        0,
        ge=0,
        description="tiny only: teacher-force the reply FORMAT (random box, random letter) so RL has signal",
    )
    warmup_prompts: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _warmup(self) -> ModelConfig:
        if self.warmup_steps and self.path != "tiny":
            raise ValueError(
                "warmup_steps is for the random tiny model; a real checkpoint already has the format"
            )
        return self


class RolloutConfig(_Section):
    engine: Literal["vllm", "hf"] = "vllm"
    mode: Mode = Mode.MGPO
    n: int = Field(8, ge=2, le=256, description="samples per prompt; GRPO needs at least 2 to compare")
    temperature: float = Field(1.0, gt=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_turn_tokens: int = Field(256, ge=8, le=131_072)
    max_model_len: int = Field(8192, ge=256, le=1_048_576)
    max_crops: int = Field(1, ge=1, le=16, description="multiturn only: crops allowed per trajectory")
    min_pixels: int = Field(256 * FACTOR * FACTOR, ge=FACTOR * FACTOR, le=MAX_IMAGE_PIXELS)
    max_pixels: int = Field(1280 * FACTOR * FACTOR, ge=FACTOR * FACTOR, le=MAX_IMAGE_PIXELS)
    actors: int = Field(1, ge=1, le=1024, description="rollout actors at start (more can join later)")
    gpus_per_actor: float = Field(
        0.0, ge=0.0, le=64.0, description="Ray GPUs each rollout actor reserves (0 on CPU)"
    )
    tensor_parallel: int = Field(
        1, ge=1, le=64, description="GPUs each actor's vLLM engine shards the model over (vLLM only)"
    )
    cpu_affinity: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="CPU cores the actors run on, e.g. [0] (a shared machine); empty: wherever the OS puts them",
    )
    stream_weights: bool = Field(
        False,
        description="apply each broadcast bucket as it lands: one bucket of extra memory instead of a second "
        "copy of the weights; a broadcast failing midway then stops the actor (it is replaced)",
    )
    ray_resources: dict[str, Amount] = Field(
        default_factory=dict,
        description="custom Ray resources each actor needs (pins actors to a worker group)",
    )
    batch_prompts: int = Field(4, ge=1, le=4096)
    iou_reward: Literal["continuous", "thresholded"] = Field(
        "continuous", description="multi-image grounding's accuracy reward: the IoU, or 1 at IoU >= 0.5"
    )
    format_weight: float = Field(
        0.5,
        ge=0.0,
        le=10.0,
        description="multi-image grounding: weight of the <think>/<answer> format reward",
    )
    invalid_crop: Literal["original", "end"] = Field(
        "original",
        description="multiturn: what a crop request without a valid box gets: the original again (the "
        "paper's rule for its two turns), or the end of the trajectory at reward 0, kept in the loss (a format "
        "penalty, so a malformed request is never a free extra turn)",
    )
    direct_bonus: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="multiturn: added to the reward of a right answer given without asking for a crop (an "
        "incentive to answer from the shrunk image when it suffices: fewer image tokens); not in the paper",
    )
    box_hint: bool = Field(
        False,
        description="not in the paper: show the box's JSON shape after the turn-1 text (for a model that does "
        "not know Qwen's grounding format from pre-training; mgpo and grpo modes)",
    )
    box_rule: BoxRule = Field(
        BoxRule.STRICT,
        description="which replies carry a box: strict = the MGPO reference code's rule (the paper's "
        "valid-grounding ratio), lenient = also unlabelled, bare or Qwen2-form boxes",
    )

    @property
    def prompt_image_limit(self) -> int:
        """Images per prompt the rollout engine is started with: a prompt with more is refused at the door."""
        return prompt_image_limit(template_for(self.mode, self.max_crops).max_crops)

    @model_validator(mode="after")
    def _budget(self) -> RolloutConfig:
        if self.box_hint and self.mode is Mode.MULTITURN:
            raise ValueError("box_hint is for the mgpo and grpo modes: multiturn states its own JSON")
        if self.mode is not Mode.MULTITURN and (self.invalid_crop == "end" or self.direct_bonus):
            raise ValueError(
                "invalid_crop 'end' and direct_bonus are for the multiturn mode (the paper's two turns always "
                "ask once and show the original again after an invalid box)"
            )
        if self.tensor_parallel > 1 and (self.engine != "vllm" or self.gpus_per_actor < self.tensor_parallel):
            raise ValueError(
                f"tensor_parallel {self.tensor_parallel} needs the vllm engine and gpus_per_actor >= "
                f"{self.tensor_parallel} (it is {self.gpus_per_actor:g}): each shard is one GPU"
            )
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        turns = (self.max_crops if self.mode is Mode.MULTITURN else 1) + 1
        # the original and one image per crop, each up to max_pixels / 28^2 visual tokens
        image_tokens = turns * (self.max_pixels // (FACTOR * FACTOR))
        if turns * self.max_turn_tokens + image_tokens >= self.max_model_len:
            raise ValueError(
                f"{turns} turns x max_turn_tokens {self.max_turn_tokens} and {turns} images of up to "
                f"{image_tokens // turns} visual tokens leave no room for the prompt in max_model_len "
                f"{self.max_model_len}: raise max_model_len or lower max_turn_tokens (or max_pixels)"
            )
        return self


class LoraSection(_Section):
    """LoRA adapters (peft) instead of a full fine-tune: only the adapters train."""

    rank: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32.0, gt=0.0, le=65536.0, description="scaling: the update is alpha / rank x BA")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        min_length=1,
        description="projection names that get adapters",
    )
    freeze_vision: bool = Field(
        True, description="adapters on the language model only (the vision tower frozen)"
    )
    modules_to_save: tuple[str, ...] = Field(
        (),
        description="modules trained in full beside the adapters (peft's name), e.g. embed_tokens, lm_head: "
        "a base model with no language yet (the random tiny one) has nothing for adapters to adapt",
    )

    @model_validator(mode="after")
    def _names(self) -> LoraSection:
        names = self.target_modules + self.modules_to_save
        bad = [m for m in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m)]
        if bad:
            raise ValueError(f"lora module names {bad}: module names are identifiers like q_proj")
        return self


class LearnerConfig(_Section):
    lr: float = Field(1e-6, gt=0.0, le=1e-2)
    groups_per_step: int = Field(16, ge=1, description="trajectory groups (prompts) per optimizer step")
    clip: float = Field(0.2, gt=0.0, lt=1.0)
    kl_coef: float = Field(0.01, ge=0.0, description="0 disables the reference model")
    entropy_coef: float = Field(0.001, ge=0.0)
    is_cap: float = Field(2.0, ge=1.0, description="truncation of the behaviour-policy importance weight")
    scale_rewards: bool = Field(
        True,
        description="divide each group's advantages by its reward std (GRPO, the paper's); false: r - mean "
        "only (Dr. GRPO), so a small reward difference such as rollout.direct_bonus stays small",
    )
    decision_weight: float = Field(
        1.0,
        gt=0.0,
        le=1000.0,
        description="weight of each turn's first generated token in the loss, the one that decides between "
        "answering and cropping in the multiturn mode (as Thinkless' decoupled GRPO weighs its mode token)",
    )
    max_grad_norm: float = Field(1.0, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW's, as the MGPO reference trains")
    ppo_epochs: int = Field(
        1, ge=1, le=64, description="passes over each step's groups (the clip binds past 1)"
    )
    minibatches: int = Field(
        1, ge=1, le=4096, description="optimizer updates per pass: the step's groups split this many ways"
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(
        1,
        description="DeepSpeed ZeRO stage: 1 shards optimizer states over the ranks, 2 also gradients, 3 also "
        "weights",
    )
    world_size: int = Field(
        1, ge=1, le=1024, description="learner ranks (data parallel), each a process with `gpus` GPUs"
    )
    cpu_affinity: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="CPU cores the learner's ranks run on, e.g. [1] (a shared machine); empty: anywhere",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in backward: less memory for ~1/3 more compute"
    )
    lora: LoraSection | None = Field(
        None, description="LoRA adapters train and the base stays frozen (it is also the KL reference)"
    )
    micro_batch: int = Field(
        0,
        ge=0,
        le=4096,
        description="samples per forward/backward pass; 0: a whole group (rollout.n) at once",
    )
    offload_optimizer: bool = Field(
        False, description="AdamW states and step in CPU memory (ZeRO-Offload; needs zero_stage >= 1)"
    )
    sync_every: int = Field(1, ge=1, description="broadcast weights every this many optimizer steps")
    max_staleness: int = Field(
        1, ge=0, description="drop groups more than this many versions old; 0 = on-policy"
    )
    checkpoint_every: int = Field(50, ge=1)
    gpus: float = Field(0.0, ge=0.0, le=64.0, description="Ray GPUs each learner rank reserves (0 on CPU)")
    ray_resources: dict[str, Amount] = Field(
        default_factory=dict, description="custom Ray resources the learner needs (pins it to a worker group)"
    )
    keep_checkpoints: int = Field(2, ge=1, le=1000)
    sync_timeout_s: float = Field(
        120.0, gt=0.0, le=86_400.0, description="a broadcast member silent this long is dropped"
    )
    bucket_mb: int = Field(64, ge=1, le=65_536, description="weight broadcast bucket size")
    broadcast_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="auto: NCCL when the learner has a GPU, else gloo"
    )
    step_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="how long one wait for trajectory groups lasts before the driver looks around",
    )

    @model_validator(mode="after")
    def _staleness(self) -> LearnerConfig:
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError(
                "offload_optimizer needs zero_stage >= 1: ZeRO-Offload moves ZeRO's optimizer shards"
            )
        if self.lora is not None and self.zero_stage == 3:
            raise ValueError(
                "lora with zero_stage 3: adapters shard poorly and the frozen base is gathered at "
                "every pass; use zero_stage 1 or 2 (the base has no gradients or optimizer states)"
            )
        if self.lora is not None and self.lora.dropout > 0:
            raise ValueError(
                f"learner.lora.dropout {self.lora.dropout}: the RL step runs without dropout (its old and "
                "new log-probs must be the same function); set it to 0"
            )
        if self.world_size > 1 and self.zero_stage == 0:
            raise ValueError(
                "zero_stage 0 with world_size > 1: the ranks' gradients are reduced by ZeRO here; use "
                "zero_stage 1, 2 or 3"
            )
        if self.minibatches > self.groups_per_step:
            raise ValueError(
                f"minibatches {self.minibatches} > groups_per_step {self.groups_per_step}: an update needs at "
                "least one group; lower minibatches"
            )
        if self.max_staleness < self.sync_every - 1:
            raise ValueError(
                f"max_staleness {self.max_staleness} < sync_every - 1 = {self.sync_every - 1}: actors hold weights "
                f"up to sync_every - 1 versions old, so every group would be dropped; raise max_staleness or "
                f"lower sync_every"
            )
        return self


class QueueConfig(_Section):
    redis_url: str | None = Field(None, description="None: start a private Redis server for the run")
    max_len: int = Field(10_000, ge=1, le=10_000_000)
    claim_idle_ms: int = Field(
        60_000, ge=100, le=86_400_000, description="reclaim a dead actor's prompts after this long"
    )
    max_deliveries: int = Field(
        3,
        ge=1,
        le=100,
        description="a prompt delivered this often without completing goes to the dead letters",
    )


class DataConfig(_Section):
    path: str | None = Field(None, description="dataset folder; None: synthesize one into the output dir")
    synth_n: int = Field(256, ge=1, le=1_000_000)
    synth_seed: int = 0
    epochs: int = Field(1, ge=1, le=100_000)


class MetricsConfig(_Section):
    enabled: bool = Field(True, description="Prometheus endpoints on the learner and every rollout actor")
    learner_port: int = Field(0, ge=0, le=65535, description="0: any free port (found via /metrics/targets)")
    actor_port: int = Field(
        0, ge=0, le=65535, description="0: any free port; a fixed one is tried upwards when taken (pods)"
    )
    recent: int = Field(200, ge=1, le=10_000, description="trajectory groups kept in Redis for the viewer")


class AutoscaleConfig(_Section):
    """The autoscaling policy's bounds and thresholds (services.autoscale.decide)."""

    enabled: bool = False
    min_actors: int = Field(1, ge=0)
    max_actors: int = Field(8, ge=1, le=1024)
    starving_above: float = Field(0.5, gt=0.0, lt=1.0, description="learner wait share that adds an actor")
    surplus_below: float = Field(
        0.1, ge=0.0, lt=1.0, description="wait share under which a surplus removes one"
    )
    surplus_groups: float = Field(
        2.0, gt=0.0, description="groups waiting, in learner steps, that is a surplus"
    )
    cooldown_s: float = Field(120.0, ge=0.0, le=86_400.0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscaleConfig:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors {self.min_actors} > max_actors {self.max_actors}")
        if self.surplus_below >= self.starving_above:
            raise ValueError(
                f"surplus_below {self.surplus_below} must be under starving_above {self.starving_above}, "
                "or the policy would add and remove actors on the same signal"
            )
        return self


class RunConfig(_Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    output_dir: str = "runs"
    seed: int = 0
    ray_address: str | None = Field(
        None, description="None: start a local Ray; 'auto' or host:port: join one"
    )
    steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (None: the epochs)"
    )
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    learner: LearnerConfig = LearnerConfig()
    queue: QueueConfig = QueueConfig()
    data: DataConfig = DataConfig()
    metrics: MetricsConfig = MetricsConfig()
    autoscale: AutoscaleConfig = AutoscaleConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def data_dir(self) -> Path:
        """The dataset folder: the configured one, or the synthetic set written into the run folder."""
        return Path(self.data.path) if self.data.path is not None else self.run_dir / "data"


class ServeConfig(_Section):
    """`mgpo serve`: the control plane. Runs it creates use its Redis, Ray and state folder."""

    state_dir: str = Field("runs", description="run folders (and the embedded Redis when redis_url is unset)")
    redis_url: str | None = Field(None, description="None: an embedded Redis with AOF in state_dir/redis")
    ray_address: str | None = Field(None, description="None: each run starts a local Ray; 'auto': join one")
    auth_reads: bool = Field(False, description="True: GET endpoints need the bearer token too")
    max_upload_mb: int = Field(32, ge=1, le=1024, description="largest request body accepted")
    run_defaults: str | None = Field(
        None, description="a run config YAML that posted configs are merged over"
    )
    autoscale_interval_s: float = Field(
        15.0, gt=0.0, description="how often runs' actor counts are revisited"
    )
    dataset_roots: tuple[str, ...] = Field(
        (".",), description="runs and POST /runs/{name}/datasets read data only from folders under these"
    )
    model_roots: tuple[str, ...] = Field(
        (".",), description="a run created over the API loads its model only from under these (or 'tiny')"
    )


class SFTDataConfig(_Section):
    """Synthetic splits for the cold start: images are generated from (seed, index); tags give the examples.
    Or `path`: an SFT dataset folder (mgpo data cot) whose last `eval_n` records are held out."""

    path: str | None = Field(None, description="an SFT dataset folder (mgpo data cot) instead of the skills")
    train_seed: int = 100
    train_n: int = Field(256, ge=1, description="training images (each gives 2 examples per tag)")
    eval_seed: int = 200
    eval_n: int = Field(16, ge=1)
    kinds: tuple[Literal["glyph", "stripes", "dots"], ...] = ("stripes", "dots")
    options: int = Field(4, ge=2, le=5)
    shuffle_options: bool = True
    stripe_width: int = Field(1, ge=1)
    stripe_period: int = Field(3, ge=2)
    min_side: int = Field(1536, ge=256)
    max_side: int = Field(2048, ge=256)
    tag_size: int = Field(64, ge=24, description="tag side in original pixels")
    clutter: int = Field(150, ge=0)
    grid: int = Field(0, ge=0, le=16, description="0: tags anywhere; G: centred in cells of a G x G grid")
    position_cue: bool = Field(False, description="background ramps that show where a patch is")
    task: Literal["choice", "looks"] = Field(
        "choice",
        description="choice: tags to find and read; looks: panels and tags at 0, 1, 2 zooms (with grid)",
    )
    looks: tuple[int, ...] = Field((0, 1, 2), description="task looks: the crops its questions need")
    look0_factor: int = Field(
        1,
        ge=1,
        le=8,
        description="task looks: look0 stripes this many times coarser (2: plain in the whole view)",
    )
    look0_alone: bool = Field(
        False,
        description="task looks: a look0 question's distractor panels striped finely (grey in the whole view)",
    )

    def knobs(self) -> SynthKnobs:
        return SynthKnobs(
            min_side=self.min_side,
            max_side=self.max_side,
            tag_size=self.tag_size,
            clutter=self.clutter,
            grid=self.grid,
            position_cue=self.position_cue,
            kinds=tuple(self.kinds),
            options=self.options,
            shuffle_options=self.shuffle_options,
            stripe_width=self.stripe_width,
            stripe_period=self.stripe_period,
            looks=tuple(self.looks),
            look0_factor=self.look0_factor,
            look0_alone=self.look0_alone,
        )


class SFTConfig(_Section):
    """`mgpo sft`: grounding and recognition skills, never the combined task (mgpo.cold_start)."""

    name: str = Field("sft", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    output_dir: str = "runs"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    data: SFTDataConfig = SFTDataConfig()
    min_pixels: int = Field(64 * FACTOR * FACTOR, ge=FACTOR * FACTOR)
    max_pixels: int = Field(256 * FACTOR * FACTOR, ge=FACTOR * FACTOR)
    steps: int = Field(300, ge=1)
    batch: int = Field(8, ge=1, description="examples per optimizer step (skills mixed)")
    grounding_share: float = Field(
        0.5, gt=0.0, lt=1.0, description="share of grounding examples in each batch (the rest: recognition)"
    )
    direct_share: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="a distilled folder (mgpo data distill): the share of each batch from its direct-answer "
        "paths, the rest from its crop paths (none: each path as often as any other)",
    )
    decision_weight: float = Field(
        1.0,
        gt=0.0,
        le=1000.0,
        description="weight of each model turn's first token in the loss (learner.decision_weight's twin): a "
        "distilled path's decision is one token against the dozens that carry it out, so a mean over all "
        "of them can be low while the decision is still a coin flip",
    )
    format_share: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of each batch in turn-1 format examples (mgpo.cold_start.format_example; 0: none)",
    )
    format_box_share: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="of the format examples, the share answered with a (random tag's) box",
    )
    format_box_on: Literal["any", "target"] = Field(
        "any",
        description="where a format example's box goes: any tag, at random (where to look is left to RL), or "
        "the tag the question is about (the model knows where; RL teaches it to box: the paper's premise)",
    )
    format_in_panel: bool = Field(
        False,
        description="task looks: for a look2 sample, one more format example in its red panel's own view "
        "(mgpo.cold_start.panel_view): the turn-1 prompt a second look is asked in",
    )
    lr: float = Field(1e-3, gt=0.0, le=1.0, description="peak learning rate")
    lr_warmup_steps: int = Field(0, ge=0, description="linear warm-up from lr * lr_min_ratio to `lr`")
    lr_decay_steps: int = Field(0, ge=0, description="the last steps: cosine decay to lr * lr_min_ratio")
    lr_min_ratio: float = Field(0.05, ge=0.0, le=1.0)
    box_cells: int = Field(
        2, ge=2, le=8, description="taught boxes: cells of the 28-px grid a side (MGPO wants > 28 px)"
    )
    grounding_frames: tuple[Literal["red", "blue", "green", "orange", "purple"], ...] | None = Field(
        None, description="ground only tags with these frame colours (None: every tag)"
    )
    whole_view_read_frames: tuple[Literal["red", "blue", "green", "orange", "purple"], ...] | None = Field(
        None,
        description="task looks: read a look0 panel in the whole view only for these frame colours (None: "
        "every panel); each panel alone in a crop is read whatever its frame",
    )
    close_up_scale: tuple[float, float] = Field(
        (1.8, 3.2), description="close-up side / tag side, drawn uniformly"
    )
    product_wording: float = Field(
        0.5, ge=0.0, le=1.0, description="share of grounding examples in the MGPO turn-1 wording"
    )
    eval_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    lora: LoraSection | None = Field(None, description="LoRA adapters; absent: a full fine-tune")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @model_validator(mode="after")
    def _checks(self) -> SFTConfig:
        if self.model.warmup_steps:
            raise ValueError(
                "model.warmup_steps is the RL run's format warm start; the cold start replaces it"
            )
        if self.lr_warmup_steps + self.lr_decay_steps > self.steps:
            raise ValueError(
                f"lr_warmup_steps + lr_decay_steps ({self.lr_warmup_steps} + {self.lr_decay_steps}) "
                f"exceed steps ({self.steps})"
            )
        if not 1.0 <= self.close_up_scale[0] <= self.close_up_scale[1]:
            raise ValueError(f"close_up_scale must be 1 <= low <= high, got {self.close_up_scale}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")
        if self.format_in_panel and self.data.task != "looks":
            raise ValueError("format_in_panel is for data.task: looks (a look2 sample's red panel)")
        self.data.knobs()  # the synthetic set's own checks (sides, grid room, tag fit)
        return self


def _describe(errors: list[Any]) -> str:
    lines = []
    for e in errors:
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = f" (got {e['input']!r})" if e["type"] != "missing" and not isinstance(e["input"], dict) else ""
        lines.append(f"  {where}: {e['msg']}{got}")
    return "\n".join(lines)


Section = TypeVar("Section", bound=BaseModel)


def _validate(raw: object, model: type[Section], source: str) -> Section:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        errors = err.errors() + _hidden_errors(raw, model, err.errors())
        raise ConfigError(f"{source}: {len(errors)} problem(s):\n{_describe(errors)}") from err


def _hidden_errors(raw: dict, model: type[BaseModel], errors: list[Any]) -> list[Any]:
    """The cross-field problems that field errors hid: pydantic runs a section's own checks (min <= max, ...)
    only once its fields are valid, so validate again without the bad fields and keep what is new."""
    pruned = copy.deepcopy(raw)
    for error in errors:
        *parents, leaf = error["loc"] or ("",)
        section = pruned
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and not isinstance(section.get(leaf), dict):
            section.pop(leaf, None)
    try:
        model.model_validate(pruned)
    except ValidationError as again:
        seen = {(tuple(e["loc"]), e["msg"]) for e in errors}
        return [
            e for e in again.errors() if (tuple(e["loc"]), e["msg"]) not in seen and e["type"] != "missing"
        ]
    return []


def parse_config(raw: object, source: str = "config") -> RunConfig:
    return _validate(raw, RunConfig, source)


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read and validate a YAML run config; ConfigError lists every problem with its field."""
    return parse_config(_read_yaml(Path(path)), str(path))


def load_sft_config(path: str | os.PathLike[str]) -> SFTConfig:
    return _validate(_read_yaml(Path(path)), SFTConfig, str(path))


def load_serve_config(path: str | os.PathLike[str] | None) -> ServeConfig:
    raw = _read_yaml(Path(path)) if path is not None else {}
    return _validate(raw, ServeConfig, str(path or "serve config"))
