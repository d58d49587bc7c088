"""The system calls that sandboxed code is refused, by a seccomp filter built with libseccomp's Python binding
(Debian's `python3-seccomp`, imported as `seccomp`, or `pyseccomp`, the same API over the system's
libseccomp through ctypes). The filter allows everything else; a refused call fails with EPERM (`clone3` with
ENOSYS, so that the C library falls back to `clone`, whose namespace flags are refused one by one).

What the list closes: memory that RLIMIT_AS does not count (memfd, SysV shared memory and message queues,
POSIX message queues), kernel interfaces with a history of exploits that no test needs (io_uring, userfaultfd,
bpf, perf_event_open, the key rings), and new namespaces (unshare, setns, clone with a CLONE_NEW* flag).
"""

from __future__ import annotations

import errno
import logging
import platform

logger = logging.getLogger(__name__)

REFUSED = ("memfd_create", "memfd_secret", "shmget", "shmat", "msgget", "mq_open", "io_uring_setup", "io_uring_enter",
           "io_uring_register", "userfaultfd", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
           "unshare", "setns")

# clone(2)'s namespace flags: its first argument (its second on s390, which swaps the first two)
_CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def binding():
    """libseccomp's Python binding, or None where neither `seccomp` nor `pyseccomp` (with libseccomp) loads."""
    try:
        import seccomp

        return seccomp
    except ImportError:
        pass
    try:
        import pyseccomp

        return pyseccomp
    except (ImportError, RuntimeError, OSError):  # pyseccomp raises RuntimeError without libseccomp.so
        return None


def unavailable() -> str | None:
    """Why no filter can be loaded here (one line), or None."""
    if binding() is None:
        return "no seccomp binding (install pyseccomp, or Debian's python3-seccomp, and libseccomp2)"
    return None


def load_filter(seccomp) -> None:
    """Install the filter in this process and every process it starts (no_new_privs must be set). Raises OSError
    when a call of REFUSED is unknown to libseccomp on this architecture (the filter would leave it open)."""
    refuse = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    unknown = []
    for name in REFUSED:
        try:
            rules.add_rule(refuse, name)
        except (OSError, ValueError, RuntimeError) as exc:
            if name == "memfd_secret":  # absent from older libseccomp; the kernel refuses it without the boot flag
                continue
            unknown.append(f"{name} ({exc})")
    if unknown:
        raise OSError(f"seccomp: cannot refuse {', '.join(unknown)}")
    flags_arg = 1 if platform.machine().startswith("s390") else 0
    for flag in _CLONE_NAMESPACES:
        rules.add_rule(refuse, "clone", seccomp.Arg(flags_arg, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.load()
