"""Every side effect of the loop, one module per concern, each activity idempotent with explicit timeouts."""
