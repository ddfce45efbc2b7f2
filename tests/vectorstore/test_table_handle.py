"""The table handle's part of the conformance suite (:mod:`vectorstore.testing.handle`) on every
backend of ``conftest.py``: the description is read again only when the table changed."""

from vectorstore.testing.handle import *  # noqa: F403
