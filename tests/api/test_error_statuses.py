"""Domain errors carry a type only; `server/api/errors.py` alone gives each its HTTP status."""

from __future__ import annotations

import importlib
import pkgutil

import prompt_store
import server
from prompt_store.errors import UserError
from server.api.errors import status_of

API_STATUSES = {400, 401, 403, 404, 409, 413, 422, 429, 503, 507}


def every_user_error() -> set[type[UserError]]:
    for package in (server, prompt_store):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found, todo = set(), [UserError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return found


def test_no_domain_error_knows_http_and_each_has_an_api_status() -> None:
    errors = every_user_error()
    assert len(errors) >= 20
    assert [cls.__name__ for cls in errors if "status_code" in vars(cls)] == []
    statuses = {cls.__name__: status_of(cls) for cls in errors}
    assert set(statuses.values()) <= API_STATUSES, statuses
