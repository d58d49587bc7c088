"""The parent side's bounds on a sandboxed run that rlimits cannot give (standard library only): a memory cgroup
over the run's whole process tree, where one can be made, and the removal of what runs of dead processes left
behind (their `scb-sandbox-*` folders and cgroups).

A memory cgroup counts every page the tree holds (anonymous memory, tmpfs files, memfd and SysV or POSIX
shared memory, pipe buffers), whoever maps it; RLIMIT_AS counts only each process's own address space. One is
made under the caller's own memory cgroup: cgroup v2 where that cgroup already delegates the memory controller
to its children (`cgroup.subtree_control`), else cgroup v1's memory hierarchy where it is mounted writable (a
root caller's). Where neither can be made, `cgroup_parent` says why.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "scb-sandbox-"  # the folder of working folders (scb-sandbox-<uid>) and each cgroup (scb-sandbox-<run>)

# a run's working folder and cgroup are named <pid>-<start time>-<random>, after the process that made them


def owner_tag() -> str:
    """`<pid>-<start time>` of this process: a leftover's owner is dead when no process has both."""
    return f"{os.getpid()}-{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, after the command name


def _owner_alive(name: str) -> bool:
    parts = name.split("-")
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return True  # not named by this module: never touched
    return _start_time(int(parts[0])) == parts[1]


@dataclass(frozen=True)
class Cgroup:
    """One run's memory cgroup: `path` is its folder, `version` 1 or 2."""
    path: Path
    version: int

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the tree for exceeding the limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            fields = dict(line.split() for line in (self.path / name).read_text().splitlines() if line.strip())
        except (OSError, ValueError):
            return False
        return int(fields.get("oom_kill", "0")) > 0

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        """Kill whatever is left in it, then remove it (retried briefly while the kernel reaps)."""
        remove_cgroup(self.path)


def remove_cgroup(path: Path) -> None:
    for _ in range(50):
        kill_file = path / "cgroup.kill"
        if kill_file.exists():
            try:
                kill_file.write_text("1\n")
            except OSError:
                pass
        for pid in Cgroup(path, 1).pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    logger.warning("could not remove the sandbox's memory cgroup %s", path)


def _mounts() -> list[tuple[str, str, str, str]]:
    """(root in the hierarchy, mount point, file-system type, super options) of each cgroup mount."""
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[3], fields[4].replace("\\040", " "), tail[0], tail[2]))
    return found


def _own_cgroups() -> dict[str, str]:
    """The caller's cgroup path per hierarchy: "" for v2, else the comma-joined controllers."""
    own = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return own
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            own[parts[1]] = parts[2]
    return own


def _inside(mount_root: str, path: str, mount_point: str) -> Path | None:
    if mount_root != "/" and not (path == mount_root or path.startswith(mount_root.rstrip("/") + "/")):
        return None
    relative = path[len(mount_root.rstrip("/")):].lstrip("/") if mount_root != "/" else path.lstrip("/")
    return Path(mount_point) / relative


def cgroup_parent() -> tuple[Path | None, int, str]:
    """(folder under which a run's memory cgroup can be made, cgroup version, "") or (None, 0, why not)."""
    own, mounts = _own_cgroups(), _mounts()
    for root, point, kind, _ in mounts:
        if kind == "cgroup2" and "" in own:
            folder = _inside(root, own[""], point)
            if folder is not None and _delegates_memory(folder):
                return folder, 2, ""
    for root, point, kind, options in mounts:
        if kind == "cgroup" and "memory" in options.split(","):
            key = next((k for k in own if "memory" in k.split(",")), None)
            folder = _inside(root, own[key], point) if key is not None else None
            if folder is not None and (folder / "memory.limit_in_bytes").exists() and os.access(folder, os.W_OK):
                return folder, 1, ""
    return None, 0, ("no memory cgroup can be made here (cgroup v2 does not delegate the memory controller to this "
                     "process's cgroup, and no writable cgroup v1 memory hierarchy is mounted)")


def _delegates_memory(folder: Path) -> bool:
    try:
        return "memory" in (folder / "cgroup.subtree_control").read_text().split() and os.access(folder, os.W_OK)
    except OSError:
        return False


def make_cgroup(name: str, limit_bytes: int) -> Cgroup | None:
    """A new memory cgroup `name` that holds its tree to `limit_bytes` (swap included), or None where none can be
    made."""
    parent, version, _ = cgroup_parent()
    if parent is None:
        return None
    path = parent / name
    try:
        path.mkdir(mode=0o700)
    except OSError as exc:
        logger.warning("cannot make the sandbox's memory cgroup %s: %s", path, exc)
        return None
    try:
        if version == 2:
            (path / "memory.max").write_text(f"{limit_bytes}\n")
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0\n")
        else:
            (path / "memory.limit_in_bytes").write_text(f"{limit_bytes}\n")
            if (path / "memory.memsw.limit_in_bytes").exists():
                (path / "memory.memsw.limit_in_bytes").write_text(f"{limit_bytes}\n")
    except OSError as exc:
        remove_cgroup(path)
        logger.warning("cannot limit the sandbox's memory cgroup %s: %s", path, exc)
        return None
    return Cgroup(path, version)


def workspace() -> Path:
    """The folder that holds every run's working folder: `scb-sandbox-<uid>` in the temporary folder, made by this
    user with mode 0700, so that whatever is in it was put there by the sandbox. An OSError when that name is
    taken by anything else (a link, a file, another user's folder, a folder others may write)."""
    path = Path(tempfile.gettempdir()) / f"{PREFIX}{os.geteuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise OSError(f"{path} is not a private folder of this user (mode 0700); move it aside")
    return path


def sweep_leftovers() -> list[Path]:
    """Remove the working folders (in `workspace()`) and memory cgroups that runs of processes no longer alive
    left behind (killed before they could clean up); returns what was removed. Never through a link."""
    removed = []
    base = workspace()
    for name in os.listdir(base):
        path = base / name
        if path.is_symlink() or not path.is_dir() or _owner_alive(name):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    parent, _, _ = cgroup_parent()
    if parent is not None:
        for path in parent.glob(PREFIX + "*"):
            if path.is_dir() and not _owner_alive(path.name[len(PREFIX):]):
                remove_cgroup(path)
                removed.append(path)
    return removed
