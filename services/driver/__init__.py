"""`mgpo train`: the Ray driver of one run. It owns nothing the algorithm needs; it wires and watches:

    Redis (private, or the configured URL) <- feeder thread: the dataset, `data.epochs` times
    rollout actors (Ray, elastic: `desired_actors` in the run state)  -> trajectory groups -> learner (Ray)
    every `sync_every` learner steps: weight broadcast learner -> actors; every `checkpoint_every`: checkpoint

- `trainer.py`: the Trainer, set-up and the step loop, top to bottom;
- `prepare.py`: data, model, Ray, and the learner's and actors' specs from the run config;
- `feeder.py`: the dataset into the prompt stream;
- `membership.py`: the rollout actors, reconciled towards `desired_actors` between steps;
- `weight_sync.py`: the broadcast generations and their retry;
- `commands.py`: `mgpo scale` / `mgpo pause` on a running run.
"""
