"""SELinux: the bulwark policy module compiles with the refpolicy devel Makefile, links into a
copy of the installed policy, and the linked policy grants bulwark_t exactly what the gateway
needs (SMTP ports, bpf) and not what it must never have (shadow_t, user_home_t). The
bulwark-selinux RPM carries the module with fully expanded scriptlets.

This kernel cannot enforce SELinux; everything here is static (compile, link, sesearch)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, run
from test_packaging import build_rpms

SELINUX = REPO / "selinux"
DEVEL_MAKEFILE = Path("/usr/share/selinux/devel/Makefile")
# setools' bindings live in the system python (the pyenv python on PATH has none).
SYSTEM_PYTHON = "/usr/bin/python3"


def skip(reason: str) -> None:
    print(f"SKIP REASON: {reason}")
    pytest.skip(reason)


def need_tools() -> None:
    if os.geteuid() != 0:
        skip("linking into a policy store copy needs root (CI runs as root)")
    missing = [c for c in ("make", "checkmodule", "semodule", "sesearch") if not shutil.which(c)]
    if not DEVEL_MAKEFILE.exists():
        missing.append(str(DEVEL_MAKEFILE))
    if not Path("/etc/selinux/default").is_dir() or not Path("/var/lib/selinux/default").is_dir():
        missing.append("selinux-policy-default")
    if missing:
        skip(f"missing {missing}: .ci/run installs selinux-policy-dev selinux-policy-default "
             "checkpolicy semodule-utils policycoreutils setools")


def compile_module(directory: Path, *sources: Path) -> Path:
    for src in sources:
        if src.parent != directory:
            shutil.copy(src, directory / src.name)
    name = sources[0].stem
    cp = run(["make", "-f", DEVEL_MAKEFILE, f"{name}.pp"], cwd=directory, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "warning" not in (cp.stdout + cp.stderr).lower(), cp.stdout + cp.stderr
    return directory / f"{name}.pp"


@pytest.fixture(scope="module")
def module_pp(tmp_path_factory) -> Path:
    need_tools()
    return compile_module(tmp_path_factory.mktemp("sebuild"),
                          *(SELINUX / f"bulwark.{ext}" for ext in ("te", "if", "fc")))


@pytest.fixture(scope="module")
def linked(module_pp, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the installed policy store with bulwark.pp linked in: (root, policy file)."""
    root = tmp_path_factory.mktemp("sepolicy")
    (root / "etc/selinux").mkdir(parents=True)
    (root / "var/lib/selinux").mkdir(parents=True)
    shutil.copytree("/etc/selinux/default", root / "etc/selinux/default", symlinks=True)
    shutil.copytree("/var/lib/selinux/default", root / "var/lib/selinux/default", symlinks=True)
    cp = run(["semodule", "-p", root, "-s", "default", "-n", "-i", module_pp], timeout=300)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    policies = sorted((root / "etc/selinux/default/policy").glob("policy.*"))
    assert policies, "semodule wrote no policy"
    return root, policies[-1]


def sesearch(policy: Path, *args: str) -> str:
    cp = run([SYSTEM_PYTHON, shutil.which("sesearch"), *args, policy], timeout=120)
    assert cp.returncode == 0, cp.stderr
    return cp.stdout


def test_module_compiles(module_pp):
    assert module_pp.stat().st_size > 0


def test_module_links_and_labels(linked):
    root, _ = linked
    modules = run(["semodule", "-p", root, "-s", "default", "-l"], timeout=120).stdout
    assert re.search(r"^bulwark\b", modules, re.M), modules
    fc = (root / "var/lib/selinux/default/active/file_contexts").read_text()
    for path, label in [("/usr/sbin/bulwarkd", "bulwark_exec_t"),
                        (r"/etc/bulwark(/.*)?", "bulwark_conf_t"),
                        (r"/etc/bulwark/tls(/.*)?", "bulwark_tls_t"),
                        (r"/var/spool/bulwark(/.*)?", "bulwark_spool_t"),
                        (r"/var/lib/bulwark(/.*)?", "bulwark_var_lib_t"),
                        (r"/run/bulwark(/.*)?", "bulwark_runtime_t"),
                        (r"/var/log/bulwark(/.*)?", "bulwark_log_t")]:
        assert re.search(rf"^{re.escape(path)}\s.*:{label}:", fc, re.M), (path, label)


def test_init_transitions_into_bulwark_t(linked):
    _, policy = linked
    out = sesearch(policy, "-T", "-s", "init_t", "-t", "bulwark_exec_t", "-c", "process")
    assert "type_transition init_t bulwark_exec_t:process bulwark_t;" in out, out


def test_bulwark_t_binds_and_connects_smtp_ports(linked):
    _, policy = linked
    out = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "smtp_port_t", "-c", "tcp_socket")
    m = re.search(r"allow bulwark_t smtp_port_t:tcp_socket \{([^}]*)\};", out)
    assert m and {"name_bind", "name_connect"} <= set(m.group(1).split()), out
    # smtp_port_t is 25, 465 and 587 in the policy the module was linked into.
    seinfo = run([SYSTEM_PYTHON, shutil.which("seinfo"), policy, "--portcon"], timeout=120).stdout
    for port in (25, 465, 587):
        assert re.search(rf"portcon tcp {port} \S*:smtp_port_t", seinfo), (port, seinfo)


