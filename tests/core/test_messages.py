"""Error messages quote at most about 80 characters of what the client sent.

A red-team pass sent a 1 MB ``type`` name and a 1 MB ``status`` value, and got
each back whole in the 422. Every message that repeats input goes through
:func:`felix._errors.quote` or :func:`felix._errors.cut`.
"""

from __future__ import annotations

from typing import Any

import pytest

import felix
from felix._core.events import decode_json, validate_event
from felix._errors import QUOTE_LIMIT, FelixError, InvalidEvent, cut, quote
from felix.settings import Settings, SettingsError

HUGE = "x" * 1_000_000
#: Room for the message's own words around a quote.
MESSAGE_LIMIT = 3 * QUOTE_LIMIT + 150


def assert_cut(error: FelixError) -> None:
    assert len(error.message) < MESSAGE_LIMIT, error.message[:300]
    assert "\u2026" in error.message


@pytest.mark.parametrize(
    "event",
    [
        pytest.param({"type": HUGE}, id="type"),
        pytest.param({"type": "workflow_status", "status": HUGE}, id="status"),
        pytest.param({"type": "workflow_status", "status": [HUGE] * 3}, id="status-list"),
        pytest.param({"type": "workflow_status", "status": {HUGE: HUGE}}, id="status-object"),
    ],
)
def test_validation_messages_cut_the_input(event: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent) as exc:
        validate_event(event)
    assert_cut(exc.value)


def test_a_number_too_large_to_print_is_described() -> None:
    # From Python (the embedding API), a 5000-digit int cannot even become a
    # string: the message must still be built, and short.
    with pytest.raises(InvalidEvent) as exc:
        validate_event(
            {"type": "agent_output", "agent_id": "a", "content": "c", "confidence": 10**5000}
        )
    assert "integer of" in exc.value.message
    assert len(exc.value.message) < MESSAGE_LIMIT


def test_a_long_confidence_out_of_range_is_cut() -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json_and_validate(
            '{"type":"agent_output","agent_id":"a","content":"c","confidence":1' + "0" * 4000 + "}"
        )
    assert len(exc.value.message) < MESSAGE_LIMIT


def decode_json_and_validate(body: str) -> None:
    validate_event(decode_json(body))


def test_duplicate_key_message_cuts_the_key() -> None:
    with pytest.raises(InvalidEvent) as exc:
        decode_json(f'{{"{HUGE}": 1, "{HUGE}": 2}}')
    assert_cut(exc.value)


def test_settings_errors_cut_the_value() -> None:
    with pytest.raises(SettingsError) as exc:
        Settings.from_env({"FELIX_PORT": HUGE})
    assert len(str(exc.value)) < MESSAGE_LIMIT
    with pytest.raises(SettingsError) as exc:
        Settings(broker=HUGE)
    assert len(str(exc.value)) < MESSAGE_LIMIT


async def test_hub_messages_cut_the_input() -> None:
    async with felix.open_hub() as hub:
        with pytest.raises(felix.WorkflowNotFound) as not_found:
            await hub.send_workflow_event(HUGE, "synthesis", {"content": "c"})
        assert_cut(not_found.value)
        with pytest.raises(InvalidEvent) as bad_status:
            await hub.list_workflows(status=HUGE)
        assert_cut(bad_status.value)


# --- the helpers ----------------------------------------------------------------------------


def test_quote() -> None:
    assert quote("abc") == "'abc'"
    assert quote("a" * 100) == "'" + "a" * QUOTE_LIMIT + "\u2026'"
    assert quote(None) == "None"
    assert quote(0.5) == "0.5"
    assert quote(10**20) == str(10**20)
    assert quote(2**300) == "an integer of 301 bits"
    assert len(quote(list(range(1_000_000)))) <= QUOTE_LIMIT + 1
    assert len(quote([[[[[[[1]]]]]]])) <= QUOTE_LIMIT + 1
    assert quote([10**5000]) == "a list"


def test_cut() -> None:
    assert cut("abc") == "abc"
    assert cut("a" * 81) == "a" * 80 + "\u2026"
    assert cut("abcdef", 3) == "abc\u2026"
