"""The API's HTTP server: uvicorn in a thread of `ebbtide serve`, beside the scheduler loop."""

from __future__ import annotations

import threading

import uvicorn
from fastapi import FastAPI

from ebbtide.errors import UsageError

# Connections still open when serve stops get this long to finish.
SHUTDOWN_S = 5


class ApiServer:
    """Starts listening on `start()`, which returns once connections are accepted."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host, self.port = host, port
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,  # the serve log is one line per sync event
            log_level="warning",
            timeout_graceful_shutdown=SHUTDOWN_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ebbtide-api", daemon=True)

    def start(self) -> str:
        """The URL it listens on (the port chosen when asked for 0)."""
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise UsageError(
                    f"the API could not listen on {self.host}:{self.port} (see the line above);"
                    " pick another --host or --port"
                )
            self._thread.join(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop accepting; returns once the server has closed."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SHUTDOWN_S + 5)
