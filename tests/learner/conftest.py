import dataclasses

from actors.hf_engine import HFEngine
from actors.loop import Loop, RolloutSettings, Tokenizer
from mgpo.data.dataset import open_store, read_prompts
from mgpo.records import TrajectoryGroup
from mgpo.templates import MGPO
from tests.conftest import TINY_BUDGET


def rollout_groups(model_dir, data_dir, indices, n, max_turn_tokens, seed) -> list[TrajectoryGroup]:
    """Real MGPO groups from the HF engine for the records at `indices` of the synthetic set."""
    engine = HFEngine(str(model_dir), TINY_BUDGET)
    settings = RolloutSettings(MGPO, TINY_BUDGET, n=n, max_turn_tokens=max_turn_tokens)
    loop = Loop(engine, Tokenizer(engine.tokenizer), open_store(data_dir), settings)
    records = list(read_prompts(data_dir))
    return loop.rollout([records[i] for i in indices], seed=seed)


def rewarded(groups: list[TrajectoryGroup], winner: int) -> list[TrajectoryGroup]:
    """The same groups with sample `winner` right and the rest wrong: the rewards are a test's data."""
    return [
        dataclasses.replace(
            g,
            samples=tuple(dataclasses.replace(s, reward=float(i == winner)) for i, s in enumerate(g.samples)),
        )
        for g in groups
    ]
