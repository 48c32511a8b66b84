"""The six runtime patterns, built on the boundary. *State is the spine, coordination wraps it,
control bounds it.* Each pattern tags the events it writes (``P1``..``P6``) and says in its docstring
what a divergence means for it. ``catalog`` holds their descriptions and the selection method.
"""

from sdbctl.patterns.p1_delegation import Delegation
from sdbctl.patterns.p2_saga import Saga, SagaStep, scatter_gather
from sdbctl.patterns.p3_event_log import EventLog, LogConsumer, LogEvent
from sdbctl.patterns.p4_supervisor import PolicyGate, Supervisor, load_policy
from sdbctl.patterns.p5_state_machine import CasConflict, IllegalTransition, StateMachine, StateRow
from sdbctl.patterns.p6_human import HumanLoop, KillSwitch, Throttle

__all__ = [
    "CasConflict",
    "Delegation",
    "EventLog",
    "HumanLoop",
    "IllegalTransition",
    "KillSwitch",
    "LogConsumer",
    "LogEvent",
    "PolicyGate",
    "Saga",
    "SagaStep",
    "StateMachine",
    "StateRow",
    "Supervisor",
    "Throttle",
    "load_policy",
    "scatter_gather",
]
