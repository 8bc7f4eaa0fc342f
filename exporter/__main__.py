"""``python -m exporter`` and the console script.

SIGTERM, SIGINT and SIGHUP are caught from the first line: a stop during start-up (while
the modules load, before the event loop takes the signals over) exits 0 instead of
dying by the signal, and a SIGHUP then is not fatal (the configuration is being read).
"""

import signal
import sys
from types import FrameType


def _stop_during_start_up(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0 if signum == signal.SIGTERM else 128 + signum)


for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, _stop_during_start_up)
signal.signal(signal.SIGHUP, signal.SIG_IGN)


def main() -> int:
    from exporter.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
