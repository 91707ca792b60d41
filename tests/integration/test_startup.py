"""Starting up: a listen address another process already holds is refused
with a clear error instead of being shared through SO_REUSEPORT."""

from harness import case, check, check_eq, free_port, std_config


@case()
def listen_address_held_by_another_process(ctx):
    b = ctx.start_backend()
    first = ctx.start_fnproxy(std_config([b.addr]))
    # The same listener address, another admin port.
    text = open(first.config_path).read().replace(
        "127.0.0.1:%d" % first.admin_port, "127.0.0.1:%d" % free_port())
    path = ctx.write_config(text, "second.yaml")
    p = ctx.run_fnproxy(["-c", path])
    err = p.stderr.decode("utf-8", "replace")
    check_eq(p.returncode, 1, "second fnproxy exit status (stderr %r)" % err)
    check("127.0.0.1:%d" % first.port in err and "in use" in err,
          "stderr names the address in use: %r" % err)
    # The first one still serves every request alone.
    for _ in range(20):
        c = ctx.connect(first.port)
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        check_eq(c.read_response().status, 200, "status from the first fnproxy")
