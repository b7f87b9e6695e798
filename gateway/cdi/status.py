"""A CDI query's states (SPEC 5): queued -> running -> done | failed."""
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
