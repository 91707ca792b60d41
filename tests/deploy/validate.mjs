// Offline checks of the Kubernetes manifests in deploy/ (README "Running on
// Kubernetes"): every document against the Kubernetes API's JSON schemas,
// then what a schema cannot see: the references between documents, the
// probes and ports against the fnproxy config in the ConfigMap, the drain
// budget and the security invariants. No cluster is needed.
//
//   node tests/deploy/validate.mjs [--fnproxy build/fnproxy] FILE.yaml...
//
// Prints "FILE: ok" per good file, else one line per problem,
// "FILE:LINE:COL: Kind name: field.path: message", and exits 1. With
// --fnproxy, each ConfigMap's fnproxy.yaml is also run through
// `fnproxy --check` (its file:line:col moved to the manifest's lines).
//
// The schemas come from kubernetes-models 4.5.1 (the Kubernetes 1.33 API:
// it has Lifecycle.stopSignal). Its compiled validators check types, enums
// and required fields but let unknown fields through, so each object is
// validated behind a Proxy that records which properties the validator
// reads: a validator reads every property its schema declares (and every
// key of a map), so a key it never read is one the schema does not have.
// (A free-form object, as in a CRD with x-kubernetes-preserve-unknown-fields,
// would be reported whole; deploy/ has none.)

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { LineCounter, parseAllDocuments } from "yaml";

const CONFIG_KEY = "fnproxy.yaml";
const CAPTURE_CAP = "NET_ADMIN";

// apiVersion "apps/v1" -> module "kubernetes-models/apps/v1/Kind.js"; the
// core group ("v1") lives at the package's top.
async function modelFor(apiVersion, kind) {
    if (!/^[a-z0-9.]+(\/[a-z0-9]+)?$/.test(apiVersion) || !/^[A-Za-z]+$/.test(kind))
        return null;
    try {
        const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
        return mod[kind] ?? null;
    } catch {
        return null;
    }
}

// Wraps obj so that every own property read is recorded in `seen`, nested
// objects included (each wrapped once, with its field path).
function track(obj, path, seen) {
    if (obj === null || typeof obj !== "object") return obj;
    const read = new Set();
    const kids = new Map();
    seen.push({ obj, path, read });
    return new Proxy(obj, {
        get(t, k, r) {
            if (typeof k !== "string" || !Object.hasOwn(t, k)) return Reflect.get(t, k, r);
            read.add(k);
            const v = t[k];
            if (v === null || typeof v !== "object") return v;
            if (!kids.has(k)) kids.set(k, track(v, Array.isArray(t) ? [...path, Number(k)] : [...path, k], seen));
            return kids.get(k);
        },
    });
}

const fmtPath = (p) =>
    p.reduce((s, k) => (typeof k === "number" ? `${s}[${k}]` : s ? `${s}.${k}` : k), "");

// "/spec/template/spec/containers/0/image" -> ["spec", ..., 0, "image"]
const ajvPath = (ip) =>
    ip.split("/").slice(1).map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, "/").replace(/~0/g, "~")));

function schemaProblems(Model, obj) {
    const seen = [];
    try {
        Model.prototype.validate.call(track(obj, [], seen));
    } catch (e) {
        if (!Array.isArray(e.errors)) throw e;
        return e.errors.map((x) => {
            const extra = x.params?.allowedValues ? ` (${x.params.allowedValues.join(", ")})` : "";
            const path = ajvPath(x.instancePath);
            if (x.keyword === "required") path.push(x.params.missingProperty);
            return { path, msg: (x.keyword === "required" ? "required field missing" : x.message) + extra };
        });
    }
    // Only once the types are right: a validator that failed may have
    // stopped before reading the rest.
    const out = [];
    for (const { obj: o, path, read } of seen)
        if (!Array.isArray(o))
            for (const k of Object.keys(o)) if (!read.has(k)) out.push({ path: [...path, k], msg: "unknown field" });
    return out;
}

function parseDuration(s) {
    const m = /^(\d+)(ms|s|m)$/.exec(String(s));
    if (!m) return null;
    return Number(m[1]) * { ms: 0.001, s: 1, m: 60 }[m[2]];
}

const portOf = (listen) => Number(/:(\d+)$/.exec(String(listen ?? ""))?.[1]);

// The fnproxy container of a pod spec: the one started with `-c FILE`.
const isFnproxy = (c) => Array.isArray(c.args) && c.args[0] === "-c";
const isCapture = (c) => Array.isArray(c.args) && c.args.includes("--proxy-uid");

function argAfter(args, flag) {
    const i = (args ?? []).indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
}

