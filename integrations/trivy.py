"""Trivy JSON reports -> signals.

Formats (Trivy's ``pkg/types/report.go`` and ``pkg/k8s/report``; docs: trivy.dev "Reporting" > JSON):
  * legacy (< 0.20): a top-level array of results ``[{Target, Type, Vulnerabilities}]``;
  * SchemaVersion 2 (0.20+): ``{SchemaVersion, ArtifactName, ArtifactType, Metadata, Results[]}``; the
    current form adds ``CreatedAt``, ``ReportID``, ``PkgIdentifier{PURL}``, ``Status``, ...;
  * Kubernetes, legacy: ``{ClusterName, Vulnerabilities: [{Namespace, Kind, Name, Results}],
    Misconfigurations: [...]}``;
  * Kubernetes, current: ``{ClusterName, Resources: [{Namespace, Kind, Name, Results}]}``.
Each result may carry ``Vulnerabilities``, ``Misconfigurations`` (only ``Status: FAIL`` ones are findings)
and ``Secrets`` (the matched text is never copied into a signal). ``FixedVersion`` is omitted when there is
no fix and may list several versions joined by ", ".
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import Field

from fixloop.core.models import Category, Kind, Signal, Source, fingerprint
from fixloop.core.parsing import (
    ParseContext,
    WireModel,
    aware,
    ecosystem,
    ecosystem_from_purl,
    opt,
    resolve_fix,
    severity,
    split_versions,
    title,
)


class PkgIdentifierModel(WireModel):
    PURL: str | None = None


class Vulnerability(WireModel):
    VulnerabilityID: str | None = None
    VendorIDs: list[str] | None = None
    PkgName: str | None = None
    PkgIdentifier: PkgIdentifierModel | None = None
    InstalledVersion: str | None = None
    FixedVersion: str | None = None
    Status: str | None = None
    Severity: str | None = None
    Title: str | None = None
    PrimaryURL: str | None = None


class CauseModel(WireModel):
    Resource: str | None = None
    StartLine: int | None = None
    EndLine: int | None = None


class Misconfiguration(WireModel):
    ID: str | None = None
    AVDID: str | None = None
    Title: str | None = None
    Message: str | None = None
    Severity: str | None = None
    Status: str | None = None
    PrimaryURL: str | None = None
    CauseMetadata: CauseModel | None = None


class Secret(WireModel):
    RuleID: str | None = None
    Category: str | None = None
    Severity: str | None = None
    Title: str | None = None
    StartLine: int | None = None
    EndLine: int | None = None
    # ``Match`` and ``Code`` hold (masked) secret text: deliberately not modelled.


class Result(WireModel):
    Target: str = ""
    Class: str | None = None
    Type: str | None = None
    Vulnerabilities: list[Vulnerability] | None = None
    Misconfigurations: list[Misconfiguration] | None = None
    Secrets: list[Secret] | None = None


class OSModel(WireModel):
    Family: str | None = None
    Name: str | None = None


class MetadataModel(WireModel):
    OS: OSModel | None = None
    RepoTags: list[str] | None = None


class K8sResource(WireModel):
    Namespace: str | None = None
    Kind: str | None = None
    Name: str | None = None
    Results: list[Result] | None = None


class Report(WireModel):
    """SchemaVersion 2 report, or a Kubernetes report (``ClusterName`` set)."""

    SchemaVersion: int | None = None
    ArtifactName: str | None = None
    ArtifactType: str | None = None
    CreatedAt: datetime | None = None
    Metadata: MetadataModel | None = None
    Results: list[Result] | None = None
    ClusterName: str | None = None
    Resources: list[K8sResource] | None = None
    # Kubernetes legacy form: lists of resources, not of vulnerabilities.
    k8s_vulnerabilities: list[K8sResource] | None = Field(default=None, alias="Vulnerabilities")
    k8s_misconfigurations: list[K8sResource] | None = Field(default=None, alias="Misconfigurations")


_OS_SUFFIX = re.compile(r"^(?P<artifact>.*\S)\s+\((?P<os>[^()]*)\)$")
_OS_TYPES = frozenset(
    "alpine wolfi chainguard debian ubuntu redhat centos amazon oracle photon alma almalinux rocky fedora "
    "suse opensuse opensuse-leap opensuse.leap opensuse.tumbleweed sles cbl-mariner azurelinux".split()
)


def matches(doc: object) -> bool:
    """True for any of Trivy's JSON forms (see module doc)."""
    if isinstance(doc, list):
        return bool(doc) and isinstance(doc[0], dict) and "Target" in doc[0]
    if not isinstance(doc, dict):
        return False
    if "SchemaVersion" in doc or ("ArtifactName" in doc and "Results" in doc):
        return True
    return "ClusterName" in doc and ("Resources" in doc or "Vulnerabilities" in doc or "Misconfigurations" in doc)


def parse(doc: object, ctx: ParseContext) -> None:
    """Emit one signal per distinct finding of a Trivy report into ``ctx``.
    Raises pydantic ``ValidationError`` when a field has the wrong type."""
    if isinstance(doc, list):
        results = [Result.model_validate(r) for r in doc]
        for i, result in enumerate(results):
            _result(result, ctx, artifact=None, observed=ctx.received_at, path=(i,), target_prefix="")
        return
    report = Report.model_validate(doc)
    observed = aware(report.CreatedAt) or ctx.received_at
    if report.ClusterName is not None:
        groups = (
            ("Resources", report.Resources),
            ("Vulnerabilities", report.k8s_vulnerabilities),
            ("Misconfigurations", report.k8s_misconfigurations),
        )
        for key, resources in groups:
            for i, res in enumerate(resources or []):
                prefix = "/".join(p for p in (res.Namespace, res.Kind, res.Name) if p) + "/"
                for j, result in enumerate(res.Results or []):
                    _result(
                        result,
                        ctx,
                        artifact=report.ClusterName,
                        observed=observed,
                        path=(key, i, "Results", j),
                        target_prefix=prefix,
                    )
        return
    artifact = report.ArtifactName or next((t for t in (report.Metadata and report.Metadata.RepoTags) or [] if t), None)
    for i, result in enumerate(report.Results or []):
        _result(result, ctx, artifact=artifact, observed=observed, path=("Results", i), target_prefix="")


