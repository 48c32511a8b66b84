"""The stochastic-deterministic boundary: where a model's output becomes a deterministic action.

Propose (parse the answer) -> verify (schema, then guards) -> normalize (canonical args, digest) ->
commit (run the handler, record its effect), or reject (a typed rejection handed back to the model).
"""

from sdbctl.sdb.boundary.actions import ActionSpec, FieldError, InvalidArguments
from sdbctl.sdb.boundary.boundary import Boundary, Commit, UnknownAction
from sdbctl.sdb.boundary.crossing import EXECUTE, Crossing, Rejection, StopSession
from sdbctl.sdb.boundary.guards import Guard, GuardDecision, ValidAction
from sdbctl.sdb.boundary.proposal import ParseFailure, Proposal, parse_response

__all__ = [
    "EXECUTE",
    "ActionSpec",
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
    "parse_response",
]
