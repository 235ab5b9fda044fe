"""bench/learning.py --set: an override takes the type of the field it replaces."""

from __future__ import annotations

import pytest

from bench.learning import parse_as


def test_set_parses_as_the_fields_type() -> None:
    assert parse_as(False, "true") is True
    assert parse_as(True, "false") is False  # bool("false") is True: the bug this guards
    assert parse_as(4, "8") == 8
    assert parse_as(1e-3, "5e-4") == 5e-4
    with pytest.raises(SystemExit):
        parse_as(False, "yes please")