def _result(
    result: Result,
    ctx: ParseContext,
    *,
    artifact: str | None,
    observed: datetime,
    path: tuple[str | int, ...],
    target_prefix: str,
) -> None:
    raw_target = result.Target
    # Kubernetes config results are named "<Kind>/<Name>", which the resource prefix already says.
    named = target_prefix == raw_target + "/" or target_prefix.endswith("/" + raw_target + "/")
    target = target_prefix[:-1] if named else target_prefix + raw_target
    m = _OS_SUFFIX.match(raw_target)
    is_os = result.Class == "os-pkgs" or (result.Class is None and (result.Type or "").lower() in _OS_TYPES)
    # An OS result's target is "<image> (<os> <version>)": the image part names the artifact when the
    # report does not (legacy arrays), and always in Kubernetes reports (the workload's image).
    if is_os and m and (artifact is None or target_prefix):
        artifact = m.group("artifact")
    eco_default = ecosystem(result.Type)
    artifact_text, target_text = opt(artifact), opt(target)

    skipped: list[str] = []
    vuln_ref = ctx.pointer(*path, "Vulnerabilities")
    for k, v in enumerate(result.Vulnerabilities or []):
        if not v.VulnerabilityID:
            skipped.append(v.PkgName or "?")
            continue
        purl = v.PkgIdentifier.PURL if v.PkgIdentifier else None
        eco = eco_default or ecosystem_from_purl(purl)
        fixed = split_versions(v.FixedVersion)
        status = opt(v.Status) or ("fixed" if fixed else None)
        fixed_version, fix_status = resolve_fix(eco, v.InstalledVersion, fixed, status)
        ctx.emit(
            Signal(
                fingerprint=fingerprint(
                    "trivy", "vulnerability", artifact, target, v.VulnerabilityID, v.PkgName, v.InstalledVersion
                ),
                source=Source.TRIVY,
                kind=Kind.FINDING,
                title=title(_vuln_title(v)),
                severity=severity(v.Severity),
                observed_at=observed,
                raw_ref=f"{vuln_ref}/{k}",
                url=opt(v.PrimaryURL),
                category=Category.VULNERABILITY,
                advisory_id=opt(v.VulnerabilityID),
                aliases=[a for a in (opt(x) for x in v.VendorIDs or []) if a],
                package=opt(v.PkgName),
                installed_version=opt(v.InstalledVersion),
                fixed_version=fixed_version,
                fixed_versions=fixed,
                fix_status=fix_status,
                ecosystem=eco,
                artifact=artifact_text,
                target=target_text,
                purl=opt(purl),
            )
        )
    if skipped:
        ctx.warn(
            f"{vuln_ref}: skipped {len(skipped)} record(s) without VulnerabilityID "
            f"(package {opt(skipped[0], 80)}): not findings"
        )

    for k, mc in enumerate(result.Misconfigurations or []):
        if mc.Status not in (None, "FAIL"):
            continue  # PASS / EXCEPTION are not findings
        rule = mc.ID or mc.AVDID
        cause = mc.CauseMetadata or CauseModel()
        line = cause.StartLine if cause.StartLine else None
        ctx.emit(
            Signal(
                fingerprint=fingerprint(
                    "trivy",
                    "misconfiguration",
                    artifact,
                    target,
                    rule,
                    cause.Resource,
                    mc.Message if mc.Message else f"{cause.StartLine}-{cause.EndLine}",
                ),
                source=Source.TRIVY,
                kind=Kind.FINDING,
                title=title(f"{rule}: {mc.Title or mc.Message or 'misconfiguration'} ({raw_target})"),
                severity=severity(mc.Severity),
                observed_at=observed,
                raw_ref=ctx.pointer(*path, "Misconfigurations", k),
                url=opt(mc.PrimaryURL),
                category=Category.MISCONFIGURATION,
                advisory_id=opt(rule),
                artifact=opt(artifact),
                target=opt(target),
                location=opt(f"{raw_target}:{line}" if line else raw_target),
            )
        )

    for k, s in enumerate(result.Secrets or []):
        ctx.emit(
            Signal(
                fingerprint=fingerprint("trivy", "secret", artifact, target, s.RuleID, s.StartLine, s.EndLine),
                source=Source.TRIVY,
                kind=Kind.FINDING,
                title=title(
                    f"{s.Title or s.RuleID or 'secret'} in {raw_target}" + (f":{s.StartLine}" if s.StartLine else "")
                ),
                severity=severity(s.Severity),
                observed_at=observed,
                raw_ref=ctx.pointer(*path, "Secrets", k),
                category=Category.SECRET,
                advisory_id=opt(s.RuleID),
                artifact=opt(artifact),
                target=opt(target),
                location=opt(f"{raw_target}:{s.StartLine}" if s.StartLine else raw_target),
            )
        )


def _vuln_title(v: Vulnerability) -> str:
    head = f"{v.VulnerabilityID} in {v.PkgName} {v.InstalledVersion or ''}".rstrip()
    return f"{head}: {v.Title}" if v.Title else head
