"""The chart's PrometheusRule and Grafana dashboard, against the metrics the code really exports.

The rules are rendered by a real `helm install` (conftest.py), then checked by Prometheus' own
`promtool`: `check rules` parses every expression and annotation template, and `test rules` feeds
synthetic series just above and just below each threshold and asserts which alerts fire, once
with the default values and once with changed ones (so a threshold that does not reach the rule
fails). The metric names in the rules and the dashboard must be exported by the processes' code
(read from prometheus_client's registry after importing the gateway, worker and bridge) or be a
recording rule of the chart.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.settings import Settings

if typing.TYPE_CHECKING:  # fixtures come from conftest.py; never import it at run time
    from conftest import Helm, Release

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "crm-digital-fte"
DASHBOARD_FILE = CHART_DIR / "dashboards" / "crm-digital-fte.json"
FULLNAME = "fte-crm-digital-fte"
NAMESPACE = "crm"
ALERTS = {
    "escalationRate": "CrmFteEscalationRateHigh",
    "replyLatency": "CrmFteReplyLatencyHigh",
    "slaBreaches": "CrmFteEscalationSlaBreached",
    "deadLetters": "CrmFteDeadLetterGrowing",
    "bridgeLag": "CrmFteBridgeLagHigh",
    "activityFailures": "CrmFteActivityFailureRateHigh",
}
# The processes: importing them defines every metric they export in prometheus_client's registry.
PROCESS_MODULES = ("gateway.app", "workers.worker", "workers.bridge")
# Series Prometheus itself makes (not exported by anyone).
PROMETHEUS_SERIES = {"ALERTS"}
ENABLED = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # never skip: the rules would go unchecked
        pytest.fail("promtool is not installed; install it with: apt-get install prometheus (Debian's package)")
    return path


def settings_default(name: str) -> Any:
    return Settings.model_fields[name].default


# --- what the code exports --------------------------------------------------------------------


def exported_series() -> set[str]:
    """Every sample name the gateway, worker and bridge processes can expose on /metrics."""
    from prometheus_client import REGISTRY

    for module in PROCESS_MODULES:
        importlib.import_module(module)
    names = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (strings, matchers, ranges, groupings dropped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _KEYWORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (namespace, le) (rate(a_bucket{outcome="x", b="{y}"}[5m])) / on (namespace) b:c:rate5m '
        "> 0.25 and on () sum(increase(d_total[1h])) >= 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:rate5m", "d_total"}


# --- rendering --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def enabled_release(helm: Helm) -> Release:
    return helm.install(ENABLED)


def rule_spec(release: Release) -> dict[str, Any]:
    (rule,) = release.of_kind("PrometheusRule")
    spec: dict[str, Any] = rule["spec"]
    return spec


def rules(release: Release) -> list[dict[str, Any]]:
    return [r for group in rule_spec(release)["groups"] for r in group["rules"]]


def alert_rules(release: Release) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules(release) if "alert" in r}


def recording_names(release: Release) -> set[str]:
    return {r["record"] for r in rules(release) if "record" in r}


def test_nothing_is_rendered_unless_enabled(default_release: Release) -> None:
    assert not default_release.of_kind("PrometheusRule")
    assert not [m for m in default_release.of_kind("ConfigMap") if m["metadata"]["name"].endswith("-dashboard")]


def test_the_rule_is_rendered_when_enabled(enabled_release: Release) -> None:
    (rule,) = enabled_release.of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "fte"
    assert [g["name"] for g in rule["spec"]["groups"]] == ["crm-digital-fte.recording", "crm-digital-fte.alerts"]
    assert set(alert_rules(enabled_release)) == set(ALERTS.values())
    assert enabled_release.raw["info"]["status"] == "deployed"


def test_every_alert_has_severity_summary_and_description(enabled_release: Release) -> None:
    for name, rule in alert_rules(enabled_release).items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert len(rule["annotations"]["description"]) > 80, name
        assert "runbook_url" not in rule["annotations"], name  # only with prometheusRule.runbookUrl


def test_labels_interval_and_runbook_from_values(helm: Helm) -> None:
    release = helm.install(
        {
            "prometheusRule": {
                "enabled": True,
                "labels": {"release": "kube-prometheus-stack"},
                "interval": "1m",
                "alertLabels": {"team": "support"},
                "runbookUrl": "https://runbooks.example/crm/",
            }
        }
    )
    (rule,) = release.of_kind("PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert {g["interval"] for g in rule["spec"]["groups"]} == {"1m"}
    for name, alert in alert_rules(release).items():
        assert alert["labels"]["team"] == "support"
        assert alert["annotations"]["runbook_url"] == f"https://runbooks.example/crm#{name.lower()}"


def test_alerts_can_be_switched_off(helm: Helm) -> None:
    release = helm.install(
        {"prometheusRule": {"enabled": True, "alerts": {"bridgeLag": {"enabled": False}}}},
    )
    assert set(alert_rules(release)) == set(ALERTS.values()) - {"CrmFteBridgeLagHigh"}
    none = helm.install(
        {"prometheusRule": {"enabled": True, "alerts": {key: {"enabled": False} for key in ALERTS}}},
    )
    assert [g["name"] for g in rule_spec(none)["groups"]] == ["crm-digital-fte.recording"]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"escalationRate": {"threshold": 1.5}}, "/prometheusRule/alerts/escalationRate/threshold"),
        ({"bridgeLag": {"for": "ten minutes"}}, "/prometheusRule/alerts/bridgeLag/for"),
        ({"noSuchAlert": {"enabled": True}}, "additional properties 'noSuchAlert' not allowed"),
    ],
)
def test_schema_rejects_bad_alert_values(helm: Helm, bad: dict[str, Any], expected: str) -> None:
    with pytest.raises(helm.InstallError) as raised:
        helm.install({"prometheusRule": {"enabled": True, "alerts": bad}})
    assert expected in str(raised.value)


# --- thresholds -------------------------------------------------------------------------------


def thresholds(release: Release) -> dict[str, list[float]]:
    """The numbers each alert's expression compares with, in order."""
    return {
        name: [float(n) for n in re.findall(r"(?:>|>=)\s*([0-9.]+)", rule["expr"])]
        for name, rule in alert_rules(release).items()
    }


