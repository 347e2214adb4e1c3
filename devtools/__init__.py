"""Development tooling, not shipped with the app: the fake model provider, the
benchmark commands, the child-process helpers and the benchmark
instrumentation.

Installed only when ``CHAT_DEVTOOLS`` is on (by default with ``DJANGO_DEBUG``
and under the test suite).  devtools may import ``conversations``; nothing in
``conversations`` imports devtools.
"""
