"""The Helm chart renders what operations rely on, and refuses values that cannot work."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import helm_notes

pytestmark = pytest.mark.deploy

Manifests = dict[str, dict[str, Any]]
Render = Callable[..., Manifests]
BACKLOG_METRIC = "facellm_backlog_requests"


def pod_spec(manifests: Manifests) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["Deployment"]["spec"]["template"]["spec"]
    return spec


def container(manifests: Manifests) -> dict[str, Any]:
    (only,) = pod_spec(manifests)["containers"]
    result: dict[str, Any] = only
    return result


def shm_volumes(manifests: Manifests) -> list[dict[str, Any]]:
    return [v for v in pod_spec(manifests)["volumes"] if v.get("emptyDir", {}).get("medium")]


# (--set arguments, expected tensor-parallel size); None = CPU demo, no GPU.
SIZES = [
    pytest.param((), None, id="demo-cpu"),
    pytest.param(("model.preset=1B",), 1, id="1B"),
    pytest.param(("model.preset=8B",), 1, id="8B"),
    pytest.param(("model.preset=38B", "model.gpusPerNode=2"), 2, id="38B"),
    pytest.param(
        ("model.preset=38B", "model.tensorParallelSize=4", "model.gpusPerNode=8"), 4, id="38B-tp4"
    ),
    pytest.param(
        ("model.preset=8B", "model.tensorParallelSize=8", "model.gpusPerNode=8"), 8, id="8B-tp8"
    ),
]


@pytest.mark.parametrize(("values", "tp"), SIZES)
def test_gpu_limit_equals_tensor_parallel_size(
    render: Render, values: tuple[str, ...], tp: int | None
) -> None:
    manifests = render(*values)
    resources = container(manifests)["resources"]
    gpus = resources.get("limits", {}).get("nvidia.com/gpu")
    assert gpus == tp
    assert "nvidia.com/gpu" not in resources.get("requests", {})
    assert manifests["ConfigMap"]["data"]["FACELLM_TENSOR_PARALLEL_SIZE"] == str(tp or 1)


@pytest.mark.parametrize(("values", "tp"), SIZES)
def test_dev_shm_only_with_tensor_parallelism(
    render: Render, values: tuple[str, ...], tp: int | None
) -> None:
    manifests = render(*values)
    mounts = {m["mountPath"]: m["name"] for m in container(manifests)["volumeMounts"]}
    if (tp or 1) > 1:
        (shm,) = shm_volumes(manifests)
        assert shm["emptyDir"]["medium"] == "Memory"
        assert mounts["/dev/shm"] == shm["name"]
    else:
        assert shm_volumes(manifests) == []
        assert "/dev/shm" not in mounts


def test_user_gpu_resources_cannot_override_tensor_parallel_size(render: Render) -> None:
    manifests = render("model.preset=8B", "resources.limits.nvidia\\.com/gpu=3")
    assert container(manifests)["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize(
    ("preset", "model_id", "image_tag"),
    [
        ("demo", "demo", "0.1.0-cpu"),
        ("1B", "Idiap/FaceLLM-1B", "0.1.0"),
        ("8B", "Idiap/FaceLLM-8B", "0.1.0"),
    ],
)
def test_preset_selects_model_and_image(
    render: Render, preset: str, model_id: str, image_tag: str
) -> None:
    manifests = render(f"model.preset={preset}")
    assert manifests["ConfigMap"]["data"]["FACELLM_MODEL"] == model_id
    assert container(manifests)["image"].endswith(f":{image_tag}")


def test_model_id_overrides_preset(render: Render) -> None:
    manifests = render("model.preset=8B", "model.id=/models/my-facellm")
    assert manifests["ConfigMap"]["data"]["FACELLM_MODEL"] == "/models/my-facellm"


def test_probes_use_health_and_ready(render: Render) -> None:
    c = container(render("model.preset=8B"))
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "http"


def startup_budget_s(manifests: Manifests) -> int:
    probe = container(manifests)["startupProbe"]
    budget: int = probe["failureThreshold"] * probe["periodSeconds"]
    return budget


def test_startup_budget_grows_with_model_size(render: Render) -> None:
    budgets = [
        startup_budget_s(render(*values))
        for values in (("model.preset=demo",), ("model.preset=1B",), ("model.preset=8B",))
    ]
    budgets.append(startup_budget_s(render("model.preset=38B", "model.gpusPerNode=2")))
    assert budgets == sorted(budgets)
    assert len(set(budgets)) == len(budgets)
    assert budgets[-1] >= 30 * 60  # 76 GB of bf16 weights to fetch and load


@pytest.mark.parametrize(("drain_s", "pre_stop_s"), [(30, 5), (120, 10), (0, 0)])
def test_grace_period_outlasts_pre_stop_and_drain(
    render: Render, drain_s: int, pre_stop_s: int
) -> None:
    manifests = render(f"server.drainTimeoutSeconds={drain_s}", f"preStopSleepSeconds={pre_stop_s}")
    assert manifests["ConfigMap"]["data"]["FACELLM_DRAIN_TIMEOUT_S"] == str(drain_s)
    assert container(manifests)["lifecycle"]["preStop"]["exec"]["command"] == [
        "sleep",
        str(pre_stop_s),
    ]
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] > drain_s + pre_stop_s


def test_hpa_scales_on_backlog(render: Render) -> None:
    manifests = render("autoscaling.mode=hpa", "autoscaling.minReplicas=2")
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == manifests["Deployment"]["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == BACKLOG_METRIC
    assert hpa["spec"]["minReplicas"] == 2
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    # The HPA owns the replica count; a fixed one would fight it on every upgrade.
    assert "replicas" not in manifests["Deployment"]["spec"]
    assert "ScaledObject" not in manifests


def test_keda_sums_backlog_over_this_release(render: Render, namespace: str) -> None:
    manifests = render("autoscaling.mode=keda")
    scaled = manifests["ScaledObject"]
    service = manifests["Service"]["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == manifests["Deployment"]["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    assert query.startswith("sum(")
    assert BACKLOG_METRIC in query
    assert f'namespace="{namespace}"' in query
    assert f'service="{service}"' in query
    advanced = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert advanced["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0
    assert "replicas" not in manifests["Deployment"]["spec"]
    assert "HorizontalPodAutoscaler" not in manifests


def test_no_autoscaler_by_default(render: Render) -> None:
    manifests = render()
    assert "HorizontalPodAutoscaler" not in manifests
    assert "ScaledObject" not in manifests
    assert manifests["Deployment"]["spec"]["replicas"] == 1


def test_pod_disruption_budget_selects_the_pods(render: Render) -> None:
    manifests = render()
    pdb = manifests["PodDisruptionBudget"]
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


def test_pod_runs_as_non_root_without_privileges(render: Render) -> None:
    manifests = render("model.preset=8B")
    pod_sc = pod_spec(manifests)["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    sc = container(manifests)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_api_keys_secret_is_mounted_where_the_setting_points(render: Render) -> None:
    manifests = render("auth.enabled=true", "auth.keys={k1,k2}")
    keys_file = manifests["ConfigMap"]["data"]["FACELLM_API_KEYS_FILE"]
    secret = manifests["Secret"]
    assert secret["stringData"]["api-keys"].split() == ["k1", "k2"]
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    (mount,) = [m for m in container(manifests)["volumeMounts"] if m["name"] == volume["name"]]
    (item,) = volume["secret"]["items"]
    assert f"{mount['mountPath']}/{item['path']}" == keys_file
    assert mount["readOnly"] is True


def test_settings_come_from_the_config_map(render: Render) -> None:
    manifests = render("server.attributes={age,gender}", "server.maxNumSeqs=32")
    data = manifests["ConfigMap"]["data"]
    assert data["FACELLM_HOST"] == "0.0.0.0"
    assert data["FACELLM_ATTRIBUTES"] == '["age","gender"]'
    assert data["FACELLM_MAX_NUM_SEQS"] == "32"
    assert "FACELLM_API_KEYS_FILE" not in data
    (env_from,) = container(manifests)["envFrom"]
    assert env_from["configMapRef"]["name"] == manifests["ConfigMap"]["metadata"]["name"]


def test_hub_token_and_model_cache_claim(render: Render) -> None:
    manifests = render("huggingface.tokenSecret.name=hf", "modelCache.persistence.enabled=true")
    env = {e["name"]: e for e in container(manifests)["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    (cache,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "model-cache"]
    claim = manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert cache["persistentVolumeClaim"]["claimName"] == claim


def test_optional_ingress_and_service_monitor(render: Render) -> None:
    assert {"Ingress", "ServiceMonitor"}.isdisjoint(render())
    manifests = render("ingress.enabled=true", "serviceMonitor.enabled=true")
    backend = manifests["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend["service"]["name"] == manifests["Service"]["metadata"]["name"]
    (endpoint,) = manifests["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (("model.tensorParallelSize=3", "model.gpusPerNode=8"), "tensorParallelSize"),
        (("model.preset=8B", "model.tensorParallelSize=4", "model.gpusPerNode=2"), "gpusPerNode"),
        (("model.preset=38B",), "gpusPerNode"),  # preset default TP 2 on 1-GPU nodes
        (("replicaCount=-1",), "replicaCount"),
        (("model.preset=70B",), "preset"),
        (("autoscaling.mode=both",), "mode"),
        (("autoscaling.mode=keda", "autoscaling.minReplicas=0"), "minReplicas"),
        (("server.extraSettings.HF_TOKEN=x",), "FACELLM_"),
        (("replicas=2",), "replicas"),  # typo of replicaCount: unknown keys are refused
        (("server.maxLoraRank=4",), "maxLoraRank"),
        (("server.maxLoras=0",), "maxLoras"),
        (("server.engineArgs.MaxNumSeqs=4",), "MaxNumSeqs"),
        (("server.extraSettings.FACELLM_ADMIN_API_KEY=k",), "FACELLM_ADMIN_API_KEY"),
        (("server.runtimeLora.enabeld=true",), "enabeld"),
    ],
)
def test_schema_refuses_impossible_values(
    render_error: Callable[..., str], values: tuple[str, ...], why: str
) -> None:
    error = render_error(*values)
    assert "schema" in error
    assert why in error


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (("terminationGracePeriodSeconds=30",), "terminationGracePeriodSeconds"),
        (("autoscaling.mode=hpa", "autoscaling.maxReplicas=1", "autoscaling.minReplicas=2"), "max"),
        (("auth.enabled=true",), "auth.keys"),
    ],
)
def test_templates_refuse_inconsistent_values(
    render_error: Callable[..., str], values: tuple[str, ...], why: str
) -> None:
    assert why in render_error(*values)


# --- engine arguments, LoRA adapters, runtime LoRA ----------------------------------------------

ADAPTER_PATH = "/models/adapters/support"


def env_var(manifests: Manifests, name: str) -> dict[str, Any] | None:
    return next((e for e in container(manifests).get("env", []) if e["name"] == name), None)


def test_engine_args_and_adapters_are_json_settings(render: Render) -> None:
    defaults = render()["ConfigMap"]["data"]
    for name in ("FACELLM_ENGINE_ARGS", "FACELLM_LORA_ADAPTERS", "FACELLM_MAX_LORA_RANK"):
        assert name not in defaults  # unset: the server's defaults
    data = render(
        "server.engineArgs.max_num_batched_tokens=1536",
        "server.engineArgs.enable_prefix_caching=true",
        "server.engineArgs.kv_cache_dtype=fp8",
        f"server.loraAdapters.support={ADAPTER_PATH}",
        "server.loraAdapters.style=org/style-lora",
        "server.maxLoras=2",
        "server.maxLoraRank=64",
        "modelCache.persistence.enabled=true",
    )["ConfigMap"]["data"]
    assert json.loads(data["FACELLM_ENGINE_ARGS"]) == {
        "max_num_batched_tokens": 1536,
        "enable_prefix_caching": True,
        "kv_cache_dtype": "fp8",
    }
    assert json.loads(data["FACELLM_LORA_ADAPTERS"]) == {
        "support": ADAPTER_PATH,
        "style": "org/style-lora",
    }
    assert (data["FACELLM_MAX_LORAS"], data["FACELLM_MAX_LORA_RANK"]) == (
        "2",
        "64",
    )


def test_adapters_in_the_model_cache_resolve_in_the_pod(render: Render) -> None:
    """An adapter path under /models is on the model cache claim the pod mounts there."""
    manifests = render(
        f"server.loraAdapters.support={ADAPTER_PATH}", "modelCache.persistence.enabled=true"
    )
    (mount,) = [m for m in container(manifests)["volumeMounts"] if m["name"] == "model-cache"]
    assert ADAPTER_PATH.startswith(mount["mountPath"].rstrip("/") + "/")
    assert not mount.get("readOnly", False)
    (cache,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "model-cache"]
    claim = manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert cache["persistentVolumeClaim"]["claimName"] == claim


def test_runtime_lora_admin_key_comes_from_a_chart_secret(render: Render) -> None:
    manifests = render("server.runtimeLora.enabled=true", "server.runtimeLora.adminKey=adm-k3y")
    data = manifests["ConfigMap"]["data"]
    assert data["FACELLM_ALLOW_RUNTIME_LORA"] == "true"
    assert "FACELLM_ADMIN_API_KEY" not in data
    assert "adm-k3y" not in json.dumps(manifests["ConfigMap"])
    secret = manifests["Secret"]
    ref = env_var(manifests, "FACELLM_ADMIN_API_KEY")
    assert ref is not None
    assert ref["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "admin-api-key",
    }
    assert secret["stringData"]["admin-api-key"] == "adm-k3y"
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/admin-key" in annotations  # a new key rolls the pods


def test_runtime_lora_admin_key_from_an_existing_secret(render: Render) -> None:
    manifests = render(
        "server.runtimeLora.enabled=true",
        "server.runtimeLora.existingSecret=lora-admin",
        "server.runtimeLora.existingSecretKey=key",
    )
    assert "Secret" not in manifests
    ref = env_var(manifests, "FACELLM_ADMIN_API_KEY")
    assert ref is not None
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "lora-admin", "key": "key"}


def test_no_admin_key_without_runtime_lora(render: Render) -> None:
    manifests = render("server.runtimeLora.adminKey=adm-k3y")
    assert env_var(manifests, "FACELLM_ADMIN_API_KEY") is None
    assert "FACELLM_ALLOW_RUNTIME_LORA" not in manifests["ConfigMap"]["data"]
    assert "Secret" not in manifests


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (("server.runtimeLora.enabled=true",), "server.runtimeLora.existingSecret"),
        # The model cache is an emptyDir without persistence: nothing is there at start.
        ((f"server.loraAdapters.support={ADAPTER_PATH}",), "modelCache.persistence.enabled"),
    ],
)
def test_templates_refuse_lora_values_that_cannot_work(
    render_error: Callable[..., str], values: tuple[str, ...], why: str
) -> None:
    assert why in render_error(*values)


@pytest.mark.parametrize(
    ("set_args", "processes"),
    [
        ((), "1"),  # demo: 2 cores = engine core + its worker
        (("model.preset=1B",), "2"),  # 4 cores - core - 1 GPU worker
        (("model.preset=8B",), "6"),
        (("model.preset=38B", "model.gpusPerNode=8"), "8"),  # 16 - 1 - 2, capped at 8
        (("model.preset=1B", "resources.requests.cpu=6500m"), "4"),
        (("model.preset=1B", "server.apiProcesses=3"), "3"),
    ],
)
def test_api_processes_follow_the_cpu_request(
    render: Render, set_args: tuple[str, ...], processes: str
) -> None:
    data = render(*set_args)["ConfigMap"]["data"]
    assert data["FACELLM_API_PROCESSES"] == processes


@pytest.mark.parametrize(
    ("values", "why"),
    [
        (  # the 8B preset derives 6 API processes; runtime LoRA needs one
            (
                "model.preset=8B",
                "server.runtimeLora.enabled=true",
                "server.runtimeLora.existingSecret=adm",
            ),
            "server.runtimeLora.enabled needs one API process",
        ),
        (("server.engineArgs.trust_remote_code=true",), "server.engineArgs.trust_remote_code"),
        (("server.engineArgs.worker_cls=evil.Worker",), "server.engineArgs.worker_cls"),
        (("server.engineArgs.hf_token=hf_x",), "stored in a ConfigMap"),
        (("server.engineArgs.max_logprobs=5",), "server.engineArgs.max_logprobs is 5"),
    ],
)
def test_templates_refuse_what_the_server_would_refuse(
    render_error: Callable[..., str], values: tuple[str, ...], why: str
) -> None:
    assert why in render_error(*values)


def test_runtime_lora_with_one_api_process_and_allowed_unsafe_args_render(render: Render) -> None:
    data = render(
        "model.preset=8B",
        "server.apiProcesses=1",
        "server.runtimeLora.enabled=true",
        "server.runtimeLora.existingSecret=adm",
        "server.engineArgs.trust_remote_code=true",
        "server.extraSettings.FACELLM_ALLOW_UNSAFE_ENGINE_ARGS=true",
        "server.engineArgs.max_logprobs=20",
    )["ConfigMap"]["data"]
    assert data["FACELLM_API_PROCESSES"] == "1"
    assert json.loads(data["FACELLM_ENGINE_ARGS"]) == {
        "trust_remote_code": True,
        "max_logprobs": 20,
    }


@pytest.mark.parametrize(("auth", "says"), [(True, "Auth:   on"), (False, "Auth:   OFF")])
def test_notes_say_whether_auth_is_on(helm_bin: Path, auth: bool, says: str) -> None:
    args = ["auth.enabled=true", "auth.existingSecret=keys"] if auth else []
    assert says in helm_notes(helm_bin, *args)
