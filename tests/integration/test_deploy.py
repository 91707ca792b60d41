"""deploy/: the Kubernetes manifests against the Kubernetes API schemas and
the checks the schemas cannot make (tests/deploy/validate.mjs), the fnproxy
config in each ConfigMap through `fnproxy --check`, and the Dockerfile
through a linter (dockerfile-utils). Offline: node and the npm packages of
tests/deploy/package-lock.json, installed by `make deps`; without them
these cases fail, they never skip.

Each bad case is a copy of a real manifest with one change made as a
person would make it (a typo, a wrong type, a broken reference); all the
copies of one case go through one run of the validator, and each must be
refused with a line that names its file and the field.

Nothing here depends on how fnproxy was built, so these cases run in the
normal build only (san=False)."""

import glob
import os
import subprocess

from harness import ROOT, check, check_eq, fail, case

DEPLOY = os.path.join(ROOT, "deploy")
CHECKS = os.path.join(ROOT, "tests", "deploy")
VALIDATE = os.path.join(CHECKS, "validate.mjs")
LINT = os.path.join(CHECKS, "node_modules", ".bin", "dockerfile-utils")


def _node(args, ctx, timeout=60):
    if not os.path.isdir(os.path.join(CHECKS, "node_modules")):
        fail("tests/deploy/node_modules missing: run `make deps` (npm ci)")
    try:
        p = subprocess.run(["node"] + args, capture_output=True, text=True, timeout=timeout,
                           cwd=ctx.tmpdir)
    except FileNotFoundError:
        fail("node not found: run `make deps` (Debian nodejs)")
    return p


def _validate(ctx, files):
    return _node([VALIDATE, "--fnproxy", ctx.fnproxy_bin] + files, ctx)


def _mutate(ctx, cases):
    """cases: (name, manifest, old, new, expected). Writes a copy of
    deploy/<manifest> per case with old replaced by new (old must occur
    exactly once), validates them all in one run, and checks that each
    copy is refused with a line containing its expected text."""
    files = []
    for name, manifest, old, new, _ in cases:
        with open(os.path.join(DEPLOY, manifest)) as f:
            text = f.read()
        check_eq(text.count(old), 1, "occurrences of %r in deploy/%s" % (old, manifest))
        path = ctx.path("%s-%s" % (name, manifest))
        with open(path, "w") as f:
            f.write(text.replace(old, new))
        files.append(path)
    p = _validate(ctx, files)
    check_eq(p.returncode, 1, "validator exit status (stderr %r)" % p.stderr[-2000:])
    lines = p.stdout.splitlines()
    for path, (name, _, _, _, expected) in zip(files, cases):
        mine = [l for l in lines if l.startswith(path + ":")]
        check(mine and not any(l == path + ": ok" for l in lines),
              "%s refused: %r" % (name, p.stdout[-3000:]))
        check(any(expected in l for l in mine), "%s: a line with %r in %r" % (name, expected, mine))


@case(timeout=60, san=False)
def manifests_valid(ctx):
    files = sorted(glob.glob(os.path.join(DEPLOY, "*.yaml")))
    names = [os.path.basename(f) for f in files]
    check("sidecar.yaml" in names and "gateway.yaml" in names, "deploy/ has sidecar and gateway: %r" % names)
    p = _validate(ctx, files)
    check_eq(p.returncode, 0, "validator exit status (stdout %r, stderr %r)" % (p.stdout, p.stderr[-2000:]))
    check_eq(p.stdout.splitlines(), ["%s: ok" % f for f in files], "validator output")
    # What the issue asks the manifests to hold, present rather than merely valid.
    with open(os.path.join(DEPLOY, "sidecar.yaml")) as f:
        sidecar = f.read()
    with open(os.path.join(DEPLOY, "gateway.yaml")) as f:
        gateway = f.read()
    for want in ("kind: ConfigMap", "kind: Deployment", "kind: Service", "restartPolicy: Always  ",
                 "image: registry.example.com/fnproxy-capture:", "--proxy-uid", "add: [NET_ADMIN]"):
        check(want in sidecar, "sidecar.yaml has %r" % want)
    for want in ("kind: ConfigMap", "kind: Deployment", "kind: Service", "kind: PodDisruptionBudget"):
        check(want in gateway, "gateway.yaml has %r" % want)


def _line_of(name, text):
    """The line number (1-based) where text starts in deploy/NAME."""
    with open(os.path.join(DEPLOY, name)) as f:
        body = f.read()
    check(text in body, "deploy/%s has %r" % (name, text))
    return body[:body.index(text)].count("\n") + 1


