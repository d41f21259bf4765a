"""Floor 2, what both roles and the service share: the Redis queue and run state, the run configs, the
Prometheus exporters, the metrics log, recent trajectories, the weight broadcast, a private Redis server.
Imports only the core (tests/test_layers.py)."""
