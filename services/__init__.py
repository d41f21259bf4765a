"""Floor 5, what runs: the control plane, the run driver, the run registry, the autoscaler, auth, the
launcher, the viewer and the `mgpo` CLI."""
