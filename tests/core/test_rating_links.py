"""`rating_link`: the ticket page's link with a score preselected (one per score in the rating email)."""

from __future__ import annotations

import uuid

import pytest

from core.ticket_links import rating_link, ticket_link, ticket_token

SECRET = "test-rating-link-secret-0123456789abcdef"


def test_a_rating_link_is_the_ticket_link_with_the_score_after_the_token() -> None:
    token = ticket_token(SECRET, uuid.uuid4())
    assert (
        rating_link("https://support.example/", "TKT-0042", token, 4)
        == f"https://support.example/support/ticket/TKT-0042#token={token}&score=4"
    )
    for score in range(1, 6):
        assert rating_link("https://support.example", "TKT-0042", token, score) == (
            f"{ticket_link('https://support.example', 'TKT-0042', token)}&score={score}"
        )


@pytest.mark.parametrize("score", [0, 6, -1])
def test_a_score_outside_1_to_5_has_no_link(score: int) -> None:
    with pytest.raises(ValueError, match="1 to 5"):
        rating_link("https://support.example", "TKT-0042", "t" * 43, score)
