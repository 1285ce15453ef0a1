"""A sandbox Green Button Connect My Data data custodian (``greenbridge sandbox``): OAuth, ESPI REST, BatchLists.

It is the upstream peer the gateway's tests run against, so it behaves as ESPI custodians do (espi.md §3-§7), with
sandbox customers whose data comes from ESPI files or from :mod:`espi.generate`. See docs/sandbox.md.
"""

from sandbox.app import build_sandbox, create_sandbox_app
from sandbox.config import CustomerSpec, SandboxConfig, SandboxConfigError, ThirdParty, load_sandbox_config

__all__ = ["CustomerSpec", "SandboxConfig", "SandboxConfigError", "ThirdParty", "build_sandbox",
           "create_sandbox_app", "load_sandbox_config"]
