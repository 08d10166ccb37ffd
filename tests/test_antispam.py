"""The anti-spam stage ([antispam]): GTUBE, DMARC p=reject, a DNSBL-listed client, an
allowlisted sender, each action at its threshold (tag, quarantine, reject), per-domain
thresholds and opt-out through the per-recipient split, the spam_score_over rule condition,
`bulwarkctl spam train/learn/check` on a small spam/ham set the test builds, and learning from
the operator's verdicts on quarantined mail (release --not-spam, delete --spam).

Real SMTP (RawSession) into a real bulwarkd, next hop a Postfix smtp-sink; every DNS record
comes from the loopback DNS server of conftest (tests/dns_server.py). Every wait is bounded."""

import json
import struct
import zlib
from pathlib import Path

import pytest

from conftest import BULWARKCTL, RawSession, expect, route, run, to_toml

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def empty_model(path: Path) -> Path:
    """A valid model file whose weights are all 0, so rules alone decide the score."""
    body = b"BWSPAM" + struct.pack("<HBBff", 2, 8, 0, 0.0, 1.0) + b"\0\0" * 256
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return path


THRESHOLD_RULES = """\
body T_BELOW /belowme/ 4.9
body T_TAG /tagme/ 5.0
body T_QUARANTINE /quarme/ 10.0
body T_REJECT /rejectme/ 15.0
"""


@pytest.fixture
def gateway(start_mta, sink, tmp_path, dns):
    """Factory: gateway(antispam={...}, extra="") -> (daemon, sink for example.com/.net)."""

    def _make(antispam=None, extra=""):
        hop = sink("hop")
        section = {"enabled": True, "direction": "any", **(antispam or {})}
        d = start_mta(tmp_path, [route(["example.com", "example.net"], [hop])],
                      extra_toml=to_toml({"antispam": section}) + extra,
                      relay={"domains": ["example.com", "example.net"]})
        return d, hop

    return _make


