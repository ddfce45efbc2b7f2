"""URI -> backend resolution and option checking."""

from __future__ import annotations

import pytest

import vectorstore as vs
from vectorstore.registry import backend_class, register_backend, scheme_of


def test_schemes():
    assert scheme_of("./data") == "lance"
    assert scheme_of("/abs/path") == "lance"
    assert scheme_of("lance:///tmp/x") == "lance"
    assert scheme_of("memory://") == "memory"
    assert scheme_of("postgresql://u:p@h/db") == "postgresql"
    assert scheme_of("postgresql+psycopg://h/db") == "postgresql"


def test_plain_path_and_lance_uri_open_the_same_directory(tmp_path):
    import pyarrow as pa

    with vs.connect(str(tmp_path)) as a:
        a.create_table("t", pa.schema([("id", pa.string())]))
    with vs.connect(f"lance://{tmp_path}") as b:
        assert b.list_tables() == ["t"]


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(vs.BackendUnavailable, match="lance"):
        vs.connect("mongodb://x")


def test_unknown_option_is_an_error(tmp_path):
    with pytest.raises(vs.InvalidOption, match="colour"):
        vs.connect(str(tmp_path), colour="blue")


def test_missing_extra_names_the_extra():
    register_backend("fakedb", "kindred_missing_module_xyz:Store", extra="fakedb", replace=True)
    with pytest.raises(vs.BackendUnavailable, match=r"kindred\[fakedb\]"):
        backend_class("fakedb://x")
