"""Config defaults live in one place and are validated up front."""

import pytest

from vedit_cli.config import BACKEND_DEFAULTS, EditConfig, ModelConfig
from vedit_cli.errors import ConfigError
from vedit_cli.settings import resolve_run


def test_defaults_come_from_one_table_per_backend_and_explicit_values_win(tmp_path):
    teacher = resolve_run(ModelConfig(backend="movie", weights_dir=tmp_path, device="cpu"))
    assert (teacher.mode, teacher.steps) == ("teacher", BACKEND_DEFAULTS["movie:teacher"].steps)
    assert teacher.model.guidance_scale == BACKEND_DEFAULTS["movie:teacher"].guidance_scale
    svdiff = resolve_run(ModelConfig(backend="svdiff", weights_dir=tmp_path, device="cpu"))
    assert svdiff.model.guidance_scale == BACKEND_DEFAULTS["svdiff"].guidance_scale < teacher.model.guidance_scale
    assert svdiff.steps == BACKEND_DEFAULTS["svdiff"].steps
    explicit = resolve_run(ModelConfig(backend="svdiff", weights_dir=tmp_path, device="cpu", guidance_scale=4.0,
                                       steps=5))
    assert (explicit.model.guidance_scale, explicit.steps) == (4.0, 5)


def test_student_defaults_to_one_step_from_pure_noise(tmp_path):
    run = resolve_run(ModelConfig(backend="movie", movie_mode="student", device="cpu"), random_weights=True)
    assert (run.mode, run.steps, run.spacing, run.off_recipe) == ("student", 1, "trailing", False)
    off = resolve_run(ModelConfig(backend="movie", movie_mode="student", device="cpu", steps=4), random_weights=True)
    assert off.off_recipe and "off-recipe" in off.summary()


@pytest.mark.parametrize("changes, flag", [
    ({"steps": 0}, "--steps"), ({"size": 8}, "--size"), ({"device": "tpu"}, "--device"),
    ({"window": 4, "overlap": 4}, "--overlap"), ({"guidance_scale": -1.0}, "guidance"),
])
def test_invalid_options_name_the_flag(changes, flag):
    with pytest.raises(ConfigError, match=flag):
        EditConfig().with_model(**changes).validate()
