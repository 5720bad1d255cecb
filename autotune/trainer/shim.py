"""Run lerobot-train's ``main()`` exactly as its console script does, and measure the process.

This file is executed by the *trainer's* Python (``python shim.py RESULT MODULE ARGS...``),
which has LeRobot and its own torch but not autotune: it imports nothing of autotune. It imports
the training module (torch, LeRobot: the start-up), takes the resident set there as the baseline,
and watches, while ``main()`` trains: the growth of the resident set over the baseline (what a CPU
probe measures), the proportional set size of the DataLoader's worker processes, and on CUDA the
caching allocator's peaks (LeRobot resets them every step from 0.6 on, so the resets are folded
into a running maximum).

The first optimizer step ends the warm-up, as in the probes: on CUDA its peak (cuDNN's benchmark
searches its algorithms in step 1, with scratch sized from the device's free memory, which the
probes leave out of their peak) is kept apart, the allocator's cache is emptied of that scratch and
the peaks start again. A step fp16's gradient scaler skips is no optimizer step: the warm-up lasts
until the first real one, as the probes' does.
"""

import importlib
import json
import os
import resource
import sys
import threading
import traceback

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid="self"):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def peak_rss_bytes():
    # VmHWM, this process's own high-water mark; ru_maxrss would start at the parent's size.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def pss_bytes(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return rss_bytes(pid)


def descendants(pid):
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parents.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(name))
    found, stack = [], [pid]
    while stack:
        for child in parents.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def leave_with_parent(folder):
    """If autotune is killed, remove its folder and take this process group down (the trainer and
    its DataLoader workers) rather than train on, orphaned."""
    import shutil
    import signal

    parent = os.getppid()

    def watch():
        while not threading.Event().wait(0.5):
            if os.getppid() != parent:
                shutil.rmtree(folder, ignore_errors=True)
                os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


class Meter:
    """What the trainer's process uses: its resident-set growth over ``baseline`` (sampled every
    5 ms), its workers' proportional memory, and on CUDA the caching allocator's peaks, with the
    warm-up (up to the first optimizer step: cuDNN's algorithm search included) set apart."""

    def __init__(self, baseline):
        self.baseline = baseline
        self.peak = self.workers = self.cuda_reserved = self.cuda_allocated = 0
        self.warmup_peak = 0  # the warm-up's (CUDA: reserved; CPU: resident-set growth), set apart
        self.warmed_up = False
        self.torch = sys.modules.get("torch")
        self.cuda = self.torch is not None and self.torch.cuda.is_available()
        self.reset = self.torch.cuda.reset_peak_memory_stats if self.cuda else None
        self.stop = threading.Event()
        self.watcher = threading.Thread(target=self.watch, daemon=True)

    def fold(self):
        if self.cuda:
            self.cuda_reserved = max(self.cuda_reserved, self.torch.cuda.max_memory_reserved())
            self.cuda_allocated = max(self.cuda_allocated, self.torch.cuda.max_memory_allocated())

    def install(self):
        """Fold the peaks before lerobot-train resets them (it does, every step), and set the
        warm-up apart after the first optimizer step of any optimizer (torch >= 2.0)."""
        if self.cuda:
            reset = self.reset

            def reset_folded(*a, **k):
                self.fold()
                return reset(*a, **k)

            self.torch.cuda.reset_peak_memory_stats = reset_folded
        hooks = getattr(getattr(self.torch, "optim", None), "optimizer", None) if self.torch else None
        if hooks is not None and hasattr(hooks, "register_optimizer_step_post_hook"):
            hooks.register_optimizer_step_post_hook(self.end_warmup)
        self.watcher.start()

    def end_warmup(self, optimizer, args, kwargs):
        # After the first optimizer step: the warm-up's peak apart, then the peaks start again.
        if self.warmed_up:
            return
        self.warmed_up = True
        if self.cuda:
            self.fold()
            self.warmup_peak = self.cuda_reserved
            self.torch.cuda.empty_cache()  # cuDNN's algorithm search's scratch, cached since step 1
            self.reset()
            self.cuda_reserved = self.cuda_allocated = 0
        else:
            self.warmup_peak = max(self.peak, rss_bytes() - self.baseline)

    def watch(self):
        me, tick = os.getpid(), 0
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes() - self.baseline)
            tick += 1
            if tick % 50 == 0:
                self.workers = max(self.workers, sum(pss_bytes(p) for p in descendants(me)))

    def finish(self, code, error):
        """The result file's contents, once the trainer has returned."""
        self.stop.set()
        self.watcher.join(timeout=1.0)
        self.fold()
        high_water = peak_rss_bytes() - self.baseline
        return {
            "exit_code": code,
            "error": error,
            "baseline_bytes": self.baseline,
            "peak_growth_bytes": max(self.peak, high_water),
            "workers_pss_bytes": self.workers,
            "cuda_peak_reserved_bytes": self.cuda_reserved,
            "cuda_peak_allocated_bytes": self.cuda_allocated,
            "warmup_peak_bytes": self.warmup_peak,
            "warmed_up": self.warmed_up,
        }


def main():
    result_path, module_name = sys.argv[1], sys.argv[2]
    leave_with_parent(os.path.dirname(result_path))
    args = sys.argv[3:]
    module = importlib.import_module(module_name)
    meter = Meter(rss_bytes())
    meter.install()
    sys.argv = ["lerobot-train", *args]
    code, error = 0, ""
    try:
        returned = module.main()
        code = returned if isinstance(returned, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the trainer's own failure: reported, with its traceback
        traceback.print_exc()
        code, error = (
            1,
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
        )
    finally:
        result = meter.finish(code, error)
        with open(result_path + ".tmp", "w") as f:
            json.dump(result, f)
        os.replace(result_path + ".tmp", result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
