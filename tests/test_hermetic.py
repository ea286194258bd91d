"""The fast tier's guard (tests/conftest.py): no network, no process, with a message naming the test.

Each check installs a second guard, in the test's body, on top of the one this (fast) test already
runs under, so the refusal comes from the inner one and the outer one never sees the call."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import pytest

from .conftest import HermeticGuard


@contextlib.contextmanager
def guarded():
    g = HermeticGuard()
    g.install("tests/probe.py::test_probe")
    try:
        yield g
    finally:
        g.remove()


@pytest.mark.parametrize("start", [
    lambda: subprocess.run([sys.executable, "-c", "pass"]),
    lambda: subprocess.check_output(["true"]),
    lambda: os.system("true"),
    lambda: os.posix_spawn("/bin/true", ["true"], {}),
    lambda: os.fork(),
], ids=["run", "check_output", "system", "posix_spawn", "fork"])
def test_a_process_start_fails_naming_the_test(start):
    named = r"^tests/probe.py::test_probe: .*(subprocess|process) start"
    with guarded() as guard, pytest.raises(pytest.fail.Exception, match=named):
        start()
    assert len(guard.violations) == 1


@pytest.mark.parametrize("address", [("127.0.0.1", 9), ("::1", 9, 0, 0)])
def test_a_network_connection_fails_even_to_the_loopback(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with guarded(), socket.socket(family) as s, pytest.raises(pytest.fail.Exception, match="network access"):
        s.connect(address)
    with guarded(), socket.socket(family) as s, pytest.raises(pytest.fail.Exception, match="network access"):
        s.connect_ex(address)


def test_a_name_lookup_fails():
    with guarded(), pytest.raises(pytest.fail.Exception, match="name lookup of 'pypi.org'"):
        socket.getaddrinfo("pypi.org", 443)
    with guarded():
        assert socket.getaddrinfo("127.0.0.1", 80)  # numeric: nobody is asked


def test_a_unix_socket_is_allowed(tmp_path):
    path = str(tmp_path / "s")
    with guarded() as guard, socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as client:
        server.bind(path)
        server.listen()
        client.connect(path)
        assert guard.violations == []


def test_removing_the_guard_restores_what_was_there():
    before = (subprocess.Popen._execute_child, socket.socket.connect, os.fork, socket.getaddrinfo)
    g = HermeticGuard()
    g.install("x")
    assert subprocess.Popen._execute_child is not before[0]
    g.remove()
    assert (subprocess.Popen._execute_child, socket.socket.connect, os.fork, socket.getaddrinfo) == before


def test_this_fast_test_runs_under_the_guard():
    # The outer guard is installed around every fast test: its patch is on Popen now.
    assert subprocess.Popen._execute_child.__qualname__.startswith("HermeticGuard.install")
