from __future__ import annotations

from pathlib import Path

import pytest

from inpnet.config import load_params, parse_params
from inpnet.errors import ConfigError


def test_repository_params_parse_and_every_variant_resolves(repo_root: Path) -> None:
    params = load_params(repo_root / "params.yaml")
    for name in params.variants:
        resolved = params.variant(name)
        assert resolved.model.family == params.variants[name].family
    assert set(params.pipeline.variants) <= set(params.variants)
    for required in ("inpnet_s", "inpnet_b", "inpnet_s_gan", "mae_s", "mae_b", "cmgan_s", "cmgan_b"):
        assert required in params.variants
    assert not [name for name in params.variants if name.endswith("_tiny")]  # test variants live in tests/fixtures


def test_the_tiny_test_variants_resolve_from_the_fixture_profile() -> None:
    from helpers.params import params_for_tests

    params = params_for_tests()
    for name in ("inpnet_tiny", "mae_tiny", "cmgan_tiny"):
        assert params.variant(name).model.img_size == 32


def test_unknown_key_names_its_path_and_the_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({"train": {"lr_warmup": 1}})
    assert "train.lr_warmup" in str(err.value)
    assert "warmup_steps" in str(err.value)


def test_unknown_key_inside_a_variant_override() -> None:
    with pytest.raises(ConfigError, match=r"variants\.x\.model\.depht.*depth"):
        parse_params({"variants": {"x": {"family": "inpnet", "model": {"depht": 3}}}})
    with pytest.raises(ConfigError, match=r"variants\.x\.train\.loss\.advw"):
        parse_params({"variants": {"x": {"family": "mae", "train": {"loss": {"advw": 1}}}}})


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.shard\.workers"):
        parse_params({"data": {"shard": {"workers": 0}}})
    with pytest.raises(ConfigError, match=r"masks.*ratios.*0.95"):
        parse_params({"masks": {"ratios": [0.95]}})


def test_variant_overrides_merge_with_train_defaults() -> None:
    params = parse_params(
        {
            "train": {"lr": 0.1, "loss": {"hole_weight": 2.0}},
            "variants": {"g": {"family": "inpnet", "train": {"loss": {"adv_weight": 0.5}}}},
        }
    )
    v = params.variant("g")
    assert v.train.lr == 0.1 and v.train.loss.hole_weight == 2.0 and v.train.loss.adv_weight == 0.5
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        params.variant("nope")


def test_params_are_frozen() -> None:
    params = parse_params({})
    with pytest.raises(Exception, match="frozen"):
        params.train.lr = 1.0  # type: ignore[misc]  # writing to a frozen model is what is tested


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_params(bad)


def test_every_params_profile_in_the_repository_parses(repo_root: Path) -> None:
    profiles = sorted(repo_root.glob("params*.yaml"))
    assert len(profiles) >= 2  # the quickstart and the full-scale profile
    for path in profiles:
        params = load_params(path)
        for name in params.pipeline.variants:
            params.variant(name)
    full = load_params(repo_root / "params-places365.yaml")
    assert full.data.source == "places365" and full.masks.size == 256
    assert all(full.variant(v).train.image_size == 256 for v in full.pipeline.variants)


def test_a_section_written_twice_is_refused_with_the_key_and_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.1\nmasks:\n  size: 32\ntrain:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=r"params.yaml: duplicate key 'train' on line 5 \(first on line 1\)"):
        load_params(path)
    path.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")  # nested keys too
    with pytest.raises(ConfigError, match=r"duplicate key 'lr' on line 3 \(first on line 2\)"):
        load_params(path)


def test_an_empty_params_file_names_the_missing_sections(tmp_path: Path) -> None:
    for text in ("", "# nothing here\n", "{}\n"):
        path = tmp_path / "params.yaml"
        path.write_text(text)
        with pytest.raises(
            ConfigError, match=r"params.yaml: params file is empty; .*data, .*masks, .*train, .*evaluate, .*registry"
        ):
            load_params(path)


def test_yaml_merge_keys_may_still_override(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  <<: {lr: 0.1, max_steps: 5}\n  max_steps: 7\n")
    params = load_params(path)
    assert params.train.lr == 0.1 and params.train.max_steps == 7


def test_model_and_training_sizes_must_agree() -> None:
    spec = {
        "train": {"image_size": 128},
        "variants": {"big": {"family": "inpnet", "model": {"img_size": 64, "patch_size": 16}}},
    }
    params = parse_params(spec)  # defined but not trained by the pipeline: only refused when trained
    with pytest.raises(ConfigError, match=r"variants\.big: model\.img_size 64 and train\.image_size 128 must agree"):
        params.variant("big").check_sizes()
    with pytest.raises(ConfigError, match=r"variants\.big: model\.img_size 64 and train\.image_size 128 must agree"):
        parse_params({**spec, "pipeline": {"variants": ["big"]}})


def test_pipeline_variants_must_match_the_mask_bank_size() -> None:
    spec = {
        "train": {"image_size": 64},
        "masks": {"size": 128},
        "variants": {"small": {"family": "inpnet", "model": {"img_size": 64, "patch_size": 16}}},
    }
    parse_params(spec)  # not in the pipeline: fine
    with pytest.raises(ConfigError, match=r"variants\.small: model\.img_size 64 but masks\.size 128"):
        parse_params({**spec, "pipeline": {"variants": ["small"]}})
    parse_params({**spec, "masks": {"size": 64}, "pipeline": {"variants": ["small"]}})
