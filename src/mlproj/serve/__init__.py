"""`mlproj serve`: an HTTP app that answers top-k predictions from one checkpoint (the api image runs it).

Split so each part can grow on its own: `predictor` holds the model and its preprocessing, `batching` the queue that
runs concurrent requests as one forward pass, `app` the routes, `server` uvicorn with a graceful SIGTERM, `command`
the command line.
"""

from mlproj.serve.command import main

__all__ = ["main"]
