"""One error tree: every error class Kindred defines descends from ``KindredError``, and the
model-integrity errors of every layer are artifact errors (one ``except`` for a bad model)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import ingest
import services
import vectorstore
from vectorstore import ArtifactCorrupt, KindredError


def _error_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for pkg in (vectorstore, ingest, services):
        for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not mod.name.rsplit(".", 1)[-1].startswith("errors") and \
                    not mod.name.endswith(".errors"):
                continue
            m = importlib.import_module(mod.name)
            for _, obj in inspect.getmembers(m, inspect.isclass):
                if issubclass(obj, Exception) and not issubclass(obj, Warning) and \
                        obj.__module__.startswith(
                        ("vectorstore", "ingest", "services")):
                    found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for pkg in (vectorstore, ingest, services):
        m = importlib.import_module(f"{pkg.__name__}.errors")
        for _, obj in inspect.getmembers(m, inspect.isclass):
            if issubclass(obj, Exception) and not issubclass(obj, Warning):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_error_class_descends_from_kindred_error():
    classes = _error_classes()
    assert len(classes) > 20
    outside = [c.__qualname__ for c in classes if not issubclass(c, KindredError)]
    assert outside == []


@pytest.mark.parametrize("module", ["ingest.errors", "services.errors"])
def test_model_integrity_errors_are_artifact_errors(module):
    cls = importlib.import_module(module).ModelIntegrityError
    assert issubclass(cls, ArtifactCorrupt)
    assert issubclass(cls, KindredError)