def test_default_thresholds_are_the_settings_defaults(enabled_release: Release) -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["prometheusRule"]["alerts"]
    assert thresholds(enabled_release) == {
        "CrmFteEscalationRateHigh": [
            settings_default("alert_escalation_rate"),
            values["escalationRate"]["minConversations"],
        ],
        "CrmFteReplyLatencyHigh": [settings_default("alert_latency_ms") / 1000],
        "CrmFteEscalationSlaBreached": [values["slaBreaches"]["threshold"]],
        "CrmFteDeadLetterGrowing": [values["deadLetters"]["threshold"]],
        "CrmFteBridgeLagHigh": [values["bridgeLag"]["threshold"]],
        "CrmFteActivityFailureRateHigh": [values["activityFailures"]["threshold"]],
    }
    for key, name in ALERTS.items():
        assert alert_rules(enabled_release)[name]["for"] == values[key]["for"]
        assert alert_rules(enabled_release)[name]["labels"]["severity"] == values[key]["severity"]


def test_thresholds_follow_the_app_settings_in_config(helm: Helm) -> None:
    release = helm.install({**ENABLED, "config": {"alertEscalationRate": 0.4, "alertLatencyMs": 4500}})
    found = thresholds(release)
    assert found["CrmFteEscalationRateHigh"][0] == 0.4
    assert found["CrmFteReplyLatencyHigh"] == [4.5]
    assert (
        "(threshold 0.4, ALERT_ESCALATION_RATE)"
        in alert_rules(release)["CrmFteEscalationRateHigh"]["annotations"]["summary"]
    )
    assert "(threshold 4500 ms" in alert_rules(release)["CrmFteReplyLatencyHigh"]["annotations"]["summary"]


