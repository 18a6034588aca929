"""The Helm chart, rendered and checked by Helm's own code (helm-sdkpy), offline.

`helm lint` runs as is. Rendering goes through a real `helm install` / `helm upgrade` /
`helm test` against the fake API server of conftest.py, which validates every object it receives
against the Kubernetes schemas (kubernetes-validate). The assertions below then read the release
Helm produced: its manifest and its hooks.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import AnyHttpUrl, SecretStr

from core.settings import Settings

if typing.TYPE_CHECKING:  # fixtures come from conftest.py; never import it at run time
    from conftest import Helm, Release

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "crm-digital-fte"
PRODUCTION_VALUES = CHART_DIR / "ci" / "production-values.yaml"
RELEASE, NAMESPACE, KUBE_VERSION = "fte", "crm", "1.31.0"  # as conftest.py installs it
FULLNAME = f"{RELEASE}-crm-digital-fte"
COMPONENTS = ("gateway", "worker", "bridge")
VALUES_FILE = CHART_DIR / "values.yaml"
SCHEMA_FILE = CHART_DIR / "values.schema.json"


# --- helpers -----------------------------------------------------------------------------------


def values_key(field_name: str) -> str:
    """The values key of a Settings field: snake_case -> camelCase (the chart maps it back)."""
    head, *rest = field_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def is_secret(field_name: str) -> bool:
    annotation = Settings.model_fields[field_name].annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def pod_specs(release: Release) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) for every pod the release can create: Deployments, Jobs, test pods."""
    specs = []
    for manifest in release.all():
        if manifest["kind"] in ("Deployment", "Job"):
            specs.append((f"{manifest['kind']}/{manifest['metadata']['name']}", manifest["spec"]["template"]["spec"]))
        elif manifest["kind"] == "Pod":
            specs.append((f"Pod/{manifest['metadata']['name']}", manifest["spec"]))
    return specs


def container_env(release: Release, container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: its envFrom ConfigMaps/Secrets (as rendered), then env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(release.get("ConfigMap", source["configMapRef"]["name"]).get("data") or {})
        elif "secretRef" in source:
            secret = release.get("Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()})
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
    return env


def deployment(release: Release, component: str) -> dict[str, Any]:
    return release.get("Deployment", f"{FULLNAME}-{component}")


def only_container(spec: dict[str, Any]) -> dict[str, Any]:
    assert len(spec["containers"]) == 1, spec["containers"]
    return spec["containers"][0]


def _bounds(field_name: str) -> dict[str, float]:
    bounds: dict[str, float] = {}
    for constraint in Settings.model_fields[field_name].metadata:
        for attribute in ("ge", "gt", "le", "lt"):
            if getattr(constraint, attribute, None) is not None:
                bounds[attribute] = getattr(constraint, attribute)
    return bounds


def _base_type(field_name: str) -> Any:
    annotation = Settings.model_fields[field_name].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert len(members) == 1, f"{field_name}: unions other than X | None need a chart mapping"
        annotation = members[0]
    return annotation


def sample_value(field_name: str) -> Any:
    """A valid value for a Settings field, different from its default where possible."""
    kind = _base_type(field_name)
    default = Settings.model_fields[field_name].default
    bounds = _bounds(field_name)
    if field_name == "notify_slack_webhook_url":
        return "https://hooks.slack.example/services/T0/B0/secret"  # a secret, validated as an http(s) URL
    if field_name == "ticket_link_secret":
        return "secret-ticket-link-key-at-least-32-chars"  # validated: 32 characters or more
    if kind is SecretStr:
        return (
            "postgresql://crm:s3cret@db.example.internal:5432/crm"
            if field_name == "database_url"
            else f"secret-{field_name}"
        )
    if kind is bool:
        return not default if isinstance(default, bool) else True
    if typing.get_origin(kind) is Literal:
        choices = [c for c in typing.get_args(kind) if c != default]
        return choices[-1]
    if kind is int:
        low = bounds.get("ge", bounds.get("gt", 0) + 1)
        high = bounds.get("le", bounds.get("lt", 10**9) - 1)
        candidate = default + 1 if isinstance(default, int) else low + 4000
        return int(candidate if low <= candidate <= high else low)
    if kind is float:
        low = bounds.get("ge", bounds.get("gt", -1e9))
        high = bounds.get("le", bounds.get("lt", 1e9))
        candidate = default + 0.5 if isinstance(default, int | float) else 1.5
        return candidate if low < candidate < high else (low + high) / 2
    if field_name == "whatsapp_late_reply_content_sid":
        return "HX" + "0123456789abcdef" * 2  # a Twilio Content SID
    if field_name == "whatsapp_late_reply_content_variables":
        return "ticket_number,customer_first_name"  # names from core.whatsapp_window.TEMPLATE_VARIABLES
    if field_name == "business_holidays":
        return "2026-12-25,2027-01-01"  # validated: ISO dates
    if field_name == "identity_phone_default_region":
        return "GB"  # an ISO 3166 country code
    if field_name == "daily_report_time_utc":
        return "07:45"  # HH:MM
    if kind is str and field_name.startswith("rate_limit_"):
        return "7/minute;70/hour"  # validated as a rate-limit expression
    if kind is str:
        return f"sample-{field_name.replace('_', '-')}"
    if kind is AnyHttpUrl:
        return "https://support.example.com/"
    pytest.fail(f"Settings.{field_name} has type {kind!r}: teach sample_value (and the chart schema) about it")


def every_setting_values() -> dict[str, Any]:
    """Chart values that set every Settings field to a sample value."""
    values: dict[str, Any] = {"config": {}, "secrets": {}}
    for name in Settings.model_fields:
        values["secrets" if is_secret(name) else "config"][values_key(name)] = sample_value(name)
    return values


def isolated_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None, **init: Any) -> Settings:
    """Settings from exactly `env` and `init`: nothing from the test process or a .env file."""
    with monkeypatch.context() as patch:
        for name in Settings.model_fields:
            patch.delenv(name.upper(), raising=False)
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        return Settings(_env_file=None, **init)  # type: ignore[call-arg]


def comparable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, AnyHttpUrl):
        return str(value)
    return value


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge values dicts like Helm does for -f files (later wins)."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


