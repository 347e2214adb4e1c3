"""Run daphne on uvloop: ``python -m chatsite.serve [daphne's arguments]``.

Daphne builds its event loop when ``daphne.server`` is imported, with the
event loop policy in force at that moment, so the policy is set here first
and daphne's own command line runs after it. ``CHAT_UVLOOP=0`` (or uvloop
missing) keeps asyncio's default loop.

``CHAT_WS_DEFLATE=1`` accepts a browser's permessage-deflate offer (daphne
declines it): frames then cost zlib time and a compressor per socket, and
carry fewer bytes; docs/performance.md has the measurements behind the
default (off).
"""

import asyncio
import os

OFF = ("", "0", "false", "no", "off")
WINDOW_BITS = 11  # a 2 KB window: frames are small HTML fragments, mostly alike


def accept_deflate(offers):
    """autobahn's ``perMessageCompressionAccept``: the first permessage-deflate
    offer, with a small window and memory level so a socket's compressor
    stays a few tens of KB instead of zlib's default 256 KB."""
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            ours = min(WINDOW_BITS, offer.request_max_window_bits or WINDOW_BITS)
            theirs = WINDOW_BITS if offer.accept_max_window_bits else 0  # the client's, when it lets us choose
            return PerMessageDeflateOfferAccept(offer, request_max_window_bits=theirs, window_bits=ours, mem_level=4)
    return None


def main() -> None:
    if os.environ.get("CHAT_UVLOOP", "1").lower() not in OFF:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if os.environ.get("CHAT_WS_DEFLATE", "").lower() not in OFF:
        import daphne.server

        class DeflateWebSocketFactory(daphne.server.WebSocketFactory):
            def setProtocolOptions(self, **options):  # autobahn's name
                super().setProtocolOptions(perMessageCompressionAccept=accept_deflate, **options)

        daphne.server.WebSocketFactory = DeflateWebSocketFactory
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