CUSTOM = {
    "config": {"alertEscalationRate": 0.6, "alertLatencyMs": 2000},
    "prometheusRule": {
        "enabled": True,
        "alerts": {
            "escalationRate": {"minConversations": 20, "for": "20m", "severity": "critical"},
            "replyLatency": {"threshold": 3960},  # wins over config.alertLatencyMs
            "slaBreaches": {"threshold": 1, "window": "1h"},
            "deadLetters": {"threshold": 1},
            "bridgeLag": {"threshold": 500},
            "activityFailures": {"threshold": 0.15},
        },
    },
}


def test_explicit_thresholds_win(helm: Helm) -> None:
    release = helm.install(CUSTOM)
    assert thresholds(release) == {
        "CrmFteEscalationRateHigh": [0.6, 20],
        "CrmFteReplyLatencyHigh": [3.96],
        "CrmFteEscalationSlaBreached": [1],
        "CrmFteDeadLetterGrowing": [1],
        "CrmFteBridgeLagHigh": [500],
        "CrmFteActivityFailureRateHigh": [0.15],
    }
    escalation = alert_rules(release)["CrmFteEscalationRateHigh"]
    assert (escalation["for"], escalation["labels"]["severity"]) == ("20m", "critical")
    assert "[1h]" in alert_rules(release)["CrmFteEscalationSlaBreached"]["expr"]


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_checks_every_rule(enabled_release: Release, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_spec(enabled_release)["groups"]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules(enabled_release))} rules found" in result.stdout


def _series(name: str, values: str, **labels: str) -> dict[str, str]:
    matchers = ",".join(f'{k}="{v}"' for k, v in {"namespace": NAMESPACE, **labels}.items())
    return {"series": f"{name}{{{matchers}}}", "values": values}


def _histogram(name: str, bucket: float, per_minute: int, **labels: str) -> list[dict[str, str]]:
    """A histogram whose observations all fall in the bucket ending at `bucket`."""
    series = []
    for le in (1.0, 2.0, 3.0, 4.0, 5.0, float("inf")):
        values = f"0+{per_minute}x90" if le >= bucket else "0x90"
        series.append(_series(f"{name}_bucket", values, le="+Inf" if le == float("inf") else str(le), **labels))
    return series


