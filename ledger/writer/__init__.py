"""The write path: one writer per instance decides and records batches of events (group commit).

Which module holds which rule (DESIGN.md has the same map):
- submission: what a caller hands in, the writer's limits, and its two kinds of failure for callers
  (WriterUnavailable: re-send later; SubmissionFailed: a retry will not change it);
- batching: how queued submissions become batches, and the retry policy for a failed batch;
- deciding: the state a batch is decided on (from memory or the database) and the decisions;
- recording: encoding the entries, their projections, and the one-statement batch;
- answers: each caller's results once its batch has committed;
- facade: the Writer, which runs one batch through deciding and recording;
- in_flight: a batch sent to PostgreSQL while the next one is decided;
- expiry: the whole rule for expiring reservations that are due;
- wire: the messages between the writer process and its clients, one encoder and one decoder;
- server: the writer process's socket server, with a bounded outbox per client;
- remote: the clients in the serving processes (async for HTTP, blocking for threads);
- process: the writer process, its start and its supervisor;
- thread: the writer as a thread of this process (the embedded default and tests).
"""