// Cross-document and security checks for one pod template. report(path,
// msg) with a path from the document's root.
function checkPod(doc, tplPath, tpl, configMaps, report) {
    const spec = tpl.spec ?? {};
    const sp = [...tplPath, "spec"];
    const all = [
        ...(spec.initContainers ?? []).map((c, i) => ({ c, p: [...sp, "initContainers", i], init: true })),
        ...(spec.containers ?? []).map((c, i) => ({ c, p: [...sp, "containers", i], init: false })),
    ];
    const volumes = new Map((spec.volumes ?? []).map((v, i) => [v.name, { v, p: [...sp, "volumes", i] }]));
    for (const [, { v, p }] of volumes)
        if (v.configMap && !configMaps.has(v.configMap.name))
            report([...p, "configMap", "name"], `no ConfigMap named "${v.configMap.name}" in these manifests`);

    for (const { c, p } of all) {
        const sc = c.securityContext ?? {};
        const scp = [...p, "securityContext"];
        if (sc.allowPrivilegeEscalation !== false) report([...scp, "allowPrivilegeEscalation"], "must be false");
        if (sc.readOnlyRootFilesystem !== true) report([...scp, "readOnlyRootFilesystem"], "must be true");
        if (!(sc.capabilities?.drop ?? []).includes("ALL")) report([...scp, "capabilities", "drop"], "must drop ALL");
        const add = sc.capabilities?.add ?? [];
        if (isCapture(c)) {
            if (add.length !== 1 || add[0] !== CAPTURE_CAP)
                report([...scp, "capabilities", "add"], `the capture container adds ${CAPTURE_CAP} and nothing else`);
        } else {
            if (add.length) report([...scp, "capabilities", "add"], `only the capture container may add capabilities`);
            if (sc.runAsNonRoot !== true) report([...scp, "runAsNonRoot"], "must be true");
            if (!(sc.runAsUser > 0)) report([...scp, "runAsUser"], "must be a fixed non-root uid");
        }
        if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory)
            report([...p, "resources", "requests"], "cpu and memory requests are required");
        if (!c.resources?.limits?.memory) report([...p, "resources", "limits", "memory"], "a memory limit is required");
    }

    const fnp = all.filter(({ c }) => isFnproxy(c));
    if (fnp.length !== 1) {
        report([...sp, "containers"], `expected one fnproxy container (args: [-c, FILE]), found ${fnp.length}`);
        return;
    }
    const { c: fc, p: fp, init } = fnp[0];
    if (init && fc.restartPolicy !== "Always")
        report([...fp, "restartPolicy"], "fnproxy as an init container must be a native sidecar: restartPolicy: Always");
    if (init && !all.some(({ init: i }) => !i))
        report([...sp, "containers"], "a sidecar pod needs a function container");

    // The config: -c FILE must be a key of a ConfigMap mounted at FILE's directory.
    const file = fc.args[1];
    const mount = (fc.volumeMounts ?? []).find((m) => m.mountPath === posix.dirname(String(file)));
    const vol = mount && volumes.get(mount.name)?.v;
    const cm = vol?.configMap && configMaps.get(vol.configMap.name);
    if (!mount || !vol?.configMap) {
        report([...fp, "args", 1], `${file}: not in a mounted ConfigMap volume`);
        return;
    }
    if (mount.subPath) report([...fp, "volumeMounts"], "a subPath mount is never updated: mount the directory");
    const text = cm?.data?.[posix.basename(String(file))];
    if (typeof text !== "string") {
        report([...fp, "args", 1], `${file}: ConfigMap "${vol.configMap.name}" has no key ${posix.basename(String(file))}`);
        return;
    }
    let cfg;
    try {
        cfg = parseAllDocuments(text)[0].toJS() ?? {};
    } catch (e) {
        report([...fp, "args", 1], `${file}: not YAML: ${e.message}`);
        return;
    }

    // Probes on the admin port: /ready for readiness, /healthz for liveness.
    const adminPort = portOf(cfg.admin?.listen);
    const ports = new Map((fc.ports ?? []).map((x) => [x.name, x.containerPort]));
    const resolve = (port) => (typeof port === "string" ? ports.get(port) : port);
    for (const [probe, path] of [["readinessProbe", "/ready"], ["livenessProbe", "/healthz"], ["startupProbe", null]]) {
        const g = fc[probe]?.httpGet;
        if (!g) {
            if (path) report([...fp, probe], `required: httpGet ${path} on the admin port`);
            continue;
        }
        if (resolve(g.port) !== adminPort)
            report([...fp, probe, "httpGet", "port"], `${g.port} is not the admin port ${adminPort} (admin.listen in ${file})`);
        if (path && g.path !== path) report([...fp, probe, "httpGet", "path"], `must be ${path}`);
    }
    for (const { c, p } of all) if (c !== fc) for (const probe of ["readinessProbe", "livenessProbe"])
        if (c[probe]?.httpGet && resolve(c[probe].httpGet.port) === adminPort)
            report([...p, probe], "probes fnproxy's admin port from another container");

    // Prometheus scrapes the admin port's /metrics.
    const ann = tpl.metadata?.annotations ?? {};
    const ap = [...tplPath, "metadata", "annotations"];
    if (ann["prometheus.io/scrape"] !== "true") report([...ap, "prometheus.io/scrape"], 'must be "true"');
    if (Number(ann["prometheus.io/port"]) !== adminPort) report([...ap, "prometheus.io/port"], `must be the admin port ${adminPort}`);
    if (ann["prometheus.io/path"] !== "/metrics") report([...ap, "prometheus.io/path"], "must be /metrics");

    // SIGTERM reaches fnproxy after its preStop sleep; it then drains for up
    // to drain_timeout (10s by default, policy/config.c).
    const drain = cfg.drain_timeout === undefined ? 10 : parseDuration(cfg.drain_timeout);
    const sleep = fc.lifecycle?.preStop?.sleep?.seconds ?? 0;
    const grace = spec.terminationGracePeriodSeconds ?? 30;
    if (drain !== null && !(grace > drain + sleep))
        report([...sp, "terminationGracePeriodSeconds"],
            `${grace} must exceed drain_timeout (${drain}s) + preStop sleep (${sleep}s) of ${file}`);

    // The capture rules: fnproxy's uid is the one they exempt, the function
    // runs as another, and their port is the config's capture listener.
    const cap = all.find(({ c }) => isCapture(c));
    if (cap) {
        const uid = Number(argAfter(cap.c.args, "--proxy-uid"));
        if (fc.securityContext?.runAsUser !== uid)
            report([...fp, "securityContext", "runAsUser"], `must be the capture rules' --proxy-uid ${uid}`);
        for (const { c, p } of all)
            if (c !== fc && c !== cap.c && c.securityContext?.runAsUser === uid)
                report([...p, "securityContext", "runAsUser"], `${uid} is fnproxy's uid, whose traffic is not captured`);
        const want = Number(argAfter(cap.c.args, "--port"));
        const listens = (cfg.functions ?? []).map((f) => f.egress?.capture).filter(Boolean);
        if (listens.length && !listens.some((l) => portOf(l) === want))
            report([...cap.p, "args"], `--port ${want} is no functions[].egress.capture port of ${file}`);
    }
    return { cfg, cm: vol.configMap.name, listenPorts: (cfg.listeners ?? []).map((l) => portOf(l.listen)), ports };
}

