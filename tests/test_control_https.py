"""[control] listen: the control protocol over HTTPS with mutual TLS; bulwarkctl node enroll;
remote configuration requests; [metrics] listen parsed by prometheus_client."""

import ssl
import urllib.request

import pytest

from conftest import free_ports, make_message, queue_id_of, send_mail
from control_client import call, control_toml, enroll, tls_context


@pytest.fixture
def node(start_daemon, tmp_path):
    files = enroll(tmp_path / "pki", "node1")
    control_port, metrics_port = free_ports(2)
    extra = control_toml(files, control_port) + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    d = start_daemon(tmp_path, extra_toml=extra)
    return d, files, control_port, metrics_port


def test_enroll_reuses_the_ca_and_prints_settings(tmp_path):
    first = enroll(tmp_path, "a")
    ca = first["ca"].read_bytes()
    second = enroll(tmp_path, "b")
    assert second["ca"].read_bytes() == ca, "a second enrolment must keep the same CA"
    assert (tmp_path / "b.pem").exists() and (tmp_path / "ca.key").stat().st_mode & 0o077 == 0
    assert "[control]" in first["stdout"] and "[[console.node]]" in first["stdout"]


def test_status_over_mutual_tls(node):
    d, files, port, _ = node
    answer = call(files, port, {"command": "status"})
    assert answer["ok"] and answer["result"]["hostname"] == "mx.test", answer


def test_queue_actions_over_mutual_tls(node):
    d, files, port, _ = node
    queue_id = queue_id_of(send_mail(d.port, "s@other.org", ["alice@example.com"], make_message()))
    listed = call(files, port, {"command": "queue-list"})["result"]
    assert [e["id"] for e in listed] == [queue_id]
    assert call(files, port, {"command": "queue-hold", "ids": [queue_id]})["ok"]
    assert d.queue_entry(queue_id)["state"] == "hold"


def test_no_client_certificate_no_control(node):
    _, files, port, _ = node
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        call(files, port, {"command": "status"}, client_cert=False)


def test_client_certificate_from_another_ca_is_refused(node, tmp_path):
    _, files, port, _ = node
    stranger = enroll(tmp_path / "other-pki", "x")
    mixed = dict(files, client_certificate=stranger["client_certificate"],
                 client_private_key=stranger["client_private_key"])
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        call(mixed, port, {"command": "status"})


def test_config_validate_reports_line_and_column(node):
    d, files, port, _ = node
    text = d.config_path.read_text() + "\n[limits2]\nbogus = 1\n"
    answer = call(files, port, {"command": "config-validate", "text": text})
    assert answer["ok"] and not answer["result"]["valid"]
    problem = answer["result"]["problems"][0]
    assert problem["line"] == text.splitlines().index("[limits2]") + 1 and problem["column"] == 2, problem  # the key inside the brackets


def test_config_put_refuses_bad_text_and_applies_good(node):
    d, files, port, _ = node
    original = d.config_path.read_text()
    bad = call(files, port, {"command": "config-put", "text": original.replace('hostname = "mx.test"', 'hostname = "bad host"')})
    assert not bad["ok"] and bad["result"]["problems"], bad
    assert d.config_path.read_text() == original
    good = original.replace('hostname = "mx.test"', 'hostname = "mx2.test"')
    assert call(files, port, {"command": "config-put", "text": good})["ok"]
    assert call(files, port, {"command": "status"})["result"]["hostname"] == "mx2.test"
    assert (d.config_path.parent / "bulwark.toml.previous").read_text() == original


def test_metrics_parse_and_count(node):
    from prometheus_client.parser import text_string_to_metric_families

    d, _, _, metrics_port = node
    send_mail(d.port, "s@other.org", ["alice@example.com"], make_message())
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    accepted = [s for s in families["bulwark_messages"].samples
                if s.labels.get("verdict") == "accepted" and s.name == "bulwark_messages_total"]
    assert accepted and accepted[0].value == 1, families["bulwark_messages"].samples
    queued = [s for s in families["bulwark_queue_messages"].samples if s.labels["state"] == "queued"]
    assert queued[0].value == 1
    for name in ("bulwark_sessions", "bulwark_flow_drops", "bulwark_journal_segments", "bulwark_queue_oldest_seconds"):
        assert name in families, sorted(families)


def test_metrics_have_stage_latency_histograms_verdicts_and_deliveries(start_mta, sink, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    from conftest import route, to_toml, wait_until

    hop = sink("hop")
    (metrics_port,) = free_ports(1)
    rules = to_toml({"rule": [{"name": "refuse", "subject": "refuse me", "action": "reject",
                               "reason": "policy"}]})
    d = start_mta(tmp_path, [route(["example.com"], [hop])],
                  extra_toml=rules + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    send_mail(d.port, "s@other.org", ["alice@example.com"], make_message(subject="fine"))
    code, _ = send_mail(d.port, "s@other.org", ["alice@example.com"], make_message(subject="refuse me"))
    assert code >= 500
    hop.wait_for(1)

    def scrape():
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def sent():
        samples = scrape()["bulwark_deliveries"].samples
        return sum(s.value for s in samples if s.labels.get("status") == "sent")
    wait_until(lambda: sent() == 1, 10, what="one delivery counted as sent")
    families = scrape()
    latency = [s for s in families["bulwark_stage_latency_seconds"].samples if s.labels.get("stage") == "rules"]
    buckets = [s for s in latency if s.name.endswith("_bucket")]
    count = next(s.value for s in latency if s.name.endswith("_count"))
    assert count == 2, latency
    values = [s.value for s in buckets]
    assert values == sorted(values) and buckets[-1].labels["le"] == "+Inf" and values[-1] == count, buckets
    verdicts = {(s.labels["stage"], s.labels["verdict"], s.labels["decided_by"]): s.value
                for s in families["bulwark_stage_verdicts"].samples if s.name.endswith("_total")}
    assert verdicts.get(("rules", "reject", "rule:refuse")) == 1, verdicts
