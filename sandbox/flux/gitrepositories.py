"""The ``GitRepository`` source (``source.toolkit.fluxcd.io/v1``) ``flux-system/flux-system``."""

from fixloop.sandbox.flux.objects import resource_router

router = resource_router("gitrepositories")
