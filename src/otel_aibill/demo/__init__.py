"""A self-contained demo: a fake LLM provider and a job that bills a few customers through it."""

from otel_aibill.demo.fake_provider import Exchange, FakeProvider, start_fake_provider

__all__ = ["Exchange", "FakeProvider", "start_fake_provider"]
