"""A GitLab that behaves like GitLab (faults included), an organisation generator and its
independent ground truth.

- :mod:`exporter.simulator.model`: the organisation's dataclasses (``Org`` and friends)
- :mod:`exporter.simulator.generate`: ``generate_org(seed, ...)``, deterministic per seed
- :mod:`exporter.simulator.truth`: ``expected_activity(org, ...)``, what the exporter must report
- :mod:`exporter.simulator.server`: ``SimulatorServer`` / ``create_app`` / ``serve_simulator``
- :mod:`exporter.simulator.faults`: ``FaultRule``, ``Faults`` and the ``RequestLog``
"""

from exporter.simulator.faults import FaultRule, Faults, RequestLog, RequestRecord
from exporter.simulator.generate import generate_org
from exporter.simulator.model import Org
from exporter.simulator.server import (
    GITLAB_COM_LIMITS,
    RateLimiter,
    RateLimits,
    SimulatorServer,
    create_app,
    serve_simulator,
)
from exporter.simulator.truth import ExpectedUser, expected_activity

__all__ = [
    "GITLAB_COM_LIMITS",
    "ExpectedUser",
    "FaultRule",
    "Faults",
    "Org",
    "RateLimiter",
    "RateLimits",
    "RequestLog",
    "RequestRecord",
    "SimulatorServer",
    "create_app",
    "expected_activity",
    "generate_org",
    "serve_simulator",
]
