"""`mgpo data select --config RUN.yaml --out DIR`: rejection sampling on a cluster, through the queue.

The run's own rollout actors (`rollout.actors` of them, scaled with `mgpo scale` as in training) roll out
every prompt of `data.path` once, `rollout.n` samples each, with the model folder's weights; the driver reads
the trajectory groups from the queue and turns each into a pass rate (recipes.select), then writes the RL
dataset and the histogram, as the offline `mgpo data select` does. There is no learner: nothing is trained,
so admission is unbounded and no actor waits for weights. A dead actor is replaced and its prompts are
reclaimed by the others (runtime.queue); a prompt that never comes back (dead-lettered) is reported and not
kept. Resumable: `pass_rates.jsonl` in DIR says what is done, and only the rest is rolled out again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mgpo.data.dataset import open_store
from mgpo.records import PromptRecord
from mgpo.resize import PixelBudget
from recipes.select import PASS_RATES, done_rates, keep, log_rate
from runtime.config import RunConfig
from services.driver.trainer import Trainer


class Selector(Trainer):
    """A Trainer without a learner: set-up (Redis, data, model, Ray, actors) and shutdown are the run's."""

    def __init__(
        self, config: RunConfig, out: str | Path, bounds: tuple[float, float], console: Console | None = None
    ) -> None:
        low, high = bounds
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(f"need 0 <= low < high <= 1, got low {low}, high {high}")
        self.out, self.bounds = Path(out), bounds
        # its own run (name, folder) beside the training run's; every prompt once
        config = config.model_copy(
            update={
                "name": f"{config.name}-select",
                "output_dir": str(self.out),
                "data": config.data.model_copy(update={"epochs": 1}),
            }
        )
        super().__init__(config, resume=False, console=console)

    def run(self) -> dict[str, object]:
        self.out.mkdir(parents=True, exist_ok=True)
        # the pass-rates file, not the queue, is the record of what is done: a stopped selection's private
        # Redis is not reopened (its prompts were fed from an older to-do list)
        shutil.rmtree(self.run_dir / "redis", ignore_errors=True)
        with self._ending():  # stopped, failed or finished, as a training run
            self._prepare()
            self.run_state.set(groups_per_step=0, fed=0)  # no learner to keep up with: admission unbounded
            rates = done_rates(self.out)
            everything, self.records = self.records, [r for r in self.records if r.id not in rates]
            if self.records:
                self.membership.reconcile(None)
                self._start_feeder()
                self._collect({r.id: r for r in self.records}, rates)
            self._set_status("finished")
        meta = {"source": str(self.data_dir), "model": str(self.model_path), "run": self.config.name}
        store, n = open_store(self.data_dir), self.config.rollout.n
        return keep(everything, rates, store, self.out, n, self.bounds, meta)

    def _collect(self, todo: dict[str, PromptRecord], rates: dict[str, float]) -> None:
        """Read groups until every prompt of `todo` has its rate or none can come any more."""
        store = open_store(self.data_dir)
        rollout = self.config.rollout
        budget = PixelBudget(rollout.min_pixels, rollout.max_pixels)
        left = set(todo)
        columns = (TextColumn("[bold]select"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with open(self.out / PASS_RATES, "a") as log, Progress(*columns, console=self.console) as progress:
            task = progress.add_task("prompts", total=len(todo))
            while left:
                self.membership.reconcile(None)  # admits started actors, replaces dead ones
                # asked before reading: once every prompt is completed, its group is already in the stream
                exhausted = self.feeder.exhausted()
                taken = self.queue.take_groups(count=16, block_ms=1000)
                if not taken and exhausted:
                    break  # fed, and nothing waiting, taken or in the trajectory stream
                for _, group in taken:
                    if group.prompt_id in left:  # a redelivered prompt's twin is rated once
                        rates[group.prompt_id] = log_rate(log, todo[group.prompt_id], group, store, budget)
                        left.discard(group.prompt_id)
                        progress.advance(task)
                self.queue.ack_groups([message_id for message_id, _ in taken])
        if left:
            reasons = [letter.get("reason", "?")[:200] for letter in self.queue.dead_letters(5)]
            self.console.print(
                f"[yellow]{len(left)} prompts came back from no actor[/] (dead-lettered after "
                f"{self.config.queue.max_deliveries} deliveries): not kept; e.g. {', '.join(sorted(left)[:5])}; "
                f"reasons: {'; '.join(reasons) or '-'}"
            )
