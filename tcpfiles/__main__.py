"""``tcpfiles`` and ``python -m tcpfiles``: the command, with Ctrl-C handled from the first moment.

Importing Twisted takes a few tenths of a second; a Ctrl-C in that time would end in a
``KeyboardInterrupt`` traceback.  So this module, imported only to run the command, installs a
handler as its first statement, before anything else is imported; :mod:`tcpfiles.cli` replaces
it with one that stops the reactor cleanly once the command runs.
"""

import signal
import sys


def _interrupted_early(signum: int, _frame: object) -> None:
    print("tcpfiles: interrupted", file=sys.stderr)
    sys.exit(128 + signum)


signal.signal(signal.SIGINT, _interrupted_early)


def main() -> None:
    """Entry point of the ``tcpfiles`` console script."""
    from tcpfiles.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
