"""What every part of the store stands on: its engine, a write transaction, a read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otel_aibill.stripe.store.engine import Engine


class StoreBase:
    _db: Engine

    def _tx(self) -> Any:
        return self._db.tx()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._db.query(sql, params)
