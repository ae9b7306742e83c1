"""Measurement helpers shared by the scale benchmarks (Linux: reads ``/proc/self``).

:class:`Monitor` samples this process's resident set size every ``interval`` seconds in a
background thread and cuts the run into stages::

    monitor = Monitor()          # starts sampling
    features = FeatureSet.load(path)
    monitor.mark("load")         # closes the running stage
    ...
    monitor.stop()
    monitor.stages               # [{"stage": "load", "seconds", "cpu_seconds", "disk_read", "peak_rss"}, ...]

``take()`` gives the peak RSS since the previous ``take()``/``mark()`` without closing a stage;
``peak_between``/``cpu_between`` read the kept samples for stages whose bounds are only known
afterwards. CPU seconds count all threads of the process; ``disk_read`` is what the process
read from storage (page-cache hits excluded).
"""

from __future__ import annotations

import os
import resource
import threading
import time


def proc_status(field: str = "VmRSS") -> int:
    """A memory field of ``/proc/self/status`` in bytes (``VmRSS``: resident set now, ``VmHWM``:
    its high-water mark)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    return proc_status("VmRSS")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def disk_read_bytes() -> int:
    """Bytes this process has read from storage (page-cache hits excluded); 0 if unknown."""
    try:
        with open("/proc/self/io") as handle:
            for line in handle:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Monitor(threading.Thread):
    """Peak RSS, CPU time and disk reads of this process, per stage (see the module docstring).

    Keeps every sample as ``(perf_counter, rss bytes, cpu seconds)`` in ``samples`` and the
    1-minute load average, once a second, in ``loads`` (other processes share the CPUs)."""

    def __init__(self, interval: float = 0.05, start: bool = True):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, float]] = []
        self.loads: list[float] = []
        self.stages: list[dict] = []
        self._peak = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._t_last, self._cpu_last, self._read_last = time.perf_counter(), cpu_seconds(), disk_read_bytes()
        if start:
            self.start()

    def run(self):
        last_load = 0.0
        while not self._halt.is_set():
            now, value = time.perf_counter(), rss_bytes()
            self.samples.append((now, value, cpu_seconds()))
            with self._lock:
                self._peak = max(self._peak, value)
            if now - last_load >= 1.0:
                self.loads.append(os.getloadavg()[0])
                last_load = now
            time.sleep(self.interval)

    def take(self) -> int:
        """Peak RSS (bytes) since the previous ``take()`` or ``mark()``, this instant included."""
        value = rss_bytes()
        with self._lock:
            peak, self._peak = max(self._peak, value), value
        return peak

    def mark(self, name: str) -> dict:
        """Close the running stage as ``name`` (appended to ``stages`` and returned)."""
        now, peak = time.perf_counter(), self.take()
        cpu, read = cpu_seconds(), disk_read_bytes()
        stage = {"stage": name, "seconds": now - self._t_last, "cpu_seconds": cpu - self._cpu_last,
                 "disk_read": read - self._read_last, "peak_rss": peak}
        self.stages.append(stage)
        self._t_last, self._cpu_last, self._read_last = now, cpu, read
        return stage

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()

    def peak_between(self, start: float, stop: float) -> int | None:
        """Peak sampled RSS (bytes) between two ``perf_counter`` instants; for a stage shorter than
        the sampling interval, the last sample before its end."""
        inside = [rss for t, rss, _ in self.samples if start <= t <= stop]
        if not inside:
            inside = [rss for t, rss, _ in self.samples if t <= stop][-1:]
        return max(inside) if inside else None

    def cpu_between(self, start: float, stop: float) -> float | None:
        """CPU seconds between two ``perf_counter`` instants (nearest samples outside them)."""
        before = [cpu for t, _, cpu in self.samples if t <= start][-1:]
        after = [cpu for t, _, cpu in self.samples if t >= stop][:1]
        return after[0] - before[0] if before and after else None
