"""Raise the process's open-files limit to what the system allows, before serving.

Every client connection costs a descriptor, and a proxied request in flight a second one
(its upstream connection). Many systems start services with a soft ``RLIMIT_NOFILE`` of
1024 under a far higher hard limit, which would cap gatehouse at about 500 concurrent
connections, with ``EMFILE`` on accept beyond it. Raising the soft limit to the hard one
needs no privilege; the Go runtime does the same at start-up (so Pomerium and Envoy's
control plane do), and nginx has ``worker_rlimit_nofile``. The limit is inherited by the
worker processes forked after this.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("gatehouse.serve")

#: Below this many descriptors the limit is worth a warning: about half as many concurrent
#: proxied connections.
LOW_NOFILE = 4096


def raise_open_files_limit() -> int:
    """Set the soft ``RLIMIT_NOFILE`` to the hard limit; returns the limit now in force.

    Logs one line: info when raised, a warning when the hard limit itself is low.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - every POSIX system has it
        return -1
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            # e.g. an "unlimited" hard limit some kernels refuse as a soft value.
            log.warning("cannot raise the open files limit from %d: %s", soft, exc)
            return soft
        log.info("open files limit raised from %d to %d", soft, hard)
    if hard != resource.RLIM_INFINITY and hard < LOW_NOFILE:
        log.warning(
            "open files limit is %d: about %d concurrent proxied connections at most "
            "(raise the hard limit, e.g. LimitNOFILE= in the systemd unit)",
            hard,
            hard // 2,
        )
    return hard
