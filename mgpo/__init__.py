"""Floor 1, the algorithm core: templates, boxes, crops, rewards, advantages, masks, loss, records, data
and the tiny model. Pure: no Ray, Redis, vLLM, DeepSpeed, FastAPI or Prometheus (tests/mgpo/test_purity.py)."""
