"""The sandboxed child's confinement, run by the namespace's init before any model-written code: the
private file system (`confine_process`: a tmpfs root showing only the system's and the interpreter's folders,
read-only) and the privileges dropped for good (`drop_privileges`). Standard library only.
"""

from __future__ import annotations

import logging
import os
import sys

from .limits import CONFINED_WORKDIR, SCRATCH_MB

logger = logging.getLogger(__name__)

# mount(2), mount_setattr(2)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8

_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 0x1000, 0x2000, 0x4000, 0x40000

_SYS_MOUNT_SETATTR = 442  # the same number on every architecture

_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000

_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4

_DEVICES = ("null", "zero", "full", "random", "urandom")  # the whole of the code's /dev, with fd links

# prctl(2), capabilities(7)
PR_SET_PDEATHSIG = 1

PR_SET_DUMPABLE = 4

_PR_CAPBSET_DROP = 24

_PR_SET_SECUREBITS = 28

PR_SET_NO_NEW_PRIVS = 38

_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4

_SECBIT_NOROOT, _SECBIT_NOROOT_LOCKED = 0x1, 0x2

_SECBIT_NO_SETUID_FIXUP, _SECBIT_NO_SETUID_FIXUP_LOCKED = 0x4, 0x8

_SECBIT_KEEP_CAPS_LOCKED = 0x20

_SECBIT_NO_CAP_AMBIENT_RAISE, _SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 0x40, 0x80

_SECBITS_LOCKED_DOWN = (_SECBIT_NOROOT | _SECBIT_NOROOT_LOCKED | _SECBIT_NO_SETUID_FIXUP_LOCKED
                        | _SECBIT_KEEP_CAPS_LOCKED | _SECBIT_NO_CAP_AMBIENT_RAISE | _SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)

_CAPABILITY_VERSION_3 = 0x20080522


def load_libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def ulong(value: int):
    import ctypes

    return ctypes.c_ulong(value)


