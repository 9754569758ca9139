"""Ctrl-C and SIGTERM during training: finish the step, write a checkpoint, stop.

``StopRequest`` turns SIGINT/SIGTERM into a flag that the trainer polls after every
step (``callbacks.AtomicCheckpointer``): the step in flight completes, a ``step_G``
checkpoint is written, and ``TrainingInterrupted`` ends training; the CLI prints one line
and exits 130 (SIGINT) or 143 (SIGTERM). A second Ctrl-C stops at once
(``KeyboardInterrupt``; the newest checkpoint on disk is still complete). With several
ranks the flag is all-reduced every step, so all ranks stop after the same step.
"""
import signal
import threading

import paddle
import paddle.distributed as dist


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing ``checkpoint``."""

    def __init__(self, signum, checkpoint, position):
        self.signum = signum
        self.checkpoint = checkpoint
        self.position = position
        name = signal.Signals(signum).name
        where = (f"epoch {position.epoch} step {position.step}" if position is not None
                 else "before the first step")
        saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint yet"
        super().__init__(f"stopped by {name} at {where}: {saved}; "
                         f"continue with --resume auto")

    @property
    def exit_code(self):
        return 128 + self.signum


class StopRequest:
    """Context manager that records SIGINT/SIGTERM instead of raising (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = self.signum or signum

    def poll(self, collective=True):
        """The signal to stop on, or None. With ``collective`` and several ranks, the
        ranks agree (every rank must call it at the same point)."""
        if not collective or dist.get_world_size() < 2:
            return self.signum
        flag = paddle.to_tensor([self.signum or 0], dtype="int64")
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.numpy()[0]) or None
