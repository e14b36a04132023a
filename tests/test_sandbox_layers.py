"""Each operating-system layer of the sandbox holds on its own.

A fork server started with `skip` leaves some layers out (a test-only option), so every
test below shows one layer stopping what it must stop while the others are absent. Code
runs raw here (no static check, real builtins, os/socket/ctypes preloaded): these tests are
about the operating system, not about Python.
"""

from __future__ import annotations

import os
import select
import socket
import sys

import pytest

from agent import sandbox as S

LIMITS = S.SandboxLimits(cpu_seconds=2, memory_mb=256, wall_seconds=10, max_output_bytes=1_000_000)
PRELOAD = ["socket", "ctypes", "resource"]
ALL = ("netns", "empty_root", "privileges", "rlimits", "seccomp")


@pytest.fixture(scope="module")
def report():
    rep = S.isolation_report()
    if not rep["complete"]:
        pytest.skip("isolation layers missing on this host: " + S.isolation_summary())
    return rep


def _only(*keep: str) -> S._Zygote:
    return S._Zygote({"skip": [x for x in ALL if x not in keep], "preload": PRELOAD})


def _raw(z: S._Zygote, body: str, texts=("x",)) -> S.SandboxResult:
    code = "import os, socket, ctypes, resource, errno\ndef feature(text):\n" + "".join(f"    {ln}\n" for ln in body.splitlines())
    return S._call(z, code, list(texts), LIMITS, allow_weak=False, raw=True)


TRY = """out = []
for name, f in ATTEMPTS:
    try:
        f()
        out.append(name + ':done')
    except OSError as e:
        out.append(name + ':' + errno.errorcode.get(e.errno, str(e.errno)))
return ' '.join(out)"""


def test_seccomp_alone_blocks_files_sockets_processes_and_signals(report, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o644)
    marker = tmp_path / "marker"
    z = _only("seccomp")  # no namespaces, no chroot, no uid change, no rlimits: the syscall filter only
    try:
        attempts = (
            f"('open_w', lambda: open({str(marker)!r}, 'w')), ('creat', lambda: os.open({str(marker)!r}, os.O_CREAT | os.O_WRONLY)), "
            f"('open_r', lambda: open({str(victim)!r}).read()), ('stat', lambda: os.stat({str(victim)!r})), "
            f"('unlink', lambda: os.unlink({str(victim)!r})), ('rename', lambda: os.rename({str(victim)!r}, {str(marker)!r})), "
            f"('mkdir', lambda: os.mkdir({str(marker)!r})), ('symlink', lambda: os.symlink('/etc', {str(marker)!r})), "
            f"('chmod', lambda: os.chmod({str(victim)!r}, 0o777)), ('truncate', lambda: os.truncate({str(victim)!r}, 0)), "
            "('socket', lambda: socket.socket()), ('socketpair', lambda: socket.socketpair()), "
            "('fork', lambda: os.fork()), ('execv', lambda: os.execv('/bin/true', ['true'])), "
            "('kill_parent', lambda: os.kill(os.getppid(), 0)), ('kill_group', lambda: os.kill(0, 0)), "
            "('listdir', lambda: os.listdir('/')), ('chroot', lambda: os.chroot('/tmp')), ('setuid', lambda: os.setuid(0)), "
            "('pipe', lambda: os.pipe()), ('dup', lambda: os.dup(1))"
        )
        res = _raw(z, f"ATTEMPTS = ({attempts})\n{TRY}")
        assert res.ok, res
        outcome = dict(item.split(":") for item in res.labels[0].split())
        assert set(outcome.values()) == {"EPERM"}, outcome
        assert victim.read_text() == "keep me" and not marker.exists() and victim.stat().st_mode & 0o777 == 0o644
    finally:
        z.close()


def test_network_namespace_alone_blocks_connections(report):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    z = _only("netns", "privileges")  # sockets may be created: no filter
    try:
        attempts = (f"('tcp', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2)), "
                    f"('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', {port})))")
        res = _raw(z, f"ATTEMPTS = ({attempts})\n{TRY}\n")
        assert res.ok, res
        outcome = dict(item.split(":") for item in res.labels[0].split())
        assert outcome["tcp"] in ("ENETUNREACH", "ECONNREFUSED", "EADDRNOTAVAIL") and outcome["udp"] != "done", outcome
        res = _raw(z, "return ','.join(n for _, n in socket.if_nameindex())")
        assert res.ok and res.labels == ["lo"], res
        assert select.select([tcp, udp], [], [], 0.1)[0] == []
    finally:
        z.close()
        tcp.close()
        udp.close()


