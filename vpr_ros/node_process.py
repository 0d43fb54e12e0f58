"""Run ``vpr_node`` in its own process (as a robot would) for the demo and the benchmarks.

:class:`NodeProcess` writes the parameters to a YAML file, starts ``python -m vpr_ros.node``
with it, waits until the lifecycle state is ``active`` (asked over the node's own
``get_state`` service) and stops the process with SIGINT on exit.
"""
from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from lifecycle_msgs.srv import GetState
from rclpy.node import Node
import yaml

from vpr_core.errors import VPRError


class _PlainDumper(yaml.SafeDumper):
    """YAML without anchors and aliases (the rcl parameter parser refuses them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class NodeProcess:
    """A ``vpr_node`` subprocess; use as a context manager around a probe node."""

    def __init__(self, probe: Node, parameters: dict[str, Any], *, name: str = 'vpr_node',
                 log_path: str | Path | None = None, env: dict[str, str] | None = None,
                 command: tuple[str, ...] = (sys.executable, '-m', 'vpr_ros.node')) -> None:
        self._probe = probe
        self._command = list(command)
        self._name = name
        self._parameters = parameters
        self._log_path = Path(log_path) if log_path else None
        self._env = dict(os.environ, **(env or {}))
        self._process: subprocess.Popen | None = None
        self._files: list = []  # temporary parameter files and the open log

    def __enter__(self) -> 'NodeProcess':
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the node and wait until it is active; VPRError with its log otherwise."""
        params = tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False)
        yaml.dump({self._name: {'ros__parameters': self._parameters}}, params,
                  Dumper=_PlainDumper)
        params.close()
        self._files.append(params.name)
        log = open(self._log_path, 'w') if self._log_path else subprocess.DEVNULL
        if self._log_path:
            self._files.append(log)
        self._process = subprocess.Popen(
            [*self._command, '--ros-args', '-r', f'__node:={self._name}',
             '--params-file', params.name], env=self._env, stdout=log,
            stderr=subprocess.STDOUT)
        self._wait_active(timeout_s)

    def _wait_active(self, timeout_s: float) -> None:
        client = self._probe.create_client(GetState, f'/{self._name}/get_state')
        deadline = time.monotonic() + timeout_s
        state = 'not started'
        try:
            while time.monotonic() < deadline and self._process.poll() is None:
                state = self._ask_state(client) or state
                if state == 'active':
                    return
                time.sleep(0.5)
        finally:
            self._probe.destroy_client(client)
        self.stop()
        raise VPRError(f'vpr_node did not become active (state: {state}); see its log'
                       f'{": " + str(self._log_path) if self._log_path else ""}'
                       f'{self._tail()}')

    @staticmethod
    def _ask_state(client, answer_s: float = 2.0) -> str | None:
        """One get_state request; None when unanswered (a first request can be lost while
        the service's response channel is still being matched, so the caller asks again)."""
        if not client.wait_for_service(timeout_sec=0.5):
            return None
        future = client.call_async(GetState.Request())
        deadline = time.monotonic() + answer_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not future.done():
            client.remove_pending_request(future)
            return None
        return future.result().current_state.label

    def _tail(self) -> str:
        if self._log_path is None or not self._log_path.is_file():
            return ''
        lines = self._log_path.read_text(errors='replace').splitlines()[-8:]
        return '\n' + '\n'.join(lines)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGINT (the node saves a teach map and exits), then SIGKILL after ``timeout_s``."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for item in self._files:
            if isinstance(item, str):
                Path(item).unlink(missing_ok=True)
            else:
                item.close()
        self._files = []
        return None if self._process is None else self._process.returncode

    @property
    def pid(self) -> int:
        """Process id of the node."""
        return self._process.pid
