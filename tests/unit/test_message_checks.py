"""One check of a visitor message's content for Terra's and BYO messages (review F4):
the same 400 and 413 sentences on both routes."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from gateway.rest import message_content


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "Message content required"),
        ({"content": "  \n"}, 400, "Message content required"),
        ({"content": 7}, 400, "Message content required"),
        ({"content": "é" * 11}, 413, "Message too long"),
    ],
)
def test_bad_content_is_refused(body: dict[str, object], status: int, error: str) -> None:
    with pytest.raises(web.HTTPException) as refused:
        message_content(body, max_length=10)
    assert refused.value.status == status
    assert json.loads(refused.value.text or "") == {"error": error}


def test_content_up_to_the_limit_in_code_points_passes() -> None:
    assert message_content({"content": "é" * 10}, max_length=10) == "é" * 10


def test_both_message_routes_use_it() -> None:
    from gateway import rest
    from gateway.byo import routes

    for module in (rest, routes):
        assert module.message_content is message_content
