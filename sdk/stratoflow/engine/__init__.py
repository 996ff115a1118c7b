"""The engines that run flow runs and task runs (``flow_engine``, ``task_engine``).

They live apart from ``@flow``/``@task`` so the objects users touch stay small; the engines take
the Flow or Task object as a parameter, and every state change goes through
``stratoflow.control.transitions``.
"""
