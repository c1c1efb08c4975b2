"""Which version to move to: the lowest fixing every advisory (by the ecosystem's own ordering), and the newest
image tag of the same line and variant; what makes a bump breaking (a new major, a 0.x minor, a pre-release), the
release lines it skips, and the highest version within the policy's ``max_jump`` fixing what it can."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from fixloop.core.parsing import _UNCOMPARABLE, _qualifier, split_versions, version_key


def _key(eco: str | None, version: str) -> object:
    return version_key(eco, go_version(version) if eco == "go" else version)


def lowest_above(eco: str | None, installed: str, fixed: str | Iterable[str]) -> str | None:
    """The lowest valid candidate strictly above ``installed`` among the alternatives of one advisory's fixed
    versions (``"0.11.11, 0.11.6, 0.12"``, ``"~> 5.2.4.3, >= 6.0.3.1"``, or a list); None when there is none or the
    versions cannot be compared under ``eco``'s rules."""
    floor = _key(eco, installed)
    if floor is _UNCOMPARABLE:
        return None
    candidates = split_versions(fixed)
    if eco == "maven":  # the installed variant's line (30.0-jre for 29.0-jre, not 30.0-android) when it has one
        same = [c for c in candidates if _qualifier(c) == _qualifier(installed)]
        candidates = same if _qualifier(installed) and same else candidates
    above = []
    for candidate in candidates:
        k = _key(eco, candidate)
        if k is not _UNCOMPARABLE and k > floor:  # type: ignore[operator]
            above.append((k, candidate))
    return min(above, key=lambda kc: kc[0])[1] if above else None


_MATURITY = re.compile(r"^(alpha|beta|milestone|rc|cr|m|snapshot|final|release|ga|sp)\d*$", re.I)


def maven_variants(installed: str, version: str, advisories: Sequence[str | Sequence[str]]) -> list[str]:
    """The variants of a Maven fix fixloop does not choose between, by their ``-qualifier``: all those of ``version``'s
    release (``30.0-android``, ``30.0-jre``) when ``installed``'s qualifier names none of them (``22.0``), or
    ``[version]`` when it is another variant than ``installed``'s (``29.0-jre`` -> ``30.0-android``). Empty when the
    qualifiers agree or one is a maturity (``beta4``, ``Final``, ``SP1``: a release, not a variant)."""
    have, fix = _qualifier(installed), _qualifier(version)
    if have == fix or any(_MATURITY.match(q) for q in (have, fix) if q):
        return []
    release = version[: len(version) - len(fix)].rstrip("-") if fix else version
    siblings = {
        c
        for fixed in advisories
        for c in split_versions(fixed)
        if c != version and _qualifier(c) not in ("", fix) and c.lower().startswith(release.lower() + "-")
    }
    if siblings:
        return sorted(siblings | {version})
    return [version] if have and fix else []


def required_version(eco: str | None, installed: str, advisories: Sequence[str | Sequence[str]]) -> str | None:
    """The lowest version fixing every advisory: the highest of each advisory's lowest fix above ``installed``.
    None when one advisory has no usable fix (the package is then not fixable by a bump)."""
    needs = []
    for fixed in advisories:
        v = lowest_above(eco, installed, fixed)
        if v is None:
            return None
        needs.append((_key(eco, v), v))
    return max(needs, key=lambda kv: kv[0])[1] if needs else None


_GO_MAJOR_SUFFIX = re.compile(r"/v\d+$")


def go_version(version: str, module: str | None = None) -> str:
    """A Go module version as go.mod writes it: a leading ``v``, and ``+incompatible`` for a v2+ version of a
    module whose path has no ``/vN`` suffix (``github.com/docker/distribution v2.8.0+incompatible``)."""
    v = version if version.startswith("v") else "v" + version
    if module is not None and "+incompatible" not in v and not _GO_MAJOR_SUFFIX.search(module):
        if not module.startswith("gopkg.in/") and _major(v) >= 2:
            v += "+incompatible"
    return v


