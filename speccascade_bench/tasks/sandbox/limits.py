"""Limits and paths that the sandbox's parent and child sides share (standard library only).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

MAX_PROCESSES = 16  # tasks (threads included) of the code's user inside its namespace

FILE_SIZE_MB = 16  # RLIMIT_FSIZE

SCRATCH_MB = 64  # size of the fresh /tmp and working directory

OPEN_FILES = 256  # RLIMIT_NOFILE

CONFINED_WORKDIR = "/tmp/work"  # the code's working directory and home inside its own file system
