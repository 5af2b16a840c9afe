"""The CLI of ``dataset build`` / ``train``: bad input is one line and exit 2, nothing half-written."""
from __future__ import annotations

from tests.engine.cli_helpers import assert_one_line_error, run_cli


def test_dataset_build_missing_source(tmp_path):
    r = run_cli("dataset", "build", tmp_path / "nope", "-o", tmp_path / "ds")
    assert_one_line_error(r, "nope", "not found")


def test_train_unknown_setting_and_bad_dataset(tmp_path):
    r = run_cli("train", tmp_path, "-o", tmp_path / "run", "--set", "learning_rate=1")
    assert_one_line_error(r, "unknown training settings", "learning_rate")
    (tmp_path / "empty").mkdir()
    r = run_cli("train", tmp_path / "empty", "-o", tmp_path / "run", "--set", 'model="tiny"')
    assert_one_line_error(r, "empty", "items")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_dataset_and_train_share_one_parser():
    from engine.cli import build_parser

    args = build_parser().parse_args(["dataset", "build", "SRC", "-o", "OUT", "--input-view", "3"])
    assert (args.command, args.dataset_command, args.input_view) == ("dataset", "build", "3")
    args = build_parser().parse_args(["train", "DS", "-o", "RUN", "--set", "max_steps=5"])
    from engine.train.command import parse_config

    assert parse_config(None, args.set).max_steps == 5