def _major(version: str) -> int:
    m = re.match(r"v?(\d+)", version)
    return int(m.group(1)) if m else 0


def _release(version: str) -> tuple[int, ...]:
    m = re.match(r"v?(\d+(?:\.\d+)*)", version)
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def _prerelease(eco: str | None, version: str) -> bool:
    """Whether ``version`` is a pre-release by ``eco``'s rules (PEP 440 for PyPI, its dev releases included; a
    ``-alpha``/``-beta``/``-rc``/``-pre`` suffix, and Maven's ``.M1``, ``-CR2``, ``-SNAPSHOT``, elsewhere)."""
    if eco == "pypi":
        k = version_key("pypi", version)
        return k is not _UNCOMPARABLE and bool(getattr(k, "is_prerelease", False))
    return bool(
        re.search(r"-(alpha|beta|rc|pre)", version, re.I)
        or (eco == "maven" and re.search(r"[.-](alpha|beta|rc|cr|m)\d*([.-]|$)|-snapshot$", version, re.I))
    )


JumpKind = Literal["major", "0.x minor"]


def breaking(eco: str | None, current: str, new: str) -> tuple[JumpKind | None, bool]:
    """What makes a bump breaking: ``("major", _)`` for a new major version, ``("0.x minor", _)`` for a new minor
    of a 0.x version (breaking by semver), ``(None, _)`` otherwise; the second value says whether ``new`` is a
    pre-release. Versions without a leading number (``latest``) are neither."""
    a, b = _release(current), _release(new)
    kind: JumpKind | None = None
    if a and b and b[0] > a[0]:
        kind = "major"
    elif a and b and a[0] == 0 and b[0] == 0 and b[1:2] > a[1:2]:
        kind = "0.x minor"
    return kind, _prerelease(eco, new)


def risk(eco: str | None, current: str, new: str) -> str | None:
    """A reviewer's warning for a bump, or None: a new major version, a 0.x minor change (breaking by semver),
    or a pre-release target."""
    kind, prerelease = breaking(eco, current, new)
    notes = []
    if kind == "major":
        notes.append(f"major version change {_release(current)[0]} -> {_release(new)[0]}")
    elif kind == "0.x minor":
        notes.append("0.x minor version change (may break the API)")
    if prerelease:
        notes.append("the fixed version is a pre-release")
    return "; ".join(notes) or None


# ---------------------------------------------------------------- breaking jumps and the policy's max_jump

MaxJump = Literal["major", "minor", "patch"]
MAX_JUMPS: tuple[MaxJump, ...] = ("major", "minor", "patch")
LINES_MAX = 12  # skipped release lines named per bump (the others are counted)
LISTED_MAX = 5_000  # versions of a registry's release list considered


def breaking_line(version: str) -> tuple[int, ...] | None:
    """The release line a breaking change starts: ``(major,)``, or ``(0, minor)`` for a 0.x version (``0.11.3``
    -> ``(0, 11)``, ``2.4.1`` -> ``(2,)``); None without a leading number. Lines order as tuples
    (``(0, 12) < (1,) < (2,)``)."""
    r = _release(version)
    if not r:
        return None
    return (0, r[1] if len(r) > 1 else 0) if r[0] == 0 else r[:1]


def line_name(line: tuple[int, ...]) -> str:
    """A release line as a reviewer reads it: ``0.12`` for ``(0, 12)``, ``3.x`` for ``(3,)``."""
    return f"0.{line[1]}" if line[0] == 0 and len(line) > 1 else f"{line[0]}.x"


def _minor_line(version: str) -> tuple[int, ...] | None:
    r = _release(version)
    return (r + (0,))[:2] if r else None


def within(max_jump: MaxJump, current: str, version: str) -> bool:
    """Whether a bump from ``current`` to ``version`` stays within the policy's ``max_jump``: ``major`` allows any,
    ``minor`` the same breaking line (``breaking_line``: the same major, and for 0.x the same minor), ``patch`` the
    same major and minor. False when either version has no leading number (and ``max_jump`` is not ``major``)."""
    if max_jump == "major":
        return True
    line = breaking_line if max_jump == "minor" else _minor_line
    have = line(current)
    return have is not None and have == line(version)


