"""Assertions on a rendered chart (the output of `helm template`), used by scripts/chart-test.sh.

    checks.py builtin RENDERED            print the objects of built-in kinds, for kubernetes-validate
    checks.py CHECK RENDERED [EXPECTATIONS]   run one check; exit 1 with the reasons when it fails
    checks.py documented CHART_DIR        check that the chart README names every value

CHECK is rbac, leader-election, deployment, service-monitor or crd. The expectations describe the value
set that was rendered; they are stated by the caller, not derived from the templates.
"""

import argparse
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "eventpipe"
# Kinds from CRDs that kubernetes-validate has no schema for; checked by `service-monitor` instead.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


class Failed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise Failed(message)


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def rules_file(name):
    return yaml.safe_load((CHART / "files" / "rbac" / name).read_text())


def find(objects, kind, **where):
    return [
        o for o in objects
        if o["kind"] == kind and all(o["metadata"].get(k) == v for k, v in where.items())
    ]


def only(objects, kind, what):
    found = find(objects, kind)
    expect(len(found) == 1, f"expected one {kind} ({what}), found {len(found)}")
    return found[0]


def container(objects):
    deployment = only(objects, "Deployment", "the operator")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    expect(len(containers) == 1, f"expected one container, found {len(containers)}")
    return deployment, containers[0]


def check_binding(binding, role, service_account, namespace):
    ref = binding["roleRef"]
    expect(
        (ref["kind"], ref["name"]) == (role["kind"], role["metadata"]["name"]),
        f"{binding['kind']} {binding['metadata']['name']} refers to {ref['kind']} {ref['name']}",
    )
    subjects = [(s["kind"], s["name"], s.get("namespace")) for s in binding["subjects"]]
    expect(
        subjects == [("ServiceAccount", service_account, namespace)],
        f"{binding['kind']} {binding['metadata']['name']} binds {subjects}, "
        f"not ServiceAccount {namespace}/{service_account}",
    )


def service_account_name(objects):
    return container(objects)[0]["spec"]["template"]["spec"]["serviceAccountName"]


def rbac(objects, args):
    """The operator's rules are files/rbac/operator.yaml, granted in each watched namespace, or
    cluster-wide under a name that holds the release namespace; the aggregated edit and view roles."""
    wanted = rules_file("operator.yaml")
    sa = service_account_name(objects)
    namespaces = [n for n in args.watch_namespace.split(",") if n]
    operator_cluster_roles = [r for r in find(objects, "ClusterRole") if r["rules"] == wanted]
    if namespaces:
        granted = operator_cluster_roles + find(objects, "ClusterRoleBinding")
        expect(not granted, f"namespaced mode grants cluster-wide: {[o['metadata']['name'] for o in granted]}")
        places = [("Role", {"namespace": n}) for n in namespaces]
        operator_roles = [r for r in find(objects, "Role") if r["rules"] == wanted]
        expect(len(operator_roles) == len(namespaces), "the operator's rules in a Role outside the watched namespaces")
    else:
        places = [("ClusterRole", {})]
        names = [r["metadata"]["name"] for r in operator_cluster_roles]
        expect(all(args.release_namespace in n for n in names), f"ClusterRole names {names} lack the release namespace")
    # Acting as each pipeline (the default of a namespaced installation) adds the rules of
    # pipeline-identity.yaml where the operator watches; acting as itself adds nothing.
    rule_sets = [("operator.yaml", wanted)]
    identity = rules_file("pipeline-identity.yaml")
    if namespaces:
        rule_sets.append(("pipeline-identity.yaml", identity))
    else:
        extra = [r["metadata"]["name"] for r in find(objects, "ClusterRole") + find(objects, "Role") if r["rules"] == identity]
        expect(not extra, f"a cluster-wide installation acting as itself may create tokens: {extra}")
    for kind, where in places:
        for file, rules in rule_sets:
            roles = [r for r in find(objects, kind, **where) if r["rules"] == rules]
            expect(len(roles) == 1, f"expected one {kind} {where} with the rules of {file}, found {len(roles)}")
            bindings = [
                b for b in find(objects, kind + "Binding", **where)
                if b["roleRef"]["name"] == roles[0]["metadata"]["name"]
            ]
            expect(len(bindings) == 1, f"expected one {kind}Binding to {roles[0]['metadata']['name']} {where}")
            check_binding(bindings[0], roles[0], sa, args.release_namespace)
    for role, verbs in [("edit", {"create", "update", "patch", "delete"}), ("view", {"get", "list", "watch"})]:
        label = f"rbac.authorization.k8s.io/aggregate-to-{role}"
        aggregated = [r for r in find(objects, "ClusterRole") if r["metadata"]["labels"].get(label) == "true"]
        expect(len(aggregated) == 1, f"expected one ClusterRole aggregated into {role}, found {len(aggregated)}")
        granted = {v for rule in aggregated[0]["rules"] if "eventpipelines" in rule["resources"] for v in rule["verbs"]}
        expect(verbs <= granted, f"the {role} role grants {sorted(granted)} on eventpipelines")
        expect(role == "edit" or not granted - {"get", "list", "watch"}, f"the view role grants {sorted(granted)}")


