"""Floor 4, experiment procedures on top of the roles: evaluation, reports, the reproduction, the demo."""
