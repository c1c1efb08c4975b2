"""``Kustomization`` objects (``kustomize.toolkit.fluxcd.io/v1``), with the status the reconciler sets."""

from fixloop.sandbox.flux.objects import resource_router

router = resource_router("kustomizations")