// `fnproxy --check` on a config text, once per distinct text: the mutated
// copies the tests feed in mostly share their config. Its file name in the
// error is replaced by @CONFIG@.
const checked = new Map();
function fnproxyCheck(fnproxy, conf) {
    if (checked.has(conf)) return checked.get(conf);
    const dir = mkdtempSync(join(tmpdir(), "fnproxy-deploy-"));
    const path = join(dir, CONFIG_KEY);
    let r = { ok: true };
    try {
        writeFileSync(path, conf);
        execFileSync(fnproxy, ["--check", "-c", path], { stdio: ["ignore", "ignore", "pipe"] });
    } catch (e) {
        r = { ok: false, err: String(e.stderr || e.message).trim().replaceAll(path, "@CONFIG@") };
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
    checked.set(conf, r);
    return r;
}

const labelsMatch = (sel, labels) =>
    sel && Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels?.[k] === v);

async function checkFile(file, fnproxy) {
    const problems = [];
    const lc = new LineCounter();
    const text = readFileSync(file, "utf8");
    const docs = parseAllDocuments(text, { lineCounter: lc });
    const where = (d, path) => {
        for (let p = path; p.length >= 0; p = p.slice(0, -1)) {
            const n = d.doc.getIn(p, true);
            if (n?.range) {
                const { line, col } = lc.linePos(n.range[0]);
                return `${line}:${col}`;
            }
            if (!p.length) break;
        }
        return "1:1";
    };
    const items = [];
    for (const [i, doc] of docs.entries()) {
        const d = { doc, obj: null, label: `document ${i + 1}` };
        items.push(d);
        if (doc.errors.length) {
            for (const e of doc.errors) problems.push(`${file}:${e.linePos?.[0]?.line ?? 1}:${e.linePos?.[0]?.col ?? 1}: ${e.message}`);
            continue;
        }
        d.obj = doc.toJS();
    }
    const report = (d, path, msg) => problems.push(`${file}:${where(d, path)}: ${d.label}: ${fmtPath(path)}: ${msg}`);

    for (const d of items) {
        if (!d.obj) continue;
        const o = d.obj;
        if (typeof o !== "object" || Array.isArray(o)) {
            report(d, [], "expected a Kubernetes object");
            d.obj = null;
            continue;
        }
        d.label = `${o.kind} ${o.metadata?.name ?? "(no name)"}`;
        const Model = await modelFor(String(o.apiVersion), String(o.kind));
        if (!Model) {
            report(d, ["kind"], `unknown apiVersion/kind ${o.apiVersion}/${o.kind}`);
            d.obj = null;
            continue;
        }
        const ps = schemaProblems(Model, o);
        for (const x of ps) report(d, x.path, x.msg);
        if (ps.length) d.obj = null;
    }
    if (problems.length) return problems; // cross-checks want well-typed objects

    const objs = items.map((d) => d.obj);
    const configMaps = new Map(objs.filter((o) => o.kind === "ConfigMap").map((o) => [o.metadata.name, o]));
    const pods = [];
    for (const d of items) {
        const o = d.obj;
        if (o.kind !== "Deployment") continue;
        const r = checkPod(d, ["spec", "template"], o.spec.template, configMaps, (p, m) => report(d, p, m));
        if (!labelsMatch(o.spec.selector.matchLabels, o.spec.template.metadata?.labels))
            report(d, ["spec", "selector"], "does not select the pod template's labels");
        pods.push({ d, labels: o.spec.template.metadata?.labels, r });
    }
    for (const d of items) {
        const o = d.obj;
        if (o.kind !== "Service" && o.kind !== "PodDisruptionBudget") continue;
        const sel = o.kind === "Service" ? o.spec.selector : o.spec.selector?.matchLabels;
        const pod = pods.find((x) => labelsMatch(sel, x.labels));
        if (!pod) {
            report(d, ["spec", "selector"], "selects no pod template of these manifests");
            continue;
        }
        if (o.kind === "Service" && pod.r)
            for (const [i, sp] of (o.spec.ports ?? []).entries()) {
                const t = sp.targetPort ?? sp.port;
                const n = typeof t === "string" ? pod.r.ports.get(t) : t;
                if (!pod.r.listenPorts.includes(n))
                    report(d, ["spec", "ports", i, "targetPort"], `${t} is no listener port of the fnproxy config`);
            }
    }
    for (const d of items) if (d.obj.kind === "ConfigMap" && !pods.some((x) => x.r?.cm === d.obj.metadata.name))
        report(d, ["metadata", "name"], "no pod of these manifests mounts this ConfigMap as its config");

    if (fnproxy)
        for (const cm of configMaps.values()) {
            const conf = cm.data?.[CONFIG_KEY];
            if (typeof conf !== "string") continue;
            const r = fnproxyCheck(fnproxy, conf);
            if (r.ok) continue;
            // fnproxy's file:line:col, moved to where the block scalar sits
            // in the manifest (its first line is the one after the key).
            const d = items.find((x) => x.obj === cm);
            const node = d.doc.getIn(["data", CONFIG_KEY], true);
            const first = lc.linePos(node.range[0]).line + 1;
            const indent = /^ */.exec(text.split("\n")[first - 1])[0].length;
            const err = r.err.replaceAll(/@CONFIG@:(\d+):(\d+)/g,
                (_, l, c) => `${file}:${first + Number(l) - 1}:${indent + Number(c)}`);
            report(d, ["data", CONFIG_KEY], `fnproxy --check: ${err}`);
        }
    return problems;
}

const argv = process.argv.slice(2);
let fnproxy = null;
if (argv[0] === "--fnproxy") {
    fnproxy = argv[1];
    argv.splice(0, 2);
}
if (!argv.length || argv.some((a) => a.startsWith("-"))) {
    process.stderr.write("usage: node tests/deploy/validate.mjs [--fnproxy build/fnproxy] FILE.yaml...\n");
    process.exit(2);
}
let bad = 0;
for (const f of argv) {
    const ps = await checkFile(f, fnproxy);
    if (ps.length) {
        bad++;
        for (const p of ps) console.log(p);
    } else console.log(`${f}: ok`);
}
process.exit(bad ? 1 : 0);
