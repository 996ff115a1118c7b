"""The control-plane API served by ``functions/api`` (one Lambda behind an HTTP API).

``stratoflow.api.app.get_app()`` is the Powertools resolver with every route; the modules beside
it hold the request/response models (``schemas``), the operations over the store
(``operations``) and the error shape (``errors``). Nothing is imported here, so importing the
handler stays cheap.
"""
