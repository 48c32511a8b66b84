"""The stochastic-deterministic boundary: where a model's output becomes a deterministic action.

Propose (parse the answer) -> verify (schema, then guards) -> normalize (canonical args, digest) ->
commit (run the handler, record its effect), or reject (a typed rejection handed back to the model).
:func:`write_actions` observes the boundary without committing: the actions of a model answer as a
recording of an agent we have no code for (the proxy, the importers) or a step-mode replay writes them,
reading a text answer by the project's one setting, :func:`load_actions_setting`.

This module is the package's whole interface; its modules are private.
"""

from sdbctl.sdb.boundary._actions import ActionSpec, FieldError, InvalidArguments
from sdbctl.sdb.boundary._boundary import Boundary, Commit, UnknownAction
from sdbctl.sdb.boundary._crossing import EXECUTE, Crossing, Rejection, StopSession
from sdbctl.sdb.boundary._guards import Guard, GuardDecision, ValidAction
from sdbctl.sdb.boundary._observe import (
    ACTIONS,
    ActionsSetting,
    answer_message,
    load_actions_setting,
    parse_actions,
    write_actions,
)
from sdbctl.sdb.boundary._proposal import ParseFailure, Proposal, parse_response

__all__ = [
    "ACTIONS",
    "EXECUTE",
    "ActionSpec",
    "ActionsSetting",
    "Boundary",
    "Commit",
    "Crossing",
    "FieldError",
    "Guard",
    "GuardDecision",
    "InvalidArguments",
    "ParseFailure",
    "Proposal",
    "Rejection",
    "StopSession",
    "UnknownAction",
    "ValidAction",
    "answer_message",
    "load_actions_setting",
    "parse_actions",
    "parse_response",
    "write_actions",
]