# --- helm lint ---------------------------------------------------------------------------------


def test_helm_lint_passes(helm: Helm) -> None:
    result = helm.lint()
    problems = [m for m in result["Messages"] if m["Severity"] >= 2]
    assert result["TotalChartsLinted"] == 1
    assert not problems and not result["Errors"], result


def test_helm_lint_with_production_values_passes(helm: Helm, chart_copy: Path) -> None:
    values = merged(yaml.safe_load(VALUES_FILE.read_text()), yaml.safe_load(PRODUCTION_VALUES.read_text()))
    (chart_copy / "values.yaml").write_text(yaml.safe_dump(values))
    result = helm.lint(chart_copy)
    assert not [m for m in result["Messages"] if m["Severity"] >= 2] and not result["Errors"], result


def test_helm_lint_rejects_values_breaking_the_schema(helm: Helm, chart_copy: Path) -> None:
    values = yaml.safe_load(VALUES_FILE.read_text())
    values["gateway"]["replicaCount"] = "two"
    (chart_copy / "values.yaml").write_text(yaml.safe_dump(values))
    result = helm.lint(chart_copy)
    # helm-sdkpy drops the message text of lint errors (Go errors serialise as {}); the severity
    # and path remain. The install tests below check the message itself.
    assert {"Severity": 3, "Path": "values.yaml"} in [
        {k: m[k] for k in ("Severity", "Path")} for m in result["Messages"]
    ]
    assert result["Errors"]


# --- rendering + Kubernetes schema validation --------------------------------------------------


