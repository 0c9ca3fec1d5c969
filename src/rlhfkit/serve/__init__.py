"""`rlhf serve`: the OpenAI chat-completions API over the project's sampler.

`engine.py` batches the queued requests of one model through `models.sampler.sample` (a worker thread per model),
`text.py` turns a choice's tokens into text (stop strings, held-back partial characters while streaming), `api.py`
is the FastAPI app (the OpenAI request and response shapes, errors, limits, the API key) and `server.py` loads the
models and runs uvicorn.
"""
