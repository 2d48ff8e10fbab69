"""Shared fixtures: fast retries and ready-made clips."""

from __future__ import annotations

import authlib.deprecate  # noqa: F401
import pytest

# cozepy (test-only) imports a deprecated authlib module. authlib installs an "always" warning
# filter when first imported, which would override pytest's; importing it here, before any test
# module is collected, keeps the filter in pyproject.toml in charge.

from voicebridge.speech.retry import Retrier, RetryPolicy


@pytest.fixture
def fast_retrier() -> Retrier:
    """The real retry logic with millisecond pauses, so tests exercise it without waiting."""
    return Retrier(RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=2.0))
