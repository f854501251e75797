"""Turn what the operator asked to serve (`demo`, a registry name, a hub id, a directory) into a
local directory of HF-format weights, or fail before the engine starts with a message that says
what was tried and which setting to change.
"""

from __future__ import annotations

from pathlib import Path

from model.adapters import ADAPTER_CONFIG
from model.demo import DEMO_ADAPTER_PREFIX, ensure_demo_adapter, ensure_demo_model
from model.registry import DEMO_MODEL_NAME, VARIANTS, lookup

_CONFIG = "config.json"


class WeightsNotFound(Exception):
    """The requested weights are not available locally and could not (or may not) be fetched."""


def resolve_weights(
    model: str, *, cache_dir: Path, allow_download: bool, revision: str | None = None
) -> Path:
    """Return the directory holding `config.json` and the weights for `model`.

    An existing directory wins over a hub id of the same spelling, as in `from_pretrained`.
    Hub snapshots go to `cache_dir/hub`; with `allow_download` off only that cache is consulted.
    `revision` (a commit hash, branch or tag) picks the hub snapshot; None is the main branch.
    """
    if model.strip().casefold() == DEMO_MODEL_NAME:
        return ensure_demo_model(cache_dir)
    local = Path(model).expanduser()
    if local.is_dir():
        return _model_dir(local)
    variant = lookup(model)
    if variant is None and not _is_repo_id(model):
        raise WeightsNotFound(
            f"model {model!r}: no such directory, and neither a known model "
            f"({', '.join(VARIANTS)}) nor a hub id like 'Idiap/FaceLLM-1B'."
        )
    repo_id = variant.hub_id if variant is not None and variant.hub_id else model
    snapshot = _snapshot(repo_id, cache_dir, allow_download, revision)
    subfolder = variant.weights_subfolder if variant is not None else None
    if subfolder and (snapshot / subfolder / _CONFIG).is_file():
        return snapshot / subfolder
    return _model_dir(snapshot)


def resolve_adapter(name: str, source: str, *, cache_dir: Path, allow_download: bool) -> Path:
    """The local directory of the LoRA adapter `source` (a directory, a hub id, or
    `demo-lora-<seed>`), served as `name`; fails naming the adapter and what was tried."""
    seed = source.removeprefix(DEMO_ADAPTER_PREFIX)
    if seed != source and seed.isdigit():
        return ensure_demo_adapter(cache_dir, int(seed))
    local = Path(source).expanduser()
    if local.is_dir():
        path = local
    elif _is_repo_id(source):
        path = _snapshot(source, cache_dir, allow_download)
    else:
        raise WeightsNotFound(
            f"LoRA adapter {name!r}: {source!r} is neither a directory, a hub id, nor "
            f"{DEMO_ADAPTER_PREFIX}<seed>."
        )
    if not (path / ADAPTER_CONFIG).is_file():
        raise WeightsNotFound(f"LoRA adapter {name!r}: {source!r} holds no {ADAPTER_CONFIG}.")
    return path.absolute()


def _is_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _model_dir(path: Path) -> Path:
    """`path` itself if it holds config.json, else its only subfolder that does."""
    if (path / _CONFIG).is_file():
        return path
    found = sorted(sub for sub in path.iterdir() if (sub / _CONFIG).is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightsNotFound(
            f"{path} holds no {_CONFIG}, directly or in a subfolder; point the model setting "
            "at the directory of an HF-format InternVL model."
        )
    names = ", ".join(sub.name for sub in found)
    raise WeightsNotFound(
        f"{path} has several model subfolders ({names}); set the model setting to the one to serve."
    )


def _snapshot(
    repo_id: str, cache_dir: Path, allow_download: bool, revision: str | None = None
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    hub_cache = cache_dir / "hub"
    try:
        return Path(
            snapshot_download(
                repo_id,
                cache_dir=hub_cache,
                local_files_only=not allow_download,
                revision=revision,
            )
        )
    except LocalEntryNotFoundError as exc:
        if not allow_download:
            why = "downloads are off (allow_download=false)"
            fix = "set allow_download=true"
        elif constants.HF_HUB_OFFLINE:
            why = "HF_HUB_OFFLINE is set"
            fix = "unset HF_HUB_OFFLINE"
        else:
            why = f"the hub could not be reached ({exc})"
            fix = "check network access to the hub"
        raise WeightsNotFound(
            f"Weights for {repo_id!r} are not in the cache {hub_cache} and {why}. Either {fix}, "
            "pre-fill that cache (model_cache_dir), or set the model setting to a "
            "local directory with the weights (or to `demo`)."
        ) from exc
    except HFValidationError as exc:
        raise WeightsNotFound(f"model {repo_id!r} is not a valid hub id: {exc}") from exc
    except HfHubHTTPError as exc:
        raise WeightsNotFound(
            f"The hub refused {repo_id!r}: {exc}. Check the id, and HF_TOKEN for gated or "
            "private repos."
        ) from exc
