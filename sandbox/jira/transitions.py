"""Workflow transitions: list the available ones, do one (Done sets ``resolution``, Reopen clears it)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import Response

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import API, STATUSES, TRANSITIONS, JiraError, jira_time

router = APIRouter()


@router.get(API + "/issue/{key}/transitions")
def list_transitions(ver: str, key: str, transitionId: str | None = None, jira: Jira = J) -> dict[str, Any]:
    with jira.store.lock:
        issue = jira.find(key)
    out = [{"id": tid, "name": name, "to": jira.status_json(jira.version(ver), to), "hasScreen": False,
            "isGlobal": False, "isInitial": False, "isAvailable": True, "isConditional": False, "isLooped": False}
           for tid, (name, to, sources) in TRANSITIONS.items()
           if issue["status"] in sources and transitionId in (None, tid)]
    return {"expand": "transitions", "transitions": out}


@router.post(API + "/issue/{key}/transitions", status_code=204)
def do_transition(ver: str, key: str, body: Annotated[dict[str, Any], Body()], jira: Jira = J) -> Response:
    jira.version(ver)
    tid = str((body.get("transition") or {}).get("id", ""))
    with jira.store.lock:
        issue = jira.find(key)
        if tid not in TRANSITIONS or issue["status"] not in TRANSITIONS[tid][2]:
            raise JiraError(400, f"Transition id '{tid}' is not valid for this issue.")
        draft = {**issue, "labels": list(issue["labels"]), "comments": list(issue["comments"])}
        errors: dict[str, str] = {}
        jira.apply_update(ver, draft, body.get("update") or {}, errors)
        if errors:
            raise JiraError(400, errors=errors)
        now = jira_time(jira.sb.clock())
        to = TRANSITIONS[tid][1]
        done = STATUSES[to][2] == "done"
        draft.update(status=to, status_changed=now, updated=now, resolution="Done" if done else None,
                     resolutiondate=now if done else None)
        issue.update(draft)
        jira.store.save()
    return Response(status_code=204)
