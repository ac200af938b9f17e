"""The server as a whole: configuration, building it from the configuration, the service, worker processes, the reactor."""
