"""Which spans are model calls: the double-count rules that live in extraction.

Only the span of the model call itself is billed. Agent, workflow, tool and retrieval
spans (and anything repeating its children's usage) would bill the same tokens twice.
"""

from __future__ import annotations

from collections.abc import Mapping

INFERENCE_OPERATIONS = frozenset({"chat", "generate_content", "text_completion", "embeddings"})

# Spellings of inference operations seen in the wild → the GenAI operation name.
_OPERATION_ALIASES: dict[str, str] = {
    "completion": "text_completion",
    "completions": "text_completion",
    "embedding": "embeddings",
    "chat_completion": "chat",
    "chat_completions": "chat",
}

# OpenInference span kinds that are model calls.
_OPENINFERENCE_KINDS: dict[str, str] = {"LLM": "chat", "EMBEDDING": "embeddings"}

# traceloop.span.kind values of framework spans (OpenLLMetry decorators, LangChain...).
_TRACELOOP_FRAMEWORK_KINDS = frozenset({"workflow", "task", "agent", "tool"})

# Span names of instrumentations that set no operation attribute (OpenLLMetry, older
# OpenLLMetry-style names) and the first word of "{operation} {model}" names.
_NAME_OPERATIONS: dict[str, str] = {
    "chat": "chat",
    "openai.chat": "chat",
    "anthropic.chat": "chat",
    "anthropic.completion": "text_completion",
    "openai.completion": "text_completion",
    "openai.embeddings": "embeddings",
    "anthropic.messages.create": "chat",
    "embeddings": "embeddings",
    "text_completion": "text_completion",
    "generate_content": "generate_content",
    # Vercel AI SDK step spans
    "ai.generatetext.dogenerate": "chat",
    "ai.streamtext.dostream": "chat",
    "ai.generateobject.dogenerate": "chat",
    "ai.streamobject.dostream": "chat",
    "ai.embed.doembed": "embeddings",
    "ai.embedmany.doembed": "embeddings",
}

UNKNOWN_OPERATION = "unknown"


def canonical_operation(value: str) -> str:
    op = value.strip().lower()
    return _OPERATION_ALIASES.get(op, op)


def operation_of(attrs: Mapping[str, object], span_name: str) -> tuple[str | None, str]:
    """The span's operation and, when it is not a model call, why (else an empty reason).

    Returns ``(operation, "")`` for a model call (``operation`` may be
    :data:`UNKNOWN_OPERATION` when nothing names it), ``(operation, detail)`` otherwise.
    """
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        op = _OPENINFERENCE_KINDS.get(kind.upper())
        if op is None:
            return kind, f"openinference.span.kind={kind}"
        return op, ""
    tl_kind = attrs.get("traceloop.span.kind")
    if isinstance(tl_kind, str) and tl_kind.lower() in _TRACELOOP_FRAMEWORK_KINDS:
        return tl_kind, f"traceloop.span.kind={tl_kind}"
    for key in ("gen_ai.operation.name", "llm.request.type"):
        value = attrs.get(key)
        if isinstance(value, str) and value.strip():
            op = canonical_operation(value)
            if op in INFERENCE_OPERATIONS:
                return op, ""
            return op, f"{key}={value}"
    name = span_name.strip().lower()
    op = _NAME_OPERATIONS.get(name) or _NAME_OPERATIONS.get(name.split(" ", 1)[0])
    return (op or UNKNOWN_OPERATION), ""
