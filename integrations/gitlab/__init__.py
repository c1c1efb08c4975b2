"""GitLab: security report parsing (``security_report``)."""