def test_bulwark_t_has_bpf_and_capabilities(linked):
    _, policy = linked
    bpf = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_t", "-c", "bpf")
    m = re.search(r"allow bulwark_t bulwark_t:bpf \{([^}]*)\};", bpf)
    assert m and {"map_create", "map_read", "map_write", "prog_load", "prog_run"} <= set(m.group(1).split()), bpf
    cap2 = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_t", "-c", "capability2")
    m = re.search(r"allow bulwark_t bulwark_t:capability2 \{([^}]*)\};", cap2)
    assert m and {"bpf", "perfmon"} <= set(m.group(1).split()), cap2
    cap = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_t", "-c", "capability")
    m = re.search(r"allow bulwark_t bulwark_t:capability \{([^}]*)\};", cap)
    granted = set(m.group(1).split()) if m else set()
    assert {"net_admin", "net_bind_service", "setuid", "setgid", "chown"} <= granted, cap
    assert not granted & {"sys_admin", "dac_override", "dac_read_search", "sys_ptrace"}, cap


def test_bulwark_t_reads_its_config_and_writes_its_spool(linked):
    _, policy = linked
    conf = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_conf_t", "-c", "file")
    assert "read" in conf and "write" not in conf, conf
    tls = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_tls_t", "-c", "file")
    assert "read" in tls and "write" not in tls, tls
    spool = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_spool_t", "-c", "file")
    assert all(p in spool for p in ("create", "write", "rename", "unlink")), spool
    sock = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "bulwark_runtime_t", "-c", "sock_file")
    assert "create" in sock, sock


def test_bulwark_t_may_not_read_shadow_or_homes(linked):
    _, policy = linked
    # The query is not vacuous: the same search finds a domain that does read shadow_t.
    assert "shadow_t:file" in sesearch(policy, "-A", "-s", "chkpwd_t", "-t", "shadow_t", "-c", "file",
                                       "-p", "read")
    for target in ("shadow_t", "user_home_t", "user_home_dir_t"):
        out = sesearch(policy, "-A", "-s", "bulwark_t", "-t", target)
        assert "allow" not in out, (target, out)


def test_init_transitions_into_bulwark_console_t(linked):
    _, policy = linked
    out = sesearch(policy, "-T", "-s", "init_t", "-t", "bulwark_console_exec_t", "-c", "process")
    assert "type_transition init_t bulwark_console_exec_t:process bulwark_console_t;" in out, out


def test_bulwark_console_t_serves_https_reaches_nodes_and_keeps_its_state(linked):
    _, policy = linked
    http = sesearch(policy, "-A", "-s", "bulwark_console_t", "-t", "http_port_t", "-c", "tcp_socket")
    m = re.search(r"allow bulwark_console_t http_port_t:tcp_socket \{([^}]*)\};", http)
    assert m and {"name_bind", "name_connect"} <= set(m.group(1).split()), http
    seinfo = run([SYSTEM_PYTHON, shutil.which("seinfo"), policy, "--portcon"], timeout=120).stdout
    # The console's default listen port is http_port_t in the policy it was linked into.
    assert re.search(r"portcon tcp 8443 \S*:http_port_t", seinfo), seinfo
    nodes = sesearch(policy, "-A", "-s", "bulwark_console_t", "-t", "unreserved_port_t", "-c", "tcp_socket")
    assert "name_connect" in nodes, nodes
    state = sesearch(policy, "-A", "-s", "bulwark_console_t", "-t", "bulwark_console_var_lib_t", "-c", "file")
    assert all(p in state for p in ("create", "write", "rename", "unlink")), state
    conf = sesearch(policy, "-A", "-s", "bulwark_console_t", "-t", "bulwark_conf_t", "-c", "file")
    assert "read" in conf and "write" not in conf, conf


def test_bulwark_console_t_never_touches_mail_or_secrets_of_the_host(linked):
    _, policy = linked
    for target in ("bulwark_spool_t", "bulwark_var_lib_t", "bulwark_tls_t", "bulwark_runtime_t",
                   "shadow_t", "user_home_t", "bpf_t"):
        out = sesearch(policy, "-A", "-s", "bulwark_console_t", "-t", target)
        assert "allow" not in out, (target, out)
    # corenet_tcp_bind_http_port() brings net_bind_service (http_port_t includes 80); the
    # unit grants the console no capability at all, and nothing else is allowed here.
    caps = sesearch(policy, "-A", "-s", "bulwark_console_t", "-t", "bulwark_console_t", "-c", "capability")
    granted = set(re.findall(r"capability \{?([^};]*)\}?;", caps)[0].split()) if "allow" in caps else set()
    assert granted <= {"net_bind_service"}, caps


