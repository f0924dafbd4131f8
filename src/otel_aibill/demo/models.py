"""The models the fake providers serve: request alias -> served (dated) model id.

Real APIs answer an alias such as ``gpt-4o`` with a dated snapshot in the response's ``model``,
which is the id billing must price on; the fake does the same so that hazard stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Model:
    served: str
    reasoning: bool = False  # spends hidden reasoning tokens (o-series, gpt-5)
    embedding_dims: int = 0  # > 0 for embedding models


OPENAI_MODELS: dict[str, Model] = {
    "gpt-4o": Model("gpt-4o-2024-08-06"),
    "gpt-4o-mini": Model("gpt-4o-mini-2024-07-18"),
    "gpt-4.1": Model("gpt-4.1-2025-04-14"),
    "gpt-4.1-mini": Model("gpt-4.1-mini-2025-04-14"),
    "o3": Model("o3-2025-04-16", reasoning=True),
    "o3-mini": Model("o3-mini-2025-01-31", reasoning=True),
    "o4-mini": Model("o4-mini-2025-04-16", reasoning=True),
    "gpt-5": Model("gpt-5-2025-08-07", reasoning=True),
    "gpt-5-mini": Model("gpt-5-mini-2025-08-07", reasoning=True),
    "gpt-5-nano": Model("gpt-5-nano-2025-08-07", reasoning=True),
    "gpt-5.1": Model("gpt-5.1-2025-11-13", reasoning=True),
    "gpt-5.2": Model("gpt-5.2-2025-12-11", reasoning=True),
    "text-embedding-3-small": Model("text-embedding-3-small", embedding_dims=1536),
    "text-embedding-3-large": Model("text-embedding-3-large", embedding_dims=3072),
}

ANTHROPIC_MODELS: dict[str, Model] = {
    "claude-sonnet-4-6": Model("claude-sonnet-4-6"),
    "claude-opus-4-6": Model("claude-opus-4-6"),
    "claude-opus-4-7": Model("claude-opus-4-7"),
    "claude-sonnet-4-5": Model("claude-sonnet-4-5-20250929"),
    "claude-sonnet-4-0": Model("claude-sonnet-4-20250514"),
    "claude-opus-4-1": Model("claude-opus-4-1-20250805"),
    "claude-opus-4-5": Model("claude-opus-4-5-20251101"),
    "claude-haiku-4-5": Model("claude-haiku-4-5-20251001"),
    "claude-3-5-haiku-latest": Model("claude-3-5-haiku-20241022"),
}


def resolve(catalog: dict[str, Model], name: str) -> Model | None:
    """The model a request names, by alias or by its served (dated) id."""
    if name in catalog:
        return catalog[name]
    for model in catalog.values():
        if model.served == name:
            return model
    return None