@pytest.mark.parametrize("which", ["default", "production"])
def test_release_renders_and_every_manifest_is_valid_kubernetes(
    which: str, default_release: Release, production_release: Release
) -> None:
    import kubernetes_validate

    release = default_release if which == "default" else production_release
    assert release.raw["info"]["status"] == "deployed"
    # The fake API server validated each object Helm created (strict: unknown fields fail);
    # re-check everything here, hooks and the test pod included, on the oldest and newest
    # Kubernetes the schemas cover.
    checked = set()
    for manifest in release.all():
        for version in ("1.25.0", kubernetes_validate.latest_version(), KUBE_VERSION):
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
                checked.add(manifest["kind"])
            except kubernetes_validate.SchemaNotFoundError:
                assert manifest["apiVersion"] == "monitoring.coreos.com/v1", manifest["kind"]
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Job", "Pod", "PodDisruptionBudget"} <= checked
    assert release.api.unvalidated <= {
        "monitoring.coreos.com/v1/ServiceMonitor",
        "monitoring.coreos.com/v1/PrometheusRule",
    }
    for manifest in release.all():
        assert manifest["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        assert len(manifest["metadata"]["name"]) <= 63


def test_standard_labels_on_every_resource(production_release: Release) -> None:
    for manifest in production_release.all():
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "crm-digital-fte"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["helm.sh/chart"] == "crm-digital-fte-0.1.0"


def test_default_release_objects(default_release: Release) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in default_release.manifests)
    assert kinds == sorted(
        [
            ("ConfigMap", f"{FULLNAME}-config"),
            ("Secret", f"{FULLNAME}-secret"),
            ("ServiceAccount", FULLNAME),
            ("Service", f"{FULLNAME}-gateway"),
            ("Service", f"{FULLNAME}-worker-metrics"),
            ("Service", f"{FULLNAME}-bridge-metrics"),
            *[("Deployment", f"{FULLNAME}-{c}") for c in COMPONENTS],
            *[("PodDisruptionBudget", f"{FULLNAME}-{c}") for c in COMPONENTS],
        ]
    )
    for component in COMPONENTS:
        container = only_container(deployment(default_release, component)["spec"]["template"]["spec"])
        assert container["args"] == [component]
        assert container["image"] == "crm-digital-fte:0.1.0"


# --- the values schema -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_values", "expected"),
    [
        ({"gateway": {"replicaCount": "two"}}, "/gateway/replicaCount': got string, want integer"),
        ({"worker": {"replicaCount": -1}}, "/worker/replicaCount': minimum: got -1, want 0"),
        ({"config": {"logFormat": "xml"}}, "/config/logFormat': value must be one of"),
        ({"notAKey": True}, "additional properties 'notAKey' not allowed"),
        (
            {"config": {"kafkaBootstrapServer": "kafka:9092"}},
            "additional properties 'kafkaBootstrapServer' not allowed",
        ),
        ({"config": {"gatewayPort": 70000}}, "/config/gatewayPort': maximum"),
        ({"config": {"kafkaEnableIdempotence": "yes"}}, "/config/kafkaEnableIdempotence': got string, want boolean"),
        ({"secrets": {"databaseUrl": "mysql://db/crm"}}, "/secrets/databaseUrl'"),
        ({"gateway": {"autoscaling": {"enabled": "true"}}}, "/gateway/autoscaling/enabled': got string, want boolean"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy': value must be one of"),
    ],
)
def test_helm_rejects_values_breaking_the_schema(helm: Helm, bad_values: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.InstallError) as raised:
        helm.install(bad_values)
    message = str(raised.value)
    assert "values don't meet the specifications of the schema" in message
    assert expected in message, message


def test_schema_is_valid_draft7_and_accepts_the_shipped_values(helm: Helm) -> None:
    import jsonschema  # a dependency of kubernetes-validate, which the helm fixture requires

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load(VALUES_FILE.read_text())
    for values in (defaults, merged(defaults, yaml.safe_load(PRODUCTION_VALUES.read_text()))):
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)]
        assert not errors


def test_schema_mirrors_every_settings_field() -> None:
    """Each Settings field has a schema property of the same type and bounds, in the right section."""
    schema = json.loads(SCHEMA_FILE.read_text())
    sections = {
        "config": schema["properties"]["config"]["properties"],
        "secrets": schema["properties"]["secrets"]["properties"],
    }
    definitions = schema["definitions"]
    problems = []
    for name in Settings.model_fields:
        section = "secrets" if is_secret(name) else "config"
        key = values_key(name)
        prop = sections[section].get(key)
        if prop is None:
            problems.append(f"{name}: add '{key}' to values.schema.json under {section} (and to values.yaml)")
            continue
        prop = definitions[prop["$ref"].rsplit("/", 1)[1]] if "$ref" in prop else prop
        kind = _base_type(name)
        bounds = _bounds(name)
        if typing.get_origin(kind) is Literal:
            choices = set(typing.get_args(kind))
            allowed = {c.upper() if name == "log_level" else c for c in prop.get("enum", [])} - {""}
            if allowed != choices:
                problems.append(f"{name}: schema enum {sorted(allowed)} != {sorted(choices)}")
            continue
        expected_type = {bool: "boolean", int: "integer", float: "number"}.get(kind, "string")
        if prop.get("type") != expected_type:
            problems.append(f"{name}: schema type {prop.get('type')} != {expected_type}")
        for attribute, keyword in (
            ("ge", "minimum"),
            ("le", "maximum"),
            ("gt", "exclusiveMinimum"),
            ("lt", "exclusiveMaximum"),
        ):
            if attribute in bounds and prop.get(keyword) != bounds[attribute]:
                problems.append(
                    f"{name}: schema {keyword}={prop.get(keyword)} but Settings has {attribute}={bounds[attribute]}"
                )
    for section, props in sections.items():
        for key in props:
            if not any(values_key(n) == key for n in Settings.model_fields):
                problems.append(f"{section}.{key} in the schema is not a Settings field")
    assert not problems, "\n".join(problems)