@case(timeout=60, san=False)
def manifests_schema_errors(ctx):
    ctr = "          image: registry.example.com/thumbnail:latest\n"
    _mutate(ctx, [
        ("top", "gateway.yaml", "kind: PodDisruptionBudget\n",
         "kind: PodDisruptionBudget\nstatus2: {}\n", "PodDisruptionBudget fnproxy-gateway: status2: unknown field"),
        ("spec", "gateway.yaml", "  replicas: 3\n", "  replicas: 3\n  replicaz: 3\n",
         "spec.replicaz: unknown field"),
        ("container", "sidecar.yaml", ctr, ctr + "          imagePullPolicyy: Always\n",
         "spec.template.spec.containers[0].imagePullPolicyy: unknown field"),
        ("probe", "gateway.yaml", "httpGet: { path: /ready, port: admin }",
         "httpGet: { path: /ready, port: admin, sheme: HTTP }",
         "spec.template.spec.containers[0].readinessProbe.httpGet.sheme: unknown field"),
        ("configmap", "sidecar.yaml", "configMap: { name: thumbnail-fnproxy }",
         "configMap: { name: thumbnail-fnproxy, defaultmode: 420 }",
         "spec.template.spec.volumes[0].configMap.defaultmode: unknown field"),
        ("replicas", "sidecar.yaml", "replicas: 2\n", 'replicas: "two"\n', "spec.replicas: must be integer"),
        ("uid", "sidecar.yaml", "runAsUser: 1000", 'runAsUser: "1000"',
         "spec.template.spec.containers[0].securityContext.runAsUser: must be integer"),
        ("bool", "gateway.yaml", "  readOnlyRootFilesystem: true", '  readOnlyRootFilesystem: "yes"',
         "securityContext.readOnlyRootFilesystem: must be boolean"),
        ("enum", "gateway.yaml", "type: ClusterIP", "type: ClusterIp", "spec.type: must be equal to one of"),
        ("kind", "gateway.yaml", "apiVersion: policy/v1\n", "apiVersion: policy/v1beta9\n",
         "unknown apiVersion/kind policy/v1beta9/PodDisruptionBudget"),
        ("required", "gateway.yaml", "    - { name: http, port: 80, targetPort: http }",
         "    - { name: http, targetPort: http }", "spec.ports[0].port: required field missing"),
        ("yaml", "sidecar.yaml", "  replicas: 2\n", "  replicas: [2\n",
         ":%d:3: Flow sequence in block collection" % (_line_of("sidecar.yaml", "  replicas: 2\n") + 1)),
    ])


@case(timeout=60, san=False)
def manifests_cross_checks(ctx):
    _mutate(ctx, [
        ("cm-name", "sidecar.yaml", "configMap: { name: thumbnail-fnproxy }",
         "configMap: { name: thumbnail-proxy }",
         'volumes[0].configMap.name: no ConfigMap named "thumbnail-proxy"'),
        ("cm-key", "gateway.yaml", "args: [-c, /etc/fnproxy/fnproxy.yaml]",
         "args: [-c, /etc/fnproxy/gateway.yaml]", 'ConfigMap "fnproxy-gateway" has no key gateway.yaml'),
        ("probe-port", "gateway.yaml", "httpGet: { path: /ready, port: admin }",
         "httpGet: { path: /ready, port: http }", "readinessProbe.httpGet.port: http is not the admin port 9901"),
        ("admin-port", "sidecar.yaml", "admin: { listen: 0.0.0.0:9901 }", "admin: { listen: 0.0.0.0:9902 }",
         "livenessProbe.httpGet.port: admin is not the admin port 9902"),
        ("probe-path", "sidecar.yaml", "httpGet: { path: /ready, port: admin }",
         "httpGet: { path: /healthz, port: admin }", "readinessProbe.httpGet.path: must be /ready"),
        ("grace", "gateway.yaml", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 25",
         "terminationGracePeriodSeconds: 25 must exceed drain_timeout (20s) + preStop sleep (5s)"),
        ("drain", "sidecar.yaml", "drain_timeout: 10s", "drain_timeout: 1m",
         "terminationGracePeriodSeconds: 30 must exceed drain_timeout (60s)"),
        ("sidecar", "sidecar.yaml", "restartPolicy: Always  ", "restartPolicy: OnFailure  ",
         "initContainers[1].restartPolicy: fnproxy as an init container must be a native sidecar"),
        ("scrape", "gateway.yaml", 'prometheus.io/port: "9901"', 'prometheus.io/port: "9090"',
         "prometheus.io/port: must be the admin port 9901"),
        ("service", "sidecar.yaml", "targetPort: 8080", "targetPort: 9000",
         "spec.ports[0].targetPort: 9000 is no listener port"),
        ("pdb", "gateway.yaml", "  maxUnavailable: 1\n  selector:\n    matchLabels: { app.kubernetes.io/name: fnproxy-gateway }",
         "  maxUnavailable: 1\n  selector:\n    matchLabels: { app.kubernetes.io/name: gateway }",
         "PodDisruptionBudget fnproxy-gateway: spec.selector: selects no pod template"),
        ("config", "gateway.yaml", "drain_timeout: 20s", "drain_timeout: 20x",
         "drain_timeout: expected a duration like 10s"),
        ("config-key", "sidecar.yaml", "    workers: 1 ", "    workers: 1\n    wokers: 1 ",
         "wokers"),
    ])


