"""The jobs an outbox row may name: ``name -> function(gw, **ids)``. A job is a module-level
function that takes the gateway and ids, re-reads what it needs from the ledger, and may run
more than once with the same effect."""
from __future__ import annotations

from . import cdi_query, sweeps

JOBS = {
    "sweep.expire_consents": sweeps.expire_consents,
    "cdi.run_query": cdi_query.run_query,
}

# What to do when a job has failed every try it is given (or its last worker died): a job
# whose caller waits on an outcome ends it here (the same ids as the job).
GIVE_UP = {
    "cdi.run_query": cdi_query.give_up,
}
