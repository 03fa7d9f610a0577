"""`mlproj serve`: an HTTP app that answers top-k predictions from one checkpoint (the api image runs it).

Split so each part can grow on its own: `predictor` holds the model and its preprocessing, `app` the routes,
`command` the command line and the server.
"""

from mlproj.serve.command import main

__all__ = ["main"]