@case(timeout=60, san=False)
def manifests_security(ctx):
    _mutate(ctx, [
        ("root", "gateway.yaml", "runAsNonRoot: true", "runAsNonRoot: false",
         "securityContext.runAsNonRoot: must be true"),
        ("rootfs", "sidecar.yaml", "runAsUser: 1000\n            runAsGroup: 1000\n            runAsNonRoot: true\n"
         "            readOnlyRootFilesystem: true",
         "runAsUser: 1000\n            runAsGroup: 1000\n            runAsNonRoot: true\n"
         "            readOnlyRootFilesystem: false",
         "containers[0].securityContext.readOnlyRootFilesystem: must be true"),
        ("escalation", "gateway.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true",
         "securityContext.allowPrivilegeEscalation: must be false"),
        ("drop", "gateway.yaml", "capabilities: { drop: [ALL] }", "capabilities: { drop: [NET_RAW] }",
         "securityContext.capabilities.drop: must drop ALL"),
        ("capture-caps", "sidecar.yaml", "add: [NET_ADMIN]", "add: [NET_ADMIN, NET_RAW]",
         "initContainers[0].securityContext.capabilities.add: the capture container adds NET_ADMIN and nothing else"),
        ("proxy-caps", "gateway.yaml", "capabilities: { drop: [ALL] }",
         "capabilities: { drop: [ALL], add: [NET_BIND_SERVICE] }",
         "capabilities.add: only the capture container may add capabilities"),
        ("proxy-uid", "sidecar.yaml", "runAsUser: 65532", "runAsUser: 65533",
         "initContainers[1].securityContext.runAsUser: must be the capture rules' --proxy-uid 65532"),
        ("function-uid", "sidecar.yaml", "runAsUser: 1000", "runAsUser: 65532",
         "containers[0].securityContext.runAsUser: 65532 is fnproxy's uid"),
        ("limits", "gateway.yaml", "limits: { cpu: \"2\", memory: 512Mi }", "limits: { cpu: \"2\" }",
         "resources.limits.memory: a memory limit is required"),
    ])


@case(timeout=60, san=False)
def dockerfile_lint(ctx):
    if not os.access(LINT, os.X_OK):
        fail("%s missing: run `make deps` (npm ci)" % LINT)
    p = subprocess.run([LINT, "lint", os.path.join(DEPLOY, "Dockerfile")], capture_output=True,
                       text=True, timeout=60)
    check_eq((p.returncode, p.stdout + p.stderr), (0, ""), "dockerfile-utils lint deploy/Dockerfile")
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read()
    # The image's contract with the manifests: stages, base images, the uid.
    for want in ("FROM debian:12 AS build", "FROM debian:12-slim AS capture",
                 "FROM debian:12-slim AS fnproxy", "USER 65532:65532",
                 "COPY deploy/capture-rules.sh", 'ENTRYPOINT ["/usr/local/bin/fnproxy"]'):
        check(want in text, "deploy/Dockerfile has %r" % want)
    check(text.rstrip().split("\nFROM ")[-1].startswith("debian:12-slim AS fnproxy"),
          "the last stage (the default target) is the fnproxy image")

    broken = text.replace("USER 65532:65532", "USER").replace("EXPOSE 8080 9901", "EXPOSE http") \
                 .replace("RUN make build/fnproxy", "RUNN make build/fnproxy")
    path = ctx.path("Dockerfile")
    with open(path, "w") as f:
        f.write(broken)
    p = subprocess.run([LINT, "lint", path], capture_output=True, text=True, timeout=60)
    out = p.stdout + p.stderr
    check(p.returncode != 0, "a broken Dockerfile fails lint: %r" % out)
    for want in ("Unknown instruction: RUNN", "Invalid containerPort: http", "Instruction has no arguments"):
        check(want in out, "lint names %r: %r" % (want, out))
