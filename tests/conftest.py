"""Shared fixtures: real guests, real engine, no mocks."""

import pytest

# Selects pvmon's patched Unicorn (LIBUNICORN_PATH) before any test module's
# `import unicorn` loads a library: a test file run alone would otherwise test
# the wheel's library.
import pvmon.engine  # noqa: F401
from pvmon.guests.catalog import debian_guest, resolve


@pytest.fixture(scope="session")
def debian612():
    return debian_guest("debian-6.12")


@pytest.fixture(scope="session")
def debian61():
    return debian_guest("debian-6.1")


@pytest.fixture
def pvtest_v2():
    return resolve("pvtest-v2")


@pytest.fixture
def pvtest_v1():
    return resolve("pvtest-v1")
