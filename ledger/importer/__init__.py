"""`ledger import FILE`: a JSON Lines file of envelopes recorded through the writer, like any event.

- reading: the file as a stream of numbered lines, each an event or the reason it is none;
- recording: batches through the writer, in order, with retries, and the summary of outcomes;
- writers: which writer: the running service's writer process, or one of this process;
- progress: a bar on a terminal, else a line every so often;
- cli: the command, its exit codes and its summary.
"""
