"""Every side effect of the loop, one module per stage (triage, work_item, plan, merge_request, deploy, verify), each
activity idempotent with explicit timeouts; the vendor is the integration's name (Jira, GitLab, Flux, Datadog)."""
