"""The contracts between the workflows and the activities, per stage: every workflow input/state, signal, update,
query and activity input/output model. They import only the core (``fixloop.core``), so a workflow, an activity, the
gateway and a test can share them without importing each other."""
