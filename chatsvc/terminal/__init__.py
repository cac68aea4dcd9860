"""The terminal client, ``chatsvc chat``: a client of the HTTP API, run by the command line.

- :mod:`.client`: ``ChatClient``, the session over one WebSocket, and ``run``;
- :mod:`.rest`: the REST calls, log in, and the client's one-line errors;
- :mod:`.frames`: the server's frames decoded; :mod:`.screen`: what is printed;
- :mod:`.stdin`: lines read without blocking; :mod:`.commands`: the prompt's commands;
- :mod:`.branches`: ``/retry``, ``/edit``, ``/branches``, ``/branch`` on the chat's tree;
- :mod:`.current`: the open chat as last seen, and what a ``chat_updated`` changes.

Nothing is imported here, so the command line reads :mod:`.commands` for its help
without loading the client (aiohttp).
"""
