"""Rules of a platform or provider that the code under test broke, as its test doubles and fakes
saw them. The plugin catches every exception around a send (a guest must never crash its host),
so an assertion raised inside a double would be swallowed and the test would pass; instead each
double and fake records what it refused in its ``violations`` list, and tests/conftest.py fails
every test that leaves one recorded. A test that breaks a rule on purpose takes the violations
it expects (``take_violations()``) and asserts on them."""

from __future__ import annotations

from typing import Protocol

import pytest


class Watched(Protocol):
    violations: list[str]


# Every double and fake made during the current test (the autouse check clears it per test).
_watched: list[Watched] = []


def watch(double: Watched) -> None:
    _watched.append(double)


def recorded() -> list[str]:
    """Every violation still recorded by a double or fake of the current test."""
    return [f"{type(double).__name__}: {violation}" for double in _watched for violation in double.violations]


def forget() -> None:
    _watched.clear()


def fail_if_any() -> None:
    """What the suite does after every test (tests/conftest.py): fail when a rule was broken."""
    found = recorded()
    if found:
        pytest.fail("the code under test broke a platform or provider rule:\n" + "\n".join(found), pytrace=False)
