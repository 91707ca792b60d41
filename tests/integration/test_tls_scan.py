"""testssl.sh (Debian's testssl.sh package) against a TLS listener, gated
on its JSON output: no finding of severity MEDIUM or higher, except the
ones named in EXCEPTIONS, each with the reason a test setup cannot avoid
it.

The scan runs the groups that judge a server's TLS: protocols (-p),
standard cipher categories (-s), forward secrecy (-f), server defaults and
the certificate (-S), the server's cipher order (-P), every vulnerability
check (-U, which includes renegotiation and RC4) and the HTTP headers
(-h). GREASE and size-intolerance probes (-g) are left out for time
(about 80 s here); the TLS record layer is fuzzed (fuzz_tls) and
test_tls.py's sslscan case lists every accepted cipher.

It runs in a network namespace with only lo, with no DNS lookup
(--nodns none) and the address given (--ip), so that nothing the scan
tries (CRL, OCSP, CAA) can leave the machine. The scan takes one to three
minutes and judges fnproxy's TLS configuration, not its memory handling,
so it runs in the normal build only (san=False) and starts first, so that
it overlaps the rest of the suite.
"""

import json
import shutil
import subprocess

from harness import case, check, check_eq, fail, make_certs

CONFIG = """
admin: { listen: 127.0.0.1:$APORT }
listeners:
  - name: public
    listen: 127.0.0.1:$PORT_public
    tls:
      certificates: [{ cert: $D/server.crt, key: $D/server.key }]
functions:
  - name: f
    endpoints: [127.0.0.1:$B]
    ingress:
      routes:
        - { name: all, match: { listener: public, path_prefix: / } }
"""

SEVERE = ("MEDIUM", "HIGH", "CRITICAL")

# The findings of MEDIUM or higher that this test accepts, and why.
EXCEPTIONS = {
    # The development CA (certs/make-certs.sh) publishes no CRL and runs no
    # OCSP responder; a production certificate from a public CA has both.
    "cert_revocation": "a test PKI has no CRL or OCSP URI",
    # CAA is a DNS record of the certificate's domain: there is none for a
    # test name, and the scan does no DNS (--nodns none).
    "DNS_CAArecord": "a test name has no CAA record (and the scan does no DNS)",
    # Certificate Transparency: a private CA's certificates are never
    # logged.
    "certificate_transparency": "a private CA's certificates are not in CT logs",
    # HSTS and the other security headers are the function's answer's
    # headers, which fnproxy forwards as they are; the test function sends
    # none. A function served over TLS sets Strict-Transport-Security
    # itself.
    "security_headers": "response headers are the function's; the test function sends none",
}

# Findings that show each group ran and said what fnproxy's configuration
# must give: id -> the severity expected and a piece of the finding.
EXPECTED = {
    "SSLv2": ("OK", "not offered"),
    "SSLv3": ("OK", "not offered"),
    "TLS1": (None, "not offered"),
    "TLS1_1": (None, "not offered"),
    "TLS1_2": ("OK", "offered"),
    "TLS1_3": ("OK", "offered"),
    "cipherlist_NULL": ("OK", "not offered"),
    "cipherlist_EXPORT": ("OK", "not offered"),
    "cipherlist_LOW": ("OK", "not offered"),
    "cipherlist_3DES_IDEA": (None, "not offered"),
    "PFS": ("OK", "offered"),
    "cert_chain_of_trust": ("OK", "passed"),
    "cert_trust": ("OK", "Ok"),
    "heartbleed": ("OK", "not vulnerable"),
    "CCS": ("OK", "not vulnerable"),
    "ticketbleed": ("OK", "not vulnerable"),
    "ROBOT": ("OK", "not vulnerable"),
    "secure_renego": ("OK", "supported"),
    "secure_client_renego": ("OK", "not vulnerable"),
    "CRIME_TLS": ("OK", "not vulnerable"),
    "POODLE_SSL": ("OK", "not vulnerable"),
    "SWEET32": ("OK", "not vulnerable"),
    "FREAK": ("OK", "not vulnerable"),
    "LOGJAM": ("OK", "not vulnerable"),
    "BEAST": ("OK", "not vulnerable"),
    "LUCKY13": ("OK", "not vulnerable"),
    "RC4": ("OK", "not vulnerable"),
}


def _testssl():
    """The testssl executable. scripts/deps.sh installs it (`make test`
    runs deps.sh first); a missing one fails the case."""
    exe = shutil.which("testssl") or shutil.which("testssl.sh")
    if not exe:
        fail("testssl.sh is not installed (no testssl on PATH), so the TLS listener could not "
             "be scanned; install it with `sh scripts/deps.sh` (which `make test` runs first)")
    return exe


def severe_findings(findings):
    """The findings of MEDIUM or higher not in EXCEPTIONS, and those in it."""
    bad, excused = [], []
    for f in findings:
        if f.get("severity") in SEVERE:
            (excused if f.get("id") in EXCEPTIONS else bad).append(f)
    return bad, excused


@case(timeout=420, netns=True, first=True, san=False)
def testssl_no_medium_or_higher_findings(ctx):
    exe = _testssl()
    d = make_certs(ctx)
    b = ctx.start_backend(record=False)
    fp = ctx.start_fnproxy(CONFIG, listeners=("public",), D=d, B=b.port)
    out = ctx.path("testssl.json")
    p = subprocess.run(
        [exe, "--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none",
         "--ip", "127.0.0.1", "--add-ca", d + "/ca.crt", "--connect-timeout", "10",
         "--openssl-timeout", "10", "--jsonfile", out,
         "-p", "-s", "-f", "-S", "-P", "-U", "-h", "localhost:%d" % fp.ports["public"]],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=400)
    try:
        findings = json.load(open(out))
    except (OSError, ValueError) as e:
        fail("no JSON from testssl (exit %d): %s; %s" % (p.returncode, e,
                                                          p.stdout.decode()[-500:]))
    ids = {f["id"]: f for f in findings}
    check("scanProblem" not in ids, "testssl could not scan: %r" % ids.get("scanProblem"))
    for fid, (sev, text) in EXPECTED.items():
        f = ids.get(fid)
        check(f is not None, "testssl reported nothing for %s (the scan did not run it)" % fid)
        if sev is not None:
            check_eq(f["severity"], sev, "severity of %s (%s)" % (fid, f["finding"]))
        check(text in f["finding"], "%s: %r lacks %r" % (fid, f["finding"], text))
    bad, excused = severe_findings(findings)
    check(not bad, "testssl findings of MEDIUM or higher: %s" % "; ".join(
        "%s %s: %s" % (f["id"], f["severity"], f["finding"]) for f in bad))
    # The gate itself: a finding outside EXCEPTIONS must fail it.
    check_eq(severe_findings([{"id": "BREACH", "severity": "MEDIUM"}])[0],
             [{"id": "BREACH", "severity": "MEDIUM"}], "an unexcused MEDIUM finding")
    warns = ["%s: %s" % (f["id"], f["finding"]) for f in findings if f.get("severity") == "WARN"]
    ctx.note("testssl: %d findings in %ss; excused: %s; warnings: %s" % (
        len(findings), ids.get("scanTime", {}).get("finding", "?"),
        ", ".join("%s %s" % (f["id"], f["severity"]) for f in excused) or "none",
        "; ".join(warns) or "none"))
    check(fp.alive(), "fnproxy died during the scan")
