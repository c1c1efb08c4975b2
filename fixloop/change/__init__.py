"""Change planning: from a work item to typed, validated edits of the GitOps repository and the MR text.

Pure code (no network, git or Temporal): ``plan()`` locates the fix (``locate``), picks versions (``versions``),
applies typed operations (``ops``, ``edit``) and validates them against the policy (``policy``); ``mr`` writes the
merge request a reviewer reads.
"""

from fixloop.change.locate import MappingRepo, NotFixable, RepoView
from fixloop.change.ops import Operation, PolicyViolation
from fixloop.change.plan import NotLocated, Plan, TagLookup, plan
from fixloop.change.policy import Policy, load_policy

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
