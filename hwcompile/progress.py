"""Progress lines of the command line: timestamped, on stderr (results go to stdout)."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    print(f"[hwcompile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