def test_values_yaml_documents_every_settings_field() -> None:
    """values.yaml carries each setting (set, or commented out at its default) with its variable name."""
    text = VALUES_FILE.read_text()
    missing = []
    for name in Settings.model_fields:
        key = values_key(name)
        if not re.search(rf"^\s*(# )?{key}:", text, re.MULTILINE) or f"{name.upper()}:" not in text:
            missing.append(f"{key} ({name.upper()})")
    assert not missing, f"document these settings in {VALUES_FILE}: {missing}"


# Kubernetes-native objects whose fields are Kubernetes' own (documented by one comment on the parent).
_NATIVE_BLOCKS = {
    "podSecurityContext",
    "securityContext",
    "resources",
    "strategy",
    "hosts",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "capabilities",
    "seccompProfile",
    "requests",
    "limits",
    "rollingUpdate",
}


def test_values_yaml_has_a_comment_on_every_key() -> None:
    lines = VALUES_FILE.read_text().splitlines()
    parents: list[tuple[int, str]] = []
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z][\w.-]*):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1))
        while parents and parents[-1][0] >= indent:
            parents.pop()
        inside_native = any(name in _NATIVE_BLOCKS for _, name in parents) or match.group(2)
        previous = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        if not inside_native and not previous.startswith("#"):
            undocumented.append(f"line {number + 1}: {line.strip()}")
        parents.append((indent, match.group(3)))
    assert not undocumented, "\n".join(undocumented)


# --- settings -> environment -------------------------------------------------------------------


