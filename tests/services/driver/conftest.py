"""The rollout tests' taught tiny model and synthetic set, for the membership tests here."""

from tests.actors.conftest import box_model, synth_data  # noqa: F401
