"""fixloop: signal -> work item -> merge request -> human gate -> GitOps deploy -> verification."""

__version__ = "0.1.0"
