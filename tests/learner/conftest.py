from tests.actors.conftest import box_model, synth_data, vllm_engine  # noqa: F401  (shared session fixtures)
