"""Issue entity properties: list, get, set (201 new / 200 replaced), delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import Response

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import API, JiraError

router = APIRouter()


@router.get(API + "/issue/{key}/properties")
def list_properties(ver: str, key: str, jira: Jira = J) -> dict[str, Any]:
    with jira.store.lock:
        issue = jira.find(key)
        return {"keys": [{"self": jira.api(jira.version(ver), f"/issue/{issue['id']}/properties/{p}"), "key": p}
                         for p in issue["properties"]]}


@router.get(API + "/issue/{key}/properties/{prop}")
def get_property(ver: str, key: str, prop: str, jira: Jira = J) -> dict[str, Any]:
    jira.version(ver)
    with jira.store.lock:
        props = jira.find(key)["properties"]
        if prop not in props:
            raise JiraError(404, f"The property with key '{prop}' does not exist.")
        return {"key": prop, "value": props[prop]}


@router.put(API + "/issue/{key}/properties/{prop}")
def set_property(ver: str, key: str, prop: str, body: Annotated[Any, Body()], jira: Jira = J) -> Response:
    jira.version(ver)
    if len(prop) > 255:
        raise JiraError(400, "The property key cannot be longer than 255 characters.")
    with jira.store.lock:
        props = jira.find(key)["properties"]
        status = 200 if prop in props else 201
        props[prop] = body
        jira.store.save()
    return Response(status_code=status)


@router.delete(API + "/issue/{key}/properties/{prop}", status_code=204)
def delete_property(ver: str, key: str, prop: str, jira: Jira = J) -> Response:
    jira.version(ver)
    with jira.store.lock:
        props = jira.find(key)["properties"]
        if props.pop(prop, None) is None:
            raise JiraError(404, f"The property with key '{prop}' does not exist.")
        jira.store.save()
    return Response(status_code=204)
