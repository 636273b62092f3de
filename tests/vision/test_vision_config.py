"""The `cameras` and `vision` config sections: strict, with clear errors; the vision tasks'
models found in `models.extra_dirs` (relative to the config file) or reported missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.app import build_tasks
from agent.config import load_config
from agent.errors import ConfigError, ModelLoadError
from agent.registry import Registry
from tests.vision.conftest import empty_models_dir, write_config


def _problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, text), environ={})
    return "\n".join(err.value.problems)


def test_camera_config_is_strict(tmp_path: Path) -> None:
    text = _problems(
        tmp_path,
        """
cameras:
  "bad name":
    source: {type: mqtt, topic: a}
  door:
    source: {type: mqtt}
    privacy: sometimes
    tasks: [faces]
    motion: {masks: [[0.5, 0, 0.2, 1]], bogus: 1}
  yard:
    source: {type: opencv, topic: x/+}
""",
    )
    assert "cameras.bad name" in text
    assert "type mqtt needs `topic`" in text
    assert "cameras.door.privacy" in text and "cameras.door.tasks.0" in text
    assert "each mask is [x1, y1, x2, y2]" in text
    assert "cameras.door.motion.bogus" in text
    assert "type opencv needs `url`" in text


def test_defaults_keep_frames_on_the_device(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, "cameras:\n  door:\n    source: {type: mqtt, topic: c/d}\n"),
        environ={},
    )
    camera = config.cameras["door"]
    assert camera.privacy == "never" and config.vision.request_privacy == "never"
    assert camera.tasks == ["person"] and camera.motion.enabled
    assert config.vision.person_threshold == 0.4


def test_extra_dirs_are_relative_to_the_config_and_missing_models_say_how_to_pull(
    pretrained: Path, tmp_path: Path
) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "agent.yaml"
    rel = Path("..") / "nowhere"
    path.write_text(
        f"models:\n  dir: {empty_models_dir(tmp_path)}\n  extra_dirs: [{rel}]\n"
        "tasks:\n  pose: {}\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    assert config.models.extra_dirs == [tmp_path / "nowhere"]
    with pytest.raises(ModelLoadError, match="edge-agent models pull movenet-lightning"):
        build_tasks(config, Registry(config.models.dir))
    config = load_config(path, environ={"EDGE_AGENT_MODELS__EXTRA_DIRS": f'["{pretrained}"]'})
    tasks = build_tasks(config, Registry(config.models.dir))
    assert tasks["pose"].edge is not None and tasks["pose"].privacy == "never"
    bad = path.read_text(encoding="utf-8").replace("pose: {}", "pose: {model: mobilenet-v2}")
    path.write_text(bad, encoding="utf-8")
    config = load_config(path, environ={"EDGE_AGENT_MODELS__EXTRA_DIRS": f'["{pretrained}"]'})
    with pytest.raises(ModelLoadError, match="not a pose model"):
        build_tasks(config, Registry(config.models.dir))