def test_every_settings_field_is_settable_from_values(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set every Settings field through values; each process (and hook) gets it under its own name.

    Fails when a field is added to core.settings.Settings without a values key, i.e. without a
    values.schema.json property (the schema rejects unknown keys) or when the chart renders a value
    the application cannot parse back.
    """
    values = every_setting_values()
    try:
        release = helm.install(values)
    except Exception as error:  # the schema names the missing key
        pytest.fail(
            f"setting every Settings field through values failed; add the field to values.yaml and "
            f"values.schema.json:\n{error}"
        )
    expected = {
        name: comparable(getattr(isolated_settings(monkeypatch, **{name: sample_value(name)}), name))
        for name in Settings.model_fields
    }
    pods = [(f"Deployment/{c}", deployment(release, c)["spec"]["template"]["spec"]) for c in COMPONENTS]
    pods += [(f"Job/{j['metadata']['name']}", j["spec"]["template"]["spec"]) for j in release.of_kind("Job")]
    assert len(pods) == 5
    for where, spec in pods:
        env = container_env(release, only_container(spec))
        missing = sorted(n.upper() for n in Settings.model_fields if n.upper() not in env)
        assert not missing, f"{where} lacks {missing}"
        settings = isolated_settings(monkeypatch, env)
        for name, value in expected.items():
            assert comparable(getattr(settings, name)) == value, f"{where}: {name.upper()}={env[name.upper()]!r}"


def test_secret_fields_go_to_the_secret_and_the_rest_to_the_configmap(helm: Helm) -> None:
    release = helm.install(every_setting_values())
    config = release.get("ConfigMap", f"{FULLNAME}-config")["data"]
    secret = release.get("Secret", f"{FULLNAME}-secret")["data"]
    secret_names = {n.upper() for n in Settings.model_fields if is_secret(n)}
    assert {
        "DATABASE_URL",
        "OPENAI_API_KEY",
        "TWILIO_AUTH_TOKEN",
        "TEMPORAL_API_KEY",
        "KAFKA_SASL_PASSWORD",
    } <= secret_names
    assert set(secret) == secret_names
    assert set(config) == {n.upper() for n in Settings.model_fields} - secret_names
    # The hook-scoped copies carry the same data.
    assert release.get("ConfigMap", f"{FULLNAME}-hook-config")["data"] == config
    assert release.get("Secret", f"{FULLNAME}-hook-secret")["data"] == secret


def test_default_config_targets_kubernetes(default_release: Release) -> None:
    config = default_release.get("ConfigMap", f"{FULLNAME}-config")["data"]
    assert config["GATEWAY_HOST"] == "0.0.0.0"
    assert config["KAFKA_ENABLE_IDEMPOTENCE"] == "true"
    assert config["LOG_FORMAT"] == "json"
    assert config["WORKER_HEALTH_PORT"] == "8081" and config["BRIDGE_HEALTH_PORT"] == "8082"
    # Settings left commented out in values.yaml are not written: the application default applies.
    assert "DATABASE_POOL_SIZE" not in config and "OPENAI_MODEL" not in config
    assert default_release.get("Secret", f"{FULLNAME}-secret")["data"] == {}


def test_numbers_render_without_exponent(helm: Helm) -> None:
    release = helm.install({"config": {"gatewayMaxBodyBytes": 10485760, "openaiTimeoutSeconds": 12.5}})
    config = release.get("ConfigMap", f"{FULLNAME}-config")["data"]
    assert config["GATEWAY_MAX_BODY_BYTES"] == "10485760"
    assert config["OPENAI_TIMEOUT_SECONDS"] == "12.5"


# --- pods: security, probes, termination ---------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "production"])
def test_every_pod_is_hardened(which: str, default_release: Release, production_release: Release) -> None:
    release = default_release if which == "default" else production_release
    specs = pod_specs(release)
    assert len(specs) == 6  # 3 Deployments, 2 hook Jobs, 1 test pod
    for where, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] == 10001, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        tmp_volumes = [v for v in spec["volumes"] if v["name"] == "tmp"]
        assert tmp_volumes and "emptyDir" in tmp_volumes[0], where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["runAsNonRoot"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert context.get("privileged", False) is False, where
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"], where
            assert "memory" in container["resources"]["limits"], where


def test_probes_hit_the_health_endpoints_on_the_configured_ports(default_release: Release) -> None:
    config = default_release.get("ConfigMap", f"{FULLNAME}-config")["data"]
    expected = {
        "gateway": ("http", int(config["GATEWAY_PORT"]), "/livez", "/api/v1/health"),
        "worker": ("health", int(config["WORKER_HEALTH_PORT"]), "/livez", "/readyz"),
        "bridge": ("health", int(config["BRIDGE_HEALTH_PORT"]), "/livez", "/readyz"),
    }
    for component, (port_name, port, live, ready) in expected.items():
        container = only_container(deployment(default_release, component)["spec"]["template"]["spec"])
        assert container["ports"] == [{"name": port_name, "containerPort": port, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": live, "port": port_name}
        assert container["startupProbe"]["httpGet"] == {"path": live, "port": port_name}
        assert container["readinessProbe"]["httpGet"] == {"path": ready, "port": port_name}
        # Readiness checks dependencies with HEALTH_CHECK_TIMEOUT_SECONDS (default 2 s) each.
        assert (
            container["readinessProbe"]["timeoutSeconds"]
            > Settings.model_fields["health_check_timeout_seconds"].default
        )


def test_ports_follow_the_settings(helm: Helm) -> None:
    release = helm.install({"config": {"gatewayPort": 9000, "workerHealthPort": 9101, "bridgeHealthPort": 9102}})
    gateway = only_container(deployment(release, "gateway")["spec"]["template"]["spec"])
    assert gateway["ports"][0]["containerPort"] == 9000
    assert release.get("Service", f"{FULLNAME}-gateway")["spec"]["ports"][0]["targetPort"] == "http"
    assert (
        only_container(deployment(release, "worker")["spec"]["template"]["spec"])["ports"][0]["containerPort"] == 9101
    )
    assert release.get("Service", f"{FULLNAME}-bridge-metrics")["spec"]["ports"][0]["port"] == 9102


def test_probes_can_be_disabled(helm: Helm) -> None:
    release = helm.install({"worker": {"startupProbe": {"enabled": False}, "livenessProbe": {"periodSeconds": 30}}})
    container = only_container(deployment(release, "worker")["spec"]["template"]["spec"])
    assert "startupProbe" not in container
    assert container["livenessProbe"]["periodSeconds"] == 30


def test_termination_gives_the_bridge_time_to_drain(default_release: Release) -> None:
    bridge = deployment(default_release, "bridge")["spec"]["template"]["spec"]
    assert bridge["terminationGracePeriodSeconds"] >= 60
    assert "lifecycle" not in only_container(bridge)  # it drains on SIGTERM itself, no preStop
    gateway = deployment(default_release, "gateway")["spec"]["template"]["spec"]
    pre_stop = only_container(gateway)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop == ["sleep", "5"] and gateway["terminationGracePeriodSeconds"] > 5


def test_tls_secrets_are_mounted_read_only(production_release: Release) -> None:
    for component in COMPONENTS:
        spec = deployment(production_release, component)["spec"]["template"]["spec"]
        mounts = {m["name"]: m for m in only_container(spec)["volumeMounts"]}
        assert mounts["temporal-tls"] == {
            "name": "temporal-tls",
            "mountPath": "/etc/crm-fte/temporal-tls",
            "readOnly": True,
        }
        assert mounts["kafka-tls"]["readOnly"] is True
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["temporal-tls"]["secret"]["secretName"] == "crm-fte-temporal-client-tls"
        assert volumes["kafka-tls"]["secret"]["secretName"] == "crm-fte-kafka-cluster-ca"


# --- checksum, HPA, PDB, Service, Ingress, ServiceMonitor ---------------------------------------


def checksums(release: Release) -> set[str]:
    return {
        deployment(release, c)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for c in COMPONENTS
    }


def test_checksum_annotation_rolls_pods_on_config_and_secret_changes(helm: Helm, default_release: Release) -> None:
    (baseline,) = checksums(default_release)  # one value, shared by all three Deployments
    assert re.fullmatch(r"[0-9a-f]{64}", baseline)
    assert checksums(helm.install()) == {baseline}  # stable for identical values
    assert checksums(helm.install({"config": {"logLevel": "DEBUG"}})) != {baseline}
    assert checksums(helm.install({"secrets": {"openaiApiKey": "sk-new"}})) != {baseline}
    # Image or replica changes are not configuration.
    assert checksums(helm.install({"gateway": {"replicaCount": 4}})) == {baseline}


def test_pdbs_by_default_and_no_hpa(default_release: Release) -> None:
    assert not default_release.of_kind("HorizontalPodAutoscaler")
    for component in COMPONENTS:
        pdb = default_release.get("PodDisruptionBudget", f"{FULLNAME}-{component}")
        selector = deployment(default_release, component)["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["selector"]["matchLabels"] == selector
        assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}
        assert deployment(default_release, component)["spec"]["replicas"] == 2


def test_hpa_for_gateway_and_worker_owns_the_replica_count(production_release: Release) -> None:
    hpas = {h["metadata"]["name"]: h for h in production_release.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == {f"{FULLNAME}-gateway", f"{FULLNAME}-worker"}
    for component in ("gateway", "worker"):
        hpa = hpas[f"{FULLNAME}-{component}"]["spec"]
        assert hpa["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"{FULLNAME}-{component}",
        }
        assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"
        assert "replicas" not in deployment(production_release, component)["spec"]
    assert hpas[f"{FULLNAME}-worker"]["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert deployment(production_release, "bridge")["spec"]["replicas"] == 3
    assert production_release.get("PodDisruptionBudget", f"{FULLNAME}-gateway")["spec"]["minAvailable"] == 2


def test_pdb_and_hpa_can_be_turned_off_and_zero_is_honoured(helm: Helm) -> None:
    release = helm.install(
        {
            "gateway": {"pdb": {"enabled": False}},
            "worker": {"pdb": {"maxUnavailable": 0}},
            "bridge": {"pdb": {"minAvailable": "50%"}},
        }
    )
    names = {p["metadata"]["name"]: p["spec"] for p in release.of_kind("PodDisruptionBudget")}
    assert f"{FULLNAME}-gateway" not in names
    assert names[f"{FULLNAME}-worker"]["maxUnavailable"] == 0
    assert names[f"{FULLNAME}-bridge"]["minAvailable"] == "50%"


def test_gateway_service_and_ingress(production_release: Release) -> None:
    service = production_release.get("Service", f"{FULLNAME}-gateway")
    selector = deployment(production_release, "gateway")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    ingress = production_release.get("Ingress", f"{FULLNAME}-gateway")["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "support-techcorp-tls", "hosts": ["support.techcorp.example"]}]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-gateway", "port": {"name": "http"}}


def test_service_monitors_scrape_all_three_metrics_endpoints(production_release: Release) -> None:
    monitors = {m["metadata"]["name"]: m for m in production_release.of_kind("ServiceMonitor")}
    assert set(monitors) == {f"{FULLNAME}-{c}" for c in COMPONENTS}
    services = production_release.of_kind("Service")
    for component in COMPONENTS:
        monitor = monitors[f"{FULLNAME}-{component}"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        selector = monitor["spec"]["selector"]["matchLabels"]
        matching = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1, (component, matching)
        assert endpoint["port"] in {p["name"] for p in matching[0]["spec"]["ports"]}
        # ... and that Service's selector reaches the component's pods.
        pod_labels = deployment(production_release, component)["spec"]["template"]["metadata"]["labels"]
        assert matching[0]["spec"]["selector"].items() <= pod_labels.items()


def test_service_account(default_release: Release, helm: Helm) -> None:
    assert default_release.get("ServiceAccount", FULLNAME)["automountServiceAccountToken"] is False
    for component in COMPONENTS:
        assert deployment(default_release, component)["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    release = helm.install({"serviceAccount": {"create": False, "name": "platform-sa"}})
    assert not release.of_kind("ServiceAccount")
    for _, spec in pod_specs(release):
        assert spec.get("serviceAccountName", "platform-sa") == "platform-sa"


# --- secrets -----------------------------------------------------------------------------------


def test_existing_secret_replaces_the_chart_secret(helm: Helm) -> None:
    release = helm.install({"existingSecret": "crm-settings", "secrets": {"openaiApiKey": "ignored"}})
    assert not release.of_kind("Secret"), "no Secret may be rendered when existingSecret is set"
    for where, spec in pod_specs(release):
        if where.startswith("Pod/"):
            continue  # the test pod needs no settings
        refs = [s["secretRef"]["name"] for s in only_container(spec)["envFrom"] if "secretRef" in s]
        assert refs == ["crm-settings"], where
    # The ignored `secrets` values do not roll the pods.
    assert checksums(release) == checksums(helm.install({"existingSecret": "crm-settings"}))


def test_extra_env_wins_over_settings(production_release: Release) -> None:
    container = only_container(deployment(production_release, "bridge")["spec"]["template"]["spec"])
    password = next(v for v in container["env"] if v["name"] == "KAFKA_SASL_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "crm-fte", "key": "password"}


# --- hooks and helm test -----------------------------------------------------------------------


def test_migration_and_kb_ingest_hooks(default_release: Release) -> None:
    jobs = {j["metadata"]["name"]: j for j in default_release.of_kind("Job")}
    migrate, ingest = jobs[f"{FULLNAME}-migrate"], jobs[f"{FULLNAME}-kb-ingest"]
    for job, weight, args in ((migrate, "0", ["migrate"]), (ingest, "10", ["kb", "ingest"])):
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert annotations["helm.sh/hook-weight"] == weight
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        assert only_container(spec)["args"] == args
        # Pre-install hooks run before the release's own ServiceAccount/ConfigMap/Secret exist.
        assert spec["serviceAccountName"] == f"{FULLNAME}-hooks"
        refs = {next(iter(s)): next(iter(s.values()))["name"] for s in only_container(spec)["envFrom"]}
        assert refs == {"configMapRef": f"{FULLNAME}-hook-config", "secretRef": f"{FULLNAME}-hook-secret"}
        assert job["spec"]["backoffLimit"] >= 0 and job["spec"]["activeDeadlineSeconds"] > 0
    for kind, name in (("ConfigMap", "hook-config"), ("Secret", "hook-secret"), ("ServiceAccount", "hooks")):
        annotations = default_release.get(kind, f"{FULLNAME}-{name}")["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert int(annotations["helm.sh/hook-weight"]) < 0


def test_helm_runs_hooks_in_order_before_the_release_and_cleans_up(default_release: Release) -> None:
    """The API calls Helm made: hook inputs, migrate, ingest, cleanup, then the Deployments."""
    order = [
        name
        for verb, _, name in default_release.hook_events
        if verb == "create" and not name.startswith("sh.helm.release.")
    ]
    assert (
        order.index(f"{FULLNAME}-hook-config")
        < order.index(f"{FULLNAME}-migrate")
        < order.index(f"{FULLNAME}-kb-ingest")
    )
    first_deployment = min(order.index(f"{FULLNAME}-{c}") for c in COMPONENTS)
    assert order.index(f"{FULLNAME}-kb-ingest") < first_deployment
    # hook-succeeded: the Jobs and the hook-scoped settings are gone once both Jobs succeeded.
    deleted = [name for verb, _, name in default_release.hook_events if verb == "delete"]
    assert {
        f"{FULLNAME}-migrate",
        f"{FULLNAME}-kb-ingest",
        f"{FULLNAME}-hook-secret",
        f"{FULLNAME}-hook-config",
    } <= set(deleted)
    assert not [o for o in default_release.api.objects("Job")]
    assert [
        s["metadata"]["name"]
        for s in default_release.api.objects("Secret")
        if "owner" not in s["metadata"].get("labels", {})
    ] == [f"{FULLNAME}-secret"]


def test_hooks_can_be_disabled(helm: Helm) -> None:
    release = helm.install({"hooks": {"migrate": {"enabled": False}, "kbIngest": {"enabled": False}}})
    assert not release.of_kind("Job")
    assert not [h for h in release.hooks if h["kind"] in ("ConfigMap", "Secret", "ServiceAccount")]


def test_upgrade_reruns_the_hooks_with_the_new_settings(helm: Helm) -> None:
    first, second = helm.install_then_upgrade({}, {"config": {"logLevel": "WARNING"}, "image": {"tag": "0.1.1"}})
    assert second.raw["version"] == 2 and second.raw["info"]["status"] == "deployed"
    created = [name for verb, _, name in second.hook_events if verb == "create"]
    assert f"{FULLNAME}-migrate" in created and f"{FULLNAME}-kb-ingest" in created
    hook_config = second.get("ConfigMap", f"{FULLNAME}-hook-config")["data"]
    assert hook_config["LOG_LEVEL"] == "WARNING"  # the Jobs see the new revision's settings
    job = second.get("Job", f"{FULLNAME}-migrate")
    assert only_container(job["spec"]["template"]["spec"])["image"] == "crm-digital-fte:0.1.1"
    assert checksums(first) != checksums(second)


def test_helm_test_calls_the_gateway_health_endpoint(helm: Helm) -> None:
    release, events = helm.install_and_test()
    pod = release.get("Pod", f"{FULLNAME}-test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = " ".join(only_container(pod["spec"])["args"])
    assert f"http://{FULLNAME}-gateway:80" in script and "/api/v1/health" in script
    assert ("create", "Pod", f"{FULLNAME}-test-health") in events  # Helm ran it


def test_notes_explain_how_to_reach_the_gateway_and_the_temporal_ui(
    default_release: Release, production_release: Release
) -> None:
    notes = default_release.notes
    assert f"port-forward service/{FULLNAME}-gateway 8000:80" in notes
    assert "port-forward service/temporal-web 8080:8080" in notes
    assert "WARNING: no DATABASE_URL" in notes
    production = production_release.notes
    assert "https://support.techcorp.example/" in production
    assert "https://temporal.techcorp.example" in production
    assert "WARNING" not in production


# --- supporting files -----------------------------------------------------------------------------


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "crm-digital-fte"
    assert chart["appVersion"] == "0.1.0"


def test_strimzi_example_matches_the_topic_settings() -> None:
    documents = [d for d in yaml.safe_load_all((CHART_DIR / "examples" / "strimzi-kafka.yaml").read_text()) if d]
    topics = {d["metadata"]["name"]: d for d in documents if d["kind"] == "KafkaTopic"}
    for field_name in ("kafka_topic_inbound", "kafka_topic_dead_letter"):
        topic = Settings.model_fields[field_name].default
        assert any(t["spec"].get("topicName", name) == topic for name, t in topics.items()), topic
    users = [d for d in documents if d["kind"] == "KafkaUser"]
    assert users and users[0]["spec"]["authentication"]["type"] == "scram-sha-512"
