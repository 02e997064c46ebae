"""Shared by the generation benchmarks: a streamer that stamps when each new token arrives."""
import time


class Stamps:
    """A streamer (transformers' put/end protocol) that records when each new token arrives."""

    def __init__(self):
        self.times = []
        self.prompt_seen = False
        self.start = time.perf_counter()

    def put(self, value):
        if not self.prompt_seen:  # the first put is the prompt
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self):
        pass
