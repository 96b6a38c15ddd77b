"""Network namespaces of a test's own, so a partition can cut one process off from one backend.

A ``Netns`` is a namespace with one veth pair per ``link``: the root end gets 10.<a>.<b>.1/30, the namespace end
10.<a>.<b>.2/30. Services listen on loopback only, so a ``forward`` (socat, in the root namespace) listens on a
link's root address and forwards to a loopback port: a process in the namespace reaches PostgreSQL or the
broker through that link, and the test reaches the process through another link that is never cut.

``cut(link)`` makes both ends a silent black hole, as a real partition is (no RST: connections hang until TCP
gives up), ``heal(link)`` removes it. The hole is a token bucket whose bucket (10 bytes) is smaller than any
packet, so every packet is dropped: ``tc netem loss 100%`` would do the same, but netem is a kernel module that
not every kernel has (this CI's has none), and ``tbf`` is built in. ``close`` removes the namespace (its veth ends
go with it) and stops the forwarders; fixtures call it in a finalizer, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"
SOCAT = shutil.which("socat")
BLACK_HOLE = ["tbf", "rate", "8bit", "burst", "10", "limit", "1"]  # drops every packet (see above)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (a printed skip reason), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if SOCAT is None:
        return "socat is not installed (apt-get install -y socat)"
    if not (Path(IP).exists() and Path(TC).exists()):
        return "iproute2 (ip, tc) is not installed"
    probe = f"tdprobe{secrets.token_hex(3)}"
    try:
        _run(IP, "netns", "add", probe)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns add failed: {exc}"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        _run(IP, "netns", "del", probe)
    return None


@dataclass(frozen=True)
class Link:
    name: str
    root_dev: str
    ns_dev: str
    root_ip: str
    ns_ip: str


class Netns:
    """One namespace with its veth links and the socat forwarders that reach loopback services."""

    def __init__(self, log_dir: Path) -> None:
        tag = secrets.token_hex(3)
        self.name = f"td{tag}"
        self.tag = tag
        self.log_dir = log_dir
        self.links: dict[str, Link] = {}
        self.cut_links: set[str] = set()
        self._forwarders: list[subprocess.Popen[bytes]] = []
        self._subnet = secrets.randbelow(200) + 20  # 10.<subnet>.<n*4>.0/30 per link
        _run(IP, "netns", "add", self.name)
        self.exec("ip", "link", "set", "lo", "up")

    def exec(self, *argv: str) -> None:
        _run(IP, "netns", "exec", self.name, *argv)

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside the namespace."""
        return [IP, "netns", "exec", self.name]

    def link(self, name: str) -> Link:
        n = len(self.links)
        base = f"10.{self._subnet}.{n * 4}"
        link = Link(name, f"{self.tag}r{n}", f"{self.tag}n{n}", f"{base}.1", f"{base}.2")
        _run(IP, "link", "add", link.root_dev, "type", "veth", "peer", "name", link.ns_dev)
        _run(IP, "link", "set", link.ns_dev, "netns", self.name)
        _run(IP, "addr", "add", f"{link.root_ip}/30", "dev", link.root_dev)
        _run(IP, "link", "set", link.root_dev, "up")
        self.exec("ip", "addr", "add", f"{link.ns_ip}/30", "dev", link.ns_dev)
        self.exec("ip", "link", "set", link.ns_dev, "up")
        self.links[name] = link
        return link

    def forward(self, link: Link, port: int, to_port: int) -> None:
        """socat on ``link.root_ip:port`` to ``127.0.0.1:to_port`` (one child per connection)."""
        assert SOCAT is not None
        listen = f"TCP-LISTEN:{port},bind={link.root_ip},reuseaddr,fork"
        with (self.log_dir / f"socat-{link.name}.log").open("ab") as log:  # the child keeps its own copy
            self._forwarders.append(
                subprocess.Popen(
                    [SOCAT, listen, f"TCP:127.0.0.1:{to_port}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def cut_commands(self, name: str) -> tuple[list[str], list[str]]:
        """The two commands that cut ``name`` (a packet-dropping qdisc on both ends)."""
        link = self.links[name]
        netem = ["root", *BLACK_HOLE]
        return (
            [TC, "qdisc", "add", "dev", link.root_dev, *netem],
            [IP, "netns", "exec", self.name, TC, "qdisc", "add", "dev", link.ns_dev, *netem],
        )

    def cut(self, name: str) -> None:
        for argv in self.cut_commands(name):
            _run(*argv)
        self.cut_links.add(name)

    def heal(self, name: str) -> None:
        link = self.links[name]
        with contextlib.suppress(subprocess.CalledProcessError):
            _run(TC, "qdisc", "del", "dev", link.root_dev, "root")
        with contextlib.suppress(subprocess.CalledProcessError):
            self.exec(TC, "qdisc", "del", "dev", link.ns_dev, "root")
        self.cut_links.discard(name)

    def partition_script(self, name: str, seconds: float, path: Path) -> Path:
        """A shell script that cuts ``name``, waits ``seconds`` and heals it: a ``--kill-cmd`` for verify."""
        link = self.links[name]
        add_root, add_ns = self.cut_commands(name)
        path.write_text(
            "#!/bin/sh\n"
            f"{' '.join(add_root)}\n{' '.join(add_ns)}\n"
            f"sleep {seconds}\n"
            f"{TC} qdisc del dev {link.root_dev} root\n"
            f"{IP} netns exec {self.name} {TC} qdisc del dev {link.ns_dev} root\n"
        )
        return path

    def close(self) -> None:
        """Heals, stops the forwarders, removes the namespace and its links (idempotent)."""
        for name in list(self.links):
            self.heal(name)
        for forwarder in self._forwarders:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(forwarder.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                forwarder.wait(5)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            _run(IP, "netns", "del", self.name)
        for link in self.links.values():  # gone with the namespace; a leftover root end is removed here
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _run(IP, "link", "del", link.root_dev)
