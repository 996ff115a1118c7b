"""The service layer: one module per noun, over the ``Store`` interface, raising domain errors only.

``transitions`` is the one gateway every state change of a run passes (policy, move, conditional
commit, after-commit listeners). The API's routes, the client, the executor, the worker, the
janitor and the scheduler all call these modules; none of them writes a run any other way.

No HTTP here: every function validates its input before its first write (a refused request
leaves nothing behind) and raises domain errors (``stratoflow.exceptions``) that the API maps to
a status.
"""
