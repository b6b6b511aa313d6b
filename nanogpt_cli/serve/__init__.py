"""``nanogpt serve``: a model behind OpenAI's completions API.

- ``protocol``: request checking, response and error bodies (no web framework);
- ``engine``: continuous batching over one KV cache, on a thread of its own;
- ``app``: the ASGI app (Starlette) between HTTP and the engine;
- ``server``: load the checkpoint, bind the address, run uvicorn.

The web stack (Starlette and uvicorn, the ``serve`` extra) is imported by ``app`` and
``server.serve`` only, so importing this package costs nothing.
"""
