"""fnproxy's command line: --version, --help, --check."""

import re

from harness import case, check, check_eq, make_certs, std_config


def _out(p):
    return p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


@case()
def version_and_help(ctx):
    p = ctx.run_fnproxy(["--version"])
    out, err = _out(p)
    check_eq(p.returncode, 0, "--version exit status")
    check(re.search(r"\d+\.\d+", out + err), "--version prints a version: %r" % (out + err))
    p = ctx.run_fnproxy(["--help"])
    out, err = _out(p)
    check_eq(p.returncode, 0, "--help exit status")
    check("-c" in out + err and "--check" in out + err, "--help mentions -c and --check")


@case()
def check_good_file(ctx):
    text = std_config(["127.0.0.1:9"]).replace("$WORKERS", "2").replace(
        "$APORT", "19901").replace("$PPORT", "19902")
    path = ctx.write_config(text, "good.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    out, err = _out(p)
    check_eq(p.returncode, 0, "exit status (stderr %r)" % err)
    check_eq(out.strip(), "%s: ok" % path, "stdout")


# Line 6, column 5 is where "bogus_key" starts.
UNKNOWN_KEY = """\
workers: 1
admin: { listen: 127.0.0.1:19901 }
listeners:
  - name: public
    listen: 127.0.0.1:19902
    bogus_key: 3
functions:
  - name: echo
    endpoints: [127.0.0.1:9]
    ingress:
      routes:
        - { name: all, match: { listener: public, path_prefix: / } }
"""


@case()
def check_unknown_key(ctx):
    path = ctx.write_config(UNKNOWN_KEY, "bad.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    out, err = _out(p)
    check_eq(p.returncode, 1, "exit status")
    check(("%s:6:5:" % path) in err, "stderr names %s:6:5: %r" % (path, err))
    line = [l for l in err.splitlines() if ("%s:6:5:" % path) in l][0]
    check("bogus_key" in line and "listeners[0]" in line,
          "message names the key and its path: %r" % line)
    check("ok" not in out, "stdout does not say ok: %r" % out)


@case()
def check_bad_value(ctx):
    # The timeout value on line 12 is not a duration.
    text = UNKNOWN_KEY.replace("    bogus_key: 3\n", "").replace(
        "path_prefix: / } }", "path_prefix: / }, timeout: 10x }")
    path = ctx.write_config(text, "bad.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    out, err = _out(p)
    check_eq(p.returncode, 1, "exit status")
    m = re.search(re.escape(path) + r":(\d+):(\d+): (\S+)", err)
    check(m, "stderr has file:line:col: path: %r" % err)
    check_eq(m.group(1), "11", "line of the bad timeout")
    check("functions[0].ingress.routes[0].timeout" in m.group(3),
          "path names the key: %r" % m.group(0))


@case()
def check_bad_yaml_and_missing_file(ctx):
    path = ctx.write_config("workers: 1\nadmin: { listen: [\n", "broken.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    out, err = _out(p)
    check_eq(p.returncode, 1, "exit status for broken YAML")
    check(re.search(re.escape(path) + r":\d+:\d+:", err), "file:line:col in %r" % err)
    p = ctx.run_fnproxy(["--check", "-c", ctx.path("nonexistent.yaml")])
    check_eq(p.returncode, 1, "exit status for a missing file")
    check("nonexistent.yaml" in p.stderr.decode(), "names the missing file")


@case()
def run_with_bad_config_fails(ctx):
    path = ctx.write_config(UNKNOWN_KEY, "bad.yaml")
    p = ctx.run_fnproxy(["-c", path])
    check(p.returncode != 0, "fnproxy -c BAD exits non-zero (got %d)" % p.returncode)
    check(("%s:6:5:" % path) in p.stderr.decode(), "error on stderr: %r" % p.stderr)


@case()
def readme_walkthrough_config_checks(ctx):
    """The config walk-through in README.md is a config fnproxy takes: every
    key it shows exists, with a valid value (--check, which also loads the
    certificates: those it names under certs/out/ are made for the case)."""
    import os
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Configuration walk-through"):]
    m = re.search(r"```yaml\n(.*?)```", section, re.S)
    check(m is not None, "README's walk-through has a yaml block")
    pki = make_certs(ctx)
    path = ctx.write_config(m.group(1).replace("certs/out/", pki + "/"), "readme.yaml")
    p = ctx.run_fnproxy(["--check", "-c", path])
    out, err = _out(p)
    check_eq(p.returncode, 0, "--check of README's walk-through (%s)" % (err.strip() or out))
