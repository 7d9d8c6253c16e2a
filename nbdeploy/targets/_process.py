"""Background processes in their own process group, tracked by PID so they outlive the kernel."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import TargetError

# Popen objects of servers this process started, so their exit status is reaped (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def stable_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A free port *below* the kernel's ephemeral range, for an address that must stay the same: a port the kernel
    may hand to any outgoing connection (binding port 0 picks one) can be taken while the server is down for a
    restart, and the URL callers hold would move."""
    low, _ = _ephemeral_range()
    start, end = (20000, low) if low > 21000 else (low // 2, low)
    rng = random.Random()
    for _ in range(tries):
        port = rng.randrange(start, end)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    return free_port(host)


def check_port(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket() as sock:
        # as the server will: connections of a previous server in TIME_WAIT must not count as "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise TargetError(
                f"port {port} is in use on {host}", hint="pick another port, or leave it out to get a free one"
            ) from None


def spawn(cmd: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path) -> int:
    """Start ``cmd`` detached (new session), output appended to ``log_path``; return its PID."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # logs can hold users' inputs
    with open(fd, "ab") as log:
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )  # fmt: skip
    _children[proc.pid] = proc
    return proc.pid


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of ``pid`` from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    _reap()
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[1] == pgid and st[0] != "Z":
                members.append(int(entry.name))
    return members


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def started_alive(pid: int) -> bool:
    """For a process this one spawned: has it not exited? (No /proc race, no command-line guess.)"""
    proc = _children.get(pid)
    return proc.poll() is None if proc is not None else is_alive(pid, "")


def is_alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and its command line contains ``marker`` (guards against PID reuse)."""
    if not pid:
        return False
    _reap()
    st = _stat(pid)
    return st is not None and st[0] != "Z" and marker in cmdline(pid)


def members(pgid: int, marker: str) -> list[int]:
    """Live processes of a service: its process group, plus any process whose command line names
    ``marker`` (BentoML's workers run in process groups of their own and outlive a killed arbiter)."""
    found = set(group_members(pgid)) if pgid else set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid() and is_alive(int(entry.name), marker):
            found.add(int(entry.name))
    return sorted(found)


def stop_group(pgid: int, marker: str, grace_s: float = 10.0) -> None:
    """SIGTERM the service's processes, SIGKILL what is left after ``grace_s``; wait until none is left."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if pgid > 0:  # never 0: killpg(0) would signal our own process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in members(pgid, marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not members(pgid, marker):
                return
            time.sleep(0.05)
    left = members(pgid, marker)
    if left:
        raise TargetError(f"processes {left} of the service survived SIGKILL")


def read_since(path: Path, offset: int, limit: int = 1 << 20) -> str:
    """What was appended to ``path`` after ``offset`` (at most the last ``limit`` bytes of it)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(offset, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (by parent pid), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def stop_tree(pid: int | None, grace_s: float = 10.0) -> None:
    """SIGTERM a server, its process group and its children (workers in groups of their own), SIGKILL what is left."""
    if not pid:
        return
    tree = set(descendants(pid)) | set(group_members(pid))
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        for p in list(tree):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            _reap()
            tree = {p for p in tree if (st := _stat(p)) is not None and st[0] != "Z"}
            if not tree:
                return
            time.sleep(0.05)
