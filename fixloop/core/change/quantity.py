"""Kubernetes quantities (memory sizes): parsing, rounding up and writing them back.

The grammar is Kubernetes' ``resource.Quantity`` (kubernetes.io/docs/reference/kubernetes-api/common-definitions/
quantity/)::

    <quantity> ::= <number><suffix>
    <suffix>   ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI> ::= Ki | Mi | Gi | Ti | Pi | Ei            (powers of 1024)
    <decimalSI> ::= m | "" | k | M | G | T | P | E        (powers of 1000; m is 1/1000)
    <decimalExponent> ::= e <signedNumber> | E <signedNumber>

Only unsigned numbers are accepted (a memory size is never negative). A memory quantity counts bytes; fixloop writes
the ones it computes in ``Mi`` or, when a whole number of them, ``Gi``.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

KIBI = 1024
MEBI = 1024**2
GIBI = 1024**3
MEMORY_STEP = 16 * MEBI  # computed limits are whole multiples of 16 Mi
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(text: str) -> Decimal:
    """The value of a quantity (``512Mi`` -> 536870912, ``1.5Gi``, ``1e9``, ``128974848``, ``129M``). Raises
    ``ValueError`` for anything else (a sign, a space, an unknown suffix, more than 32 characters)."""
    m = _QUANTITY.fullmatch(text) if isinstance(text, str) and len(text) <= 32 else None
    if m is None:
        raise ValueError(f"{str(text)[:40]!r} is not a Kubernetes quantity (e.g. 512Mi, 1Gi)")
    try:
        number = Decimal(m["num"])
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"{text[:40]!r} is not a Kubernetes quantity") from None
    suffix = m["suffix"] or ""
    if suffix in _BINARY:
        return number * (KIBI ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(3 * _DECIMAL[suffix])
    exponent = int(suffix[1:])
    if abs(exponent) > 30:
        raise ValueError(f"{text[:40]!r}: exponent out of range")
    return number.scaleb(exponent)


def memory_bytes(text: str) -> int:
    """A memory quantity in whole bytes, rounded up (Kubernetes rounds a fractional byte count up)."""
    return int(parse_quantity(text).to_integral_value(rounding=ROUND_CEILING))


def round_up_memory(n_bytes: int | float | Decimal) -> int:
    """The smallest whole multiple of ``MEMORY_STEP`` (16 Mi) at or above ``n_bytes`` (at least one step)."""
    value = Decimal(str(n_bytes)) if not isinstance(n_bytes, Decimal) else n_bytes
    steps = (value / MEMORY_STEP).to_integral_value(rounding=ROUND_CEILING)
    return int(max(steps, 1)) * MEMORY_STEP


def format_memory(n_bytes: int) -> str:
    """A whole number of bytes as a quantity: ``Gi`` when a whole number of Gi, else ``Mi``, ``Ki`` or bytes,
    the first that is exact (``parse_quantity(format_memory(n)) == n``)."""
    if n_bytes < 0:
        raise ValueError("a memory size is not negative")
    for unit, size in (("Gi", GIBI), ("Mi", MEBI), ("Ki", KIBI)):
        if n_bytes and n_bytes % size == 0:
            return f"{n_bytes // size}{unit}"
    return str(n_bytes)


def show_bytes(n_bytes: float) -> str:
    """Bytes for a reader: ``812.4 MiB``, ``1.27 GiB``."""
    if n_bytes >= GIBI:
        return f"{n_bytes / GIBI:.2f} GiB"
    return f"{n_bytes / MEBI:.1f} MiB"
