"""Peak resident set size of the current process, in MB.

``getrusage``'s ``ru_maxrss`` survives ``exec`` on Linux: a benchmark child started from
a large parent would report the parent's peak. ``VmHWM`` in ``/proc/self/status`` is the
peak of this process image only; ``ru_maxrss`` is the fallback elsewhere.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