def message(subject="hello", body="hello world", sender="sender@other.org", to="alice@example.com",
            headers=()):
    lines = [f"From: <{sender}>", f"To: <{to}>", f"Subject: {subject}",
             "Date: Mon, 1 Jan 2024 10:00:00 +0000", "Message-ID: <t1@other.org>", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def transaction(d, rcpts, msg, sender="sender@other.org"):
    with RawSession(d.port) as s:
        expect(s.greeting(), 220)
        expect(s.ehlo(), 250)
        expect(s.cmd(f"MAIL FROM:<{sender}>"), 250)
        for r in rcpts:
            expect(s.cmd(f"RCPT TO:<{r}>"), 250, what=f"RCPT {r}")
        reply = s.data(msg)
        s.cmd("QUIT")
    return reply


def thresholds_gateway(gateway, tmp_path, **antispam):
    rules = tmp_path / "spam.rules"
    rules.write_text(THRESHOLD_RULES)
    return gateway({"model": str(empty_model(tmp_path / "empty.model")), "rules": str(rules),
                    "authentication": False, **antispam})


def test_gtube_is_rejected_with_the_builtin_model_and_rules(gateway):
    d, hop = gateway()
    code, text = transaction(d, ["alice@example.com"], message(body=f"test {GTUBE} test"))
    assert code == 550 and text.startswith("5.7.1"), (code, text)
    assert "antispam: id=" in d.log() and "GTUBE" in d.log()


def test_clean_mail_is_labelled_and_forged_labels_removed(gateway):
    d, hop = gateway()
    msg = message(subject="lunch tomorrow", body="Shall we meet at noon at the usual place?",
                  headers=["X-Spam-Flag: YES", "X-Spam-Status: Yes, score=99.0"])
    code, _ = transaction(d, ["alice@example.com"], msg)
    assert code == 250
    hop.wait_for(1)
    m = hop.messages()[0].msg
    assert m["X-Spam-Flag"] is None, m.as_string()[:800]
    assert m["X-Spam-Status"].startswith("No, score="), m["X-Spam-Status"]
    assert float(m["X-Spam-Score"]) < 5.0
    assert m["Authentication-Results"].startswith("mx.test"), m["Authentication-Results"]
    assert m["Subject"] == "lunch tomorrow"


def test_dmarc_p_reject_failure_is_rejected(gateway, dns):
    dns.add("forged.example", "TXT", "v=spf1 ip4:192.0.2.10 -all")
    dns.add("_dmarc.forged.example", "TXT", "v=DMARC1; p=reject")
    d, hop = gateway()
    msg = message(subject="your account", body="Please read this.", sender="ceo@forged.example")
    code, text = transaction(d, ["alice@example.com"], msg, sender="ceo@forged.example")
    assert code == 550 and text.startswith("5.7.1"), (code, text)
    assert "DMARC_REJECT" in d.log() and "SPF_FAIL" in d.log()


def test_dmarc_p_reject_can_quarantine_instead(gateway, dns):
    dns.add("forged.example", "TXT", "v=spf1 -all")
    dns.add("_dmarc.forged.example", "TXT", "v=DMARC1; p=reject")
    d, hop = gateway({"dmarc_reject": "score", "quarantine_score": 50.0, "reject_score": 60.0})
    msg = message(subject="hi", body="Please read this.", sender="ceo@forged.example")
    code, _ = transaction(d, ["alice@example.com"], msg, sender="ceo@forged.example")
    assert code == 250  # score only: +6 (DMARC_REJECT) +2 (SPF_FAIL) tag it, nothing refuses
    hop.wait_for(1)
    m = hop.messages()[0].msg
    assert "DMARC_REJECT" in m["X-Spam-Status"] and m["X-Spam-Flag"] == "YES"
    assert "dmarc=fail" in m["Authentication-Results"], m["Authentication-Results"]


def test_dnsbl_listed_client_is_rejected(gateway, dns):
    dns.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    d, hop = gateway({"dnsbl": ["bl.test=20"], "authentication": False})
    code, text = transaction(d, ["alice@example.com"], message(body="plain words"))
    assert code == 550, (code, text)
    assert "DNSBL_BL" in d.log()
    # Not listed in another zone: delivered.
    d2, hop2 = gateway({"dnsbl": ["other.test=20"], "authentication": False})
    assert transaction(d2, ["alice@example.com"], message(body="plain words"))[0] == 250


def test_allowlisted_sender_passes_even_gtube(gateway):
    d, hop = gateway({"allow": ["friend@partner.example"]})
    msg = message(body=GTUBE, sender="friend@partner.example")
    code, _ = transaction(d, ["alice@example.com"], msg, sender="friend@partner.example")
    assert code == 250
    hop.wait_for(1)
    status = hop.messages()[0].msg["X-Spam-Status"]
    assert status.startswith("No,") and "BW_ALLOWLIST" in status, status


def test_each_action_at_its_threshold(gateway, tmp_path):
    d, hop = thresholds_gateway(gateway, tmp_path)
    assert transaction(d, ["alice@example.com"], message(subject="below", body="belowme"))[0] == 250
    assert transaction(d, ["alice@example.com"], message(subject="tag", body="tagme"))[0] == 250
    hop.wait_for(2)
    by_subject = {m.msg["X-Spam-Score"]: m.msg for m in hop.messages()}
    below, tagged = by_subject["4.9"], by_subject["5.0"]
    assert below["X-Spam-Flag"] is None and below["Subject"] == "below"
    assert below["X-Spam-Status"] == "No, score=4.9 tests=BW_CLASSIFIER,T_BELOW"
    assert tagged["X-Spam-Flag"] == "YES" and tagged["Subject"] == "[SPAM] tag"
    assert tagged["X-Spam-Status"].startswith("Yes, score=5.0 tests=")
    code, text = transaction(d, ["alice@example.com"], message(body="rejectme"))
    assert code == 550 and text.startswith("5.7.1"), (code, text)
    # Quarantine: 250, kept in the quarantine with the score as its reason, never delivered.
    code, _ = transaction(d, ["alice@example.com"], message(subject="quar", body="quarme"))
    assert code == 250
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    entries = json.loads(cp.stdout)
    assert [e.get("subject") for e in entries] == ["quar"], entries
    assert "spam score 10.0" in json.dumps(entries), entries
    assert len(hop.messages()) == 2


def test_per_domain_thresholds_and_opt_out_split_the_message(gateway, tmp_path):
    d, hop = thresholds_gateway(gateway, tmp_path, opt_out=["carol@example.com"],
                                domain=[{"domain": "example.net", "reject_score": 100.0,
                                         "quarantine_score": 100.0}])
    code, _ = transaction(d, ["alice@example.com", "bob@example.net", "carol@example.com"],
                          message(body="rejectme"))
    assert code == 250  # alice's copy is rejected (she gets a notice), the others are not
    hop.wait_for(2)
    rcpts = sorted(r for m in hop.messages() for r in m.rcpts)
    assert rcpts == ["bob@example.net", "carol@example.com"], rcpts
    for m in hop.messages():
        assert m.msg["X-Spam-Flag"] == "YES"


def test_rules_match_spam_score_over(gateway, tmp_path):
    rule = to_toml({"rule": [{"name": "spammy", "spam_score_over": 4.0, "action": "add_header",
                              "add_header": "X-Rule: spammy"}]})
    rules = tmp_path / "spam.rules"
    rules.write_text(THRESHOLD_RULES)
    d, hop = gateway({"model": str(empty_model(tmp_path / "empty.model")), "rules": str(rules),
                      "authentication": False}, extra="\n" + rule)
    transaction(d, ["alice@example.com"], message(subject="a", body="tagme"))
    transaction(d, ["alice@example.com"], message(subject="b", body="nothing"))
    hop.wait_for(2)
    got = {m.subject: m.msg["X-Rule"] for m in hop.messages()}
    assert got == {"[SPAM] a": "spammy", "b": None}, got


SPAM_WORDS = "winner prize claim casino bonus jackpot pills cheap offer click unsubscribe".split()
HAM_WORDS = "meeting agenda review patch build release minutes schedule budget draft".split()


def corpus(directory: Path, words: list, n: int, seed: int) -> Path:
    directory.mkdir(parents=True)
    for i in range(n):
        picked = [words[(i * 7 + j * 3 + seed) % len(words)] for j in range(12)]
        (directory / f"{i:03}.eml").write_text(
            f"From: s{i}@corp{seed}.example\nTo: t@example.com\nSubject: {picked[0]} {picked[1]}\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\nMessage-ID: <{i}.{seed}@x.example>\n\n"
            + " ".join(picked) + f" number {i}\n")
    return directory


def test_trained_model_separates_a_small_set_and_learns(tmp_path):
    spam = corpus(tmp_path / "spam", SPAM_WORDS, 40, 1)
    ham = corpus(tmp_path / "ham", HAM_WORDS, 40, 2)
    model = tmp_path / "small.model"
    r = run([BULWARKCTL, "spam", "train", "--spam", str(spam), "--ham", str(ham), "--out", str(model)])
    assert r.returncode == 0, r.stderr
    assert "trained on 40 spam, 40 ham" in r.stdout and model.stat().st_size == 22 + 2 * 65536
    unseen = {"spam": corpus(tmp_path / "s2", SPAM_WORDS, 5, 5), "ham": corpus(tmp_path / "h2", HAM_WORDS, 5, 6)}
    scores = {}
    for label, directory in unseen.items():
        files = sorted(str(p) for p in directory.iterdir())
        r = run([BULWARKCTL, "spam", "check", "--model", str(model), *files])
        assert r.returncode == 0, r.stderr
        scores[label] = [float(line.split("\t")[1]) for line in r.stdout.splitlines()]
    assert min(scores["spam"]) > max(scores["ham"]), scores
    assert min(scores["spam"]) >= 5.0 and max(scores["ham"]) < 5.0, scores
    # Learning a ham-looking message as spam raises its score.
    target = sorted(unseen["ham"].iterdir())[0]
    before = float(run([BULWARKCTL, "spam", "check", "--model", str(model), str(target)]).stdout.split("\t")[1])
    r = run([BULWARKCTL, "spam", "learn", "--spam", str(target), "--model", str(model)])
    assert r.returncode == 0 and "learned" in r.stdout, r.stderr
    after = float(run([BULWARKCTL, "spam", "check", "--model", str(model), str(target)]).stdout.split("\t")[1])
    assert after >= 5.0 > before, (before, after)


def check_score(model: Path, path: Path) -> float:
    r = run([BULWARKCTL, "spam", "check", "--model", str(model), str(path)])
    assert r.returncode == 0, r.stderr
    return float(r.stdout.split("\t")[1])


def quarantined(d) -> list:
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_quarantine_verdicts_teach_the_running_model(gateway, tmp_path):
    """Release --not-spam learns the message as ham, delete --spam learns it as spam: the
    model file's score moves across tag_score, and the running daemon scores with it."""
    model = tmp_path / "live.model"
    r = run([BULWARKCTL, "spam", "train", "--spam", str(corpus(tmp_path / "spam", SPAM_WORDS, 40, 1)),
             "--ham", str(corpus(tmp_path / "ham", HAM_WORDS, 40, 2)), "--out", str(model)])
    assert r.returncode == 0, r.stderr
    d, hop = gateway({"model": str(model), "authentication": False, "tag_score": 5.0,
                      "quarantine_score": 5.0, "reject_score": 100.0})
    # A newsletter and a pitch the model takes for spam: both quarantined.
    body = "winner prize claim casino bonus jackpot offer from the club newsletter"
    letter = message(subject="winner bonus", body=body, headers=("Message-ID: <n1@other.org>",))
    pitch = message(subject="cheap pills", body="cheap pills click unsubscribe cheap pills click")
    files = {}
    for name, raw in (("letter", letter), ("pitch", pitch)):
        files[name] = tmp_path / f"{name}.eml"
        files[name].write_bytes(raw)
        assert check_score(model, files[name]) >= 5.0, name
        assert transaction(d, ["alice@example.com"], raw)[0] == 250
    ids = {e["subject"]: e["id"] for e in quarantined(d)}
    assert sorted(ids) == ["cheap pills", "winner bonus"], ids
    # Delete --spam: confirmed spam moves further up, and is gone.
    before = check_score(model, files["pitch"])
    cp = d.ctl("quarantine", "delete", ids["cheap pills"], "--spam")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    after = check_score(model, files["pitch"])
    assert after > before, (before, after)
    assert [e["subject"] for e in quarantined(d)] == ["winner bonus"]
    # Release --not-spam: the newsletter is delivered and learned as ham.
    before = check_score(model, files["letter"])
    cp = d.ctl("quarantine", "release", ids["winner bonus"], "--not-spam")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    hop.wait_for(1)
    after = check_score(model, files["letter"])
    assert after < 5.0 <= before, (before, after)
    # The daemon reloaded the model: the same newsletter now passes untagged.
    assert transaction(d, ["alice@example.com"], letter)[0] == 250
    hop.wait_for(2)
    status = [m.msg["X-Spam-Status"] for m in hop.messages()]
    assert len(status) == 2 and status[-1].startswith("No,"), status


def test_release_not_spam_without_a_model_file_is_refused(gateway, tmp_path):
    """The built-in model is read-only: a "not spam" release with no [antispam] model file
    is refused and the message stays quarantined (never released without its verdict)."""
    rules = tmp_path / "spam.rules"
    rules.write_text(THRESHOLD_RULES)
    d, hop = gateway({"rules": str(rules), "authentication": False, "quarantine_score": 5.0,
                      "reject_score": 100.0})
    assert transaction(d, ["alice@example.com"], message(subject="held", body="rejectme"))[0] == 250
    entries = quarantined(d)
    assert [e["subject"] for e in entries] == ["held"], entries
    cp = d.ctl("quarantine", "release", entries[0]["id"], "--not-spam")
    assert cp.returncode != 0 and "names no model file" in cp.stdout + cp.stderr, cp
    assert [e["state"] for e in quarantined(d)] == [entries[0]["state"]]
    assert hop.messages() == []


def test_bad_rules_file_is_a_startup_error(tmp_path):
    rules = tmp_path / "bad.rules"
    rules.write_text("body OK /a/ 1\nbody lower /a/ 1\n")
    r = run([BULWARKCTL, "spam", "check", "--rules", str(rules), str(rules)])
    assert r.returncode != 0 and "line 2" in r.stderr, r.stderr
