"""Change planning: from a work item to typed, validated edits of the GitOps repository and the MR text.

Pure code (no network, git or Temporal): ``plan()`` locates the fix (``locate``), picks versions (``versions``),
applies typed operations (``ops``, ``edit``) and validates them against the policy (``policy``); ``mr`` writes the
merge request a reviewer reads, with ``facts`` (a bumped package's role, release date and links, an image's end of
life). An incident's remediation (revert, image rollback, memory, replicas) is checked and
applied by ``remedy``, its memory figures in Kubernetes quantities (``quantity``).
"""

from fixloop.core.change.locate import MappingRepo, NotFixable, RepoView
from fixloop.core.change.ops import Operation, PolicyViolation
from fixloop.core.change.plan import NotLocated, Plan, TagLookup, plan
from fixloop.core.change.policy import Policy, load_policy

__all__ = [
    "MappingRepo",
    "NotFixable",
    "NotLocated",
    "Operation",
    "Plan",
    "Policy",
    "PolicyViolation",
    "RepoView",
    "TagLookup",
    "load_policy",
    "plan",
]
