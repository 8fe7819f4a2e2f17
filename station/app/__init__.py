"""The application layer: the one composition root the GUI, the command line and HTTP use.

`StationApp` wires camera, model source, line and sinks; it holds products and model versions,
users and roles, and the audit trail, and checks the caller's role for every action.
"""

from station.app.access import LoginRefused, Session
from station.app.lock import DataDirInUse
from station.app.roles import Action, PermissionDenied, Role
from station.app.station_app import ModelVersion, StationApp

__all__ = [
    "Action",
    "DataDirInUse",
    "LoginRefused",
    "ModelVersion",
    "PermissionDenied",
    "Role",
    "Session",
    "StationApp",
]
