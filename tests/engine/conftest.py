"""Fixtures shared by the engine tests."""
from tests.engine.diffusion_fixtures import tiny_model_dir  # noqa: F401 - a session fixture, registered here
from tests.engine.train_fixtures import synth_renders, tiny_dataset  # noqa: F401, E402 - session fixtures
