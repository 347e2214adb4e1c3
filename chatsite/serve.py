"""Run daphne on uvloop: ``python -m chatsite.serve [daphne's arguments]``.

Daphne builds its event loop when ``daphne.server`` is imported, with the
event loop policy in force at that moment, so the policy is set here first
and daphne's own command line runs after it. ``CHAT_UVLOOP=0`` (or uvloop
missing) keeps asyncio's default loop.
"""

import asyncio
import os


def main() -> None:
    if os.environ.get("CHAT_UVLOOP", "1") not in ("0", "false", "no", "off"):
        try:
            import uvloop
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
