"""Study configuration and the stage cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ceusflow.cli import app
from ceusflow.errors import InputError
from ceusflow.pipeline.cache import StageCache, digest, tree_fingerprint
from ceusflow.pipeline.config import DEFAULT_TOML, StudyConfig, load_config


def test_printed_default_is_the_default(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0 and result.output == DEFAULT_TOML
    path = tmp_path / "study.toml"
    path.write_text(result.output)
    loaded, default = load_config(path).to_dict(), StudyConfig().to_dict()
    assert loaded.keys() == default.keys()
    for section, values in default.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, float):
                    assert loaded[section][key] == pytest.approx(value, rel=1e-5), (section, key)
                else:
                    assert loaded[section][key] == value, (section, key)
        else:
            assert loaded[section] == values


def test_overrides_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text("seed = 3\n[train]\nepochs = 5\n")
    config = load_config(path, seed=9)
    assert config.seed == 9 and config.train.epochs == 5 and config.train.device == "auto"
    path.write_text("[train]\nepoch = 5\n")
    with pytest.raises(InputError, match="unknown key"):
        load_config(path)
    path.write_text("[trian]\n")
    with pytest.raises(InputError, match="unknown section"):
        load_config(path)


def test_train_section_maps_to_the_training_configuration(tmp_path: Path) -> None:
    from ceusflow.pipeline.run import train_config

    path = tmp_path / "study.toml"
    path.write_text('[train]\ncompile = "inductor"\nn_models = 3\nepochs = 7\n')
    config = train_config(load_config(path).train, seed=4)
    assert (config.compile, config.n_models, config.epochs, config.seed) == ("inductor", 3, 7, 4)
    assert train_config(load_config(None).train, seed=0).compile is None  # "" in TOML = eager
    default = load_config(None).train
    assert train_config(default, 0, "RFA").kinetic and not train_config(default, 0, "SR").kinetic
    for text, arms in (("[]", ()), ('["SR", "RFA"]', ("RFA", "SR")), ("true", ("RFA", "SR")), ("false", ())):
        path.write_text(f"[train]\nkinetic = {text}\n")
        assert load_config(path).train.kinetic == arms
    path.write_text('[train]\nkinetic = ["TACE"]\n')
    with pytest.raises(InputError, match="not a list of arms"):
        load_config(path)


def test_stage_cache_keys(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    key = digest({"a": 1}, StudyConfig())
    assert not cache.done("convert", key)
    cache.record("convert", key, seconds=1.0)
    assert cache.done("convert", key)
    changed = dataclasses.replace(StudyConfig(), seed=1)
    assert not cache.done("convert", digest({"a": 1}, changed))


def test_a_changed_profile_changes_the_training_key(monkeypatch) -> None:
    from ceusflow.model import network
    from ceusflow.pipeline.run import profile_architectures

    before = digest(profile_architectures())
    assert digest(profile_architectures()) == before  # stable
    original = network.profile
    monkeypatch.setattr(network, "profile", lambda name: dataclasses.replace(original(name), dropout=0.3))
    assert digest(profile_architectures()) != before


def test_tree_fingerprint_changes_with_content(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    before = tree_fingerprint(tmp_path)
    assert tree_fingerprint(tmp_path) == before
    (tmp_path / "a").write_text("xy")
    assert tree_fingerprint(tmp_path) != before