def skipped_lines(eco: str | None, current: str, new: str, versions: Iterable[str]) -> list[tuple[int, ...]]:
    """The release lines (``breaking_line``) strictly between ``current``'s and ``new``'s that ``versions`` name,
    pre-releases left out (a line without a final release was never released), sorted."""
    lo, hi = breaking_line(current), breaking_line(new)
    if lo is None or hi is None:
        return []
    found = set()
    for v in itertools.islice(versions, LISTED_MAX):
        line = breaking_line(v) if isinstance(v, str) and len(v) <= 128 else None
        if line is not None and lo < line < hi and not _prerelease(eco, v):
            found.add(line)
    return sorted(found)


def _fixes(
    eco: str | None, version: object, line: tuple[int, ...] | None, fixed: Sequence[tuple[object, str]]
) -> bool:
    """Whether a version (its key and ``_minor_line``) is fixed by one advisory whose fixed versions (keys and
    texts) are ``fixed``: it is at or above them all, or the highest of them at or below it is of its own
    major.minor line (``1.2.5, 1.3.2``: 1.2.9 and 1.3.4 are fixed, 1.3.0 is not)."""
    below = [(k, v) for k, v in fixed if not k > version]  # type: ignore[operator]
    if not below:
        return False
    if len(below) == len(fixed):
        return True
    highest = max(below, key=lambda kv: kv[0])[1]
    return line is not None and _minor_line(highest) == line


@dataclass(frozen=True)
class Limited:
    """The bump ``best_within`` proposes: ``version`` (None: no version within the jump fixes any advisory), the
    indexes of the advisories it leaves open (``held``) and, per held advisory, the lowest version fixing it
    (``needs``, None when it names none above the installed version)."""

    version: str | None
    held: tuple[int, ...]
    needs: tuple[str | None, ...]


def best_within(
    eco: str | None,
    installed: str,
    advisories: Sequence[str | Sequence[str]],
    max_jump: MaxJump,
    listed: Sequence[str] | None = None,
) -> Limited:
    """The highest version above ``installed`` within ``max_jump`` (``within``) that fixes the most of
    ``advisories`` (each its fixed versions, as ``lowest_above`` reads them; fixed as ``_fixes`` says), from the
    registry's release list ``listed`` (pre-releases left out) when it is known, else from the versions the
    advisories name. Never raises; never proposes a version outside the jump or not above ``installed``."""
    floor = _key(eco, installed)
    fixed = []
    for adv in advisories:
        alts = [(k, c) for c in split_versions(adv) if (k := _key(eco, c)) is not _UNCOMPARABLE]
        fixed.append(alts)
    if floor is _UNCOMPARABLE:
        pool: list[str] = []
    elif listed is not None:
        pool = [v for v in itertools.islice(listed, LISTED_MAX) if isinstance(v, str) and len(v) <= 128]
        pool = [v for v in pool if not _prerelease(eco, v)]
    else:
        pool = list(dict.fromkeys(c for alts in fixed for _, c in alts))
        if eco == "maven" and _qualifier(installed):  # the installed variant's line, as lowest_above keeps it
            pool = [c for c in pool if _qualifier(c) == _qualifier(installed)]
    best: tuple[int, object, str, tuple[int, ...]] | None = None
    for candidate in pool:
        k = _key(eco, candidate)
        if k is _UNCOMPARABLE or not k > floor or not within(max_jump, installed, candidate):  # type: ignore[operator]
            continue
        line = _minor_line(candidate)
        done = tuple(i for i, alts in enumerate(fixed) if _fixes(eco, k, line, alts))
        if done and (best is None or (len(done), k) > (best[0], best[1])):  # type: ignore[operator]
            best = (len(done), k, candidate, done)
    fixed_by = set(best[3]) if best else set()
    held = tuple(i for i in range(len(advisories)) if i not in fixed_by)
    needs = tuple(lowest_above(eco, installed, advisories[i]) for i in held)
    return Limited(version=best[2] if best else None, held=held, needs=needs)


