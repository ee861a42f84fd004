"""Redaction: a sensitive value never survives into the global log's body or error message (property tests)."""

from __future__ import annotations

import json
from typing import Annotated

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from commandlog import Command, Sensitive
from commandlog.redaction import WITHHELD, redact, scrub, sensitive_values


class Card(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    number: Annotated[str, Sensitive]


class Nested(Command):
    cmd_class = "test_unit.RedactNested"
    owner: str
    iban: Annotated[str, Sensitive]
    pin: Annotated[int | None, Sensitive] = None
    cards: list[Card] = []
    by_name: dict[str, Card] = {}
    notes: Annotated[dict[str, str], Sensitive] = {}


text = st.text(min_size=0, max_size=30)
# A secret that is part of the marker itself ("[withh") would be "found" in every redacted body: not a leak.
secret = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=6, max_size=30).filter(
    lambda s: s not in WITHHELD)
cards = st.builds(Card, label=text, number=secret)


@settings(max_examples=300, deadline=None)
@given(owner=text, iban=secret, pin=st.none() | st.integers(min_value=100_000, max_value=10**12),
       cards=st.lists(cards, max_size=4), by_name=st.dictionaries(st.text(max_size=8), cards, max_size=3),
       notes=st.dictionaries(secret, secret, max_size=3))
def test_no_sensitive_value_survives_redaction(owner, iban, pin, cards, by_name, notes):
    cmd = Nested(owner=owner, iban=iban, pin=pin, cards=cards, by_name=by_name, notes=notes)
    dumped = cmd.model_dump(mode="json")
    public = json.dumps(redact(cmd, dumped), ensure_ascii=False)
    secrets = sensitive_values(cmd, dumped)
    for value in secrets:
        allowed = json.dumps({"o": owner, "c": [c.label for c in cards],
                              "k": [[k, c.label] for k, c in by_name.items()]}, ensure_ascii=False)
        if value not in allowed:  # a secret equal to a public value may of course appear as that public value
            assert value not in public
    template = "failed for '' with card  and pin None"
    message = f"failed for {iban!r} with card {cards[0].number if cards else ''} and pin {pin}"
    scrubbed = scrub(message, secrets)
    for value in [iban] + [c.number for c in cards[:1]]:
        if value not in template:
            assert value not in scrubbed


def test_sensitive_fields_keep_their_key_with_the_marker():
    cmd = Nested(owner="o", iban="DE89370400440532013000", cards=[Card(label="work", number="4111111111111111")])
    public = redact(cmd, cmd.model_dump(mode="json"))
    assert public["iban"] == WITHHELD and public["pin"] == WITHHELD
    assert public["cards"] == [{"label": "work", "number": WITHHELD}]
    assert public["owner"] == "o"


def test_classes_are_known_to_hold_sensitive_values_at_any_depth():
    from typing import Any

    from commandlog.redaction import has_sensitive

    class Plain(Command):
        cmd_class = "test_unit.Plain"
        name: str
        tags: list[str] = []

    class Loose(Command):
        cmd_class = "test_unit.LooseAny"
        blob: Any = None

    class Deep(Command):
        cmd_class = "test_unit.Deep"
        cards: dict[str, list[Card]] | None = None

    assert not has_sensitive(Plain)
    assert has_sensitive(Nested) and has_sensitive(Deep) and has_sensitive(Loose)
