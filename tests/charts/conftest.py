"""Render the Helm chart with Helm's own code, offline, and validate what it sends.

helm-sdkpy embeds the Helm v4 Go library. Its Lint works offline, but it exposes no
``helm template`` / dry-run, and its Install and Upgrade talk to a Kubernetes API server. So the
tests give it one: :class:`FakeKubeAPI` speaks just enough of the Kubernetes REST API (version and
discovery, OpenAPI v3 roots, create/get/list/watch/patch/delete, Helm's release Secrets) for a
real ``helm install`` / ``helm upgrade`` / ``helm test`` to run end to end. Like an API server
with strict field validation, it checks every object Helm creates or updates against the
Kubernetes JSON schemas shipped by ``kubernetes-validate`` and answers 422 when one is invalid,
so the install fails with the schema error. Kinds without a bundled schema (the ServiceMonitor
and PrometheusRule CRDs) are accepted and listed in ``unvalidated``.

What this proves is Helm's view: values-schema validation, template rendering, hook ordering and
weights, the release manifest. What it cannot prove is the cluster's behaviour: admission
webhooks, quotas, PodSecurity admission, controllers, scheduling.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

INSTALL_HINT = "pip install --ignore-requires-python helm-sdkpy kubernetes-validate"

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "crm-digital-fte"
PRODUCTION_VALUES = CHART_DIR / "ci" / "production-values.yaml"

# The Kubernetes version the fake API server reports and the schemas are checked against.
KUBE_VERSION = "1.31.0"
RELEASE = "fte"
NAMESPACE = "crm"


def _require(module: str) -> Any:
    """Import a test tool or fail (never skip) with the command that installs it."""
    try:
        return __import__(module)
    except ImportError as error:  # pragma: no cover - depends on the environment
        pytest.fail(f"{module} is not installed ({error}); install the chart-test tools with: {INSTALL_HINT}")


# --- the fake Kubernetes API server ---------------------------------------------------------

# group, version, kind, plural, namespaced: what the chart uses plus what Helm itself touches.
_RESOURCES: tuple[tuple[str, str, str, str, bool], ...] = (
    ("", "v1", "ConfigMap", "configmaps", True),
    ("", "v1", "Secret", "secrets", True),
    ("", "v1", "Service", "services", True),
    ("", "v1", "ServiceAccount", "serviceaccounts", True),
    ("", "v1", "Pod", "pods", True),
    ("", "v1", "Namespace", "namespaces", False),
    ("apps", "v1", "Deployment", "deployments", True),
    ("batch", "v1", "Job", "jobs", True),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True),
    ("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors", True),
    ("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", True),
)


def _group_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _protobuf_fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """Decode one protobuf message into (field number, raw value) pairs."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(buf):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            yield number, varint()
        elif wire_type == 2:
            length = varint()
            yield number, buf[pos : pos + length]
            pos += length
        elif wire_type == 1:
            yield number, buf[pos : pos + 8]
            pos += 8
        elif wire_type == 5:
            yield number, buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def _protobuf_map(entries: list[bytes]) -> dict[str, bytes]:
    out = {}
    for entry in entries:
        fields = dict(_protobuf_fields(entry))
        out[fields.get(1, b"").decode()] = fields.get(2, b"")
    return out


def secret_from_protobuf(raw: bytes) -> dict[str, Any]:
    """Helm stores releases in Secrets through client-go's protobuf encoding; read the fields it sets."""
    if raw[:4] != b"k8s\x00":
        raise ValueError("not a Kubernetes protobuf envelope")
    envelope = dict(_protobuf_fields(raw[4:]))
    secret = list(_protobuf_fields(envelope[2]))  # runtime.Unknown.raw -> v1.Secret
    meta = list(_protobuf_fields(next(v for k, v in secret if k == 1)))
    name = next(v for k, v in meta if k == 1).decode()
    labels = {k: v.decode() for k, v in _protobuf_map([v for k, v in meta if k == 11]).items()}
    data = {k: base64.b64encode(v).decode() for k, v in _protobuf_map([v for k, v in secret if k == 2]).items()}
    kinds = [v.decode() for k, v in secret if k == 3]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "type": kinds[0] if kinds else "Opaque",
        "data": data,
    }