_TAG = re.compile(r"^(?P<v>v?)(?P<nums>\d+(?:\.\d+)*)(?P<suffix>(?:[-_][A-Za-z0-9._-]*)?)$")
_DATE = re.compile(r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])")  # YYYYMMDD


def _line(nums: tuple[int, ...], digits: str) -> tuple[int, ...] | None:
    """The components a tag's line shares: all but the last; a date tag (``20221118``, a rolling release's
    snapshot: wolfi's version, Docker Hub's ``alpine:20230329``) is a line of its own; None for one number."""
    if len(nums) >= 2:
        return nums[:-1]
    return () if _DATE.fullmatch(digits) else None


def newest_tag(current: str, tags: Iterable[str]) -> str | None:
    """The newest tag of ``current``'s line and variant: same number of numeric components, same leading
    components (all but the last), same suffix (``-alpine``, ``-slim``). ``3.9.4`` -> ``3.9.6`` (not ``3.10.0``),
    ``10.2`` -> ``10.13``, ``14.17-alpine`` -> ``14.21-alpine``; a date tag to the newest later date
    (``20221118`` -> ``20230201``). None when ``current`` has no line (a single number that is not a date, ``latest``,
    a codename) or nothing newer is listed."""
    m = _TAG.match(current)
    if not m:
        return None
    nums = tuple(int(x) for x in m["nums"].split("."))
    line = _line(nums, m["nums"])
    if line is None:
        return None
    best: tuple[tuple[int, ...], str] | None = None
    for tag in tags:
        t = _TAG.match(tag) if isinstance(tag, str) and len(tag) <= 128 else None
        if not t or t["v"] != m["v"] or t["suffix"] != m["suffix"]:
            continue
        n = tuple(int(x) for x in t["nums"].split("."))
        if len(n) != len(nums) or _line(n, t["nums"]) != line:
            continue
        if n > nums and (best is None or (n, tag) > best):
            best = (n, tag)
    return best[1] if best else None


_LINE = re.compile(r"^\d+(?:\.\d+)*$")


def newest_on_line(
    current: str, line: str, tags: Iterable[str], codenames: tuple[str, str] | None = None
) -> str | None:
    """The tag to move ``current`` to another release ``line`` (an ended line's migration: ``fixloop.core.lifecycle``):
    the newest tag on ``line`` (``13`` or ``13.x``) in ``current``'s variant (same leading ``v``, same suffix:
    ``-slim``, ``-alpine``), with ``current``'s number of components when the registry lists one (``10.2`` ->
    ``13.1``, ``3.9.4`` -> ``3.22.2``, ``18.04`` -> ``22.04``), else the most precise. A codename tag
    (``buster-slim``) moves to the target's codename in the same variant (``trixie-slim``) when listed
    (``codenames``: the ended line's and the target's, lower case). None when no such tag is listed or ``line`` is
    not numeric."""
    listed = [t for t in tags if isinstance(t, str) and len(t) <= 128]
    m = _TAG.match(current)
    if m is None:
        if codenames is None:
            return None
        old, new = codenames
        if not (current.lower() == old or current.lower().startswith(old + "-")):
            return None
        want = new + current[len(old) :]
        return want if want in listed else None
    if not _LINE.match(line):
        return None
    on = tuple(int(x) for x in line.split("."))
    count = len(m["nums"].split("."))
    best: tuple[tuple[bool, int, tuple[int, ...]], str] | None = None
    for tag in listed:
        t = _TAG.match(tag)
        if not t or t["v"] != m["v"] or t["suffix"] != m["suffix"]:
            continue
        nums = tuple(int(x) for x in t["nums"].split("."))
        if nums[: len(on)] != on:
            continue
        key = (len(nums) == count, len(nums), nums)
        if best is None or (key, tag) > best:
            best = (key, tag)
    return best[1] if best else None
