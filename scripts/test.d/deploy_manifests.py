"""Step 4 of scripts/test.d/deploy.sh: our own checks of the rendered
manifests (CRD shapes, namespaces, references, and the invariants
deploy/README.md promises); writes the PrometheusRule's spec as a plain rules
file for promtool.

Usage: deploy_manifests.py RENDER_DIR src/telemetry.rs OVERLAY...
(RENDER_DIR holds OVERLAY.yaml for each overlay.) Exits 1, listing every
failure, if any check fails. Runs in deploy.sh's venv (needs PyYAML).
"""
import re
import sys

import yaml

out, telemetry, overlays = sys.argv[1], sys.argv[2], sys.argv[3:]
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def seconds(value):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", value.strip())
    if not m:
        raise ValueError(value)
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60}[m.group(2)]


# Metric names the gateway exports (src/telemetry.rs) and those a rule may use
# before the gateway does (none at present).
exported = set(re.findall(r'pub const \w+: &str = "(pushgate_\w+)"', open(telemetry).read()))
planned = set()
if not exported:
    err(telemetry, "no metric names found")

NAMESPACED_EXEMPT = {"Namespace"}
rules_written = False

for overlay in overlays:
    docs = [d for d in yaml.safe_load_all(open(f"{out}/{overlay}.yaml")) if d]
    where = f"overlay {overlay}"
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        name = d.get("metadata", {}).get("name")
        if d["kind"] not in NAMESPACED_EXEMPT and d["metadata"].get("namespace") != "pushgate":
            err(where, f"{d['kind']}/{name} is not in namespace pushgate")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}

    # -- CRDs without a schema in kubernetes-validate: check their shape.
    for kind, api in (("ServiceMonitor", "monitoring.coreos.com/v1"), ("PrometheusRule", "monitoring.coreos.com/v1")):
        objs = by_kind.get(kind, [])
        if len(objs) != 1:
            err(where, f"expected one {kind}, found {len(objs)}")
            continue
        o = objs[0]
        extra = set(o) - {"apiVersion", "kind", "metadata", "spec"}
        if o.get("apiVersion") != api or extra or not isinstance(o.get("spec"), dict):
            err(where, f"{kind}: want apiVersion {api} and only apiVersion/kind/metadata/spec keys")
    for sm in by_kind.get("ServiceMonitor", []):
        spec = sm["spec"]
        sel = spec.get("selector", {}).get("matchLabels", {})
        hits = [s for s in by_kind.get("Service", []) if sel and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
        if len(hits) != 1:
            err(where, f"ServiceMonitor selects {len(hits)} Services (want exactly one, else pods are scraped twice)")
        eps = spec.get("endpoints") or []
        if not eps:
            err(where, "ServiceMonitor has no endpoints")
        for ep in eps:
            if set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels", "relabelings", "metricRelabelings"}:
                err(where, f"ServiceMonitor endpoint has unexpected keys {sorted(ep)}")
            if ep.get("path") != "/metrics":
                err(where, "ServiceMonitor endpoint path is not /metrics")
            ports = {p.get("name") for s in hits for p in s["spec"]["ports"]}
            if ep.get("port") not in ports:
                err(where, f"ServiceMonitor port {ep.get('port')!r} is not a port of the selected Service")
    for pr in by_kind.get("PrometheusRule", []):
        groups = pr["spec"].get("groups")
        if set(pr["spec"]) != {"groups"} or not isinstance(groups, list) or not groups:
            err(where, "PrometheusRule spec must hold a non-empty groups list only")
            continue
        alerts = set()
        for g in groups:
            if set(g) - {"name", "rules", "interval"} or not g.get("name") or not g.get("rules"):
                err(where, f"rule group {g.get('name')!r}: want name and rules")
                continue
            for r in g["rules"]:
                a = r.get("alert")
                if not a or set(r) != {"alert", "expr", "for", "labels", "annotations"}:
                    err(where, f"rule {a!r}: want exactly alert, expr, for, labels, annotations")
                    continue
                alerts.add(a)
                if r["labels"].get("severity") not in ("critical", "warning", "info"):
                    err(where, f"rule {a}: labels.severity must be critical, warning or info")
                if not {"summary", "description"} <= set(r["annotations"]):
                    err(where, f"rule {a}: annotations need summary and description")
                for metric in set(re.findall(r"\b(pushgate_[a-z_]+)", r["expr"])):
                    base = re.sub(r"_(bucket|sum|count)$", "", metric)
                    if metric not in exported and base not in exported and metric not in planned:
                        err(where, f"rule {a}: metric {metric} is not exported by src/telemetry.rs")
        for must in ("PushgateNoAvailablePods", "PushgateSlowConsumerDropsHigh", "PushgatePushFailureRatioHigh",
                     "PushgateRedisDown", "PushgateConnectionCapReached"):
            if must not in alerts:
                err(where, f"alert {must} missing")
        if not rules_written:
            # promtool reads plain Prometheus rule files: the spec is one.
            with open(f"{out}/rules.yaml", "w") as f:
                yaml.safe_dump(pr["spec"], f, sort_keys=False)
            rules_written = True

    # -- references resolve (or are optional)
    for d in docs:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for ef in c.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    ref = ef.get(key)
                    if ref and (kind, ref["name"]) not in names and not ref.get("optional"):
                        err(where, f"{d['kind']}/{d['metadata']['name']}: {kind} {ref['name']} is neither rendered nor optional")
        sa = pod.get("serviceAccountName")
        if sa and ("ServiceAccount", sa) not in names:
            err(where, f"ServiceAccount {sa} not rendered")

    # -- the gateway Deployment: what deploy/README.md promises
    deps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "pushgate"]
    if len(deps) != 1:
        err(where, "no Deployment pushgate")
        continue
    dep = deps[0]
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    ru = spec["strategy"].get("rollingUpdate", {})
    if (ru.get("maxUnavailable"), ru.get("maxSurge"), spec.get("minReadySeconds")) != (0, 1, 10):
        err(where, "rolling update must be maxUnavailable 0, maxSurge 1, minReadySeconds 10")
    if c["readinessProbe"]["httpGet"] != {"path": "/readyz", "port": "http"}:
        err(where, "readiness probe must be GET /readyz on port http")
    if c["livenessProbe"]["httpGet"] != {"path": "/healthz", "port": "http"}:
        err(where, "liveness probe must be GET /healthz on port http")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    if ports != {"http": 1234, "api": 1235, "text": 5678}:
        err(where, f"container ports {ports}")
    pre = c.get("lifecycle", {}).get("preStop", {})
    if set(pre) != {"sleep"}:
        err(where, "preStop must be the sleep action (the image has no shell)")
    cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"]["name"].startswith("pushgate-config")]
    env = cms[0]["data"] if cms else {}
    if env.get("PUSHGATE_LOG_FORMAT") != "json":
        err(where, "ConfigMap must set PUSHGATE_LOG_FORMAT=json")
    if not env.get("PUSHGATE_TEXT_LISTEN", "").startswith("0.0.0.0:"):
        err(where, "ConfigMap must set PUSHGATE_TEXT_LISTEN=0.0.0.0:5678 (backend pods reach it)")
    if env.get("PUSHGATE_API_LISTEN") != "0.0.0.0:1235":
        err(where, "ConfigMap must set PUSHGATE_API_LISTEN=0.0.0.0:1235 (backends and Prometheus reach it)")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/port") not in (None, "1235"):
        err(where, "prometheus.io/port must be the api port 1235 (/metrics is not on 1234)")
    for sm in by_kind.get("ServiceMonitor", []):
        if any(ep.get("port") != "api" for ep in sm["spec"].get("endpoints", [])):
            err(where, "ServiceMonitor must scrape the api port (/metrics is not on 1234)")
    shutdown = seconds(env.get("PUSHGATE_SHUTDOWN_TIMEOUT", "15s"))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pre.get("sleep", {}).get("seconds", 0) + shutdown + 5:
        err(where, f"terminationGracePeriodSeconds {grace} < preStop + PUSHGATE_SHUTDOWN_TIMEOUT + 5 s")
    # A full pod must drain at PUSHGATE_DRAIN_RATE within the drain's share
    # of the shutdown timeout (3/4 of it, src/shutdown.rs); past that the
    # gateway closes faster than the rate the operator chose.
    conns = int(env.get("PUSHGATE_MAX_CONNECTIONS", "0"))
    rate = int(env.get("PUSHGATE_DRAIN_RATE", "1000"))
    if conns == 0 or rate == 0 or conns / rate > 0.75 * shutdown:
        err(where, f"PUSHGATE_MAX_CONNECTIONS {conns} / PUSHGATE_DRAIN_RATE {rate} must fit in 3/4 of PUSHGATE_SHUTDOWN_TIMEOUT ({shutdown} s)")
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and (sc.get("runAsNonRoot") or psc.get("runAsNonRoot"))
            and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
        err(where, "securityContext: want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation, drop ALL, seccomp RuntimeDefault")
    res = c.get("resources", {})
    if not (res.get("requests", {}).get("cpu") and res.get("limits", {}).get("memory")):
        err(where, "resources: requests and limits needed")
    # The memory request covers a full pod at BENCHMARKS.md's figures:
    # 2.5 KiB RSS + ~4 KiB kernel memory per idle connection, + 10 MiB base.
    def mib(q):
        m = re.fullmatch(r"(\d+)(Mi|Gi)", str(q))
        if not m:
            raise ValueError(q)
        return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)
    need = conns * (2.5 + 4) / 1024 + 10
    if mib(res.get("requests", {}).get("memory", "0Mi")) < need:
        err(where, f"memory request below {need:.0f}Mi, what PUSHGATE_MAX_CONNECTIONS {conns} needs")
    # The HPA scales on connections per pod, before the 80 % alert.
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        pods = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
        if not pods or pods[0]["pods"]["metric"]["name"] != "pushgate_ws_connections":
            err(where, "the HPA must scale on pushgate_ws_connections per pod first")
        elif not 0 < int(pods[0]["pods"]["target"]["averageValue"]) <= 0.8 * conns:
            err(where, "the HPA's connection target must be above 0 and below 80 % of PUSHGATE_MAX_CONNECTIONS")
    # A version tag, never latest: the crate's version.
    version = re.search(r'^version = "([^"]+)"', open("Cargo.toml").read(), re.M).group(1)
    images = {ct["image"] for d in by_kind.get("Deployment", []) for ct in d["spec"]["template"]["spec"]["containers"]}
    if images != {f"pushgate:{version}"}:
        err(where, f"pushgate's image must be tagged with the crate version {version}: {images}")
    refs = {ef.get("secretRef", {}).get("name"): ef.get("secretRef", {}) for ef in c.get("envFrom", [])}
    if not refs.get("pushgate-secrets", {}).get("optional"):
        err(where, "envFrom must reference the Secret pushgate-secrets with optional: true")

    # -- NetworkPolicy: 1234 open, 5678 for labelled backends only
    nps = [n for n in by_kind.get("NetworkPolicy", []) if n["metadata"]["name"] == "pushgate"]
    if len(nps) != 1:
        err(where, "no NetworkPolicy pushgate")
    else:
        for rule in nps[0]["spec"]["ingress"]:
            rports = {p["port"] for p in rule.get("ports", [])}
            if "text" in rports or 5678 in rports:
                peers = rule.get("from") or []
                if not peers or any("pushgate.io/backend" not in p.get("podSelector", {}).get("matchLabels", {}) for p in peers):
                    err(where, "text port must be reachable only from pods labelled pushgate.io/backend")

    # -- per overlay
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if overlay == "single":
        if spec.get("replicas") != 1 or hpas:
            err(where, "single: exactly one replica and no HPA (routing is in memory)")
    if overlay == "cluster":
        if not hpas or hpas[0]["spec"]["minReplicas"] < 2:
            err(where, "cluster: HPA with minReplicas >= 2 needed")
        if spec.get("replicas", 2) < 2:
            err(where, "cluster: replicas < 2")
        secrets = [s for s in by_kind.get("Secret", []) if "PUSHGATE_REDIS_URL" in s.get("data", {}) or "PUSHGATE_REDIS_URL" in s.get("stringData", {})]
        if len(secrets) != 1 or secrets[0]["metadata"]["name"] not in refs:
            err(where, "cluster: a Secret with PUSHGATE_REDIS_URL, referenced by the Deployment, needed")
        if not any(s["metadata"]["name"] == "pushgate-redis" for s in by_kind.get("StatefulSet", [])):
            err(where, "cluster: Redis StatefulSet missing")

if errors:
    print("\n".join("deploy: FAIL: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"deploy: manifest checks passed ({', '.join(overlays)}); metrics known: {len(exported)}")
