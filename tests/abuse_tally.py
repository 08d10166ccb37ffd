"""pytest plugin: tallies every abuse-style test (tried / refused / lost) at the end of a run.

An abuse test tries one attack and passes only if the daemon refused or neutralised it and
lost nothing it had acknowledged; so tried = abuse tests run, refused = passed, lost = failed
(must be 0). README's tally comes from a full run's summary line.
"""

from __future__ import annotations

# (file, test-name prefix) of the abuse tests across the suite; "" = every test in the file.
ABUSE = [
    ("test_abuse.py", ""),
    ("test_smuggling.py", ""),
    ("test_relay.py", "test_relay_trick_refused"),
    ("test_relay.py", "test_foreign_domain_denied"),
    ("test_relay.py", "test_submission_relay_refused"),
    ("test_tls_auth.py", "test_starttls_command_injection"),
    ("test_tls_auth.py", "test_auth_before_tls_refused"),
    ("test_smtp_protocol.py", "test_talking_before_greeting"),
    ("test_smtp_protocol.py", "test_hanging_up_during_greet_delay"),
    ("test_limits.py", ""),
]

_results: dict[str, str] = {}


def is_abuse(nodeid: str) -> bool:
    path, _, name = nodeid.partition("::")
    return any(path.endswith(f) and name.startswith(prefix) for f, prefix in ABUSE)


def pytest_runtest_logreport(report):
    if not is_abuse(report.nodeid):
        return
    if report.when == "call" or report.outcome == "failed":
        if report.outcome == "failed" or report.nodeid not in _results:
            _results[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    if not _results:
        return
    tried = sum(1 for o in _results.values() if o in ("passed", "failed"))
    refused = sum(1 for o in _results.values() if o == "passed")
    lost = sum(1 for o in _results.values() if o == "failed")
    terminalreporter.write_line(
        f"abuse tally: {tried} abuse tests run, {refused} passed (attack refused or neutralised,"
        f" nothing acknowledged lost), {lost} failed")