def check_errno(result: int, what: str) -> None:
    if result == -1:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(libc, source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    check_errno(libc.mount(encode(source), encode(target), encode(fstype), ulong(flags), encode(data)),
                f"mount {target}")


def confine_process(libc, payload: dict) -> None:
    """Init of the new namespaces, still privileged inside them: build the code's whole file system on an empty
    tmpfs (the interpreter's folders and the system's libraries, bound read-only, nosuid and device-less; a
    minimal /dev; a fresh /tmp and working directory), make it the root and detach the host's, then cover
    the hidden folders that the view still shows. No socket, device or file outside the view can be named."""
    os.umask(0o022)
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    held = [_hold(path) for path in _view_paths() if os.path.lexists(path)]  # before the new root covers them
    root = "/tmp"  # the host's /tmp, covered by the new root
    _mount(libc, "tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,nr_inodes=1024,mode=755")
    os.mkdir(f"{root}/tmp", 0o1777)  # the code's scratch, first: a view path may lie under /tmp (a venv)
    _mount(libc, "tmpfs", f"{root}/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV,
           f"size={SCRATCH_MB}m,nr_inodes=4096,mode=1777")
    for path, link, fd in held:
        _bind_into(libc, root, path, link, fd)
    _make_dev(libc, root)
    try:
        os.mkdir(f"{root}/proc", 0o555)
        _mount(libc, "proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except OSError:  # a proc mount is refused where the host's is partly masked: the code then has no /proc
        pass
    else:
        _close_shared_memory(f"{root}/proc/sys")
    os.chdir(root)
    check_errno(libc.syscall(_long(_pivot_root_number()), b".", b"."), "pivot_root")
    check_errno(libc.umount2(b".", 2), "umount2")  # MNT_DETACH: the host's tree is gone from this namespace
    os.chdir("/")
    _set_mount_attributes(libc, "/", _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0, _AT_RECURSIVE)
    for name in os.listdir("/dev"):
        if name in _DEVICES:
            _set_mount_attributes(libc, f"/dev/{name}", 0, _MOUNT_ATTR_NODEV, 0)
    _set_mount_attributes(libc, "/tmp", 0, _MOUNT_ATTR_RDONLY, 0)  # the scratch alone, not what is bound in it
    for path in payload["hidden"]:
        if os.path.isdir(path):
            _mount(libc, "tmpfs", path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                   "size=4k,nr_inodes=2,mode=000")
        elif os.path.lexists(path):  # a file: bound to the (device-less) null device, which cannot be opened
            _mount(libc, "/dev/null", path, None, _MS_BIND)
    os.mkdir(CONFINED_WORKDIR, 0o700)
    if payload["drop_uid"]:
        os.chown(CONFINED_WORKDIR, 1, 1)
    os.chdir(CONFINED_WORKDIR)
    os.environ.update(HOME=CONFINED_WORKDIR, TMPDIR=CONFINED_WORKDIR)


_IPC_LIMITS = ("kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/msgmni", "fs/mqueue/queues_max")


def _close_shared_memory(sysctl: str) -> None:
    """Zero the new IPC namespace's limits on SysV shared memory and message queues and on POSIX message queues,
    which RLIMIT_AS does not count (defence in depth: the seccomp filter refuses those calls too). A kernel that
    does not let a namespace's root set them keeps its defaults."""
    for name in _IPC_LIMITS:
        try:
            with open(f"{sysctl}/{name}", "w") as f:
                f.write("0\n")
        except OSError:
            pass


def _long(value: int):
    import ctypes

    return ctypes.c_long(value)


_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "loongarch64": 41, "ppc64le": 203, "ppc64": 203,
               "s390x": 217}


def _pivot_root_number() -> int:
    import platform

    machine = platform.machine()
    if machine not in _PIVOT_ROOT:
        raise OSError(f"pivot_root: no system call number known for {machine}")
    return _PIVOT_ROOT[machine]


def _view_paths() -> list[str]:
    """What the code's file system shows of the host's, read-only: the system's programs and libraries, the
    dynamic linker's cache and the time zone, and the interpreter's own folders (its prefixes, real paths).
    Paths below another kept folder are dropped; those that do not exist are skipped later."""
    wanted = ["/usr", "/bin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/localtime"]
    wanted += [os.path.realpath(prefix) for prefix in (sys.base_prefix, sys.base_exec_prefix, sys.prefix,
                                                       sys.exec_prefix)]
    kept: list[str] = []
    for path in sorted(set(wanted)):
        if not any(path == parent or path.startswith(parent.rstrip("/") + "/") for parent in kept):
            kept.append(path)
    return kept


def _hold(path: str) -> tuple[str, str | None, int | None]:
    """What `_bind_into` needs of a host path, taken while the host's tree is still whole: a link's target, or
    an O_PATH descriptor, which still names the file once the staging root covers its parent (a virtual
    environment under /tmp)."""
    if os.path.islink(path):
        return path, os.readlink(path), None
    return path, None, os.open(path, os.O_PATH | os.O_CLOEXEC)


def _bind_into(libc, root: str, path: str, link: str | None, fd: int | None) -> None:
    """Show the host's `path` at the same path under `root`: a link as the same link, a folder or file bound
    (recursively) from its descriptor `fd`, which is closed. Missing parents are made, world-traversable, on
    the new root's tmpfs."""
    target = root + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if link is not None:
        os.symlink(link, target)
        return
    if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.mkdir(target, 0o755)
    else:
        open(target, "x").close()
    try:
        _mount(libc, f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
    finally:
        os.close(fd)


def _make_dev(libc, root: str) -> None:
    """The code's /dev: null, zero, full, random and urandom bound from the host, and the fd links."""
    dev = f"{root}/dev"
    os.mkdir(dev, 0o755)
    _mount(libc, "tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,nr_inodes=64,mode=755")
    for name in _DEVICES:
        if os.path.exists(f"/dev/{name}"):
            open(f"{dev}/{name}", "x").close()
            _mount(libc, f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _set_mount_attributes(libc, path: str, attr_set: int, attr_clr: int, flags: int) -> None:
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(attr_set, attr_clr, 0, 0)
    check_errno(libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), ctypes.c_int(_AT_FDCWD), path.encode(),
                        ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           f"mount_setattr {path}")


def drop_privileges(libc, drop_uid: bool) -> None:
    """Give up every capability for good. With `drop_uid` (root caller) the real, effective, saved and file-system
    ids become 1 (nobody outside), so that root-only files are unreadable too."""
    import ctypes

    def prctl(option: int, arg: int = 0) -> None:
        check_errno(libc.prctl(option, ulong(arg), ulong(0), ulong(0), ulong(0)), f"prctl {option}")

    if drop_uid:
        prctl(_PR_SET_SECUREBITS, _SECBIT_NO_SETUID_FIXUP)  # keep CAP_SETPCAP to drop the bounding set below
        os.setgroups([])
        os.setresgid(1, 1, 1)
        os.setresuid(1, 1, 1)
        if libc.setfsuid(0xFFFFFFFF) != 1 or libc.setfsgid(0xFFFFFFFF) != 1:  # an invalid id: returns the current one
            raise OSError("setfsuid: the file-system ids are not the unprivileged ones")
    for capability in range(64):
        if libc.prctl(_PR_CAPBSET_DROP, ulong(capability), ulong(0), ulong(0), ulong(0)) == -1:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability of this kernel
                break
            check_errno(-1, "prctl PR_CAPBSET_DROP")
    prctl(_PR_SET_SECUREBITS, _SECBITS_LOCKED_DOWN)
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    prctl(PR_SET_NO_NEW_PRIVS, 1)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    check_errno(libc.capset(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), ctypes.byref((Data * 2)())), "capset")
    now = (Data * 2)()
    check_errno(libc.capget(ctypes.byref(Header(_CAPABILITY_VERSION_3, 0)), ctypes.byref(now)), "capget")
    if any(d.effective or d.permitted or d.inheritable for d in now):
        raise OSError("capget: capabilities remain after capset")