def leader_election(objects, args):
    """Lease rules, a binding and the flag exactly when leader election is on."""
    wanted = rules_file("leader-election.yaml")
    deployment, c = container(objects)
    roles = [r for r in find(objects, "Role") if r["rules"] == wanted]
    flag = "--leader-election" in c["args"]
    if args.leader == "off":
        expect(not roles, "leader-election Role rendered with leader election off")
        expect(not flag, "--leader-election passed with leader election off")
        expect(deployment["spec"]["strategy"]["type"] == "Recreate", "a single operator must not roll")
        return
    expect(flag, "--leader-election not passed")
    expect(len(roles) == 1, f"expected one Role with the rules of leader-election.yaml, found {len(roles)}")
    role = roles[0]
    expect(
        role["metadata"]["namespace"] == args.release_namespace,
        f"the Lease Role is in {role['metadata']['namespace']}, not the release namespace",
    )
    bindings = [
        b for b in find(objects, "RoleBinding", namespace=args.release_namespace)
        if b["roleRef"]["name"] == role["metadata"]["name"]
    ]
    expect(len(bindings) == 1, f"expected one RoleBinding to {role['metadata']['name']}")
    check_binding(bindings[0], role, service_account_name(objects), args.release_namespace)


def deployment(objects, args):
    """Flags, downward-API env, probes and the security context of the operator."""
    d, c = container(objects)
    pod = d["spec"]["template"]["spec"]
    flags = c["args"]
    expect(flags[:1] == ["operator"], f"args do not start with the operator command: {flags}")
    transformer = args.transformer_image or (
        "eventpipe-transformer:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    )
    expect(f"--transformer-image={transformer}" in flags, f"--transformer-image={transformer} not in {flags}")
    namespaces = [f for f in flags if f.startswith("--namespace")]
    wanted = [f"--namespace={n}" for n in args.watch_namespace.split(",") if n]
    expect(namespaces == wanted, f"namespace flags {namespaces}, expected {wanted}")
    identity = "pipeline" if wanted else "operator"
    expect(f"--s3-identity={identity}" in flags, f"--s3-identity={identity} not in {flags}")
    env = {e["name"]: e for e in c.get("env", [])}
    for name, field in [("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")]:
        ref = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        expect(ref == field, f"env {name} is not the downward API's {field}")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expect(ports.get("http") == 8080, f"container ports {ports}, expected http: 8080")
    for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
        get = c.get(probe, {}).get("httpGet", {})
        expect((get.get("path"), get.get("port")) == (path, "http"), f"{probe} is {get}")
    sc, psc = c["securityContext"], pod["securityContext"]
    expect(sc.get("readOnlyRootFilesystem") is True, "root filesystem not read-only")
    expect(sc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not all dropped")
    expect(psc.get("runAsNonRoot") is True, "runAsNonRoot not set")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp profile not RuntimeDefault")


def service_monitor(objects, args):
    """A ServiceMonitor exactly when enabled, scraping the metrics Service's http-metrics port."""
    monitors = find(objects, "ServiceMonitor")
    service = only(objects, "Service", "metrics")
    d, c = container(objects)
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    selects_pods = all(pod_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    expect(selects_pods, "the metrics Service does not select the operator's pods")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    metrics = ports.get("http-metrics")
    expect(metrics is not None and metrics["port"] == 8080, f"Service ports {list(ports)}, expected http-metrics: 8080")
    expect(
        metrics["targetPort"] in [p["name"] for p in c["ports"]],
        f"Service targetPort {metrics['targetPort']} is not a container port",
    )
    if args.service_monitor == "off":
        expect(not monitors, "ServiceMonitor rendered while disabled")
        return
    expect(len(monitors) == 1, f"expected one ServiceMonitor, found {len(monitors)}")
    spec = monitors[0]["spec"]
    labels = service["metadata"]["labels"]
    selected = all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    expect(selected, "the ServiceMonitor does not select the metrics Service")
    expect(
        monitors[0]["metadata"]["namespace"] == service["metadata"]["namespace"],
        "the ServiceMonitor is not in the Service's namespace",
    )
    endpoints = [(e.get("port"), e.get("path")) for e in spec["endpoints"]]
    expect(endpoints == [("http-metrics", "/metrics")], f"ServiceMonitor endpoints {endpoints}")


def crd(objects, args):
    """The CRD rendered exactly when enabled, the generated one unchanged, kept on uninstall when asked."""
    crds = find(objects, "CustomResourceDefinition")
    if args.crd == "off":
        expect(not crds, "the CRD is rendered while crds.enabled is false")
        return
    expect(len(crds) == 1, f"expected one CustomResourceDefinition, found {len(crds)}")
    rendered = crds[0]
    generated = yaml.safe_load((CHART.parents[1] / "crds" / "eventpipe.dev_eventpipelines.yaml").read_text())
    expect(rendered["spec"] == generated["spec"], "the rendered CRD's spec differs from crds/")
    expect(rendered["metadata"]["name"] == generated["metadata"]["name"], "the CRD's name differs from crds/")
    expect(rendered["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "Helm", "the CRD is not labelled as Helm's")
    policy = rendered["metadata"].get("annotations", {}).get("helm.sh/resource-policy")
    expect(policy == ("keep" if args.crd == "kept" else None), f"helm.sh/resource-policy is {policy!r} with --crd {args.crd}")


def availability(objects, args):
    """A PodDisruptionBudget keeping one operator pod exactly when there are several; the Jobs'
    ServiceAccount in each watched namespace exactly when asked for, and named in jobDefaults."""
    d, c = container(objects)
    budgets = find(objects, "PodDisruptionBudget")
    if d["spec"]["replicas"] > 1:
        expect(len(budgets) == 1, f"{d['spec']['replicas']} replicas, {len(budgets)} PodDisruptionBudgets")
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        selector = budgets[0]["spec"]["selector"]["matchLabels"]
        expect(all(pod_labels.get(k) == v for k, v in selector.items()), "the PodDisruptionBudget does not select the operator")
        expect(budgets[0]["spec"].get("minAvailable") == 1, "the PodDisruptionBudget does not keep one pod")
    else:
        expect(not budgets, "a PodDisruptionBudget for a single replica would block every drain")
    operator_account = service_account_name(objects)
    others = [a for a in find(objects, "ServiceAccount") if a["metadata"]["name"] != operator_account]
    if not args.job_service_account:
        expect(not others, f"ServiceAccounts for Jobs rendered while not asked for: {[a['metadata']['name'] for a in others]}")
        return
    accounts = [a for a in others if a["metadata"]["name"] == args.job_service_account]
    namespaces = [n for n in args.watch_namespace.split(",") if n]
    expect(sorted(a["metadata"]["namespace"] for a in accounts) == sorted(namespaces),
           f"Jobs' ServiceAccounts in {[a['metadata']['namespace'] for a in accounts]}, expected {namespaces}")
    defaults = [f for f in c["args"] if f.startswith("--job-defaults=")]
    expect(len(defaults) == 1 and f'"serviceAccountName":"{args.job_service_account}"' in defaults[0],
           f"jobDefaults do not name {args.job_service_account}: {defaults}")


CHECKS = {
    "availability": availability,
    "crd": crd,
    "rbac": rbac,
    "leader-election": leader_election,
    "deployment": deployment,
    "service-monitor": service_monitor,
}


def value_paths(values, prefix=""):
    """Every value's dotted path: a map's keys, down to leaves, empty maps and lists."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from value_paths(value, f"{path}.")
        else:
            yield path


def documented(chart_dir):
    """The chart README names every value of values.yaml, or a map that holds it."""
    chart = Path(chart_dir)
    readme = (chart / "README.md").read_text()
    values = yaml.safe_load((chart / "values.yaml").read_text())
    missing = []
    for path in value_paths(values):
        parts = path.split(".")
        if not any(f"`{'.'.join(parts[:n])}`" in readme for n in range(1, len(parts) + 1)):
            missing.append(path)
    expect(not missing, f"values missing from {chart / 'README.md'}: {missing}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("check", choices=["builtin", "documented", *CHECKS])
    parser.add_argument("rendered")
    parser.add_argument("--release-namespace", default="default")
    parser.add_argument("--watch-namespace", default="", help="comma-separated; empty for all")
    parser.add_argument("--leader", choices=["on", "off"], default="off")
    parser.add_argument("--service-monitor", choices=["on", "off"], default="off")
    parser.add_argument("--job-service-account", default="", help="the Jobs' ServiceAccount the chart creates")
    parser.add_argument("--crd", choices=["kept", "on", "off"], default="kept")
    parser.add_argument("--transformer-image", help="default: eventpipe-transformer:<appVersion>")
    args = parser.parse_args()
    if args.check == "documented":
        try:
            documented(args.rendered)
        except Failed as e:
            sys.exit(f"Failed: {e}")
        return
    objects = load(args.rendered)
    if args.check == "builtin":
        builtin = [o for o in objects if (o["apiVersion"], o["kind"]) not in CUSTOM_KINDS]
        if not builtin:
            sys.exit(f"{args.rendered} holds no objects")
        yaml.safe_dump_all(builtin, sys.stdout)
        return
    try:
        CHECKS[args.check](objects, args)
    except (Failed, KeyError, TypeError) as e:
        sys.exit(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
