"""Who may do what: the station's roles and the one table that grants actions to them.

The app checks this table on every action, whoever calls (touchscreen, command line, HTTP); a
screen that hides a button only saves a person a refusal.
"""

from __future__ import annotations

from station.core.compat import StrEnum
from station.core.errors import StationError


class Role(StrEnum):
    OPERATOR = "operator"
    TECHNICIAN = "technician"
    QA = "qa"
    ADMIN = "admin"


class Action(StrEnum):
    PAUSE = "pause"  # pause / resume the line
    STOP = "stop"  # stop the line and close the station
    DISPOSITION_NOK = "disposition_nok"  # what happened to a rejected part, from the NOK detail
    DISPOSITION_ANY = "disposition_any"  # any part, in the history (e.g. a missed defect)
    VIEW_HISTORY = "view_history"  # the history browser and record queries
    REPORT = "report"  # shift reports
    SETUP = "setup"  # open the technician's setup (camera check, products, models)
    PRODUCT = "product"  # create, edit or switch a product
    MODEL = "model"  # build, activate or roll back a model version
    THRESHOLD = "threshold"  # change a model's reject limit
    USERS = "users"  # add or remove users, set PINs
    SETTINGS = "settings"  # station settings
    AUDIT = "audit"  # read and verify the audit trail


_ALL = frozenset(Role)
_TECH = frozenset({Role.TECHNICIAN, Role.ADMIN})
_QA = frozenset({Role.QA, Role.ADMIN})

PERMISSIONS: dict[Action, frozenset[Role]] = {
    Action.PAUSE: _ALL,
    Action.STOP: _ALL,
    Action.DISPOSITION_NOK: _ALL,
    Action.DISPOSITION_ANY: _QA,
    Action.VIEW_HISTORY: frozenset({Role.TECHNICIAN, Role.QA, Role.ADMIN}),
    Action.REPORT: _QA,
    Action.SETUP: _TECH,
    Action.PRODUCT: _TECH,
    Action.MODEL: _TECH,
    Action.THRESHOLD: _TECH,
    Action.USERS: frozenset({Role.ADMIN}),
    Action.SETTINGS: frozenset({Role.ADMIN}),
    Action.AUDIT: _QA,
}


def allowed(role: Role | None, action: Action) -> bool:
    """Whether `role` may do `action` (no role: nothing)."""
    return role is not None and role in PERMISSIONS[action]


def roles_for(action: Action) -> str:
    """The roles that may do `action`, in words: 'technician or admin'."""
    names = [r.value for r in Role if r in PERMISSIONS[action]]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def parse_role(text: str) -> Role:
    """A role from its name; StationError naming the choices."""
    try:
        return Role(text.strip().lower())
    except ValueError:
        raise StationError(
            f"'{text}' is not a role: choose one of {', '.join(r.value for r in Role)}"
        ) from None


class PermissionDenied(StationError):
    """The caller's role may not do this action (the refusal is in the audit trail)."""

    def __init__(self, message: str, action: Action) -> None:
        super().__init__(message)
        self.action = action
