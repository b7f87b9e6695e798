"""The CDI bridge (SPEC 5): financial institutions on HKMA's Commercial Data Interchange submit
signed queries, a worker releases the consented data through the same steps as the data API,
and the result goes back signed by the gateway and encrypted to the FI.

    messages.py   the FI's signed message (POST) and its polling assertion (GET), verified
    queries.py    submit (stored with its job in one transaction), the FI's view of a query
    views.py      the HTTP edge: /cdi/v1/queries
The job itself is ``gateway/jobs/cdi_query.py``; callbacks ``gateway/jobs/callbacks.py``.
"""
