"""Regenerate the span fixtures in this folder from the real instrumentation packages.

Each instrumentation patches the SDKs globally, so each one runs in its own interpreter:

    python tests/data/semconv/capture.py            # all, writes <name>.json next to this file
    python tests/data/semconv/capture.py openai_v2  # one, prints the spans

The LLM providers are replaced by a local HTTP server that answers with the published
response shapes (OpenAI chat completions / embeddings, Anthropic Messages), with cache and
reasoning token counts chosen so that every accounting rule is visible in the spans.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

OPENAI_CHAT = {
    "id": "chatcmpl-fixture-1",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "gpt-4o-2024-08-06",
    "service_tier": "default",
    "system_fingerprint": "fp_fixture",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 120,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}

OPENAI_EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

ANTHROPIC_MESSAGE = {
    "id": "msg_fixture_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
        "cache_creation": {"ephemeral_5m_input_tokens": 150, "ephemeral_1h_input_tokens": 50},
        "output_tokens": 300,
        "service_tier": "standard",
    },
}


# Gemini: promptTokenCount includes the cached content; candidatesTokenCount excludes thoughts.
GEMINI_RESPONSE = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "Hello!"}]}, "finishReason": "STOP", "index": 0}
    ],
    "usageMetadata": {
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 1024,
        "candidatesTokenCount": 180,
        "thoughtsTokenCount": 120,
        "totalTokenCount": 1500,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "gemini-fixture-1",
}

# Bedrock Converse: inputTokens EXCLUDES cache reads and writes (totalTokens = all four).
BEDROCK_CONVERSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello!"}]}},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 100,
        "outputTokens": 300,
        "totalTokens": 1600,
        "cacheReadInputTokens": 1000,
        "cacheWriteInputTokens": 200,
    },
    "metrics": {"latencyMs": 120},
}

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def _chat_stream(include_usage: bool) -> bytes:
    base = {k: OPENAI_CHAT[k] for k in ("id", "created", "model", "service_tier", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo!"}, "finish_reason": "stop"}]},
    ]
    if include_usage:
        chunks.append({**base, "choices": [], "usage": OPENAI_CHAT["usage"]})
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        if self.path.endswith("/chat/completions"):
            if body.get("stream"):
                usage = bool((body.get("stream_options") or {}).get("include_usage"))
                self._send(_chat_stream(usage), "text/event-stream")
                return
            payload: dict[str, Any] = OPENAI_CHAT
        elif self.path.endswith("/embeddings"):
            payload = OPENAI_EMBEDDINGS
        elif self.path.endswith("/messages") or self.path.endswith("/invoke"):
            payload = ANTHROPIC_MESSAGE  # InvokeModel with a Claude model answers the Messages shape
        elif self.path.endswith(":generateContent"):
            payload = GEMINI_RESPONSE
        elif self.path.endswith("/converse"):
            payload = BEDROCK_CONVERSE
        else:
            self.send_error(404)
            return
        self._send(json.dumps(payload).encode(), "application/json")

    def _send(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_fixture")
        self.end_headers()
        self.wfile.write(data)


def _serve() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def _openai_calls(base: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="sk-fixture")
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    client.embeddings.create(model="text-embedding-3-small", input="hi")
    for include_usage in (True, False):
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
        stream = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, **kwargs
        )
        for _ in stream:
            pass


def _anthropic_calls(base: str) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=base, api_key="sk-ant-fixture")
    client.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )


def _google_genai_calls(base: str) -> None:
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="fixture", http_options=types.HttpOptions(base_url=base))
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")


def _bedrock_calls(base: str) -> None:
    import boto3

    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=base,
        region_name="us-east-1",
        aws_access_key_id="AKIDFIXTURE",
        aws_secret_access_key="fixture",
    )
    client.converse(modelId=BEDROCK_MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
    }
    client.invoke_model(modelId=BEDROCK_MODEL, body=json.dumps(body))


def _instrument(name: str) -> Callable[[str], None]:
    if name == "google_genai":
        from opentelemetry.instrumentation.google_genai import GoogleGenAiSdkInstrumentor

        GoogleGenAiSdkInstrumentor().instrument()
        return _google_genai_calls
    if name == "botocore_bedrock":
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

        BotocoreInstrumentor().instrument()
        return _bedrock_calls
    if name == "openai_v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
        return _openai_calls
    if name == "traceloop_openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TraceloopOpenAI

        TraceloopOpenAI().instrument()
        return _openai_calls
    if name == "traceloop_anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument()
        return _anthropic_calls
    if name == "openinference_openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OIOpenAI

        OIOpenAI().instrument()
        return _openai_calls
    if name == "openinference_anthropic":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor as OIAnthropic

        OIAnthropic().instrument()
        return _anthropic_calls
    if name == "anthropic_sdk":
        return _anthropic_calls  # the SDK traces by itself once a global TracerProvider exists
    raise SystemExit(f"unknown instrumentation {name!r}")


NAMES = (
    "openai_v2",
    "traceloop_openai",
    "traceloop_anthropic",
    "openinference_openai",
    "openinference_anthropic",
    "anthropic_sdk",
    "google_genai",
    "botocore_bedrock",
)

# Large or content-bearing attributes that say nothing about usage; dropped to keep fixtures small.
_DROP_PREFIXES = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.prompt.", "gen_ai.completion.")
_DROP_KEYS = {"input.value", "output.value", "llm.invocation_parameters", "gen_ai.system_instructions"}


def _keep(key: str) -> bool:
    if key in _DROP_KEYS or key.startswith(_DROP_PREFIXES):
        return False
    return not key.startswith(("llm.input_messages.", "llm.output_messages.", "embedding.embeddings."))


def capture(name: str) -> list[dict[str, Any]]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument(name)(_serve())
    spans = []
    for span in exporter.get_finished_spans():
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in (span.attributes or {}).items()}
        spans.append(
            {
                "name": span.name,
                "scope_name": span.instrumentation_scope.name if span.instrumentation_scope else "",
                "scope_version": span.instrumentation_scope.version if span.instrumentation_scope else None,
                "attributes": {k: attrs[k] for k in sorted(attrs) if _keep(k)},
            }
        )
    return spans


def main() -> None:
    if len(sys.argv) > 1:
        print(json.dumps(capture(sys.argv[1]), indent=2))
        return
    for name in NAMES:
        out = subprocess.run([sys.executable, __file__, name], check=True, capture_output=True, text=True)
        (HERE / f"{name}.json").write_text(out.stdout)
        print(f"{name}: {len(json.loads(out.stdout))} spans")


if __name__ == "__main__":
    main()
