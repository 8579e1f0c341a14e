"""dashboards/mentor_grafana.json reads only metrics that exist: Mentor's own (the names
cluster/metrics.py creates, as Ray exports them) and a short allow-list of Ray / Ray Serve metrics,
each checked against the installed Ray's source. Offline and fast."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "mentor_grafana.json"

# Ray / Ray Serve metrics the dashboard may read, as exported (ray_ prefix, Prometheus suffixes).
RAY_METRICS = {
    "ray_serve_actual_batch_size_bucket",
    "ray_serve_actual_batch_size_sum",
    "ray_serve_actual_batch_size_count",
    "ray_serve_batch_wait_time_ms_bucket",
    "ray_serve_batch_execution_time_ms_bucket",
    "ray_serve_batch_utilization_percent_bucket",
    "ray_serve_batch_queue_length",
    "ray_serve_batches_processed_total",
    "ray_serve_deployment_processing_latency_ms_bucket",
    "ray_serve_deployment_request_counter_total",
    "ray_node_gpus_utilization",
    "ray_node_gram_used",
    "ray_node_gram_available",
    "ray_node_mem_used",
    "ray_node_mem_total",
}

PROMQL_WORDS = {
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "vector",
    "clamp_min",
    "clamp_max",
    "topk",
    "bottomk",
    "label_values",
    "offset",
    "bool",
    "abs",
    "delta",
    "deriv",
    "last_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "sum_over_time",
    "quantile_over_time",
    "scalar",
    "time",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, groupings, strings, ranges removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word = match.group(0)
        if word in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        if expr[match.end() :].lstrip().startswith("("):
            continue  # a function call
        names.add(word)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def mentor_metrics() -> set[str]:
    """Every metric cluster/metrics.py creates, by recording the constructors' arguments, mapped
    to the names Ray exports: ray_<name>, counters + _total, histograms + _bucket/_sum/_count."""
    pytest.importorskip("ray")
    from cluster import metrics

    created: list[tuple[str, str]] = []

    def recorder(kind):
        class Recorder:
            def __init__(self, name, *args, **kwargs):
                created.append((kind, name))

            def set_default_tags(self, tags):
                return self

            def _record(self, value, tags=None):  # counters start at a recorded 0
                pass

        return Recorder

    saved = {kind: getattr(metrics, kind) for kind in ("Counter", "Gauge", "Histogram")}
    try:
        for kind in saved:
            setattr(metrics, kind, recorder(kind))
        metrics.WorkerMetrics(0), metrics.LearnerMetrics(), metrics.DriverMetrics()
    finally:
        for kind, cls in saved.items():
            setattr(metrics, kind, cls)
    exported = set()
    for kind, name in created:
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name), name
        base = f"ray_{name}"
        exported |= {
            "Counter": {f"{base}_total"},
            "Gauge": {base},
            "Histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count"},
        }[kind]
    assert len(created) >= 10
    return exported


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return out


def test_dashboard_is_valid_grafana_json(dashboard):
    assert dashboard["title"] and dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for cell in (
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        ):
            assert cell not in taken, f"{panel['title']!r} overlaps {taken[cell]!r}"
            taken[cell] = panel["title"]


def test_every_panel_has_a_datasource_and_known_metrics(dashboard, mentor_metrics):
    allowed = mentor_metrics | RAY_METRICS
    used: set[str] = set()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            names = metric_names(target["expr"])
            assert names, f"{panel['title']!r}: no metric in {target['expr']!r}"
            unknown = names - allowed
            assert not unknown, f"{panel['title']!r} reads unknown metrics {sorted(unknown)}"
            used |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.search(r"label_values\((\w+)", variable["query"]["query"]).group(1)
            assert inner in allowed, inner
    # Every Mentor metric has a panel (histograms through their buckets).
    unused = {m for m in mentor_metrics if not m.endswith(("_sum", "_count"))} - used
    assert not unused, f"Mentor metrics with no panel: {sorted(unused)}"
    # The panels the operations guide promises.
    titles = " ".join(p["title"].lower() for p in panels(dashboard))
    for word in (
        "env steps",
        "learner updates",
        "replay",
        "policy lag",
        "feedback pending",
        "latency",
        "availability",
        "backpressure",
        "episode return",
        "driving score",
        "losses",
        "serve batch",
        "gpu",
    ):
        assert word in titles, word


def test_ray_allow_list_matches_the_installed_ray():
    """Each allowed Ray/Serve metric is created under that name by the installed Ray."""
    ray = pytest.importorskip("ray")
    root = Path(ray.__file__).parent
    sources = "".join(p.read_text(errors="ignore") for p in (root / "serve").rglob("*.py") if "tests" not in p.parts)
    sources += (root / "dashboard" / "modules" / "reporter" / "reporter_agent.py").read_text()
    for name in RAY_METRICS:
        exported = name[len("ray_") :]
        base = re.sub(r"_(bucket|sum|count|total)$", "", exported)  # node_mem_total is a gauge's own name
        assert f'"{base}"' in sources or f'"{exported}"' in sources, f"{exported} is not a metric of the installed Ray"


def test_metric_name_extraction():
    expr = (
        "histogram_quantile(0.9, sum by (le) (rate(ray_mentor_feedback_latency_s_bucket"
        '{SessionName=~"$SessionName", worker="1"}[$__rate_interval]))) / on() max(ray_mentor_replay_size)'
    )
    assert metric_names(expr) == {"ray_mentor_feedback_latency_s_bucket", "ray_mentor_replay_size"}
