"""Transport: thin HTTP and WebSocket handlers over the application layer."""