# Series just above and just below each default threshold; namespaces keep the cases apart.
INPUT_SERIES = [
    # Escalation rate 0.5 on 60 conversations/h (fires), 0.1 (calm), 1.0 on 6 conversations/h (quiet).
    _series("crm_fte_conversations_started_total", "0+1x120", channel="email"),
    _series("crm_fte_escalations_total", "0+0.5x120", reason="pricing"),
    _series("crm_fte_conversations_started_total", "0+1x120", channel="email", namespace="calm"),
    _series("crm_fte_escalations_total", "0+0.1x120", reason="pricing", namespace="calm"),
    _series("crm_fte_conversations_started_total", "0+0.1x120", channel="web_form", namespace="quiet"),
    _series("crm_fte_escalations_total", "0+0.1x120", reason="refund", namespace="quiet"),
    # Reply latency: email's replies in (3 s, 4 s] (p95 3.95 s), WhatsApp's in (2 s, 3 s] (p95 2.95 s).
    *_histogram("crm_fte_reply_latency_seconds", 4.0, 2, channel="email"),
    *_histogram("crm_fte_reply_latency_seconds", 3.0, 2, channel="whatsapp"),
    # One SLA breach at minute 31 (priority high); none for urgent.
    _series("crm_fte_escalation_sla_breaches_total", "0x30 1x60", priority="high"),
    _series("crm_fte_escalation_sla_breaches_total", "0x90", priority="urgent"),
    # One dead-lettered record at minute 21, among many signalled ones.
    _series("crm_fte_bridge_records_total", "0x20 1x70", outcome="dead_lettered"),
    _series("crm_fte_bridge_records_total", "0+10x90", outcome="signalled"),
    # Lag 1200 on "in"; 900 on "other"; 600 on "dup", reported by two bridges while it moved.
    _series("crm_fte_bridge_lag", "600x90", topic="in", partition="0", pod="a"),
    _series("crm_fte_bridge_lag", "600x90", topic="in", partition="1", pod="a"),
    _series("crm_fte_bridge_lag", "900x90", topic="other", partition="0", pod="a"),
    _series("crm_fte_bridge_lag", "600x90", topic="dup", partition="0", pod="a"),
    _series("crm_fte_bridge_lag", "600x90", topic="dup", partition="0", pod="b"),
    # Activity failures: agent_step 20 %, send_email_reply 11 %, search_knowledge_base 9 %.
    _series("crm_fte_activity_seconds_count", "0+8x90", activity="agent_step", outcome="completed"),
    _series("crm_fte_activity_seconds_count", "0+2x90", activity="agent_step", outcome="failed"),
    _series("crm_fte_activity_failures_total", "0+2x90", activity="agent_step", error="APIError"),
    _series("crm_fte_activity_seconds_count", "0+89x90", activity="send_email_reply", outcome="completed"),
    _series("crm_fte_activity_seconds_count", "0+11x90", activity="send_email_reply", outcome="failed"),
    _series("crm_fte_activity_failures_total", "0+11x90", activity="send_email_reply", error="TimeoutError"),
    _series("crm_fte_activity_seconds_count", "0+91x90", activity="search_knowledge_base", outcome="completed"),
    _series("crm_fte_activity_seconds_count", "0+9x90", activity="search_knowledge_base", outcome="failed"),
    _series("crm_fte_activity_failures_total", "0+9x90", activity="search_knowledge_base", error="DBAPIError"),
]


def _firing(severity: str = "warning", **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"namespace": NAMESPACE, "severity": severity, **labels}}


# eval time -> alert -> the alerts expected to fire then.
EXPECTED_WITH_DEFAULTS: dict[str, dict[str, list[dict[str, Any]]]] = {
    "10m": {"CrmFteEscalationRateHigh": []},  # above the threshold, but not yet for 15 minutes
    "40m": {
        "CrmFteEscalationRateHigh": [_firing()],
        "CrmFteReplyLatencyHigh": [_firing(channel="email")],
        "CrmFteEscalationSlaBreached": [_firing("critical", priority="high")],
        "CrmFteDeadLetterGrowing": [],  # 19 minutes after the record: out of the 15-minute window
        "CrmFteBridgeLagHigh": [_firing(topic="in")],
        "CrmFteActivityFailureRateHigh": [_firing(activity="agent_step"), _firing(activity="send_email_reply")],
    },
    "25m": {"CrmFteDeadLetterGrowing": [_firing()]},
    "80m": {"CrmFteEscalationSlaBreached": []},  # 49 minutes after the breach
}
EXPECTED_WITH_CUSTOM: dict[str, dict[str, list[dict[str, Any]]]] = {
    "40m": {
        "CrmFteEscalationRateHigh": [],  # 0.5 <= config.alertEscalationRate 0.6
        "CrmFteReplyLatencyHigh": [],  # 3.95 s <= 3960 ms (config's 2000 ms would fire both)
        "CrmFteEscalationSlaBreached": [],  # 1 breach is not above 1
        "CrmFteBridgeLagHigh": [_firing(topic=t) for t in ("in", "other", "dup")],
        "CrmFteActivityFailureRateHigh": [_firing(activity="agent_step")],
    },
    "25m": {"CrmFteDeadLetterGrowing": []},
}


