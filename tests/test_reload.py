"""Reload tells the truth (issue 14): SIGHUP and `bulwarkctl reload` apply what can be
applied and name, per key, what needs a restart; the running configuration keeps the
restart-only values, `bulwarkctl status` shows the sockets actually bound, and `bulwarkctl
config diff` shows running vs file. (`[flow]` and relay.trusted_networks reloading into flow
control: test_flow.py.)"""

import json

from conftest import free_port, tcp_accepts, wait_until


def changed_file(d, new_port: int):
    d.doc["limits"]["max_errors"] = 7
    d.doc["server"]["spool_dir"] = str(d.dir / "another-spool")
    d.doc["listener"][0]["address"] = f"127.0.0.1:{new_port}"
    d.write_config()


def test_reload_reports_what_needs_a_restart(daemon):
    new_port = free_port()
    changed_file(daemon, new_port)
    cp = daemon.ctl("reload", "--json")
    assert cp.returncode == 0, cp.stderr
    report = json.loads(cp.stdout)
    applied = {c["key"] for c in report["applied"]}
    restart = {c["key"] for c in report["needs_restart"]}
    assert applied == {"limits.max_errors"}, report
    assert restart == {"listener[0].address", "server.spool_dir"}, report
    human = daemon.ctl("reload").stdout
    assert "needs restart  listener[0].address" in human, human
    # Still listening where it was bound; status says so, not what the file says.
    assert tcp_accepts(daemon.port) and not tcp_accepts(new_port)
    status = json.loads(daemon.ctl("status", "--json").stdout)
    assert [l["address"] for l in status["listeners"]] == [f"127.0.0.1:{daemon.port}"], status
    # The running configuration keeps the restart-only values; the diff names them.
    running = json.loads(daemon.ctl("config", "show", "--json").stdout)
    assert running["limits"]["max_errors"] == 7
    assert running["listener"][0]["address"] == f"127.0.0.1:{daemon.port}"
    diff = json.loads(daemon.ctl("config", "diff", "--json").stdout)
    assert {(c["key"], c["applies"]) for c in diff} == {
        ("listener[0].address", "at_restart"), ("server.spool_dir", "at_restart")}, diff
    daemon.port, daemon.ports = new_port, [new_port]  # where the restarted daemon listens
    daemon.restart()
    assert json.loads(daemon.ctl("config", "diff", "--json").stdout) == []
    assert tcp_accepts(new_port)


def test_sighup_logs_each_key_that_needs_a_restart(daemon):
    changed_file(daemon, free_port())
    daemon.hup()
    wait_until(lambda: "listener[0].address needs a restart" in daemon.log(), 10,
               what=lambda: f"the restart-only key in the log:\n{daemon.log()[-2000:]}")
    assert "server.spool_dir needs a restart" in daemon.log()
    assert "limits.max_errors applied" in daemon.log()


def test_config_show_prints_toml_and_defaults(daemon):
    cp = daemon.ctl("config", "show")
    assert cp.returncode == 0, cp.stderr
    assert "[server]" in cp.stdout and 'hostname = "mx.test"' in cp.stdout, cp.stdout
    cp = daemon.ctl("config", "show", "--defaults")
    assert cp.returncode == 0 and "max_errors = 20" in cp.stdout, cp.stdout


def test_ctl_finds_the_socket_in_a_file_with_unrelated_errors(daemon):
    """The file was edited into something invalid elsewhere; the daemon still runs the old
    configuration and bulwarkctl --config still reaches it."""
    text = daemon.config_path.read_text() + "\n[limits2]\nbogus = 1\n"
    daemon.config_path.write_text(text)
    from conftest import BULWARKCTL, run
    cp = run([BULWARKCTL, "--config", daemon.config_path, "status"], timeout=20)
    assert cp.returncode == 0, cp.stderr
    assert "bulwarkd" in cp.stdout
