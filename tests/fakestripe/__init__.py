"""A local fake of Stripe's billing meter APIs for tests; see ``server.FakeStripe``."""

from fakestripe.server import API_KEY, FakeStripe, Faults
from fakestripe.state import Clock

__all__ = ["API_KEY", "Clock", "FakeStripe", "Faults"]
