"""Joining Ray: a local instance or a cluster at `--ray-address` (or RAY_ADDRESS), checked within seconds by
Ray's own client before anything is written, with one-line errors (the token hint only for a refused token).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """Ray is missing or cannot serve the run: no worker could start, or workers keep dying."""


AUTH_HINT = ("a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token here and its token "
             "(~/.ray/auth_token or RAY_AUTH_TOKEN)")

PROBE_TIMEOUT_S = 5  # how long the probe of a cluster's address waits for each of Ray's connection steps

_PROBE = """import json, sys
try:
    from ray._raylet import GcsClient
    GcsClient(address=sys.argv[1]).check_alive([], timeout=float(sys.argv[2]))
    print(json.dumps({"ok": True}))
except Exception as exc:
    print(json.dumps({"ok": False, "kind": type(exc).__name__, "message": " ".join(str(exc).split())[:300]}))
"""


@contextlib.contextmanager
def ray_connection(address: str | None, verbose: bool, source: str = "--ray-address"):
    """Ray, connected: to `address` (checked by `check_reachable`; named in errors as `source`, the option or
    RAY_ADDRESS), or to a new local instance. Ray's own SIGTERM handler is replaced by the one that was there,
    so that the command's interrupt handling stays as it is."""
    ray = import_ray()
    if ray.is_initialized():  # a process that embeds the suite and joined Ray itself keeps its connection
        yield ray
        return
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    level = logging.INFO if verbose else logging.ERROR
    try:
        if address:
            ray.init(address=address, log_to_driver=verbose, logging_level=level)
        else:
            ray.init(address="local", include_dashboard=False, log_to_driver=verbose, logging_level=level)
    except Exception as exc:  # whatever stops Ray from starting or connecting is one line
        where = f"the Ray cluster at {source} {address}" if address else "a local Ray instance"
        hint = f"; {AUTH_HINT}" if isinstance(exc, ray.exceptions.AuthenticationError) else ""
        raise WorkerError(f"could not connect to {where}: {' '.join(str(exc).split())[:300]}{hint}") from None
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGTERM, handler)
    try:
        yield ray
    finally:
        ray.shutdown()


def import_ray():
    try:
        import ray
    except ImportError:
        raise WorkerError("--workers needs Ray: pip install 'speccascade-bench[ray]' (make install does)") from None
    return ray


def check_reachable(address: str, source: str = "--ray-address") -> None:
    """Fail within seconds unless a Ray cluster answers at a `host:port` address (Ray itself retries for minutes,
    and waits for ever on a port that listens but is not Ray's): a TCP connection first, then a call to the
    cluster's control service (its GCS) by Ray's own client, in a separate interpreter under a time limit.
    A cluster that refuses this client's credentials is an error with the hint about Ray's token."""
    import json
    import subprocess
    import sys

    if "://" in address or ":" not in address:
        return  # a Ray Client address, or `auto`: Ray resolves it
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WorkerError(f"nothing answers at {source} {address} ({reason}); start the head node first "
                          "(`ray start --head --port PORT`)") from None
    limit = 4 * PROBE_TIMEOUT_S + 10  # connection, its retry, the call, and the interpreter's start
    env = {**os.environ, "RAY_gcs_rpc_server_connect_timeout_s": str(PROBE_TIMEOUT_S),
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(PROBE_TIMEOUT_S)}
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE, address, str(PROBE_TIMEOUT_S)], capture_output=True,
                              text=True, timeout=limit, env=env)
        answer = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    except (subprocess.TimeoutExpired, ValueError):
        answer = {}
    if answer.get("ok"):
        return
    if answer.get("kind") == "AuthenticationError":
        raise WorkerError(f"the Ray cluster at {source} {address} refused this client ({answer['message'][:200]}); "
                          f"{AUTH_HINT}")
    raise WorkerError(f"{source} {address} listens but does not answer as a Ray cluster (its GCS) within "
                      f"{limit} s; give the address that `ray start --head` printed")
