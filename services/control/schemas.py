"""The control plane's request and response bodies (storage types are the registry's, services.runs)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mgpo.boxes import Box
from mgpo.checks import prompt_problems
from mgpo.records import PromptRecord, TaskKind

HASH = r"^[0-9a-f]{64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunCreate(_Body):
    config: dict[str, Any] = Field(
        default_factory=dict, description="a run config, as in the YAML files (name, model, rollout, ...)"
    )


class Scale(_Body):
    actors: int = Field(ge=0, le=1024, description="desired rollout actors")


class PromptIn(_Body):
    id: str | None = Field(None, max_length=200, description="default: a fresh id")
    kind: Literal["multiple_choice", "counting"] = "multiple_choice"
    question: str = Field(min_length=1, max_length=4000)
    images: list[Annotated[str, Field(pattern=HASH)]] = Field(
        min_length=1, max_length=8, description="content hashes from POST /runs/{name}/images"
    )
    answer: str = Field(min_length=1, max_length=200)
    choices: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=26)
    target_box: tuple[float, float, float, float] | None = Field(
        None, description="hidden true region in original pixels (evaluation only; never rewarded)"
    )

    @model_validator(mode="after")
    def _answer(self) -> PromptIn:
        # the rule the rollout loop needs (mgpo.checks); the image limit is the run's, checked by the route
        problems = prompt_problems(self.record(0), max_images=len(self.images))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def record(self, index: int) -> PromptRecord:
        return PromptRecord(
            id=self.id or f"api-{time.time_ns()}-{index}",
            kind=TaskKind(self.kind),
            question=self.question,
            images=tuple(self.images),
            answer=self.answer,
            choices=tuple(self.choices),
            target_box=Box(*self.target_box) if self.target_box is not None else None,
            source="api",
        )


class PromptsIn(_Body):
    prompts: list[PromptIn] = Field(min_length=1, max_length=1000)


class DatasetIn(_Body):
    path: str = Field(min_length=1, max_length=4096, description="a dataset folder (prompts.jsonl, images/)")


class RunOut(BaseModel):
    name: str
    status: str
    run_dir: str
    created: float
    driver_pid: int
    error: str
    version: int
    paused: bool
    stop_requested: bool
    state: dict[str, int]
    queue: dict[str, int]
    actors: dict[str, int]
    last_step: dict[str, Any] | None = None
    wait_share: float | None = None
    autoscale: str | None = Field(None, description="the autoscaler's last decision and why")


class Accepted(BaseModel):
    run: str
    detail: str
