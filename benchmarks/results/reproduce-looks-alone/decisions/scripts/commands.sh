# The decision trials of README, Results ("Decisions per category"), in the order run (2-core box, alone).
# prep.py/part2.py: the look0-alone set, its cold start and settle, MGPO on look1/look2 questions only,
# distillation on all three categories, SFT (looks-sft12) and the evals of both; rl.py NAME [SFT] key=value:
# multi-turn RL from an SFT model with config changes, then its test eval; sftdw.py NAME WEIGHT: SFT with
# decision_weight. Probes: benchmarks/looks_decision_probe.py --config (the RL config with the change).
.venv/bin/python prep.py && .venv/bin/python part2.py
P=benchmarks/looks_decision_probe.py   # configs: looks-multiturn.yaml as committed before this change, model looks-sft12
.venv/bin/python $P --config probe-sft12.yaml --n 8               # T 1.0, GRPO, bonus 0.2   -> probe/sft12-T1.json
.venv/bin/python $P --config probe-top_p.yaml --n 8               # + top_p 0.8              -> probe/sft12-top_p.json
.venv/bin/python $P --config probe-temperature.yaml --n 8         # T 0.7 instead            -> probe/sft12-temperature.json
.venv/bin/python rl.py looks-mt-topp rollout.top_p=0.8
.venv/bin/python $P --config probe-nobonus.yaml --n 8             # top_p 0.8, bonus 0        -> probe/sft12-nobonus.json
.venv/bin/python rl.py looks-mt-topp-nobonus rollout.top_p=0.8 rollout.direct_bonus=0.0
.venv/bin/python $P --config probe-bonus0.1.yaml --n 8            # bonus 0.1 / 0.05: as 0.2
.venv/bin/python $P --config probe-drg0.2.yaml --n 8              # + scale_rewards false    -> probe/sft12-drg0.2.json
.venv/bin/python rl.py looks-mt-drg rollout.top_p=0.8 learner.scale_rewards=false
.venv/bin/python rl.py looks-mt-drg-dw rollout.top_p=0.8 learner.scale_rewards=false learner.decision_weight=10
.venv/bin/python sftdw.py looks-sft12-dw 20
.venv/bin/python rl.py looks-mt-dw-drg looks-sft12-dw rollout.top_p=0.8 learner.scale_rewards=false
