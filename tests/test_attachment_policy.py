"""The attachment filter (issue 12), table-driven: every trick an attacker uses to slip an
attachment past a name or type filter, attached directly, inside a zip and inside a zip inside a
zip, against each action (reject, quarantine, strip).

The tricks: a plain name, RFC 2231 continuations (`filename*0*=`), encoded-word names (Outlook's
`name="=?UTF-8?B?...?="`), U+202E (`invoice.pdf<RLO>exe`, `invoice<RLO>fdp.exe`), trailing dots
and spaces, a double extension, an executable renamed to .pdf (magic bytes), an attachment over
`attachment_size_over`, and a password-protected zip (`encrypted_archive`). Each trick is built
so that exactly one of the four rules can catch it (the name tricks carry harmless bytes, the
renamed executable a harmless name), and each test checks that this rule, and no other, did.

Real clients (smtplib), real MIME (Python's email package builds every message; `zip -P` the
encrypted archive), real next hops (Postfix smtp-sink). `strip` is checked by comparing the raw
MIME trees part by part: every part but the stripped one is byte-identical; quarantine and strip
keep the original, and a release delivers it byte for byte. Every wait is bounded."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import smtplib
import subprocess
import urllib.parse
import zipfile
from email import encoders
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from conftest import route, to_toml

SENDER = "sender@other.org"
RCPT = "alice@example.com"
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48 + b"PE\x00\x00"
HARMLESS = b"Nothing executable in here, just a line of text.\n"
BIG = bytes(range(256)) * 1200  # 307,200 bytes: over 100KB, and compresses to almost nothing
CRLF_POLICY = email.policy.compat32.clone(linesep="\r\n")

# One rule per condition; each names itself in its reason.
RULES = [
    {"name": "exe-names", "attachment_names": ["*.exe", "*.scr"], "reason": "executable name"},
    {"name": "exe-types", "attachment_types": ["application/x-msdownload"], "reason": "executable content"},
    {"name": "big", "attachment_size_over": "100KB", "reason": "attachment too large"},
    {"name": "encrypted", "encrypted_archive": True, "reason": "encrypted archive"},
]
REASON = {r["name"]: r["reason"] for r in RULES}


def encrypted_zip(directory: Path) -> bytes:
    (directory / "secret.txt").write_bytes(HARMLESS)
    target = directory / "locked.zip"
    target.unlink(missing_ok=True)
    subprocess.run(["zip", "-q", "-j", "-P", "infected", str(target), str(directory / "secret.txt")],
                   check=True, timeout=20)
    data = target.read_bytes()
    assert data[6] & 1, "zip -P did not set the encryption flag"
    return data


def pct(text: str) -> str:
    return urllib.parse.quote(text.encode("utf-8"), safe="")


def disposition(name: str, style: str) -> tuple[str, str | None]:
    """(Content-Disposition value, Content-Type name parameter or None) for `name` in `style`."""
    if style == "quoted":
        return f'attachment; filename="{name}"', None
    if style == "rfc2231":
        return f"attachment; filename*=UTF-8''{pct(name)}", None
    if style == "rfc2231_continuations":
        pieces = [name[:10], name[10:25], name[25:]]
        value = "attachment; " + f"filename*0*=UTF-8''{pct(pieces[0])}; filename*1*={pct(pieces[1])}; "
        return value + f'filename*2="{pieces[2]}"', None
    if style == "encoded_word":
        word = "=?UTF-8?B?" + base64.b64encode(name.encode()).decode() + "?="
        q_word = "=?UTF-8?Q?" + "".join(c if c.isalnum() and c.isascii() else
                                         "".join(f"={b:02X}" for b in c.encode()) for c in name) + "?="
        return f'attachment; filename="{q_word}"', word
    raise ValueError(style)


def attachment_part(name: str, data: bytes, ctype: str, style: str = "quoted") -> MIMEBase:
    maintype, subtype = ctype.split("/")
    part = MIMEBase(maintype, subtype)
    del part["MIME-Version"]
    part.set_payload(data)
    encoders.encode_base64(part)
    value, ctype_name = disposition(name, style)
    if ctype_name:
        part.replace_header("Content-Type", f'{ctype}; name="{ctype_name}"')
    part.add_header("Content-Disposition", value)
    return part


def message(subject: str, trick: MIMEBase | None) -> bytes:
    """multipart/mixed [alternative [plain, html], the trick, logo.png, notes.txt]."""
    root = MIMEMultipart("mixed")
    del root["MIME-Version"]
    root["From"], root["To"], root["Subject"] = SENDER, RCPT, subject
    root["Date"], root["Message-ID"], root["MIME-Version"] = formatdate(), make_msgid(domain="test"), "1.0"
    alternative = MIMEMultipart("alternative")
    del alternative["MIME-Version"]
    for text, kind in (("Please see the attachment.\n", "plain"), ("<p>Please see the attachment.</p>\n", "html")):
        part = MIMEText(text, kind, "utf-8")
        del part["MIME-Version"]
        alternative.attach(part)
    root.attach(alternative)
    if trick is not None:
        root.attach(trick)
    root.attach(attachment_part("logo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png"))
    root.attach(attachment_part("notes.txt", b"meeting notes\n", "text/plain"))
    return root.as_bytes(policy=CRLF_POLICY)


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return out.getvalue()


# (id, name, header style, bytes (or "encrypted"), declared type, the rule that must catch it)
TRICKS = [
    ("plain_name", "setup.exe", "quoted", HARMLESS, "application/octet-stream", "exe-names"),
    ("rfc2231_continuations", "r\u00e9sum\u00e9 of the board meeting 2026.exe", "rfc2231_continuations",
     HARMLESS, "application/octet-stream", "exe-names"),
    ("encoded_word", "Rechnung f\u00fcr M\u00e4rz.exe", "encoded_word", HARMLESS, "application/octet-stream",
     "exe-names"),
    ("rlo_pdf_then_exe", "invoice.pdf\u202eexe", "rfc2231", HARMLESS, "application/pdf", "exe-names"),
    ("rlo_reversed_fdp", "invoice\u202efdp.exe", "rfc2231", HARMLESS, "application/pdf", "exe-names"),
    ("trailing_dots_spaces", "setup.exe. . ", "quoted", HARMLESS, "application/octet-stream", "exe-names"),
    ("double_extension", "invoice.pdf.exe", "quoted", HARMLESS, "application/pdf", "exe-names"),
    ("renamed_exe_magic", "report.pdf", "quoted", EXE, "application/pdf", "exe-types"),
    ("size_over", "dump.bin", "quoted", BIG, "application/octet-stream", "big"),
    ("encrypted_zip", "locked.zip", "quoted", "encrypted", "application/zip", "encrypted"),
]
PLACEMENTS = ["attached", "in_zip", "in_nested_zip"]


def trick_cases(directory: Path):
    """(case id, raw message, the rule that must catch it) for every trick and placement."""
    locked = encrypted_zip(directory)
    for trick, name, style, data, ctype, rule in TRICKS:
        data = locked if data == "encrypted" else data
        for placement in PLACEMENTS:
            case = f"{trick}/{placement}"
            if placement == "attached":
                part = attachment_part(name, data, ctype, style)
            else:
                archive = zipped(name, data)
                if placement == "in_nested_zip":
                    archive = zipped("inner.zip", archive)
                part = attachment_part("archive.zip", archive, "application/zip")
            raw = message(f"case {case}", part)
            yield case, raw, rule


def clean_cases():
    """Messages no rule may touch: a zip of text, a nested zip of text, a PDF, a text file named exe.txt."""
    yield "clean/pdf", message("clean pdf", attachment_part("report.pdf", b"%PDF-1.4 fine", "application/pdf"))
    yield "clean/zip", message("clean zip", attachment_part("notes.zip", zipped("notes.txt", HARMLESS),
                                                             "application/zip"))
    nested = zipped("a.zip", zipped("b.zip", zipped("c.txt", HARMLESS)))
    yield "clean/nested_zip", message("clean nested", attachment_part("nested.zip", nested, "application/zip"))
    yield "clean/exe_in_text", message("clean exe.txt", attachment_part("exe.txt", b"an .exe, in words",
                                                                         "text/plain"))


def test_the_messages_really_carry_the_tricks(tmp_path):
    """The table is what it claims: the encodings are on the wire as named."""
    raws = {case: raw for case, raw, _ in trick_cases(tmp_path)}
    assert b"filename*0*=UTF-8''r%C3%A9sum%C3%A9" in raws["rfc2231_continuations/attached"]
    assert b"filename*1*=" in raws["rfc2231_continuations/attached"]
    assert b'name="=?UTF-8?B?' in raws["encoded_word/attached"]
    assert b"filename*=UTF-8''invoice.pdf%E2%80%AEexe" in raws["rlo_pdf_then_exe/attached"]
    assert b'filename="setup.exe. . "' in raws["trailing_dots_spaces/attached"]
    for case, raw in raws.items():
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        names = [p.get_filename() for p in parsed.iter_attachments()]
        assert len(names) == 3 and names[1:] == ["logo.png", "notes.txt"], (case, names)


def send_all(port: int, cases) -> dict[str, tuple[int, str]]:
    """Sends each (case, raw) in its own smtplib session (refusals count as session errors);
    the DATA reply per case."""
    replies = {}
    for case, raw in cases:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("client.test")
            try:
                refused = client.sendmail(SENDER, [RCPT], raw)
                assert not refused, (case, refused)
                replies[case] = (250, "")
            except smtplib.SMTPDataError as e:
                replies[case] = (e.smtp_code, e.smtp_error.decode(errors="replace"))
    return replies


@pytest.fixture
def gateway(start_mta, sink, tmp_path):
    def _make(action: str):
        hop = sink("hop")
        rules = [dict(r, action=action) for r in RULES]
        d = start_mta(tmp_path, [route(["example.com"], [hop])], extra_toml=to_toml({"rule": rules}))
        return d, hop

    return _make


def lf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    head, _, body = lf(raw).partition(b"\n\n")
    return head, body


def mime_tree(raw: bytes, path: str = "1") -> list[tuple[str, bytes]]:
    """The raw pieces of a MIME entity, split on its boundaries (LF line ends): for a multipart,
    its preamble, each child's pieces and its epilogue; for a leaf, the leaf whole."""
    head, body = split_message(raw)
    entity = email.message_from_bytes(head + b"\n\n")
    if entity.get_content_maintype() != "multipart":
        return [(path, lf(raw))]
    delimiter = b"\n--" + entity.get_boundary().encode()
    segments = (b"\n" + body).split(delimiter)
    out = [(f"{path}/preamble", segments[0])]
    for i, segment in enumerate(segments[1:], start=1):
        if segment.startswith(b"--"):
            out.append((f"{path}/epilogue", segment))
            break
        out.extend(mime_tree(segment.split(b"\n", 1)[1], f"{path}.{i}"))
    return out


