"""The API's routes, one Powertools ``Router`` per noun (``router`` in each module), included by
``stratoflow.api.app.build_app``. A route parses (Powertools validates the path, query and body
from its annotations), calls ``stratoflow.control`` and returns; the domain errors it lets through
are mapped to statuses in ``app``. Every route of a module carries the module's ``TAG``.

No ``from __future__ import annotations`` in these modules: Powertools reads the routes'
annotations (and ``app`` the body's) as objects when they are included."""
