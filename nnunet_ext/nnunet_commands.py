"""Running the stock nnU-Net console commands as subprocesses, with visible progress and a log file."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

#: lines of nnU-Net's output worth echoing live (the rest goes to the log file only)
DEFAULT_ECHO = re.compile(
    r"(Epoch \d+|train_loss|val_loss|Pseudo dice|Epoch time|Training done|predicting|Predicting|"
    r"Preprocessing|Fingerprint|Experiment planning|Error|error|Traceback|exception|verify|Done)"
)


class NnUNetCommandError(RuntimeError):
    """An nnU-Net command exited with a non-zero status."""


def nnunet_executable(name: str) -> str:
    """Path of an nnU-Net console script (``nnUNetv2_train`` ...), preferring this interpreter's bin."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not on PATH; is nnunetv2 installed in this environment?")
    return found


def run_logged(command: Sequence[str], log_file: str | os.PathLike, env: Mapping[str, str] | None = None,
               echo: re.Pattern | None = None, prefix: str = "  ") -> int:
    """Run ``command``, write ``$ command`` and all its output to ``log_file`` (folders made) and echo the
    lines matching ``echo``; returns the exit status."""
    command = [str(c) for c in command]
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=None if env is None else dict(env), bufsize=1)
        for line in process.stdout:
            log.write(line)
            if echo is not None and echo.search(line):
                print(prefix + line.rstrip(), flush=True)
        return process.wait()


def log_tail(log_file: str | os.PathLike, lines: int) -> str:
    """The last ``lines`` lines of a log file."""
    return "".join(Path(log_file).read_text().splitlines(keepends=True)[-lines:])


def run_nnunet(args: Sequence[str], log_file: str | os.PathLike, env: dict | None = None,
               echo: re.Pattern | None = DEFAULT_ECHO, prefix: str = "  ") -> None:
    """Run ``args`` (first item an nnU-Net command name), write all output to ``log_file`` and echo the
    lines matching ``echo``. Raises :class:`NnUNetCommandError` with the log's tail on failure."""
    status = run_logged([nnunet_executable(args[0]), *args[1:]], log_file, env, echo, prefix)
    if status != 0:
        tail = log_tail(log_file, 30)
        raise NnUNetCommandError(f"{' '.join(map(str, args))} failed with exit status {status}; full log: {log_file}\n{tail}")
