"""The canonical token accounting that every adapter fills in, and its invariants."""

from __future__ import annotations

from dataclasses import dataclass

from .tokens import MAX_TOKENS, InvalidUsage


@dataclass(slots=True)
class Counts:
    """Token counts in the OTel GenAI accounting.

    ``input`` is the whole prompt, cache reads and writes included; ``output`` includes
    reasoning. ``None`` means "not reported" (only the two totals need the distinction:
    a span without either has no usage at all); missing parts count as 0.
    """

    input: int | None = None
    output: int | None = None
    cache_read: int = 0
    cache_write: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    input_audio: int = 0
    output_audio: int = 0

    @property
    def has_totals(self) -> bool:
        return self.input is not None or self.output is not None

    def validate(self) -> None:
        """Raise :class:`InvalidUsage` when a part exceeds the total it belongs to."""
        total_in = self.input or 0
        total_out = self.output or 0
        if self.cache_read + self.cache_write > total_in:
            raise InvalidUsage(
                f"cache read {self.cache_read} + cache write {self.cache_write}"
                f" exceed input tokens {total_in}"
            )
        if self.cache_write_5m + self.cache_write_1h > self.cache_write:
            raise InvalidUsage(
                f"cache write 5m {self.cache_write_5m} + 1h {self.cache_write_1h}"
                f" exceed cache write tokens {self.cache_write}"
            )
        if self.input_audio > total_in:
            raise InvalidUsage(f"input audio tokens {self.input_audio} exceed input tokens {total_in}")
        if self.reasoning > total_out:
            raise InvalidUsage(f"reasoning tokens {self.reasoning} exceed output tokens {total_out}")
        if self.output_audio > total_out:
            raise InvalidUsage(f"output audio tokens {self.output_audio} exceed output tokens {total_out}")
        if total_in > MAX_TOKENS or total_out > MAX_TOKENS:
            raise InvalidUsage(f"token totals {total_in}/{total_out} exceed {MAX_TOKENS}")