def run_promtool_tests(release: Release, expected: dict[str, dict[str, list[dict[str, Any]]]], tmp_path: Path) -> None:
    groups = rule_spec(release)["groups"]
    for group in groups:  # exp_alerts would have to spell out every rendered annotation
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    cases = [
        {"eval_time": at, "alertname": name, "exp_alerts": alerts}
        for at, by_name in expected.items()
        for name, alerts in by_name.items()
    ]
    test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": INPUT_SERIES, "alert_rule_test": cases}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test))
    result = subprocess.run([promtool(), "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alerts_fire_just_above_the_default_thresholds(enabled_release: Release, tmp_path: Path) -> None:
    run_promtool_tests(enabled_release, EXPECTED_WITH_DEFAULTS, tmp_path)


def test_alerts_follow_changed_thresholds(helm: Helm, tmp_path: Path) -> None:
    run_promtool_tests(helm.install(CUSTOM), EXPECTED_WITH_CUSTOM, tmp_path)


def test_rules_use_only_metrics_the_code_exports(enabled_release: Release) -> None:
    exported = exported_series()
    recorded = recording_names(enabled_release)
    assert {"crm_fte_conversations_started_total", "crm_fte_reply_latency_seconds_bucket"} <= exported
    assert "crm_fte_escalation_sla_breaches_total" in exported and "crm_fte_bridge_lag" in exported
    unknown = {}
    for rule in rules(enabled_release):
        names = metric_names(rule["expr"])
        assert names, rule
        if "record" in rule:  # a recording rule reads raw metrics or rules recorded before it
            assert rule["record"].count(":") == 2, rule["record"]
        if names - exported - recorded:
            unknown[rule.get("alert") or rule["record"]] = sorted(names - exported - recorded)
    assert not unknown, f"not exported by {PROCESS_MODULES}: {unknown}"


# --- the dashboard ----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_is_valid_grafana_json() -> None:
    board = dashboard()
    assert board["uid"] == "crm-digital-fte" and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def test_dashboard_uses_only_exported_metrics_and_recording_rules(enabled_release: Release) -> None:
    known = exported_series() | recording_names(enabled_release) | PROMETHEUS_SERIES
    unknown = {}
    used = set()
    for title, expr in _dashboard_exprs():
        names = metric_names(expr)
        assert names, title
        used |= names
        if names - known:
            unknown[title] = sorted(names - known)
    assert not unknown, unknown
    # Every alert's input is on the dashboard.
    assert {
        "crm_fte:escalation_rate:ratio_rate1h",
        "channel:crm_fte_reply_latency_seconds:p95_15m",
        "crm_fte_escalation_sla_breaches_total",
        "outcome:crm_fte_bridge_records:rate5m",
        "topic:crm_fte_bridge_lag:sum",
        "activity:crm_fte_activity_failures:ratio_rate5m",
    } <= used


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each panel query, Grafana's variables replaced by what Grafana sends."""
    records = []
    for number, (_, expr) in enumerate(_dashboard_exprs()):
        query = expr.replace("$__rate_interval", "2m").replace("$namespace", ".*")
        records.append({"record": f"dashboard:query:{number}", "expr": query})
    path = tmp_path / "dashboard.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_threshold_lines_are_the_settings_defaults() -> None:
    def red_line(title: str) -> float:
        (panel,) = [p for p in panels() if p["title"].startswith(title)]
        value: float = panel["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"]
        return value

    assert red_line("Escalation rate") == settings_default("alert_escalation_rate")
    assert red_line("Reply latency p95") == settings_default("alert_latency_ms") / 1000


def test_dashboard_configmap_for_the_grafana_sidecar(enabled_release: Release, helm: Helm) -> None:
    config_map = enabled_release.get("ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in config_map["metadata"]
    assert json.loads(config_map["data"]["crm-digital-fte.json"]) == dashboard()
    custom = helm.install(
        {"grafanaDashboard": {"enabled": True, "label": "dashboards", "labelValue": "crm", "folder": "Support"}}
    )
    config_map = custom.get("ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["dashboards"] == "crm"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Support"}
    assert not custom.of_kind("PrometheusRule")
