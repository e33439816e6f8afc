"""30 varied structured-output prompts, each with a JSON Schema, shared by the structured-output test and
`make bench` (which reports how many come back as schema-valid JSON with 200)."""

from __future__ import annotations

from typing import Any


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


S, INT, N, B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
STRINGS = {"type": "array", "items": S}

PROMPTS: list[tuple[str, dict[str, Any]]] = [
    ("Invent a person with a name and an age.", _obj({"name": S, "age": INT})),
    ("Describe a city: its name, country and population.", _obj({"name": S, "country": S, "population": INT})),
    ("Give a book with title, author and year.", _obj({"title": S, "author": S, "year": INT})),
    (
        "A product for an online shop with a price and whether it is in stock.",
        _obj({"title": S, "price": N, "in_stock": B}),
    ),
    ("List three fruits.", _obj({"fruits": STRINGS})),
    (
        "A movie review with a score from 1 to 10.",
        _obj({"movie": S, "score": {"type": "integer", "minimum": 1, "maximum": 10}}),
    ),
    ("Is the sky blue? Answer with a boolean and a reason.", _obj({"answer": B, "reason": S})),
    ("Classify the sentiment of 'I love this!'", _obj({"sentiment": {"enum": ["positive", "negative", "neutral"]}})),
    ("Extract the date from: the meeting is on 2024-05-01.", _obj({"date": S})),
    ("A recipe with a name and a list of ingredients.", _obj({"name": S, "ingredients": STRINGS})),
    (
        "A to-do item with a title, a priority and a done flag.",
        _obj({"title": S, "priority": {"enum": ["low", "medium", "high"]}, "done": B}),
    ),
    ("Convert 3 kilometres to metres.", _obj({"kilometres": N, "metres": N})),
    ("A user profile with a username and an email.", _obj({"username": S, "email": S})),
    ("Weather report: temperature in Celsius and a short summary.", _obj({"temperature_c": N, "summary": S})),
    ("A song with title, artist and duration in seconds.", _obj({"title": S, "artist": S, "duration_s": INT})),
    (
        "Name two planets and their order from the sun.",
        _obj({"planets": {"type": "array", "items": _obj({"name": S, "order": INT})}}),
    ),
    ("An address with street, city and postal code.", _obj({"street": S, "city": S, "postal_code": S})),
    (
        "A bank transaction: amount, currency and whether it is a credit.",
        _obj({"amount": N, "currency": S, "credit": B}),
    ),
    ("Summarise: 'The cat sat on the mat.' in one sentence.", _obj({"summary": S})),
    (
        "A company with a name, founding year and number of employees.",
        _obj({"name": S, "founded": INT, "employees": INT}),
    ),
    ("Translate 'hello' into French and Spanish.", _obj({"french": S, "spanish": S})),
    ("A car with make, model and year.", _obj({"make": S, "model": S, "year": INT})),
    ("Rate the difficulty of chess.", _obj({"game": S, "difficulty": {"enum": ["easy", "medium", "hard"]}})),
    ("A shopping list of at least two items.", _obj({"items": {"type": "array", "items": S, "minItems": 2}})),
    ("An event with a name, a location and a number of attendees.", _obj({"name": S, "location": S, "attendees": INT})),
    ("Give the capital of Italy.", _obj({"country": S, "capital": S})),
    ("A pet with a species, a name and an age in years.", _obj({"species": S, "name": S, "age": INT})),
    (
        "A flight with an origin, a destination and a number of stops.",
        _obj({"origin": S, "destination": S, "stops": INT}),
    ),
    (
        "Two keywords describing the ocean.",
        _obj({"keywords": {"type": "array", "items": S, "minItems": 2, "maxItems": 2}}),
    ),
    (
        "A laptop spec: RAM in GB, storage in GB and screen size in inches.",
        _obj({"ram_gb": INT, "storage_gb": INT, "screen_in": N}),
    ),
]
