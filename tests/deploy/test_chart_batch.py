"""The chart's Batch API: off by default; on SQLite, a claim mounted where FACELLM_BATCH_DIR
points and one replica only; on PostgreSQL, the URL from a Secret and any replica count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.deploy

Manifests = dict[str, dict[str, Any]]
Render = Callable[..., Manifests]


def container(manifests: Manifests) -> dict[str, Any]:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def test_batch_api_is_off_by_default(render: Render) -> None:
    manifests = render()
    assert manifests["ConfigMap"]["data"]["FACELLM_BATCH_ENABLED"] == "false"
    assert "PersistentVolumeClaim" not in manifests


def test_sqlite_batches_live_on_a_claim_where_the_setting_points(render: Render) -> None:
    manifests = render("batch.enabled=true", "batch.persistence.size=5Gi")
    data = manifests["ConfigMap"]["data"]
    assert "FACELLM_BATCH_ENABLED" not in data
    claim = manifests["PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    volumes = manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v.get("persistentVolumeClaim")]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (mount,) = [m for m in container(manifests)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == data["FACELLM_BATCH_DIR"]


def test_postgres_url_comes_from_a_secret(render: Render) -> None:
    manifests = render(
        "batch.enabled=true", "batch.database.existingSecret=db", "autoscaling.mode=hpa"
    )
    env = {e["name"]: e for e in container(manifests)["env"]}
    ref = env["FACELLM_BATCH_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "db", "key": "database-url"}
    assert "FACELLM_BATCH_DIR" not in manifests["ConfigMap"]["data"]
    assert "PersistentVolumeClaim" not in manifests


@pytest.mark.parametrize("values", [("replicaCount=2",), ("autoscaling.mode=keda",)])
def test_sqlite_batches_refuse_several_replicas(
    render_error: Callable[..., str], values: tuple[str, ...]
) -> None:
    assert "batch.database.existingSecret" in render_error("batch.enabled=true", *values)
