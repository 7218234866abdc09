"""Config defaults live in one place and are validated up front."""

import pytest

from vedit_cli.config import BACKEND_GUIDANCE_SCALE, DEFAULT_GUIDANCE_SCALE, EditConfig, ModelConfig
from vedit_cli.errors import ConfigError


def test_guidance_scale_defaults_per_backend_and_explicit_values_win():
    assert ModelConfig(backend="movie").guidance_scale == DEFAULT_GUIDANCE_SCALE
    assert ModelConfig(backend="svdiff").guidance_scale == BACKEND_GUIDANCE_SCALE["svdiff"] < DEFAULT_GUIDANCE_SCALE
    assert ModelConfig(backend="svdiff", guidance_scale=4.0).guidance_scale == 4.0


@pytest.mark.parametrize("changes, flag", [
    ({"steps": 0}, "--steps"), ({"size": 8}, "--size"), ({"device": "tpu"}, "--device"),
    ({"window": 4, "overlap": 4}, "--overlap"), ({"guidance_scale": -1.0}, "guidance"),
])
def test_invalid_options_name_the_flag(changes, flag):
    with pytest.raises(ConfigError, match=flag):
        EditConfig().with_model(**changes).validate()