def subject_of(raw: bytes) -> str:
    return email.message_from_bytes(raw)["Subject"]


def quarantined(d) -> list[dict]:
    cp = d.ctl("quarantine", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def entry_text(entry: dict) -> str:
    return json.dumps(entry, ensure_ascii=False)


def release_all(d, hop, entries: list[dict], already: int):
    ids = [e["id"] for e in entries]
    cp = d.ctl("quarantine", "release", *ids, "--json", timeout=60)
    assert cp.returncode == 0, cp.stderr + cp.stdout
    return hop.wait_for(already + len(ids), timeout=90)


def assert_released_whole(released, sent: dict[str, bytes]):
    """Each released message is the original: its body byte for byte, its header fields kept."""
    by_subject = {m.subject: m for m in released}
    for case, raw in sent.items():
        got = by_subject.get(f"case {case}")
        assert got is not None, f"{case}: not released ({sorted(by_subject)})"
        head, body = split_message(raw)
        got_head, got_body = split_message(got.content)
        assert got_body == body, f"{case}: the released body differs from the original"
        for line in head.split(b"\n"):
            assert line in got_head.split(b"\n"), (case, line)


def test_reject_catches_every_trick_in_and_outside_zips(gateway, tmp_path):
    d, hop = gateway("reject")
    cases = list(trick_cases(tmp_path))
    replies = send_all(d.port, [(c, raw) for c, raw, _ in cases])
    for case, _, rule in cases:
        code, text = replies[case]
        assert code == 550 and text.startswith("5.7.1"), (case, code, text)
        assert REASON[rule] in text, f"{case}: caught by the wrong rule: {text}"
    clean = list(clean_cases())
    replies = send_all(d.port, clean)
    assert all(r == (250, "") for r in replies.values()), replies
    got = hop.wait_for(len(clean))
    assert len(got) == len(clean)


def test_quarantine_keeps_every_trick_and_a_release_gives_it_back_whole(gateway, tmp_path):
    d, hop = gateway("quarantine")
    cases = list(trick_cases(tmp_path))
    replies = send_all(d.port, [(c, raw) for c, raw, _ in cases])
    assert all(r == (250, "") for r in replies.values()), replies
    clean = list(clean_cases())
    send_all(d.port, clean)
    delivered = hop.wait_for(len(clean), settle=1.0)
    assert sorted(m.subject for m in delivered) == sorted(subject_of(raw) for _, raw in clean), \
        "a quarantined message was delivered"
    entries = quarantined(d)
    assert len(entries) == len(cases), [e.get("subject") for e in entries]
    by_subject = {e["subject"]: e for e in entries}
    for case, _, rule in cases:
        entry = by_subject.get(f"case {case}")
        assert entry is not None, f"{case} not in the quarantine"
        assert REASON[rule] in entry_text(entry), (case, entry)
    released = release_all(d, hop, entries, already=len(clean))
    assert_released_whole(released, {case: raw for case, raw, _ in cases})


def test_strip_replaces_only_the_matching_part_and_quarantines_the_original(gateway, tmp_path):
    d, hop = gateway("strip")
    cases = list(trick_cases(tmp_path))
    clean = list(clean_cases())
    replies = send_all(d.port, [(c, raw) for c, raw, _ in cases] + clean)
    assert all(r == (250, "") for r in replies.values()), replies
    got = {m.subject: m for m in hop.wait_for(len(cases) + len(clean))}
    for case, raw in clean:
        assert split_message(got[subject_of(raw)].content)[1] == split_message(raw)[1], \
            f"{case}: a clean message was changed"
    for case, raw, rule in cases:
        delivered = got[f"case {case}"].content
        before, after = mime_tree(raw), mime_tree(delivered)
        assert [p for p, _ in before] == [p for p, _ in after], f"{case}: the tree changed shape"
        changed = [p for (p, a), (_, b) in zip(before, after) if a != b]
        assert changed == ["1.2"], f"{case}: changed {changed}"  # the trick is the second child
        notice = dict(after)["1.2"]
        assert b"Content-Type: text/plain; charset=us-ascii" in notice, (case, notice)
        assert f"was removed by the mail gateway: {REASON[rule]}".encode() in notice, (case, notice)
        parsed = email.message_from_bytes(delivered, policy=email.policy.default)
        names = [p.get_filename() for p in parsed.iter_attachments()]
        assert names == ["logo.png", "notes.txt"], (case, names)
    entries = quarantined(d)
    assert len(entries) == len(cases), [e.get("subject") for e in entries]
    by_subject = {e["subject"]: e for e in entries}
    for case, _, rule in cases:
        assert f"stripped by rule:{rule}" in entry_text(by_subject[f"case {case}"]), case
    released = release_all(d, hop, entries, already=len(cases) + len(clean))
    originals = [m for m in released if b"was removed by the mail gateway" not in m.content]
    assert_released_whole(originals, {case: raw for case, raw, _ in cases})


def test_an_archive_too_deep_to_inspect_counts_as_a_match(gateway, tmp_path):
    """Zips are looked into to a bounded depth (4); what lies deeper is unknown, not clean."""
    d, hop = gateway("reject")
    deep = zipped("readme.txt", HARMLESS)
    for i in range(6):
        deep = zipped(f"level{i}.zip", deep)
    within = zipped("l1.zip", zipped("l2.zip", zipped("readme.txt", HARMLESS)))
    replies = send_all(d.port, [("deep", message("deep", attachment_part("deep.zip", deep, "application/zip"))),
                                ("within", message("within", attachment_part("ok.zip", within, "application/zip")))])
    assert replies["deep"][0] == 550, replies
    assert replies["within"] == (250, ""), replies
    assert [m.subject for m in hop.wait_for(1)] == ["within"]
