"""Every branch of weight resolution, without network: tmp dirs and a hand-made hub cache."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

import model.weights
from model.weights import WeightsNotFound, resolve_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _model_files(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    return directory


def _hub_cache(cache_dir: Path, repo_id: str, subfolder: str | None) -> Path:
    """Lay out a cached snapshot exactly as huggingface_hub stores one."""
    repo = cache_dir / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    return _model_files(snapshot / subfolder if subfolder else snapshot)


def test_demo_builds_or_reuses_under_the_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake_ensure(cache_dir: Path) -> Path:
        calls.append(cache_dir)
        return cache_dir / "demo"

    monkeypatch.setattr(model.weights, "ensure_demo_model", fake_ensure)
    got = resolve_weights("Demo", cache_dir=tmp_path, allow_download=False)
    assert got == tmp_path / "demo"
    assert calls == [tmp_path]


def test_local_dir_with_config_is_itself(tmp_path: Path) -> None:
    weights = _model_files(tmp_path / "weights")
    assert resolve_weights(str(weights), cache_dir=tmp_path / "c", allow_download=False) == weights


def test_local_dir_with_weights_in_one_subfolder(tmp_path: Path) -> None:
    inner = _model_files(tmp_path / "FaceLLM-1B" / "model")
    (tmp_path / "FaceLLM-1B" / "README.md").write_text("readme")
    (tmp_path / "FaceLLM-1B" / "assets").mkdir()
    got = resolve_weights(str(tmp_path / "FaceLLM-1B"), cache_dir=tmp_path, allow_download=False)
    assert got == inner


def test_local_dir_wins_over_registry_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inner = _model_files(tmp_path / "FaceLLM-1B" / "model")
    got = resolve_weights("FaceLLM-1B", cache_dir=tmp_path / "c", allow_download=False)
    assert got.resolve() == inner


def test_local_dir_with_several_model_subfolders_is_ambiguous(tmp_path: Path) -> None:
    _model_files(tmp_path / "w" / "a")
    _model_files(tmp_path / "w" / "b")
    with pytest.raises(WeightsNotFound, match=r"several model subfolders \(a, b\)"):
        resolve_weights(str(tmp_path / "w"), cache_dir=tmp_path, allow_download=False)


def test_local_dir_without_config_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(WeightsNotFound, match=r"holds no config\.json"):
        resolve_weights(str(tmp_path / "empty"), cache_dir=tmp_path, allow_download=False)


@pytest.mark.parametrize("name", ["/no/such/weights/dir", "./missing", "not a model", "FaceLLM-2B"])
def test_missing_path_or_unknown_name_fails_without_touching_the_hub(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(WeightsNotFound, match="no such directory") as err:
        resolve_weights(name, cache_dir=tmp_path, allow_download=True)
    assert "FaceLLM-8B" in str(err.value)  # lists what is known


def test_registry_name_offline_and_not_cached_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound) as err:
        resolve_weights("FaceLLM-8B", cache_dir=tmp_path, allow_download=False)
    message = str(err.value)
    assert "'Idiap/FaceLLM-8B'" in message
    assert "allow_download=true" in message
    assert str(tmp_path / "hub") in message


def test_hub_offline_env_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; set both, as a fresh process would see.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFound, match="HF_HUB_OFFLINE is set") as err:
        resolve_weights("someone/some-model", cache_dir=tmp_path, allow_download=True)
    assert "'someone/some-model'" in str(err.value)


def test_invalid_hub_id_is_reported(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="not a valid hub id"):
        resolve_weights("bad id/x y", cache_dir=tmp_path, allow_download=False)


def test_cached_registry_snapshot_resolves_to_its_weights_subfolder(tmp_path: Path) -> None:
    inner = _hub_cache(tmp_path, "Idiap/FaceLLM-1B", "model")
    got = resolve_weights("facellm-1b", cache_dir=tmp_path, allow_download=False)
    assert got.resolve() == inner.resolve()


def test_cached_snapshot_without_the_expected_subfolder_uses_its_root(tmp_path: Path) -> None:
    root = _hub_cache(tmp_path, "Idiap/FaceLLM-8B", None)
    got = resolve_weights("Idiap/FaceLLM-8B", cache_dir=tmp_path, allow_download=False)
    assert got.resolve() == root.resolve()


def test_cached_plain_hub_id(tmp_path: Path) -> None:
    root = _hub_cache(tmp_path, "OpenGVLab/InternVL3-1B-hf", None)
    got = resolve_weights("OpenGVLab/InternVL3-1B-hf", cache_dir=tmp_path, allow_download=False)
    assert got.resolve() == root.resolve()


# --- a pinned hub revision (FACELLM_MODEL_REVISION) ---------------------------------------------


def test_pinned_revision_resolves_that_snapshot_and_no_other(tmp_path: Path) -> None:
    pinned = _hub_cache(tmp_path, "Idiap/FaceLLM-8B", None)  # refs/main -> COMMIT
    got = resolve_weights(
        "Idiap/FaceLLM-8B", cache_dir=tmp_path, allow_download=False, revision=COMMIT
    )
    assert got.resolve() == pinned.resolve()
    with pytest.raises(WeightsNotFound, match="allow_download=true"):
        resolve_weights(
            "Idiap/FaceLLM-8B", cache_dir=tmp_path, allow_download=False, revision="f" * 40
        )


def test_the_revision_setting_reaches_the_hub_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, object]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(_model_files(tmp_path / "snapshot"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    from server.config import Settings
    from server.engine_setup import build_engine

    class Stop(Exception):
        pass

    real_resolve = model.weights.resolve_weights

    def resolve_then_stop(*args: object, **kwargs: object) -> Path:
        real_resolve(*args, **kwargs)  # type: ignore[arg-type]
        raise Stop  # before any engine is built

    monkeypatch.setattr(model.weights, "resolve_weights", resolve_then_stop)
    settings = Settings(
        model="Idiap/FaceLLM-8B", model_cache_dir=tmp_path / "c", model_revision=COMMIT
    )
    with pytest.raises(Stop):
        build_engine(settings)
    (call,) = calls
    assert (call["repo_id"], call["revision"], call["local_files_only"]) == (
        "Idiap/FaceLLM-8B",
        COMMIT,
        False,
    )
    assert Settings(model_cache_dir=tmp_path).model_revision is None  # default: main
