"""The control-plane API served by ``functions/api`` (one Lambda behind an HTTP API).

``stratoflow.api.app.get_app()`` is the Powertools resolver (middleware, error statuses, OpenAPI
settings); ``routes/`` holds the routes, one Powertools ``Router`` per noun; ``errors`` is the
error body's shape, ``_shared`` what the route modules share, ``_parsing`` the parsing of the
engine's free-form runs. Nothing is imported here.
"""
