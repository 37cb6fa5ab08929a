"""Linux network namespaces as "hosts": a bridge on the host, one veth pair and address per namespace.

Made and torn down by the test itself (needs root and ``ip``). ``TcpForwarder`` makes a service that
listens on 127.0.0.1 only (this machine's PostgreSQL) reachable on the bridge address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
import uuid


def _ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def why_no_namespaces() -> str | None:
    """None if this process can make network namespaces, else the reason (for the skip message)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (iproute2 / util-linux)"
    probe = f"eoprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except RuntimeError as err:
        return f"cannot create a network namespace: {err}"
    _ip("netns", "del", probe, check=False)
    return None


class Network:
    """A bridge ``10.N.M.1/24`` on the host and namespaces ``10.N.M.(10+i)`` attached to it."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:5]
        used = _ip("-4", "-o", "addr")
        while True:
            self.prefix = f"10.{random.randint(200, 250)}.{random.randint(1, 254)}"
            if f" {self.prefix}." not in used:
                break
        self.bridge = f"eob{self.tag}"
        self.host_ip = f"{self.prefix}.1"
        self.namespaces: dict[str, str] = {}  # namespace -> inner interface

    def __enter__(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, index: int) -> tuple[str, str]:
        """Create namespace ``index``; returns (namespace name, its address)."""
        ns, outer, inner = f"eo{self.tag}w{index}", f"eo{self.tag}h{index}", f"eo{self.tag}n{index}"
        address = f"{self.prefix}.{10 + index}"
        _ip("netns", "add", ns)
        self.namespaces[ns] = inner
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns, address

    def set_link(self, ns: str, up: bool) -> None:
        """Cut (or restore) the namespace's only network link."""
        _ip("-n", ns, "link", "set", self.namespaces[ns], "up" if up else "down")

    @staticmethod
    def kill_all(ns: str) -> list[int]:
        """``kill -9`` every process in the namespace (the host dies); returns their pids."""
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def __exit__(self, *exc: object) -> None:
        for ns in self.namespaces:
            self.kill_all(ns)
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)


class TcpForwarder:
    """Forward ``listen_host:port`` to ``target_host:target_port`` (asyncio, in a daemon thread)."""

    def __init__(self, listen_host: str, target_host: str, target_port: int) -> None:
        self.listen_host, self.target = listen_host, (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.listen_host, 0))
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> TcpForwarder:
        threading.Thread(target=self._run, name="tcp-forwarder", daemon=True).start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
