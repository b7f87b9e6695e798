"""The gateway's storage: SQL is the system of record, Redis carries guards, sessions and queues."""
