"""One adapter per external system: wire formats as pydantic models (each naming its vendor doc or schema),
parsers into fixloop's models, and thin clients built on the official libraries. No Temporal imports here."""
