import pytest

from ..conftest import single_thread

_one_thread = pytest.fixture(autouse=True)(single_thread)