class FakeKubeAPI:
    """A single-namespace Kubernetes API stand-in for Helm, validating what it stores."""

    def __init__(self, kube_version: str = KUBE_VERSION) -> None:
        self.kube_version = kube_version
        self.store: dict[tuple[str, str | None, str], dict[str, dict[str, Any]]] = {}
        self.events: list[tuple[str, str, str]] = []  # (verb, kind, name) in arrival order
        self.unvalidated: set[str] = set()
        self._lock = threading.Lock()
        self._resource_version = 100
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )

    def __enter__(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """Objects of one kind currently stored (hooks deleted by policy are gone)."""
        plural = next(p for _, _, k, p, _ in _RESOURCES if k == kind)
        with self._lock:
            return [copy.deepcopy(o) for (_, _, p), objs in self.store.items() if p == plural for o in objs.values()]

    # -- validation ------------------------------------------------------------------------
    def _validate(self, obj: dict[str, Any]) -> str | None:
        import kubernetes_validate

        kind = obj.get("kind", "?")
        if kind == "Secret" and obj.get("metadata", {}).get("labels", {}).get("owner") == "helm":
            return None  # Helm's own release record
        try:
            kubernetes_validate.validate(obj, self.kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            self.unvalidated.add(f"{obj.get('apiVersion')}/{kind}")
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            return f"{kind} {obj.get('metadata', {}).get('name')}: {path}: {error.message}"
        return None

    # -- HTTP ------------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # small keep-alive responses, else ~40 ms each

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                api._route(self, "GET")

            def do_POST(self) -> None:
                api._route(self, "POST")

            def do_PUT(self) -> None:
                api._route(self, "PUT")

            def do_PATCH(self) -> None:
                api._route(self, "PATCH")

            def do_DELETE(self) -> None:
                api._route(self, "DELETE")

        return Handler

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        }

    @staticmethod
    def _body(request: BaseHTTPRequestHandler) -> dict[str, Any] | None:
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if "protobuf" in (request.headers.get("Content-Type") or ""):
            return secret_from_protobuf(raw)
        return json.loads(raw) if raw else None

    def _discovery(self, request: BaseHTTPRequestHandler, path: str) -> bool:
        if path == "/version":
            major, minor, _ = self.kube_version.split(".")
            self._send(
                request,
                200,
                {"major": major, "minor": minor, "gitVersion": f"v{self.kube_version}", "platform": "linux/amd64"},
            )
        elif path == "/api":
            self._send(request, 200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        elif path == "/apis":
            groups: dict[str, list[str]] = {}
            for group, version, *_ in _RESOURCES:
                if group and version not in groups.setdefault(group, []):
                    groups[group].append(version)
            self._send(
                request,
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": group,
                            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
                        }
                        for group, versions in groups.items()
                    ],
                },
            )
        elif path == "/openapi/v3":
            # Declaring the fieldValidation parameter tells Helm (kubectl's validator) that the server
            # validates fields itself, as every current API server does; this fake does it on create.
            roots = {_group_path(g, v) for g, v, *_ in _RESOURCES}
            self._send(request, 200, {"paths": {p: {"serverRelativeURL": f"/openapi/v3/{p}?hash=0"} for p in roots}})
        elif path.startswith("/openapi/v3/"):
            group_path = path.removeprefix("/openapi/v3/")
            paths = {}
            for group, version, kind, plural, namespaced in _RESOURCES:
                if _group_path(group, version) == group_path:
                    item = f"/{group_path}/" + ("namespaces/{namespace}/" if namespaced else "") + f"{plural}/{{name}}"
                    paths[item] = {
                        "patch": {
                            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                            "responses": {"200": {"description": "OK"}},
                        }
                    }
            self._send(request, 200, {"openapi": "3.0.0", "info": {"title": "fake", "version": "v1"}, "paths": paths})
        else:
            return False
        return True

    def _route(self, request: BaseHTTPRequestHandler, verb: str) -> None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if verb == "GET" and self._discovery(request, url.path):
            return
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            self._send(request, 404, self._status(404, "NotFound", f"no route {url.path}"))
            return
        known = [r for r in _RESOURCES if r[0] == group and r[1] == version]
        if not rest:
            resources = [
                {
                    "name": plural,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
                for _, _, kind, plural, namespaced in known
            ]
            group_version = f"{group}/{version}" if group else version
            if not resources:
                self._send(request, 404, self._status(404, "NotFound", group_version))
            else:
                self._send(
                    request,
                    200,
                    {
                        "kind": "APIResourceList",
                        "apiVersion": "v1",
                        "groupVersion": group_version,
                        "resources": resources,
                    },
                )
            return
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name = rest[0], (rest[1] if len(rest) > 1 else None)
        kind = next((k for _, _, k, p, _ in known if p == plural), None)
        if kind is None:
            self._send(request, 404, self._status(404, "NotFound", f"unknown resource {plural}"))
            return
        body = self._body(request) if verb in ("POST", "PUT", "PATCH", "DELETE") else None
        with self._lock:
            collection = self.store.setdefault((_group_path(group, version), namespace, plural), {})
            if verb == "GET" and name is None and query.get("watch", [""])[0] in ("true", "1"):
                initial = list(collection.values()) if query.get("sendInitialEvents", [""])[0] == "true" else []
                bookmark = {
                    "kind": kind,
                    "apiVersion": f"{group}/{version}".lstrip("/"),
                    "metadata": {
                        "resourceVersion": str(self._resource_version),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
            elif verb == "GET" and name is None:
                items = list(collection.values())
                for term in filter(None, query.get("labelSelector", [""])[0].split(",")):
                    key, _, value = term.partition("=")
                    items = [i for i in items if i["metadata"].get("labels", {}).get(key) == value]
                selector = query.get("fieldSelector", [""])[0]
                if selector.startswith("metadata.name="):
                    items = [i for i in items if i["metadata"]["name"] == selector.split("=", 1)[1]]
                self._send(
                    request,
                    200,
                    {
                        "kind": f"{kind}List",
                        "apiVersion": f"{group}/{version}".lstrip("/"),
                        "metadata": {"resourceVersion": str(self._resource_version)},
                        "items": items,
                    },
                )
                return
            elif verb == "GET":
                if name in collection:
                    self._send(request, 200, collection[name])
                else:
                    self._send(request, 404, self._status(404, "NotFound", f'{plural} "{name}" not found'))
                return
            elif verb == "POST":
                assert body is not None
                name = body.get("metadata", {}).get("name", "")
                if name in collection:
                    self._send(request, 409, self._status(409, "AlreadyExists", f'{plural} "{name}" already exists'))
                    return
                problem = self._validate(body)
                if problem:
                    self._send(request, 422, self._status(422, "Invalid", problem))
                    return
                self._resource_version += 1
                stored = copy.deepcopy(body)
                stored["metadata"].update(
                    {
                        "uid": str(uuid.uuid4()),
                        "resourceVersion": str(self._resource_version),
                        "creationTimestamp": "2025-01-01T00:00:00Z",
                        "generation": 1,
                    }
                )
                if namespace:
                    stored["metadata"]["namespace"] = namespace
                # Hooks are waited on: a Job completes and a test Pod succeeds at once.
                if kind == "Job":
                    stored["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
                elif kind == "Pod":
                    stored["status"] = {"phase": "Succeeded"}
                collection[name] = stored
                self.events.append(("create", kind, name))
                self._send(request, 201, stored)
                return
            elif verb in ("PUT", "PATCH"):
                if name not in collection:
                    self._send(request, 404, self._status(404, "NotFound", f'{plural} "{name}" not found'))
                    return
                if verb == "PUT" and body is not None:
                    problem = self._validate(body)
                    if problem:
                        self._send(request, 422, self._status(422, "Invalid", problem))
                        return
                    collection[name] = {
                        **body,
                        "metadata": {**collection[name]["metadata"], **body.get("metadata", {})},
                    }
                # A PATCH (Helm's three-way merge on upgrade) is recorded, not applied: the tests read
                # the upgraded manifest from the release itself.
                self.events.append(("update", kind, name))
                self._send(request, 200, collection[name])
                return
            elif verb == "DELETE":
                stored_object = collection.pop(name or "", None)
                if stored_object is None:
                    self._send(request, 404, self._status(404, "NotFound", f'{plural} "{name}" not found'))
                else:
                    self.events.append(("delete", kind, name or ""))
                    self._send(request, 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200})
                return
        # A watch (WatchList): the current objects as ADDED events and the bookmark that ends the
        # initial list, then a short idle stream. Helm's waiter has what it needs from the first part.
        events = [{"type": "ADDED", "object": o} for o in initial]
        if initial or query.get("sendInitialEvents", [""])[0] == "true":
            events.append({"type": "BOOKMARK", "object": bookmark})
        try:
            request.send_response(200)
            request.send_header("Content-Type", "application/json")
            request.send_header("Transfer-Encoding", "chunked")
            request.end_headers()
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                request.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            request.wfile.flush()
            time.sleep(2)
            request.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped watching


# --- Helm through helm-sdkpy ------------------------------------------------------------------


@dataclass
class Release:
    """What Helm rendered for one release, plus what the fake API server saw."""

    raw: dict[str, Any]
    manifests: list[dict[str, Any]]
    hooks: list[dict[str, Any]]
    api: FakeKubeAPI
    notes: str = ""
    hook_events: list[tuple[str, str, str]] = field(default_factory=list)

    def all(self) -> list[dict[str, Any]]:
        return self.manifests + self.hooks

    def of_kind(self, kind: str, *, hooks: bool = True) -> list[dict[str, Any]]:
        source = self.all() if hooks else self.manifests
        return [m for m in source if m["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for manifest in self.all():
            if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
                return manifest
        raise KeyError(f"{kind}/{name} not rendered; have {[(m['kind'], m['metadata']['name']) for m in self.all()]}")


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


class Helm:
    """helm install / upgrade / test / lint of the chart against a fresh fake API server each time."""

    def __init__(self, helm_sdkpy: Any) -> None:
        self._sdk = helm_sdkpy
        self.InstallError: type[Exception] = helm_sdkpy.InstallError

    def _configuration(self, api: FakeKubeAPI) -> Any:
        return self._sdk.Configuration(namespace=NAMESPACE, kubeconfig=api.kubeconfig())

    @staticmethod
    def _release(raw: dict[str, Any], api: FakeKubeAPI) -> Release:
        hooks = [doc for hook in raw.get("hooks") or [] for doc in _documents(hook["manifest"])]
        return Release(
            raw=raw,
            manifests=_documents(raw.get("manifest", "")),
            hooks=hooks,
            api=api,
            notes=raw.get("info", {}).get("notes", ""),
        )

    def _install(self, config: Any, api: FakeKubeAPI, values: dict[str, Any] | None, chart: Path) -> Release:
        raw = asyncio.run(
            self._sdk.Install(config).run(RELEASE, str(chart), values=values or {}, wait=False, timeout=120)
        )
        release = self._release(raw, api)
        release.hook_events = list(api.events)
        return release

    def install(self, values: dict[str, Any] | None = None, chart: Path = CHART_DIR) -> Release:
        """`helm install` with Helm's values-schema validation on; raises InstallError on failure."""
        with FakeKubeAPI() as api:
            return self._install(self._configuration(api), api, values, chart)

    def install_then_upgrade(self, values: dict[str, Any], upgrade_values: dict[str, Any]) -> tuple[Release, Release]:
        """`helm install` then `helm upgrade` of the same release on one fake API server."""
        with FakeKubeAPI() as api:
            config = self._configuration(api)
            first = self._install(config, api, values, CHART_DIR)
            mark = len(api.events)
            raw = asyncio.run(
                self._sdk.Upgrade(config).run(RELEASE, str(CHART_DIR), values=upgrade_values, wait=False, timeout=120)
            )
            second = self._release(raw, api)
            second.hook_events = api.events[mark:]
            return first, second

    def install_and_test(self, values: dict[str, Any] | None = None) -> tuple[Release, list[tuple[str, str, str]]]:
        """`helm install` then `helm test`; returns the release and the API events of the test run."""
        with FakeKubeAPI() as api:
            config = self._configuration(api)
            release = self._install(config, api, values, CHART_DIR)
            mark = len(api.events)
            asyncio.run(self._sdk.ReleaseTest(config).run(RELEASE))
            return release, api.events[mark:]

    def lint(self, chart: Path = CHART_DIR) -> dict[str, Any]:
        """`helm lint` (offline); Helm's result with Severity 1 info, 2 warning, 3 error."""
        with FakeKubeAPI() as api:
            return asyncio.run(self._sdk.Lint(self._configuration(api)).run(str(chart)))


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    sdk = _require("helm_sdkpy")
    _require("kubernetes_validate")
    home = tmp_path_factory.mktemp("helm-home")
    # Helm keeps caches and registry config under these; keep them out of the user's home.
    with pytest.MonkeyPatch.context() as patch:
        for variable in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            patch.setenv(variable, str(home / variable.lower()))
        yield Helm(sdk)


@pytest.fixture(scope="session")
def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


@pytest.fixture(scope="session")
def default_release(helm: Helm) -> Release:
    return helm.install()


@pytest.fixture(scope="session")
def production_release(helm: Helm, production_values: dict[str, Any]) -> Release:
    return helm.install(production_values)


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A scratch copy of the chart, for lint runs with edited values.yaml."""
    target = tmp_path / CHART_DIR.name
    shutil.copytree(CHART_DIR, target)
    return target
