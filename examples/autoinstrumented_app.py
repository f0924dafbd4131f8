"""A plain OpenAI app with no OpenTelemetry code at all: billing is added from the outside.

    pip install "otel-aibill[demo]" opentelemetry-distro
    export OPENAI_API_KEY=...            # (or OPENAI_BASE_URL=<a compatible endpoint>)
    export OTEL_AIBILL_DB=sqlite:///aibill.db
    export OTEL_RESOURCE_ATTRIBUTES=customer.id=acme    # who pays for this service's usage
    opentelemetry-instrument --traces_exporter aibill --metrics_exporter none --logs_exporter none \\
        python examples/autoinstrumented_app.py
    otel-aibill usage

``opentelemetry-instrument`` loads the installed OpenAI instrumentation and the ``aibill`` span
exporter (an entry point of this package), which writes the priced usage to the ledger.
"""

from __future__ import annotations

import openai


def main() -> None:
    client = openai.OpenAI()
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Write a haiku about invoices."}],
    )
    print(reply.choices[0].message.content)
    print(
        f"usage: {reply.usage.prompt_tokens if reply.usage else 0} in, "
        f"{reply.usage.completion_tokens if reply.usage else 0} out"
    )


if __name__ == "__main__":
    main()
