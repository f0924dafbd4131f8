"""The fake LLM provider, driven by the official ``openai`` and ``anthropic`` SDKs (no instrumentation).

The e2e billing tests trust this server's usage numbers, so its accounting rules are pinned here:
OpenAI's prompt_tokens include cached tokens, Anthropic's input_tokens exclude cache reads and
writes, streams report usage only where the real APIs do, and errors come in each API's shape.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from otel_aibill.demo import FakeProvider, start_fake_provider
from otel_aibill.demo.tokens import count_text

LONG = "Shipping is free on orders over fifty dollars in the continental US. " * 70


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with start_fake_provider() as server:
        yield server


@pytest.fixture
def oai(fake: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)


@pytest.fixture
def ant(fake: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=fake.anthropic_base_url, api_key="sk-ant-test", max_retries=0, open_telemetry=False
    )


def test_chat_usage_is_a_function_of_the_request(oai: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    reply = oai.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    assert reply.model == "gpt-4o-2024-08-06"  # the served, dated model
    assert reply.service_tier == "default"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3 + sum(4 + count_text(m["content"]) for m in messages)
    assert reply.usage.completion_tokens == count_text(reply.choices[0].message.content or "")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_repeated_long_prefix_is_a_cache_read_in_128_token_steps(oai: openai.OpenAI) -> None:
    system = {"role": "system", "content": LONG}
    first = oai.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "a?"}])
    second = oai.chat.completions.create(model="gpt-4o", messages=[system, {"role": "user", "content": "b?"}])
    other_model = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[system, {"role": "user", "content": "b?"}]
    )
    assert first.usage and second.usage and other_model.usage
    assert first.usage.prompt_tokens_details and first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens if second.usage.prompt_tokens_details else None
    prefix = 3 + 4 + count_text(LONG)
    assert cached == 1024 + (prefix - 1024) // 128 * 128
    assert cached is not None and cached < second.usage.prompt_tokens  # a part of the prompt total
    assert other_model.usage.prompt_tokens_details
    assert other_model.usage.prompt_tokens_details.cached_tokens == 0  # caches are per model


def test_reasoning_models_spend_reasoning_tokens_inside_completion(oai: openai.OpenAI) -> None:
    msg = [{"role": "user", "content": "Prove it."}]
    o3 = oai.chat.completions.create(model="o3", messages=msg, reasoning_effort="high", service_tier="flex")  # type: ignore[arg-type]
    plain = oai.chat.completions.create(model="gpt-4.1", messages=msg)  # type: ignore[arg-type]
    assert (
        o3.usage
        and o3.usage.completion_tokens_details
        and plain.usage
        and plain.usage.completion_tokens_details
    )
    reasoning = o3.usage.completion_tokens_details.reasoning_tokens or 0
    assert reasoning > 0
    assert o3.usage.completion_tokens == reasoning + count_text(o3.choices[0].message.content or "")
    assert o3.service_tier == "flex"
    assert plain.usage.completion_tokens_details.reasoning_tokens == 0


def test_stream_reports_usage_only_with_include_usage(fake: FakeProvider, oai: openai.OpenAI) -> None:
    msg = [{"role": "user", "content": "stream please"}]
    with_usage = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=msg,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    without = list(oai.chat.completions.create(model="gpt-4o-mini", messages=msg, stream=True))  # type: ignore[arg-type]
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert all(c.usage is None for c in with_usage[:-1])
    assert all(c.usage is None for c in without)
    text = "".join(c.choices[0].delta.content or "" for c in without if c.choices)
    assert text.startswith("This is a fake reply")
    raw_without = fake.exchanges[-1]
    assert raw_without.usage is None and all("usage" not in chunk for chunk in raw_without.response)
    assert fake.exchanges[-2].usage == with_usage[-1].usage.model_dump(exclude_none=True)


def test_embeddings_float_and_base64(oai: openai.OpenAI) -> None:
    texts = ["refund policy", "order status"]
    as_b64 = oai.embeddings.create(model="text-embedding-3-small", input=texts)  # SDK default: base64
    as_float = oai.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert as_b64.usage.prompt_tokens == sum(count_text(t) for t in texts) == as_float.usage.total_tokens
    assert len(as_b64.data) == 2 and len(as_b64.data[0].embedding) == 1536
    assert as_b64.data[1].embedding == pytest.approx(as_float.data[1].embedding, abs=1e-6)
    small = oai.embeddings.create(model="text-embedding-3-large", input="x", dimensions=8)
    assert len(small.data[0].embedding) == 8


def test_embedding_base64_is_little_endian_float32(fake: FakeProvider) -> None:
    body = {"model": "text-embedding-3-small", "input": "x", "dimensions": 4, "encoding_format": "base64"}
    reply = httpx.post(f"{fake.openai_base_url}/embeddings", json=body, headers={"authorization": "Bearer k"})
    raw = base64.b64decode(reply.json()["data"][0]["embedding"])
    assert len(struct.unpack("<4f", raw)) == 4


def test_responses_api_usage(oai: openai.OpenAI) -> None:
    for question in ("first", "second"):
        reply = oai.responses.create(model="gpt-5", instructions=LONG, input=question)
    assert reply.model == "gpt-5-2025-08-07"
    assert reply.usage is not None
    assert reply.usage.input_tokens_details.cached_tokens >= 1024
    assert reply.usage.output_tokens_details.reasoning_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    assert reply.output_text.startswith("This is a fake reply")


def test_anthropic_cache_writes_by_ttl_then_reads(ant: anthropic.Anthropic) -> None:
    system = [
        {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "Notes. " + LONG, "cache_control": {"type": "ephemeral"}},
    ]
    write = ant.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        system=system,
        messages=[{"role": "user", "content": "Q1"}],  # type: ignore[arg-type]
    )
    read = ant.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        system=system,
        messages=[{"role": "user", "content": "Q2"}],  # type: ignore[arg-type]
    )
    one_hour, five_min = count_text(LONG), count_text("Notes. " + LONG)
    assert write.usage.cache_creation is not None
    assert write.usage.cache_creation.ephemeral_1h_input_tokens == one_hour
    assert write.usage.cache_creation.ephemeral_5m_input_tokens == five_min
    assert write.usage.cache_creation_input_tokens == one_hour + five_min
    assert write.usage.cache_read_input_tokens == 0
    assert read.usage.cache_read_input_tokens == one_hour + five_min
    assert read.usage.cache_creation_input_tokens == 0
    # input_tokens EXCLUDES cache: only the uncached tail (the user turn)
    assert read.usage.input_tokens == 4 + count_text("Q2")
    assert read.usage.service_tier == "standard"


def test_anthropic_stream_usage_and_thinking(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=4000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Think."}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens_details is not None
    thinking = final.usage.output_tokens_details.thinking_tokens
    assert 0 < thinking <= 1024
    assert final.usage.output_tokens == thinking + count_text(final.content[1].text)  # type: ignore[union-attr]
    assert final.usage.input_tokens == 4 + count_text("Think.")


def test_anthropic_stream_events_follow_the_api(fake: FakeProvider, ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        stream.get_final_message()
    events = fake.exchanges[-1].response
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0]["message"]["usage"]["output_tokens"] == 1
    assert events[-2]["usage"]["output_tokens"] == fake.exchanges[-1].usage["output_tokens"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "headers", "status", "shape"),
    [
        ("/v1/chat/completions", {}, 401, "openai"),
        ("/v1/messages", {"anthropic-version": "2023-06-01"}, 401, "anthropic"),
        ("/v1/messages", {"x-api-key": "k"}, 400, "anthropic"),  # anthropic-version is required
    ],
)
def test_auth_is_required(
    fake: FakeProvider, path: str, headers: dict[str, str], status: int, shape: str
) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    reply = httpx.post(fake.base_url + path, json=body, headers=headers)
    assert reply.status_code == status
    if shape == "openai":
        assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    else:
        assert reply.json()["type"] == "error" and reply.json()["error"]["type"] in (
            "authentication_error",
            "invalid_request_error",
        )


def test_only_configured_keys_are_accepted() -> None:
    with start_fake_provider(api_keys={"sk-good"}) as fake:
        bad = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-bad-key-123", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert err.value.code == "invalid_api_key"
        good = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-good", max_retries=0)
        assert good.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}]).usage


def test_unknown_model_is_404_in_each_shape(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.NotFoundError) as oerr:
        oai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert oerr.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(
            model="text-embedding-3-small", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.NotFoundError) as aerr:
        ant.messages.create(model="claude-9", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert aerr.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_malformed_bodies_are_400(fake: FakeProvider) -> None:
    auth = {"authorization": "Bearer k", "x-api-key": "k", "anthropic-version": "2023-06-01"}
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/responses"):
        assert httpx.post(fake.base_url + path, content=b"{not json", headers=auth).status_code == 400
    missing = httpx.post(fake.base_url + "/v1/chat/completions", json={"model": "gpt-4o"}, headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
    no_max = httpx.post(
        fake.base_url + "/v1/messages",
        json={"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "x"}]},
        headers=auth,
    )
    assert no_max.status_code == 400 and no_max.json()["error"]["type"] == "invalid_request_error"
    stray = httpx.post(
        fake.base_url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream_options": {}},
        headers=auth,
    )
    assert stray.status_code == 400 and stray.json()["error"]["param"] == "stream_options"


@pytest.mark.parametrize("status", [429, 500, 529])
def test_scripted_errors_carry_retry_after(fake: FakeProvider, status: int) -> None:
    auth = {"x-api-key": "k", "anthropic-version": "2023-06-01", "x-fake-error": str(status)}
    body = {"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    reply = httpx.post(fake.base_url + "/v1/messages", json=body, headers=auth)
    assert reply.status_code == status
    assert reply.headers["retry-after"] == "1" and reply.headers["request-id"].startswith("req_")
    kind = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}[status]
    assert reply.json()["error"]["type"] == kind


def test_sdk_retry_after_scripted_429_succeeds_once(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=2)
    fake.script_error(429)
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert [x.status for x in fake.exchanges] == [429, 200]
    assert fake.exchanges[0].response["error"]["code"] == "rate_limit_exceeded"
    assert reply.id == fake.exchanges[1].response_id


def test_error_times_header_fails_only_the_first_attempts(fake: FakeProvider) -> None:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=3)
    headers = {"x-fake-error": "500", "x-fake-error-times": "2", "x-fake-tag": "t1"}
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=headers
    )
    assert [(x.status, x.tag) for x in fake.exchanges] == [(500, "t1"), (500, "t1"), (200, "t1")]


def test_scripted_usage(fake: FakeProvider, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    override = {"prompt_tokens": 5000, "prompt_tokens_details": {"cached_tokens": 4096}}
    reply = oai.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-fake-usage": json.dumps(override)},
    )
    assert reply.usage and reply.usage.prompt_tokens_details
    assert (reply.usage.prompt_tokens, reply.usage.prompt_tokens_details.cached_tokens) == (5000, 4096)
    assert reply.usage.total_tokens == 5000 + reply.usage.completion_tokens
    fake.script_usage({"input_tokens": 10, "cache_read_input_tokens": 200_000})
    msg = ant.messages.create(
        model="claude-opus-4-7", max_tokens=9, messages=[{"role": "user", "content": "x"}]
    )
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (10, 200_000)
    again = ant.messages.create(
        model="claude-opus-4-7", max_tokens=9, messages=[{"role": "user", "content": "x"}]
    )
    assert again.usage.cache_read_input_tokens == 0  # a script applies to the next response only