def test_bulwark_t_binds_its_control_and_metrics_ports(linked):
    _, policy = linked
    out = sesearch(policy, "-A", "-s", "bulwark_t", "-t", "unreserved_port_t", "-c", "tcp_socket")
    assert "name_bind" in out, out


def test_client_interfaces_compile(tmp_path):
    """bulwark.if's interfaces, as an admin module would use them (bulwarkctl's socket)."""
    need_tools()
    (tmp_path / "bulwarkadm.te").write_text(
        "policy_module(bulwarkadm, 1.0.0)\n"
        "type bulwarkadm_t;\ndomain_type(bulwarkadm_t)\n"
        "bulwark_stream_connect(bulwarkadm_t)\nbulwark_read_config(bulwarkadm_t)\n"
        "bulwark_admin(bulwarkadm_t)\n")
    (tmp_path / "bulwarkadm.fc").write_text("")
    (tmp_path / "bulwarkadm.if").write_text("## <summary>test</summary>\n")
    # The devel Makefile reads the interfaces of the modules (.te) beside the one it builds.
    for ext in ("te", "if", "fc"):
        shutil.copy(SELINUX / f"bulwark.{ext}", tmp_path / f"bulwark.{ext}")
    pp = compile_module(tmp_path, tmp_path / "bulwarkadm.te")
    assert pp.exists()


def test_module_guards_both_policy_flavours():
    """Debian's refpolicy and Fedora's selinux-policy name these interfaces differently; the
    module must name both behind ifdef() so one source builds on either."""
    text = (SELINUX / "bulwark.te").read_text() + (SELINUX / "bulwark.if").read_text()
    for debian, fedora in [("files_runtime_file", "files_pid_file"),
                           ("files_runtime_filetrans", "files_pid_filetrans"),
                           ("init_write_runtime_socket", "init_write_pid_socket"),
                           ("init_unit_file", "systemd_unit_file"),
                           ("files_search_runtime", "files_search_pids")]:
        assert f"ifdef(`{debian}'" in text and f"{fedora}(" in text, (debian, fedora)


# --------------------------------------------------------------------------------------------
# bulwark-selinux RPM
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["rhel", "suse"])
def selinux_rpm(request, tmp_path_factory) -> Path:
    if not DEVEL_MAKEFILE.exists():
        skip(f"{DEVEL_MAKEFILE} missing: .ci/run installs selinux-policy-dev")
    out = tmp_path_factory.mktemp(f"serpms-{request.param}")
    rpms = build_rpms(out, *(("--suse",) if request.param == "suse" else ()))
    found = [r for r in rpms if r.name.startswith("bulwark-selinux-")]
    assert len(found) == 1 and found[0].name.endswith(".noarch.rpm"), rpms
    return found[0]


def test_selinux_rpm_contains_the_module(selinux_rpm, tmp_path):
    files = run(["rpm", "-qpl", selinux_rpm]).stdout
    assert "/usr/share/selinux/packages/targeted/bulwark.pp.bz2" in files, files
    assert "/usr/share/selinux/devel/include/distributed/bulwark.if" in files, files
    # The payload's module is a real policy package.
    cp = run(["sh", "-c", f"rpm2cpio {selinux_rpm} | cpio -idm --quiet"], cwd=tmp_path)
    assert cp.returncode == 0, cp.stderr
    run(["bunzip2", tmp_path / "usr/share/selinux/packages/targeted/bulwark.pp.bz2"])
    pp = (tmp_path / "usr/share/selinux/packages/targeted/bulwark.pp").read_bytes()
    assert pp[:4] == bytes.fromhex("8fff7cf9"), pp[:16]  # SELinux policy package magic


def test_selinux_rpm_scriptlets_have_no_unexpanded_macros(selinux_rpm):
    cp = run(["rpm", "-qp", "--scripts", selinux_rpm])
    assert cp.returncode == 0, cp.stderr
    assert "%" not in cp.stdout, cp.stdout
    assert "_policytype=targeted" in cp.stdout, cp.stdout
    assert re.search(r"semodule -n -s \S+ -X 200 -i /usr/share/selinux/packages/targeted/bulwark\.pp\.bz2",
                     cp.stdout), cp.stdout
    assert re.search(r"semodule .*-r bulwark", cp.stdout), cp.stdout
    for section in ("preinstall", "postinstall", "postuninstall", "posttrans"):
        assert f"{section} scriptlet" in cp.stdout, (section, cp.stdout)
    requires = run(["rpm", "-qp", "--requires", selinux_rpm]).stdout
    assert "selinux-policy-targeted" in requires, requires


def test_selinux_rpm_rpmlint_has_no_errors(selinux_rpm):
    """The subpackage lints clean with its own filters (each with its reason), as the main
    package does: 0 errors, and rpmlint's exit code says so."""
    if not shutil.which("rpmlint"):
        skip("rpmlint missing: .ci/run installs it")
    cp = run(["rpmlint", "-r", REPO / "rpm/bulwark-selinux.rpmlintrc", selinux_rpm], timeout=120)
    assert " 0 errors," in cp.stdout and cp.returncode == 0, cp.stdout + cp.stderr
