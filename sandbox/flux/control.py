"""The sandbox's own controls: ``POST /sandbox/reconcile`` (what ``flux reconcile source git flux-system``
triggers; answers the outcome) and ``GET /sandbox/state`` (the applied-revision history, the event deliveries and
the deployed workloads)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from fixloop.sandbox.flux.objects import FLUX
from fixloop.sandbox.flux.reconciler import Flux

router = APIRouter()


@router.post("/sandbox/reconcile")
def reconcile(flux: Flux = FLUX) -> dict[str, Any]:
    return flux.reconcile()


@router.get("/sandbox/state")
def state(flux: Flux = FLUX) -> dict[str, Any]:
    with flux.store.lock:
        return json.loads(
            json.dumps(
                {
                    "history": flux.store.data["history"],
                    "deliveries": flux.store.data["deliveries"],
                    "workloads": {k: v["workloads"] for k, v in flux.store.data["kustomizations"].items()},
                }
            )
        )
