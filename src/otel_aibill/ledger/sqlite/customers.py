"""The customer table (app customer id -> Stripe customer id and name), on SQLite."""

from __future__ import annotations

import sqlite3

from otel_aibill.ledger.base import Customer


def set_customer(
    conn: sqlite3.Connection, customer_id: str, stripe_customer_id: str | None, name: str | None, now: int
) -> None:
    conn.execute(
        "INSERT INTO customers (customer_id, stripe_customer_id, name, updated_at_ns)"
        " VALUES (?, ?, ?, ?)"
        " ON CONFLICT (customer_id) DO UPDATE SET stripe_customer_id = excluded.stripe_customer_id,"
        " name = excluded.name, updated_at_ns = excluded.updated_at_ns",
        (customer_id, stripe_customer_id, name, now),
    )


def customers(conn: sqlite3.Connection) -> list[Customer]:
    rows = conn.execute("SELECT customer_id, stripe_customer_id, name FROM customers ORDER BY customer_id")
    return [Customer(customer_id=c, stripe_customer_id=s, name=n) for c, s, n in rows]
