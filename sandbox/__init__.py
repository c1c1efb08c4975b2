"""fixloop's sandbox: local stand-ins for GitLab (on real git), Jira, Datadog, Flux and a container registry.

Each stand-in speaks the real service's REST/webhook format, so the official clients (``python-gitlab``, ``jira``,
``datadog-api-client``, plain HTTP for the Kubernetes API) work against it unmodified. All of them run in one
process (``fixloop sandbox up``), each mounted under its own path prefix of one HTTP server (see
``fixloop.sandbox.app``).

The sandbox is used by ``make demo`` and the tests; workflows, activities and integrations never import it.
"""
