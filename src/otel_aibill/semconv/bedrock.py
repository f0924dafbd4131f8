"""Bedrock through upstream contrib's botocore instrumentation (scope
``opentelemetry.instrumentation.botocore.bedrock-runtime``).

Measured with opentelemetry-instrumentation-botocore 0.66b2: Converse / ConverseStream spans copy
Bedrock's ``usage`` as is, and Bedrock's ``inputTokens`` EXCLUDES the cache reads and writes it
reports beside it (``cacheReadInputTokens`` → ``gen_ai.usage.cache_read.input_tokens``,
``cacheWriteInputTokens`` → ``gen_ai.usage.cache_creation.input_tokens``), so they are added to
make the total. InvokeModel spans copy the model's own body usage without cache counts: a Claude
call's cached tokens are not reported there and cannot be billed.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import genai
from .counts import Counts

SCOPE = "opentelemetry.instrumentation.botocore"

KEYS = genai.KEYS


def matches(scope_name: str) -> bool:
    return scope_name.startswith(SCOPE)


def read(attrs: Mapping[str, object], provider: str, keys: genai.TokenKeys = KEYS) -> Counts:
    counts = genai.read_counts(attrs, keys)
    if counts.input is not None:
        counts.input += counts.cache_read + counts.cache_write
    return counts
