from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from messenger.cli.serve import MULTIPROC_ENV, resolve_workers
from messenger.metrics import MULTIPROC_ENV as METRICS_MULTIPROC_ENV
from messenger.settings import available_cpus


def test_auto_workers_is_the_available_cpu_count() -> None:
    assert resolve_workers("auto") == available_cpus() >= 1


def test_explicit_workers_override_auto() -> None:
    assert resolve_workers("3") == 3


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_bad_worker_counts_are_refused(value: str) -> None:
    with pytest.raises(typer.BadParameter):
        resolve_workers(value)


def test_serve_does_not_import_prometheus_before_setting_multiprocess_mode() -> None:
    assert MULTIPROC_ENV == METRICS_MULTIPROC_ENV
    code = "import sys, messenger.cli.serve; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