def test_empty_root_alone_hides_and_protects_the_filesystem(report, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    z = _only("empty_root", "privileges")
    try:
        attempts = (f"('read', lambda: open({str(secret)!r}).read()), ('passwd', lambda: open('/etc/passwd').read()), "
                    "('write_root', lambda: open('/x', 'w')), ('mkdir_root', lambda: os.mkdir('/d'))")
        res = _raw(z, f"ATTEMPTS = ({attempts})\n{TRY}\n")
        assert res.ok, res
        outcome = dict(item.split(":") for item in res.labels[0].split())
        assert outcome["read"] == "ENOENT" and outcome["passwd"] == "ENOENT", outcome
        assert outcome["write_root"] in ("EROFS", "EACCES") and outcome["mkdir_root"] in ("EROFS", "EACCES"), outcome
        res = _raw(z, "return repr(os.listdir('/')) + ' ' + os.getcwd()")
        assert res.labels == ["[] /"], res
        assert os.listdir(z.root) == []
    finally:
        z.close()


def test_privileges_alone(report):
    z = _only("privileges")
    try:
        body = ("class H(ctypes.Structure):\n    _fields_ = [('v', ctypes.c_uint32), ('p', ctypes.c_int)]\n"
                "d = ((ctypes.c_uint32 * 3) * 2)()\n"
                f"ctypes.CDLL(None).syscall({S._SYSCALLS[os.uname().machine]['capget']}, ctypes.byref(H(0x20080522, 0)), ctypes.byref(d))\n"
                "nnp = ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)\n"
                "return f'{os.getuid()} {os.geteuid()} {sum(v for r in d for v in r)} {nnp}'")
        res = _raw(z, body)
        assert res.ok, res
        uid, euid, caps, nnp = res.labels[0].split()
        assert caps == "0" and nnp == "1"
        if os.geteuid() == 0 and z.hello.get("uid") == 0:
            assert uid == euid == "65534"  # root drops to nobody
        else:
            assert uid == euid == str(os.geteuid())
    finally:
        z.close()


def test_rlimits_alone(report):
    z = _only("rlimits", "privileges")
    try:
        body = ("lim = [resource.getrlimit(r) for r in (resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC, resource.RLIMIT_NOFILE, resource.RLIMIT_CORE)]\n"
                "ATTEMPTS = (('fork', lambda: os.fork()), ('pipe', lambda: os.pipe()))\n"
                + TRY.replace("return ' '.join(out)", "return repr(lim) + ' ' + ' '.join(out)"))
        res = _raw(z, body)
        assert res.ok, res
        assert res.labels[0].startswith("[(0, 0), (0, 0), (4, 4), (0, 0)]"), res
        assert "fork:EAGAIN" in res.labels[0] and "pipe:EMFILE" in res.labels[0], res
    finally:
        z.close()


def test_a_missing_layer_refuses_judge_code_unless_the_user_accepts_the_risk(report, capsys):
    z = S._Zygote({"simulate_missing": ["netns"]})
    try:
        assert z.hello["layers"]["netns"].startswith("simulated")
        code = "def feature(text):\n    return text.upper()"
        res = S._call(z, code, ["a"], LIMITS, allow_weak=False)
        assert not res.ok and "missing netns" in res.error and S.WEAK_ISOLATION_ENV in res.error
        assert "network" in res.error  # the risk is named
        res = S._call(z, code, ["a"], LIMITS, allow_weak=True)
        assert res.ok and res.labels == ["A"]
    finally:
        z.close()
    S._WARNED = False
    S._warn_once(z.hello)
    S._warn_once(z.hello)
    err = capsys.readouterr().err
    assert err.count("isolation incomplete") == 1 and "netns" in err and S.WEAK_ISOLATION_ENV in err


def test_isolation_report_names_every_layer(report):
    assert set(report["layers"]) == set(S.LAYERS)
    assert all(v["ok"] and v["what"] for v in report["layers"].values())
    assert "all isolation layers in place" in S.isolation_summary()


def test_weak_flag_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(S.WEAK_ISOLATION_ENV, raising=False)
    assert S._weak_allowed(None) is False
    monkeypatch.setenv(S.WEAK_ISOLATION_ENV, "1")
    assert S._weak_allowed(None) is True
    assert S._weak_allowed(False) is False


def test_seccomp_program_is_well_formed():
    for arch in S._SYSCALLS:
        prog = S._seccomp_program(arch, 12345)
        assert len(prog) < 4096
        for i, (code, jt, jf, k) in enumerate(prog):
            assert 0 <= jt < 256 and 0 <= jf < 256 and 0 <= k < 2 ** 32
            if code != 0x06:  # every jump lands inside the program; it ends in a return
                assert i + 1 + max(jt, jf) < len(prog)
        assert prog[-1] == (0x06, 0, 0, 0x00050001)  # default: EPERM
        allowed = {k for c, _, _, k in prog if c == 0x15}
        for forbidden in ("open", "openat", "socket", "connect", "clone", "clone3", "fork", "execve", "unlink", "rename"):
            assert S._SYSCALLS[arch].get(forbidden) is None  # not even named: not on the list
        assert S._SYSCALLS[arch]["write"] in allowed


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_the_fork_server_root_stays_empty_and_is_removed(report):
    z = S._Zygote()
    root = z.root
    S._call(z, "def feature(text):\n    return 'x'", ["a"], LIMITS, allow_weak=False)
    assert os.listdir(root) == []
    z.close()
    assert not os.path.exists(root)
