"""``manage.py fakeprovider``: run the fake model provider in the foreground."""

import threading

from django.core.management.base import BaseCommand

from devtools.fakeprovider import SCENARIOS, FakeProvider


class Command(BaseCommand):
    help = (
        "Run the fake model provider (OpenAI and Anthropic wire formats) on 127.0.0.1 until Ctrl-C, "
        "and print the environment variables that point the app at it."
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Serving ends on Ctrl-C, or when this is set (from another thread, as tests do).
        self.stop_requested = threading.Event()

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8001, help="Port on 127.0.0.1 (0: any free port).")
        parser.add_argument("--tokens", type=int, default=20, help="Reply length in tokens (default 20).")
        parser.add_argument(
            "--delay", type=float, default=0.03, help="Seconds between tokens (default 0.03, a realistic pace)."
        )
        parser.add_argument("--first-delay", type=float, default=0.0, help="Seconds before the first token.")
        parser.add_argument("--api-key", default=None, help="Only accept this key (default: any non-empty key).")
        parser.add_argument(
            "--key-header",
            choices=("x-api-key", "authorization"),
            default=None,
            help="Read the key from this header only, as some Anthropic-compatible endpoints do (default: either).",
        )

    def handle(self, *args, **options):
        server = FakeProvider(
            port=options["port"],
            tokens=options["tokens"],
            delay=options["delay"],
            first_delay=options["first_delay"],
            api_key=options["api_key"],
            key_header=options["key_header"],
        ).start()
        key = options["api_key"] or "fake-key"
        models = ",".join(
            f"{provider}:fake-{name}" for provider in ("openai", "anthropic") for name in ("normal", "reasoning")
        )
        lines = [
            f"Fake provider listening on {server.url}",
            "",
            "Point the app at it:",
            f"export OPENAI_BASE_URL={server.openai_base_url}",
            f"export OPENAI_API_KEY={key}",
            f"export ANTHROPIC_BASE_URL={server.anthropic_base_url}",
            f"export ANTHROPIC_API_KEY={key}",
            f"export CHAT_MODELS={models}",
            "",
            "Scenarios (model names; options as fake-<scenario>@tokens=N,delay=S,first_delay=S):",
            *(f"  fake-{name}" for name in SCENARIOS),
            "",
            "Ctrl-C to stop.",
        ]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
        try:
            self.stop_requested.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
