"""``python -m otel_aibill.cli``: the same as the ``otel-aibill`` command."""

from otel_aibill.cli import main

main()
