"""Adapter folders: the warning when an adapter is used with other encoder settings than it was trained with."""

from __future__ import annotations

import json
import logging

from prompteol.encoder.config import EncoderConfig
from prompteol.models.adapters import check_training_settings


def _write_run(folder, **encoder):
    cfg = EncoderConfig(model="tiny-random-llama", **encoder)
    (folder / "prompteol_train.json").write_text(json.dumps({"base_model": "tiny-random-llama", "encoder": cfg.to_dict()}))


def test_same_settings_are_silent(tmp_path, caplog):
    _write_run(tmp_path)
    with caplog.at_level(logging.WARNING, logger="prompteol"):
        assert check_training_settings(tmp_path, EncoderConfig(model="tiny-random-llama")) == []
    assert not caplog.records


def test_other_settings_warn_and_name_each_difference(tmp_path, caplog):
    _write_run(tmp_path, layer=-1, pooling="last")
    now = EncoderConfig(model="tiny-random-llama", layer=-2, pooling="mean", template="promptbert")
    with caplog.at_level(logging.WARNING, logger="prompteol"):
        diffs = check_training_settings(tmp_path, now)
    assert {d.split(":")[0] for d in diffs} == {"template", "layer", "pooling"}
    assert "trained -1, now -2" in caplog.text


def test_folder_without_run_file_is_silent(tmp_path):
    assert check_training_settings(tmp_path, EncoderConfig(model="tiny-random-llama")) == []
